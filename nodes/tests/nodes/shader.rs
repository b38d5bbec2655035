//! The `shader` node: a user's WGSL compute shader run on frames through wgpu (lavapipe where
//! there is no GPU), checked against the same arithmetic on the CPU; and its check-time
//! compilation with naga (errors with line and column, the interface enforced).

use crate::common::{assert_ok, load};
use std::sync::{Arc, Mutex};
use vidflow_engine::Emitter;
use vidflow_engine::exec;
use vidflow_engine::{Frame, Input, NodeError, NodeKind, PortType, Process, Registry, Runtime};
use vidflow_nodes::kinds::shader;

const INVERT: &str = "
struct Frame { width: u32, height: u32, out_width: u32, out_height: u32,
               index: u32, count: u32, time: f32, _pad: f32, values: array<vec4<f32>, 4> }
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> frame: Frame;
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x >= frame.out_width || id.y >= frame.out_height) { return; }
  // Nearest-neighbour resize to the output size, then invert scaled by values[0].x and add
  // the frame index to blue, so sizes, values and the index all show in the result.
  let sx = id.x * frame.width / frame.out_width;
  let sy = id.y * frame.height / frame.out_height;
  let c = unpack4x8unorm(src[sy * frame.width + sx]);
  let k = frame.values[0].x;
  let b = min(1.0, (1.0 - c.b) * k + f32(frame.index) / 255.0);
  dst[id.y * frame.out_width + id.x] = pack4x8unorm(vec4<f32>((1.0 - c.r) * k, (1.0 - c.g) * k, b, 1.0));
}
";

/// What the shader above computes, on the CPU.
fn expected(f: &Frame, ow: u32, oh: u32, k: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity((ow * oh * 3) as usize);
    let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    for y in 0..oh {
        for x in 0..ow {
            let (sx, sy) = (x * f.width / ow, y * f.height / oh);
            let o = ((sy * f.width + sx) * 3) as usize;
            let c: Vec<f32> = f.data[o..o + 3].iter().map(|&v| v as f32 / 255.0).collect();
            out.push(q((1.0 - c[0]) * k));
            out.push(q((1.0 - c[1]) * k));
            out.push(q(((1.0 - c[2]) * k + f.index as f32 / 255.0).min(1.0)));
        }
    }
    out
}

type Seen = Arc<Mutex<Vec<Frame>>>;

fn registry(seen: Seen) -> Registry {
    struct Take(Seen);
    impl Process for Take {
        fn process(&mut self, input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
            for p in input.items.iter() {
                self.0.lock().unwrap().push(p.as_frame().unwrap().clone());
            }
            Ok(())
        }
    }
    let mut r = vidflow_nodes::registry();
    r.register(
        NodeKind::new("take", "test sink", move |_| {
            Ok(Runtime::Process(Box::new(Take(seen.clone()))))
        })
        .input("frames", PortType::FRAMES, "frames"),
    );
    r
}

fn indent(src: &str) -> String {
    src.lines().map(|l| format!("        {l}\n")).collect()
}

fn graph(width: u32, height: u32, out: Option<(u32, u32)>, k: f32, count: u32) -> String {
    let size = out.map_or(String::new(), |(w, h)| {
        format!("      width: {w}\n      height: {h}\n")
    });
    format!(
        "name: shader-test
nodes:
  - id: src
    kind: testsrc
    params: {{ width: {width}, height: {height}, count: {count}, rate: 10 }}
  - id: fx
    kind: shader
    batch: {{ max: 3, wait_ms: 0 }}
    params:
      values: [{k}]
{size}      source: |
{}    inputs: {{ frames: src.frames }}
  - id: sink
    kind: take
    inputs: {{ frames: fx.frames }}
",
        indent(INVERT)
    )
}

fn run(yaml: String, seen: &Seen) -> Vec<Frame> {
    let registry = registry(seen.clone());
    let g = load("shader.yaml", &yaml, &[], &registry);
    let report = exec::run(&g, exec::RunOptions::default());
    assert_ok(&report);
    std::mem::take(&mut *seen.lock().unwrap())
}

/// Every frame equals what the CPU computes from the `testsrc` frame of the same index.
fn assert_like_cpu(frames: &[Frame], (iw, ih): (u32, u32), (ow, oh): (u32, u32), k: f32) {
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.index, i as u64, "order kept");
        assert_eq!((f.width, f.height), (ow, oh));
        let pixels = vidflow_nodes::kinds::testsrc::pattern(iw, ih, f.index, 10.0);
        let src = Frame::new(f.index, f.pts, f.rate, iw, ih, pixels);
        let want = expected(&src, ow, oh, k);
        let worst = f
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        // unorm packing rounds like the CPU; allow one step for the GPU's float arithmetic.
        assert!(worst <= 1, "frame {i}: differs from the CPU by {worst}");
    }
}

#[test]
fn shader_runs_on_every_frame_like_the_cpu() {
    let seen: Seen = Default::default();
    // 7 frames in batches of 3: full and partial batches; an odd size to test the dispatch's
    // rounding up to whole workgroups.
    let frames = run(graph(37, 21, None, 0.8, 7), &seen);
    assert_eq!(frames.len(), 7);
    assert_like_cpu(&frames, (37, 21), (37, 21), 0.8);
}

#[test]
fn shader_can_change_the_frame_size() {
    let seen: Seen = Default::default();
    let frames = run(graph(16, 12, Some((40, 30)), 1.0, 2), &seen);
    assert_eq!(frames.len(), 2);
    assert_like_cpu(&frames, (16, 12), (40, 30), 1.0);
}

#[test]
fn compile_reports_wgsl_errors_with_line_and_column() {
    let src = "@group(0) @binding(0) var<storage, read> src: array<u32>;\n\
               @group(0) @binding(1) var<storage, read_write> dst: array<u32>;\n\
               @compute @workgroup_size(1)\n\
               fn main() {\n    let x: f32 = 1u;\n}\n";
    let e = shader::compile(src, "main").unwrap_err();
    assert_eq!(e.at.map(|(l, _)| l), Some(5), "{e:?}");
    assert!(e.message.starts_with("WGSL:"), "{e:?}");

    let e = shader::compile("fn main( {", "main").unwrap_err();
    assert_eq!(e.at, Some((1, 10)), "{e:?}");

    // The interface: a wrong entry point, a missing output, a wrong uniform size.
    let e = shader::compile(INVERT, "run").unwrap_err();
    assert!(
        e.message.contains("no entry point `run`") && e.message.contains("`main`"),
        "{e:?}"
    );
    let no_dst = INVERT.replace(
        "@group(0) @binding(1) var<storage, read_write> dst",
        "var<private> dst_unused: u32;\n@group(0) @binding(5) var<storage, read_write> dst",
    );
    let e = shader::compile(&no_dst, "main").unwrap_err();
    assert!(e.message.contains("@binding(5)"), "{e:?}");
    let small = INVERT.replace("values: array<vec4<f32>, 4>", "values: array<vec4<f32>, 2>");
    let e = shader::compile(&small, "main").unwrap_err();
    assert!(e.message.contains("the Frame uniform is 96"), "{e:?}");

    assert_eq!(shader::compile(INVERT, "main").unwrap(), ([8, 8, 1], true));
}

#[test]
fn the_repository_shader_program_implements_the_interface() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders/vignette.wgsl");
    let src = std::fs::read_to_string(path).unwrap();
    assert_eq!(shader::compile(&src, "main").unwrap(), ([8, 8, 1], true));
}
