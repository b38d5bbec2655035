//! A Rust plugin: two node kinds defined here, registered beside the built-in ones, and a graph
//! that uses them run with the engine as a library.
//!
//! - `brightness` (frames → frames) multiplies every pixel value by its `gain` param, clamped
//!   to 0..=255;
//! - `frame-stats` (frames → records) emits one record per frame: index, time, and the mean of
//!   each colour channel over the whole frame and over its left half.
//!
//! The graph (embedded below) is `testsrc → brightness → frame-stats → jsonl`.
//!
//! ```sh
//! cargo run --no-default-features --example custom_node -- out/stats.jsonl gain=1.5 frames=20
//! ```
//!
//! The first argument is the output file (default `out/custom_node.jsonl`); the others set
//! graph params, like `vidflow run --set`. Exit codes as the CLI: 0 ok, 1 invalid graph or
//! input, 2 failure.

use serde_json::json;
use std::process::ExitCode;
use vidflow_engine::exec::{self, RunOptions};
use vidflow_engine::{
    Emitter, Frame, Input, Mode, NodeError, NodeKind, ParamType, Payload, Plan, PortType, Process,
    Registry, Runtime, SourceFile, progress,
};

/// The graph, with `output`, `gain` and `frames` as graph params.
pub const GRAPH: &str = r#"
name: custom-node-demo
description: Synthetic frames brightened by a plugin node, measured by another, logged as JSON lines.
params:
  output: out/custom_node.jsonl
  gain: 1.25
  frames: 10
nodes:
  - id: src
    kind: testsrc
    params: { width: 60, height: 34, count: "${frames}", rate: 25 }
  - id: bright
    kind: brightness
    params: { gain: "${gain}" }
    inputs: { items: src.frames }
  - id: stats
    kind: frame-stats
    inputs: { items: bright.frames }
  - id: log
    kind: jsonl
    params: { path: "${output}" }
    inputs: { items: stats.records }
"#;

vidflow_engine::params! {
    /// The params of `brightness`, declared once: the checker, `vidflow nodes` and the JSON
    /// Schema read them from here, and the factory gets them typed.
    pub struct BrightnessParams {
        /// factor applied to every channel of every pixel
        gain: f64 = default(ParamType::float_in(0.0, 16.0), 1.0),
    }
}

/// `brightness`: scales pixel values by `gain`.
pub fn brightness_kind() -> NodeKind {
    NodeKind::new(
        "brightness",
        "Multiplies every pixel value by `gain` (clamped to 0..=255).",
        |ctx| {
            let p: BrightnessParams = ctx.params()?;
            Ok(Runtime::Process(Box::new(Brightness { gain: p.gain })))
        },
    )
    .input("items", PortType::FRAMES, "frames to brighten")
    .output("frames", PortType::FRAMES, "the brightened frames")
    .params::<BrightnessParams>()
    .example("- id: bright\n  kind: brightness\n  params: { gain: 1.5 }\n  inputs: { items: src.frames }\n")
}

struct Brightness {
    gain: f64,
}

/// What `brightness` does to one value (the test checks the output against it).
pub fn scale(value: u8, gain: f64) -> u8 {
    (value as f64 * gain).round().clamp(0.0, 255.0) as u8
}

impl Process for Brightness {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            let Payload::Frame(f) = item else {
                return Err(NodeError::input(format!(
                    "node `{}`: expected frames, got {}",
                    out.node_id(),
                    item.describe()
                )));
            };
            let data = f.data.iter().map(|&v| scale(v, self.gain)).collect();
            // A new frame with the same index, time and annotations.
            let mut frame = Frame::new(f.index, f.pts, f.rate, f.width, f.height, data);
            frame.meta = f.meta.clone();
            out.emit(0, Payload::Frame(frame))?;
        }
        Ok(())
    }
}

/// `frame-stats`: one record per frame with the mean of each channel.
pub fn frame_stats_kind() -> NodeKind {
    NodeKind::new(
        "frame-stats",
        "Emits one record per frame: index, time (pts), the mean of each colour channel, and the same over the left half.",
        |_| Ok(Runtime::Process(Box::new(FrameStats))),
    )
    .input("items", PortType::FRAMES, "frames to measure")
    .output(
        "records",
        PortType::RECORDS,
        "`{index, pts, mean: [r, g, b], left: [r, g, b]}` per frame",
    )
    .example("- id: stats\n  kind: frame-stats\n  inputs: { items: src.frames }\n")
}

struct FrameStats;

/// The mean of each channel of packed RGB24 pixels, rounded to 3 decimals.
pub fn channel_means(rgb: &[u8]) -> [f64; 3] {
    let mut sums = [0u64; 3];
    for px in rgb.chunks_exact(3) {
        for c in 0..3 {
            sums[c] += px[c] as u64;
        }
    }
    let n = (rgb.len() / 3).max(1) as f64;
    sums.map(|s| (s as f64 / n * 1000.0).round() / 1000.0)
}

impl Process for FrameStats {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            let Some(f) = item.as_frame() else {
                return Err(NodeError::input(format!(
                    "node `{}`: expected frames, got {}",
                    out.node_id(),
                    item.describe()
                )));
            };
            // The left half of every row: it changes as the test pattern's bars scroll.
            let row = f.width as usize * 3;
            let half = f.width as usize / 2 * 3;
            let left: Vec<u8> = f
                .data
                .chunks_exact(row)
                .flat_map(|r| &r[..half])
                .copied()
                .collect();
            let record = json!({
                "index": f.index,
                "pts": f.pts,
                "mean": channel_means(&f.data),
                "left": channel_means(&left),
            });
            out.emit(0, Payload::record(record))?;
        }
        Ok(())
    }
}

/// The built-in kinds plus this plugin's.
pub fn registry() -> Registry {
    let mut registry = vidflow_nodes::registry();
    registry.register(brightness_kind());
    registry.register(frame_stats_kind());
    registry
}

/// Loads [`GRAPH`] with `output` and the `name=value` overrides, runs it, prints the summary,
/// and returns the exit code.
pub fn run(output: &str, sets: &[String]) -> ExitCode {
    let registry = registry();
    let mut args = vec![format!("output={output}")];
    args.extend(sets.iter().cloned());
    let overrides = match vidflow_engine::parse_overrides(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let source = SourceFile::new("custom_node.yaml", GRAPH.to_string());
    let graph = match vidflow_engine::check_source(source, &registry, &overrides, Mode::Run) {
        Ok(g) => g,
        Err(e) => {
            eprint!("{}", e.render());
            return ExitCode::from(1);
        }
    };
    let report = exec::run(&Plan::new(&graph), RunOptions::default());
    eprint!("{}", progress::summary(&report));
    match &report.failure {
        Some(f) => {
            eprintln!("error: {f}");
            ExitCode::from(if matches!(f.error, NodeError::Input(_)) {
                1
            } else {
                2
            })
        }
        None if report.interrupted => ExitCode::from(2),
        None => {
            println!("wrote {output}");
            ExitCode::SUCCESS
        }
    }
}

#[allow(dead_code)] // the test includes this file as a module and calls `run`
fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let output = args
        .next()
        .unwrap_or_else(|| "out/custom_node.jsonl".into());
    let sets: Vec<String> = args.collect();
    run(&output, &sets)
}

/// Unit tests of the two kinds with the engine's harness (`vidflow_engine::testing`, cargo
/// feature `testing`): no graph file, no run, the node called directly.
#[cfg(test)]
mod tests {
    use super::*;
    use vidflow_engine::testing::NodeTest;

    fn frame(index: u64, data: Vec<u8>) -> Payload {
        let rate = vidflow_engine::Rate::new(25, 1);
        Payload::Frame(Frame::new(index, index as f64 / 25.0, rate, 2, 1, data))
    }

    #[test]
    fn brightness_scales_every_value_and_keeps_the_frame_index() {
        let mut node = NodeTest::new(&brightness_kind())
            .param("gain", 2.0)
            .build()
            .expect("valid params");
        let out = node
            .process("items", vec![frame(7, vec![0, 10, 100, 200, 255, 1])])
            .expect("processed");
        let frames = out.on("frames");
        assert_eq!(frames.len(), 1);
        let f = frames[0].as_frame().expect("a frame");
        assert_eq!(f.index, 7);
        assert_eq!(&f.data[..], &[0, 20, 200, 255, 255, 2]);
    }

    #[test]
    fn brightness_rejects_a_gain_out_of_range_before_building() {
        let problems = NodeTest::new(&brightness_kind())
            .param("gain", 20.0)
            .check();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("out of range"), "{problems:?}");
        assert!(
            NodeTest::new(&brightness_kind())
                .param("gain", 20.0)
                .build()
                .is_err()
        );
    }

    #[test]
    fn frame_stats_measures_each_channel() {
        let mut node = NodeTest::new(&frame_stats_kind())
            .build()
            .expect("no params");
        let out = node
            .process("items", vec![frame(0, vec![10, 20, 30, 50, 60, 70])])
            .expect("processed");
        let records = out.on("records");
        let Some(Payload::Record(r)) = records.first() else {
            panic!("one record expected, got {records:?}");
        };
        assert_eq!(r["mean"], json!([30.0, 40.0, 50.0]));
        assert_eq!(r["left"], json!([10.0, 20.0, 30.0]));
    }
}
