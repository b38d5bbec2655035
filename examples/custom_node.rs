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
use vidflow_engine::exec::{self, Emitter, RunOptions};
use vidflow_engine::{
    Frame, Input, Mode, NodeError, NodeKind, ParamSpec, ParamType, Payload, PortType, Process,
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

/// `brightness`: scales pixel values by `gain`.
pub fn brightness_kind() -> NodeKind {
    NodeKind::new(
        "brightness",
        "Multiplies every pixel value by `gain` (clamped to 0..=255).",
        |ctx| {
            let gain = ctx.params.f64("gain")?;
            Ok(Runtime::Process(Box::new(Brightness { gain })))
        },
    )
    .input("items", PortType::FRAMES, "frames to brighten")
    .output("frames", PortType::FRAMES, "the brightened frames")
    .param(ParamSpec::with_default(
        "gain",
        ParamType::Float {
            min: Some(0.0),
            max: Some(16.0),
        },
        1.0,
        "factor applied to every channel of every pixel",
    ))
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
    let report = exec::run(&graph, RunOptions::default());
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
