//! The travel pipeline run by the engine: `graphs/travel.yaml` end to end on keyframe images
//! made here (with `encode` replaced by an in-memory sink, so no FFmpeg is needed), the
//! fallback of a failing batch through split and stitch, bad input, and `vidflow plan`'s
//! report (text, JSON, picture).

use crate::common::{assert_ok, load, psnr, read_records, temp_dir};
use image::RgbImage;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{LazyLock, Mutex};
use vidflow_engine::Emitter;
use vidflow_engine::check::Mode;
use vidflow_engine::exec;
use vidflow_engine::{
    Frame, Input, NodeError, NodeKind, ParamSpec, ParamType, Payload, PortType, Process, Registry,
    Runtime, SourceFile, check_source, parse_overrides,
};
use vidflow_nodes::travel::guides::{Fit, load_keyframe};
use vidflow_nodes::travel::plan::{Plan, PlanSpec};

/// What the in-memory sinks received, by their `path` param.
static STORE: LazyLock<Mutex<HashMap<String, Vec<Payload>>>> = LazyLock::new(Default::default);

struct Collect {
    key: String,
}

impl Process for Collect {
    fn process(&mut self, input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
        STORE
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default()
            .extend(input.items);
        Ok(())
    }
}

/// A sink named `name` that keeps what it gets under its `path` param.
fn collector(name: &'static str, port: &'static str) -> NodeKind {
    NodeKind::new(name, "test sink: keeps items in memory", |ctx| {
        Ok(Runtime::Process(Box::new(Collect {
            key: ctx.params.parse::<String>("path")?,
        })))
    })
    .input(port, PortType::ANY, "items")
    .param(ParamSpec::required("path", ParamType::Path, "key"))
}

fn registry() -> Registry {
    let mut r = vidflow_nodes::registry();
    // `encode` as an in-memory sink (input `frames`, param `path`): no FFmpeg needed.
    r.register(collector("encode", "frames"));
    r.register(collector("collect", "items"));
    r
}

fn taken(key: &str) -> Vec<Payload> {
    STORE.lock().unwrap().remove(key).unwrap_or_default()
}

fn frames(items: &[Payload]) -> Vec<Frame> {
    items.iter().filter_map(|p| p.as_frame().cloned()).collect()
}

fn records(items: &[Payload]) -> Vec<serde_json::Value> {
    items
        .iter()
        .filter_map(|p| p.as_record().cloned())
        .collect()
}

/// Writes `n` keyframe images of `w`x`h` (distinct gradients with a moving square), PNG or
/// JPEG by extension; returns their paths.
fn keyframes(dir: &Path, n: usize, w: u32, h: u32, ext: &str) -> Vec<String> {
    (0..n)
        .map(|k| {
            let img = RgbImage::from_fn(w, h, |x, y| {
                let inside = x / 8 == (k as u32 * 2) % (w / 8) && y / 8 == 1;
                let c = [
                    (x * 255 / w) as u8 ^ (k as u8).wrapping_mul(60),
                    (y * 255 / h) as u8,
                    (k as u8).wrapping_mul(70).wrapping_add(40),
                ];
                image::Rgb(if inside {
                    [255 - c[0], 255 - c[1], 255]
                } else {
                    c
                })
            });
            let path = dir.join(format!("key{k}.{ext}"));
            img.save(&path).unwrap();
            path.to_string_lossy().into_owned()
        })
        .collect()
}

fn yaml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn travel_yaml() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs/travel.yaml");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn travel_graph_runs_end_to_end() {
    let dir = temp_dir("e2e");
    let keys = keyframes(&dir, 4, 120, 90, "png");
    let output = dir.join("travel.mp4").to_string_lossy().into_owned();
    // Smaller than the graph's 832x480 so RIFE (the graph's generator) stays quick in tests.
    let sets = vec![
        format!("keyframes={}", yaml_list(&keys)),
        format!("output={output}"),
        "width=224".to_string(),
        "height=128".to_string(),
    ];
    let registry = registry();
    let graph = load("graphs/travel.yaml", &travel_yaml(), &sets, &registry);
    let report = exec::run(&graph, exec::RunOptions::default());
    assert_ok(&report);
    // Progress totals, announced before the work: the generator's video frames and report
    // records, and split's segments (overlap frames counted in both segments).
    let node = |id: &str| report.nodes.iter().find(|n| n.id == id).unwrap();
    let generate = node("generate");
    assert_eq!(generate.total, Some(71 + 2));
    assert_eq!(generate.items_out, 71 + 2);
    assert!(generate.port_totals.contains(&(0, 71)), "{generate:?}");
    assert_eq!(node("split").total, Some(79));
    assert_eq!(node("split").items_out, 79);

    let video = frames(&taken(&output));
    // segment_frames [25, 29, 25], overlaps [4, 4]: 79 - 8 frames.
    assert_eq!(video.len(), 71);
    for (t, f) in video.iter().enumerate() {
        assert_eq!(f.index, t as u64);
        assert_eq!((f.width, f.height), (224, 128));
    }
    // Keyframes at 0, 21, 46 and the last frame, 70: each matches its image.
    for (k, at) in [(0, 0), (1, 21), (2, 46), (3, 70)] {
        let want = load_keyframe(&keys[k], 224, 128, Fit::Cover).unwrap();
        let p = psnr(&video[at].data, &want);
        assert!(p > 35.0, "keyframe {k} at frame {at}: PSNR {p:.1} dB");
    }
    // The batch report went beside the output.
    let lines = read_records(Path::new(&format!("{output}.report.jsonl")));
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(lines[0]["type"], "batch");
    assert_eq!(lines[0]["segments"], serde_json::json!([0, 1, 2]));
    assert_eq!(lines[1]["type"], "summary");
    assert_eq!(lines[1]["model_calls"], 1);
    assert_eq!(lines[1]["fell_back"], serde_json::json!([]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// planner → mask → blend → split → stitch → sink, with tiny frames.
fn small_graph(keys: &[String], extra_blend: &str, tag: &str) -> String {
    format!(
        r#"name: travel-small
nodes:
  - id: planner
    kind: batch-planner
    params:
      keyframes: {keys}
      segment_frames: [12, 14, 12, 10, 16, 12]
      overlaps: [3, 2, 4, 2, 3]
      prompts: [A, A, A, B, B, B]
      max_frames: 81
  - id: mask
    kind: mask
    params: {{ width: 32, height: 18, rate: 16 }}
    inputs: {{ plan: planner.plan }}
  - id: generate
    kind: blend
    params: {{ retries: 1{extra_blend} }}
    inputs: {{ guides: mask.guides }}
  - id: split
    kind: split
    params: {{ segment_frames: [12, 14, 12, 10, 16, 12], overlaps: [3, 2, 4, 2, 3] }}
    inputs: {{ frames: generate.frames }}
  - id: stitch
    kind: stitch
    params: {{ overlaps: [3, 2, 4, 2, 3] }}
    inputs: {{ frames: split.frames }}
  - id: video
    kind: collect
    params: {{ path: {tag}/video }}
    inputs: {{ items: stitch.frames }}
  - id: generated
    kind: collect
    params: {{ path: {tag}/generated }}
    inputs: {{ items: generate.frames }}
  - id: report
    kind: collect
    params: {{ path: {tag}/report }}
    inputs: {{ items: generate.report }}
  - id: guides
    kind: collect
    params: {{ path: {tag}/guides }}
    inputs: {{ items: mask.frames }}
"#,
        keys = yaml_list(keys)
    )
}

const SMALL_T: usize = 76 - 14;

#[test]
fn a_failing_batch_falls_back_and_the_video_is_still_complete() {
    let dir = temp_dir("fallback");
    let keys = keyframes(&dir, 7, 48, 48, "jpg");
    let registry = registry();
    let graph = load(
        "fallback.yaml",
        &small_graph(&keys, ", fail_batches: [1]", "fallback"),
        &[],
        &registry,
    );
    let report = exec::run(&graph, exec::RunOptions::default());
    assert_ok(&report);

    let plan = Plan::new(
        PlanSpec::counts(&[12, 14, 12, 10, 16, 12], &[3, 2, 4, 2, 3])
            .with_prompts(&["A", "A", "A", "B", "B", "B"]),
    )
    .unwrap();
    assert_eq!(plan.batches.len(), 2);
    let video = frames(&taken("fallback/video"));
    let generated = frames(&taken("fallback/generated"));
    assert_eq!(video.len(), SMALL_T);
    assert_eq!(generated.len(), SMALL_T);
    // Stitching identical overlaps changes nothing: the video is the generated frames.
    for (a, b) in video.iter().zip(&generated) {
        assert!(psnr(&a.data, &b.data) > 45.0, "frame {}", a.index);
    }
    // Batch 1 (segments 3-5) was made by its segments one by one; batch 0 was not redone.
    let b1 = &plan.batches[1].call;
    for f in &generated {
        let meta = f.meta.as_ref().unwrap();
        let from_b1 = f.index >= b1.start + b1.continues;
        assert_eq!(meta["batch"], if from_b1 { 1 } else { 0 });
        assert_eq!(meta["fallback"], from_b1, "frame {}", f.index);
    }
    for kf in &plan.keyframes {
        let want = load_keyframe(&keys[kf.index], 32, 18, Fit::Cover).unwrap();
        assert_eq!(
            generated[kf.frame as usize].data.as_slice(),
            want.as_slice()
        );
        assert!(psnr(&video[kf.frame as usize].data, &want) > 35.0);
    }
    let reports = records(&taken("fallback/report"));
    assert_eq!(reports.len(), 3);
    assert_eq!(reports[0]["fell_back"], false);
    assert_eq!(reports[0]["model_calls"], 1);
    assert_eq!(reports[1]["fell_back"], true);
    assert_eq!(reports[1]["model_calls"], 4);
    assert_eq!(reports[1]["attempts"], 5);
    assert!(
        reports[1]["error"]
            .as_str()
            .unwrap()
            .contains("batch 1 failed on purpose")
    );
    assert_eq!(reports[2]["type"], "summary");
    assert_eq!(reports[2]["fell_back"], serde_json::json!([1]));
    assert_eq!(reports[2]["model_calls"], 5);

    // The guide frames: one per model frame, tagged.
    let guides = frames(&taken("fallback/guides"));
    let model_frames: u64 = plan.batches.iter().map(|b| b.call.model_frames).sum();
    assert_eq!(guides.len() as u64, model_frames);
    let kf_guides = guides
        .iter()
        .filter(|g| g.meta.as_ref().unwrap()["role"] == "keyframe")
        .count();
    // Keyframe 3 starts batch 1 and, inside the overlap, is also in batch 0's window.
    let in_windows: usize = plan
        .batches
        .iter()
        .map(|b| {
            b.call
                .keyframes
                .iter()
                .filter(|k| k.local < b.call.frames)
                .count()
        })
        .sum();
    assert_eq!((kf_guides, in_windows), (8, 8));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_failures_the_same_graph_makes_two_calls() {
    let dir = temp_dir("nofail");
    let keys = keyframes(&dir, 7, 32, 18, "png");
    let registry = registry();
    let graph = load("ok.yaml", &small_graph(&keys, "", "nofail"), &[], &registry);
    let report = exec::run(&graph, exec::RunOptions::default());
    assert_ok(&report);
    assert_eq!(frames(&taken("nofail/video")).len(), SMALL_T);
    let reports = records(&taken("nofail/report"));
    assert_eq!(reports.last().unwrap()["model_calls"], 2);
    for key in ["nofail/generated", "nofail/guides"] {
        taken(key);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_keyframe_is_an_input_error_naming_the_file() {
    let dir = temp_dir("missing");
    let mut keys = keyframes(&dir, 7, 32, 18, "png");
    keys[5] = dir.join("nope.png").to_string_lossy().into_owned();
    let registry = registry();
    let graph = load(
        "missing.yaml",
        &small_graph(&keys, "", "missing"),
        &[],
        &registry,
    );
    let report = exec::run(&graph, exec::RunOptions::default());
    let failure = report.failure.expect("the run fails");
    assert_eq!(failure.node, "mask");
    assert!(matches!(failure.error, NodeError::Input(_)));
    let msg = failure.error.to_string();
    assert!(msg.contains("keyframe 5: cannot open"), "{msg}");
    assert!(msg.contains("nope.png"), "{msg}");
    for key in ["video", "generated", "report", "guides"] {
        taken(&format!("missing/{key}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_reports_counts_that_do_not_fit() {
    let registry = vidflow_nodes::registry();
    let text = r#"name: bad
nodes:
  - id: planner
    kind: batch-planner
    params:
      keyframes: [a.png, b.png, c.png]
      segment_frames: [20, 90]
      overlaps: [25]
  - id: sink
    kind: null
    inputs: { items: planner.plan }
"#;
    let err = check_source(
        SourceFile::new("bad.yaml", text),
        &registry,
        &[],
        Mode::Check,
    )
    .expect_err("invalid");
    let out = err.render();
    assert!(out.contains("segment 0 has 20 frames, but overlaps 0 (before) and 25 (after) leave it none of its own"), "{out}");
    assert!(
        out.contains("segment 1 has 90 frames, more than max_frames 81"),
        "{out}"
    );
    assert!(out.contains("bad.yaml:7:"), "{out}");
}

#[test]
fn plan_report_needs_only_the_counts() {
    let registry = vidflow_nodes::registry();
    // Keyframes that do not exist: text and JSON never open them.
    let sets = vec![
        "keyframes=[/nowhere/a.png, /nowhere/b.png, /nowhere/c.png, /nowhere/d.png]".to_string(),
        "segment_frames=[24, 41, 17]".into(),
        "overlaps=0".into(),
        "max_frames=65".into(),
    ];
    let overrides = parse_overrides(&sets).unwrap();
    let graph = check_source(
        SourceFile::new("graphs/travel.yaml", travel_yaml()),
        &registry,
        &overrides,
        Mode::Check,
    )
    .unwrap_or_else(|e| panic!("{}", e.render()));
    let json =
        vidflow_nodes::travel::plan_report(&vidflow_engine::Plan::new(&graph), true, None).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["total_frames"], 82);
    assert_eq!(v["model_calls_before"], 3);
    assert_eq!(v["model_calls_after"], 2);
    assert_eq!(
        v["batches"],
        serde_json::json!([
            {"start": 0, "frames": 65, "keyframes": [0, 1, 2], "segments": [0, 1]},
            {"start": 65, "frames": 17, "keyframes": [2, 3], "segments": [2]},
        ])
    );
    let m = &v["mask"];
    let sum = m["anchored"].as_u64().unwrap()
        + m["transition"].as_u64().unwrap()
        + m["free"].as_u64().unwrap();
    assert_eq!(sum, 82);

    let text = vidflow_nodes::travel::plan_report(&vidflow_engine::Plan::new(&graph), false, None)
        .unwrap();
    assert!(text.contains("batch-planner `planner`: 4 keyframes, 3 segments, 82 frames"));
    assert!(
        text.contains("model calls: 3 before, 2 after (1.5× fewer)"),
        "{text}"
    );
    assert!(
        text.contains(
            "but their 82 frames exceed max_frames 65: packed into 2 calls of 65, 17 frames"
        ),
        "{text}"
    );
    assert!(text.contains("keyframe 2 after it"), "{text}");
}

#[test]
fn plan_report_draws_a_picture() {
    let dir = temp_dir("png");
    let keys = keyframes(&dir, 4, 64, 36, "png");
    let registry = vidflow_nodes::registry();
    let sets = vec![format!("keyframes={}", yaml_list(&keys))];
    let overrides = parse_overrides(&sets).unwrap();
    let graph = check_source(
        SourceFile::new("graphs/travel.yaml", travel_yaml()),
        &registry,
        &overrides,
        Mode::Check,
    )
    .unwrap_or_else(|e| panic!("{}", e.render()));
    let png = dir.join("plan.png");
    let text =
        vidflow_nodes::travel::plan_report(&vidflow_engine::Plan::new(&graph), false, Some(&png))
            .unwrap();
    assert!(text.contains("wrote the plan picture to"), "{text}");
    assert!(!text.contains("no thumbnail"), "{text}");
    let img = image::open(&png).unwrap().to_rgb8();
    assert!(img.width() > 71 && img.height() > 50);
    // The keyframe colour (anchored) and a thumbnail pixel are in it.
    let green = image::Rgb([30, 150, 70]);
    assert!(img.pixels().any(|p| *p == green));
    let thumb = load_keyframe(&keys[1], 64, 36, Fit::Cover).unwrap();
    let corner = image::Rgb([thumb[0], thumb[1], thumb[2]]);
    assert!(img.pixels().any(|p| *p == corner));
    // Missing keyframes are drawn as crossed boxes, and said.
    let sets = vec![
        "keyframes=[/nowhere/a.png, /nowhere/b.png, /nowhere/c.png, /nowhere/d.png]".to_string(),
    ];
    let graph = check_source(
        SourceFile::new("graphs/travel.yaml", travel_yaml()),
        &registry,
        &parse_overrides(&sets).unwrap(),
        Mode::Check,
    )
    .unwrap();
    let text =
        vidflow_nodes::travel::plan_report(&vidflow_engine::Plan::new(&graph), false, Some(&png))
            .unwrap();
    assert!(
        text.contains("(no thumbnail: cannot open `/nowhere/a.png`"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plan_report_without_a_planner_says_so() {
    let registry = vidflow_nodes::registry();
    let text = "name: none\nnodes:\n  - id: src\n    kind: testsrc\n  - id: sink\n    kind: null\n    inputs: { items: src.frames }\n";
    let graph = check_source(
        SourceFile::new("none.yaml", text),
        &registry,
        &[],
        Mode::Check,
    )
    .unwrap();
    let err = vidflow_nodes::travel::plan_report(&vidflow_engine::Plan::new(&graph), false, None)
        .unwrap_err();
    assert!(err.contains("has no `batch-planner` node"), "{err}");
}
