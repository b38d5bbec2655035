//! The upscale node and its networks against the published PyTorch reference.
//!
//! Fixtures (`tests/fixtures/`, copied from the project's shared fixtures; see its README):
//! `upscale_in_*.npy` are uniform random NCHW inputs; `upscale_out_animevideov3_*` and
//! `upscale_out_anime6b_*` are what realesrgan 0.3.0 / basicsr 1.4.2 compute from them (fp32,
//! not clamped) with the checkpoints `models/realesr-animevideov3-x4.safetensors` (the built-in
//! default), `tests/fixtures/realesr-animevideov3-x4.pth` (the same weights in the official
//! `{'params': …}` layout) and `tests/fixtures/realesrgan-x4plus-anime-6b.safetensors`.
//!
//! Tolerances: 1e-4 on Burn's CPU backend, 1e-3 on wgpu (run here on Mesa's lavapipe, a
//! software Vulkan driver: `apt-get install mesa-vulkan-drivers libvulkan1`).

use crate::common::{assert_ok, fixture, load, max_abs_diff, read_npy, run_on_cpu, temp_dir};
use burn::tensor::Device;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vidflow_engine::Emitter;
use vidflow_engine::{
    Frame, Input, NodeError, NodeKind, Payload, PortType, Process, Rate, Runtime,
};
use vidflow_nodes::gpu::device::{Compute, DevicePreference};
use vidflow_nodes::kinds::upscale::{UpscaleOptions, Upscaler, load_checkpoint};
use vidflow_nodes::models::realesrgan::{self, Arch};
use vidflow_nodes::weights;

fn builtin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/realesr-animevideov3-x4.safetensors")
}

/// Runs the checkpoint at `weights` on both fixture inputs and returns the worst difference.
fn parity(weights: &Path, reference: &str, device: &Device) -> f32 {
    let ck = weights::load(weights).unwrap_or_else(|e| panic!("{e}"));
    let up = Upscaler::new(&ck, device, UpscaleOptions::default()).unwrap();
    let mut worst = 0f32;
    for size in ["1x3x64x64", "2x3x37x53"] {
        let (shape, input) = read_npy(&format!("upscale_in_{size}.npy"));
        let (out_shape, expected) = read_npy(&format!("upscale_out_{reference}_{size}.npy"));
        let shape: [usize; 4] = shape.try_into().unwrap();
        assert_eq!(out_shape, vec![shape[0], 3, shape[2] * 4, shape[3] * 4]);
        let got = up.forward_nchw(&input, shape);
        let d = max_abs_diff(&got, &expected);
        eprintln!(
            "{} {size} on {device:?}: max abs diff {d:e}",
            weights.file_name().unwrap().to_string_lossy()
        );
        worst = worst.max(d);
    }
    worst
}

#[test]
fn srvgg_safetensors_matches_pytorch_on_cpu() {
    let d = parity(&builtin(), "animevideov3", &Device::flex());
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn srvgg_pth_matches_pytorch_on_cpu() {
    let ck = weights::load(&fixture("realesr-animevideov3-x4.pth")).unwrap();
    assert_eq!(ck.format, "pth");
    assert_eq!(ck.entry.as_deref(), Some("params"));
    // Same weights as the fp16 safetensors (which were upcast on load).
    let st = weights::load(&builtin()).unwrap();
    assert_eq!(
        ck.tensors.keys().collect::<Vec<_>>(),
        st.tensors.keys().collect::<Vec<_>>()
    );
    for (k, t) in &ck.tensors {
        assert_eq!(t.shape, st.tensors[k].shape, "{k}");
    }
    let d = parity(
        &fixture("realesr-animevideov3-x4.pth"),
        "animevideov3",
        &Device::flex(),
    );
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn architectures_are_recognised_from_keys_and_shapes() {
    let ck = weights::load(&builtin()).unwrap();
    let Arch::Srvgg(c) = realesrgan::detect(&ck).unwrap() else {
        panic!("not SRVGG")
    };
    assert_eq!((c.num_feat, c.num_conv, c.upscale), (64, 16, 4));
    let n: usize = ck.tensors.values().map(|t| t.numel()).sum();
    assert_eq!(n, 621_424);
    let ck = weights::load(&fixture("realesrgan-x4plus-anime-6b.safetensors")).unwrap();
    let Arch::Rrdb(c) = realesrgan::detect(&ck).unwrap() else {
        panic!("not RRDB")
    };
    assert_eq!(
        (c.num_feat, c.num_block, c.num_grow_ch, c.scale),
        (64, 6, 32, 4)
    );
    let n: usize = ck.tensors.values().map(|t| t.numel()).sum();
    assert_eq!(n, 4_467_779);
}

#[test]
fn rrdb_anime6b_matches_pytorch_on_cpu() {
    let d = parity(
        &fixture("realesrgan-x4plus-anime-6b.safetensors"),
        "anime6b",
        &Device::flex(),
    );
    assert!(d <= 1e-4, "max abs diff {d}");
}

/// The wgpu path on whatever adapter wgpu finds (lavapipe on machines without a GPU).
fn wgpu_device() -> Device {
    let c = Compute::open(DevicePreference::Gpu).unwrap_or_else(|e| {
        panic!("{e}\n(the wgpu tests need a Vulkan driver: `apt-get install mesa-vulkan-drivers libvulkan1` gives a software one)")
    });
    eprintln!("wgpu adapter: {}", c.name);
    c.device
}

#[test]
fn srvgg_matches_pytorch_on_wgpu() {
    let d = parity(&builtin(), "animevideov3", &wgpu_device());
    assert!(d <= 1e-3, "max abs diff {d}");
}

#[test]
fn rrdb_anime6b_matches_pytorch_on_wgpu() {
    let d = parity(
        &fixture("realesrgan-x4plus-anime-6b.safetensors"),
        "anime6b",
        &wgpu_device(),
    );
    assert!(d <= 1e-3, "max abs diff {d}");
}

/// The largest difference between two frames' bytes, in 8-bit levels.
fn max_level_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len(), "frames of different sizes");
    a.iter()
        .zip(b)
        .map(|(p, q)| p.abs_diff(*q))
        .max()
        .unwrap_or(0)
}

fn test_frame(index: u64, w: u32, h: u32) -> Frame {
    let data = vidflow_nodes::kinds::testsrc::pattern(w, h, index, 25.0);
    Frame::new(index, index as f64 / 25.0, Rate::new(25, 1), w, h, data)
}

/// On a GPU the frames cross the bus packed and are converted by Burn kernels there; on the
/// CPU they are converted on the host. Both must give the frames the same pixels (within one
/// level, the network's own wgpu-vs-CPU difference), tiled and untiled.
#[test]
fn the_gpu_pixel_path_gives_the_cpu_paths_frames() {
    let ck = load_checkpoint(None).unwrap();
    let frames = [test_frame(0, 40, 24), test_frame(1, 40, 24)];
    let refs: Vec<&Frame> = frames.iter().collect();
    for tile in [0, 16] {
        let opts = UpscaleOptions {
            tile,
            ..Default::default()
        };
        let cpu = Upscaler::new(&ck, &Device::flex(), opts).unwrap();
        let gpu = Upscaler::new(&ck, &wgpu_device(), opts).unwrap();
        let (a, b) = (cpu.upscale_frames(&refs), gpu.upscale_frames(&refs));
        assert_eq!(a.len(), 2);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.width, x.height, x.index), (y.width, y.height, y.index));
            assert_eq!((x.width, x.height), (160, 96));
            let worst = max_level_diff(&x.data, &y.data);
            assert!(worst <= 1, "tile {tile}: frames differ by {worst} levels");
        }
    }
}

#[test]
fn packed_pixels_round_trip_exactly_on_wgpu() {
    use vidflow_nodes::gpu::pixels;
    let f = [test_frame(3, 20, 12), test_frame(4, 20, 12)];
    let data: Vec<&[u8]> = f.iter().map(|f| f.data.as_slice()).collect();
    let dev = wgpu_device();
    let t = pixels::upload_rgb8(&data, 12, 20, &dev);
    let host = pixels::to_planar(&data, 12, 20);
    let on_device = t.clone().into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(
        on_device, host,
        "unpacked on the device = converted on the host"
    );
    let back = pixels::download_rgb8(t);
    assert_eq!(back, [f[0].data.to_vec(), f[1].data.to_vec()]);
}

#[test]
fn tiled_run_matches_untiled_run() {
    let ck = load_checkpoint(None).unwrap();
    let dev = Device::flex();
    let whole = Upscaler::new(&ck, &dev, UpscaleOptions::default()).unwrap();
    let tiled = Upscaler::new(
        &ck,
        &dev,
        UpscaleOptions {
            tile: 48,
            ..Default::default()
        },
    )
    .unwrap();
    let frames = [test_frame(3, 130, 75), test_frame(4, 130, 75)];
    let refs: Vec<&Frame> = frames.iter().collect();
    let a = whole.upscale_frames(&refs);
    let b = tiled.upscale_frames(&refs);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.width, x.height), (520, 300));
        assert_eq!((x.index, x.pts), (y.index, y.pts));
        let worst = max_level_diff(&x.data, &y.data);
        eprintln!("tiled vs untiled: max diff {worst}/255");
        assert!(worst <= 2, "tiles differ by {worst}/255");
    }
}

#[test]
fn outscale_resizes_the_network_output() {
    let ck = load_checkpoint(None).unwrap();
    let up = Upscaler::new(
        &ck,
        &Device::flex(),
        UpscaleOptions {
            scale: Some(2.0),
            ..Default::default()
        },
    )
    .unwrap();
    let f = test_frame(0, 40, 22);
    let out = up.upscale_frames(&[&f]);
    assert_eq!((out[0].width, out[0].height), (80, 44));
    assert_eq!(out[0].data.len(), 80 * 44 * 3);
}

// ---------------------------------------------------------------------------------------------
// Bad weights

/// Writes a safetensors file of f32 tensors.
fn write_safetensors(path: &Path, tensors: &[(&str, Vec<usize>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        let begin = data.len();
        data.extend(std::iter::repeat_n(0u8, n * 4));
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

/// A path named `name` in a fresh folder.
fn tmp(name: &str) -> PathBuf {
    temp_dir("upscale-test").join(name)
}

/// The message the node gives for a weights file, through the whole factory path.
fn node_error(weights: &Path) -> String {
    let yaml = format!(
        "name: t\nnodes:\n  - id: src\n    kind: testsrc\n    params: {{ width: 8, height: 8, count: 1 }}\n  - id: sr\n    kind: upscale\n    params: {{ weights: \"{}\" }}\n    inputs: {{ frames: src.frames }}\n",
        weights.display()
    );
    let registry = vidflow_nodes::registry();
    let graph = load("t.yaml", &yaml, &[], &registry);
    let report = run_on_cpu(&graph);
    let failure = report.failure.expect("the run fails");
    assert_eq!(failure.node, "sr");
    assert!(
        matches!(failure.error, NodeError::Input(_)),
        "{:?}",
        failure.error
    );
    failure.error.to_string()
}

#[test]
fn a_file_that_is_not_a_checkpoint_is_named() {
    let p = tmp("notes.pth");
    std::fs::write(&p, "these are not weights, just some text\n").unwrap();
    let msg = node_error(&p);
    eprintln!("{msg}");
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(msg.contains("not a checkpoint"), "{msg}");
    assert!(msg.contains(".safetensors"), "{msg}");
    let missing = tmp("nowhere.pth");
    let msg = node_error(&missing);
    assert!(msg.contains("cannot read weights file"), "{msg}");
}

#[test]
fn a_checkpoint_of_another_architecture_is_named_with_what_was_expected() {
    let p = tmp("classifier.safetensors");
    write_safetensors(
        &p,
        &[
            ("conv1.weight", vec![8, 3, 3, 3]),
            ("fc.weight", vec![10, 8]),
            ("fc.bias", vec![10]),
        ],
    );
    let msg = node_error(&p);
    eprintln!("{msg}");
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(msg.contains("not a Real-ESRGAN checkpoint"), "{msg}");
    assert!(
        msg.contains("conv_first.weight") && msg.contains("body.0.weight"),
        "{msg}"
    );
    assert!(msg.contains("conv1.weight"), "{msg}");

    // An SRVGGNetCompact with a wrong layer shape and a missing PReLU.
    let mut keys: Vec<(String, Vec<usize>)> = vec![];
    for k in 0..18 {
        let cout = if k == 17 { 48 } else { 64 };
        let cin = if k == 0 { 3 } else { 64 };
        let cin = if k == 5 { 32 } else { cin };
        keys.push((format!("body.{}.weight", 2 * k), vec![cout, cin, 3, 3]));
        keys.push((format!("body.{}.bias", 2 * k), vec![cout]));
        if k < 17 && k != 7 {
            keys.push((format!("body.{}.weight", 2 * k + 1), vec![64]));
        }
    }
    let named: Vec<(&str, Vec<usize>)> =
        keys.iter().map(|(k, s)| (k.as_str(), s.clone())).collect();
    let p = tmp("broken-srvgg.safetensors");
    write_safetensors(&p, &named);
    let msg = node_error(&p);
    eprintln!("{msg}");
    assert!(msg.contains(&p.display().to_string()), "{msg}");
    assert!(msg.contains("SRVGGNetCompact"), "{msg}");
    assert!(msg.contains("missing keys: `body.15.weight` [64]"), "{msg}");
    assert!(
        msg.contains(
            "mis-shaped keys: `body.10.weight` is [64, 32, 3, 3], expected [64, 64, 3, 3]"
        ),
        "{msg}"
    );
}

#[test]
fn a_truncated_file_is_named() {
    for name in [
        "realesr-animevideov3-x4.pth",
        "realesrgan-x4plus-anime-6b.safetensors",
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let p = tmp(&format!("cut-{name}"));
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let msg = node_error(&p);
        eprintln!("{msg}");
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("damaged or truncated"), "{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// The node in a graph

#[test]
fn the_node_batches_frames_and_keeps_their_order_and_times() {
    let got: Arc<Mutex<Vec<Frame>>> = Arc::default();
    let sink = got.clone();
    let mut registry = vidflow_nodes::registry();
    registry.register(
        NodeKind::new("collect", "test sink", move |_| {
            struct Collect(Arc<Mutex<Vec<Frame>>>);
            impl Process for Collect {
                fn process(&mut self, input: Input, _: &mut Emitter<'_>) -> Result<(), NodeError> {
                    let mut v = self.0.lock().unwrap();
                    v.extend(input.items.iter().filter_map(Payload::as_frame).cloned());
                    Ok(())
                }
            }
            Ok(Runtime::Process(Box::new(Collect(sink.clone()))))
        })
        .input("items", PortType::FRAMES, "frames"),
    );
    let yaml = "name: t\nnodes:\n  - id: src\n    kind: testsrc\n    params: { width: 24, height: 16, count: 11, rate: 25 }\n  - id: sr\n    kind: upscale\n    params: { scale: 2 }\n    batch: { max: 4, wait_ms: 200 }\n    inputs: { frames: src.frames }\n  - id: out\n    kind: collect\n    inputs: { items: sr.frames }\n";
    let graph = load("t.yaml", yaml, &[], &registry);
    let report = run_on_cpu(&graph);
    assert_ok(&report);
    let sr = report.node("sr").unwrap();
    assert_eq!(sr.items_out, 11);
    assert!(
        sr.max_batch > 1 && sr.max_batch <= 4,
        "max batch {}",
        sr.max_batch
    );
    let frames = got.lock().unwrap();
    assert_eq!(frames.len(), 11);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.index, i as u64);
        assert_eq!((f.width, f.height), (48, 32));
        assert!((f.pts - i as f64 / 25.0).abs() < 1e-9);
    }
    // Batching does not change a frame's result.
    let up = Upscaler::new(
        &load_checkpoint(None).unwrap(),
        &Device::flex(),
        UpscaleOptions {
            scale: Some(2.0),
            ..Default::default()
        },
    )
    .unwrap();
    let alone = up.upscale_frames(&[&test_frame(5, 24, 16)]);
    assert_eq!(alone[0].data, frames[5].data);
}
