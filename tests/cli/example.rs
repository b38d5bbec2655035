//! The Rust plugin example (examples/custom_node.rs) run as a library: its own node kinds are
//! registered, its embedded graph is checked and run, and the JSON lines it writes must be what
//! its `brightness` and `frame-stats` nodes compute on `testsrc` frames.

#[allow(dead_code)] // `main` is the example's; the test calls `run`.
#[path = "../../examples/custom_node.rs"]
mod custom_node;

use crate::common::{TmpDir, read_jsonl};
use std::process::ExitCode;
use vidflow_nodes::kinds::testsrc::pattern;

fn tmp(name: &str) -> TmpDir {
    crate::common::tmp("example", name)
}

/// Means of each channel of testsrc frame `i` (60x34 at 25 fps) after a gain, over the whole
/// frame and over the left half of each row: computed here independently of the example.
fn expected_means(i: u64, gain: f64) -> ([f64; 3], [f64; 3]) {
    let (w, h) = (60usize, 34usize);
    let data = pattern(w as u32, h as u32, i, 25.0);
    let (mut all, mut left) = ([0f64; 3], [0f64; 3]);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = (data[(y * w + x) * 3 + c] as f64 * gain).round().min(255.0);
                all[c] += v;
                if x < w / 2 {
                    left[c] += v;
                }
            }
        }
    }
    (
        all.map(|s| s / (w * h) as f64),
        left.map(|s| s / (w / 2 * h) as f64),
    )
}

fn check_output(path: &std::path::Path, frames: u64, gain: f64) {
    let got = read_jsonl(path);
    assert_eq!(got.len() as u64, frames);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r["index"], i as u64);
        assert!((r["pts"].as_f64().unwrap() - i as f64 / 25.0).abs() < 1e-9);
        let (want_all, want_left) = expected_means(i as u64, gain);
        for (field, want) in [("mean", want_all), ("left", want_left)] {
            let got = r[field]
                .as_array()
                .unwrap_or_else(|| panic!("{field} is a list: {r}"));
            for c in 0..3 {
                let m = got[c].as_f64().unwrap();
                assert!(
                    (m - want[c]).abs() < 0.001,
                    "frame {i} {field} channel {c}: {m} vs {}",
                    want[c]
                );
            }
        }
    }
}

#[test]
fn example_runs_its_plugin_nodes_and_writes_their_results() {
    let dir = tmp("run");
    let out = dir.join("stats.jsonl");
    let code = custom_node::run(
        out.to_str().unwrap(),
        &["gain=1.5".into(), "frames=30".into()],
    );
    assert_eq!(code, ExitCode::SUCCESS);
    check_output(&out, 30, 1.5);
    // The left half differs from frame to frame as the bars scroll.
    let left: std::collections::HashSet<String> = read_jsonl(&out)
        .iter()
        .map(|r| r["left"].to_string())
        .collect();
    assert!(left.len() > 1, "{left:?}");

    // Defaults of the embedded graph: 10 frames, gain 1.25. A gain that saturates is clamped.
    let code = custom_node::run(out.to_str().unwrap(), &[]);
    assert_eq!(code, ExitCode::SUCCESS);
    check_output(&out, 10, 1.25);
    let code = custom_node::run(out.to_str().unwrap(), &["gain=4".into(), "frames=2".into()]);
    assert_eq!(code, ExitCode::SUCCESS);
    check_output(&out, 2, 4.0);
}

#[test]
fn example_rejects_a_bad_gain_and_a_missing_folder() {
    let dir = tmp("bad");
    let out = dir.join("stats.jsonl");
    // Out of the declared range 0..=16: the checker rejects it before anything runs.
    assert_eq!(
        custom_node::run(out.to_str().unwrap(), &["gain=20".into()]),
        ExitCode::from(1)
    );
    assert!(!out.exists());
    let missing = dir.join("no-such-folder").join("stats.jsonl");
    assert_eq!(
        custom_node::run(missing.to_str().unwrap(), &[]),
        ExitCode::from(1)
    );
}

#[test]
fn plugin_kinds_sit_beside_the_built_in_ones() {
    let registry = custom_node::registry();
    for kind in ["brightness", "frame-stats", "testsrc", "jsonl", "exec"] {
        assert!(registry.get(kind).is_some(), "{kind} is registered");
    }
    let page = vidflow_engine::catalog::describe(registry.get("brightness").unwrap());
    assert!(
        page.contains("gain") && page.contains("default 1.0"),
        "{page}"
    );
    assert_eq!(custom_node::scale(200, 1.5), 255);
    assert_eq!(custom_node::scale(100, 0.5), 50);
}
