//! The `exec` node end to end: graphs are checked and run by the engine with the built-in
//! registry plus a `collect` sink that keeps what reaches it, so frames and records coming out
//! of the external command can be compared byte for byte.

use crate::common::assert_ok;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vidflow_engine::Emitter;
use vidflow_engine::exec::{self, RunOptions, RunReport, StopFlag};
use vidflow_engine::{
    Frame, Input, Mode, NodeError, NodeKind, Payload, PortType, Process, Rate, Runtime, Source,
    SourceFile,
};
use vidflow_nodes::kinds::testsrc::pattern;

type Kept = Arc<Mutex<Vec<Payload>>>;

struct Collect(Kept);

impl Process for Collect {
    fn process(&mut self, input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
        self.0.lock().unwrap().extend(input.items);
        Ok(())
    }
}

fn collector(kept: Kept) -> NodeKind {
    NodeKind::new("collect", "Keeps every item (tests only).", move |_| {
        Ok(Runtime::Process(Box::new(Collect(kept.clone()))))
    })
    .input("items", PortType::ANY, "anything")
}

/// A source of three 2x2 frames annotated with `{"segment": i}`.
struct MetaSrc;

impl Source for MetaSrc {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for i in 0..3u64 {
            let mut f = Frame::new(
                10 + i,
                i as f64 * 0.5,
                Rate::new(2, 1),
                2,
                2,
                vec![i as u8; 12],
            );
            f.meta = Some(Arc::new(serde_json::json!({"segment": i})));
            out.emit(0, Payload::Frame(f))?;
        }
        Ok(())
    }
}

/// Checks and runs `yaml`; returns the report and what reached the `collect` nodes.
fn run_with(yaml: &str, stop: StopFlag) -> (RunReport, Vec<Payload>) {
    let kept: Kept = Arc::default();
    let mut registry = vidflow_nodes::registry();
    registry.register(collector(kept.clone()));
    registry.register(
        NodeKind::new("metasrc", "Annotated frames (tests only).", |_| {
            Ok(Runtime::Source(Box::new(MetaSrc)))
        })
        .output("frames", PortType::FRAMES, "frames"),
    );
    let graph = vidflow_engine::check_source(
        SourceFile::new("test.yaml", yaml.to_string()),
        &registry,
        &[],
        Mode::Run,
    )
    .unwrap_or_else(|e| panic!("graph does not check:\n{}", e.render()));
    let report = exec::run(
        &graph,
        RunOptions {
            stop,
            ..Default::default()
        },
    );
    let items = std::mem::take(&mut *kept.lock().unwrap());
    (report, items)
}

fn run(yaml: &str) -> (RunReport, Vec<Payload>) {
    run_with(yaml, StopFlag::new())
}

/// The failure of a run that must fail, as (node, message, is an input error).
fn failure(report: &RunReport) -> (String, String, bool) {
    let f = report
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("the run should fail: {report:?}"));
    assert!(!f.panicked, "a node panicked: {f}");
    (
        f.node.clone(),
        f.error.to_string(),
        matches!(f.error, NodeError::Input(_)),
    )
}

fn frames(items: &[Payload]) -> Vec<&vidflow_engine::Frame> {
    items
        .iter()
        .map(|p| p.as_frame().expect("a frame"))
        .collect()
}

/// testsrc → exec(`command`) → collect, frames `w`x`h` at 10 fps.
fn filter_graph(w: u32, h: u32, count: u64, exec_params: &str) -> String {
    format!(
        "name: t
nodes:
  - id: src
    kind: testsrc
    params: {{ width: {w}, height: {h}, count: {count}, rate: 10 }}
  - id: f
    kind: exec
    params:
{exec_params}
    inputs: {{ items: src.frames }}
  - id: out
    kind: collect
    inputs: {{ items: f.frames }}
"
    )
}

/// exec as a source → collect (from `port`).
fn source_graph(exec_params: &str, port: &str) -> String {
    format!(
        "name: t
nodes:
  - id: s
    kind: exec
    params:
{exec_params}
  - id: out
    kind: collect
    inputs: {{ items: s.{port} }}
"
    )
}

#[test]
fn frames_round_trip_through_cat_unchanged() {
    // Small frames (many per pipe buffer) and large ones (several pipe buffers per frame).
    for (w, h, count) in [(16u32, 8u32, 40u64), (640, 360, 12)] {
        let (report, items) = run(&filter_graph(w, h, count, "      command: [cat]"));
        assert_ok(&report);
        let got = frames(&items);
        assert_eq!(got.len() as u64, count, "{w}x{h}: every frame comes back");
        for (i, f) in got.iter().enumerate() {
            assert_eq!(f.index, i as u64);
            assert!(
                (f.pts - i as f64 / 10.0).abs() < 1e-9,
                "pts of frame {i}: {}",
                f.pts
            );
            assert_eq!(f.rate, Rate::new(10, 1));
            assert_eq!((f.width, f.height), (w, h));
            assert!(
                *f.data == pattern(w, h, i as u64, 10.0),
                "{w}x{h}: frame {i} changed on its way through cat"
            );
        }
        let node = report.node("f").unwrap();
        assert_eq!((node.items_in, node.items_out), (count, count));
    }
}

#[test]
fn string_command_runs_through_sh() {
    let (report, items) = run(&filter_graph(8, 4, 5, "      command: \"cat | cat\""));
    assert_ok(&report);
    let got = frames(&items);
    assert_eq!(got.len(), 5);
    assert!(*got[4].data == pattern(8, 4, 4, 10.0));
}

const INVERT: &str = "      command:
        - python3
        - -c
        - |
          import sys
          table = bytes(range(255, -1, -1))
          while chunk := sys.stdin.buffer.read(1 << 16):
              sys.stdout.buffer.write(chunk.translate(table))";

#[test]
fn python_filter_changes_pixels() {
    let (report, items) = run(&filter_graph(32, 16, 10, INVERT));
    assert_ok(&report);
    let got = frames(&items);
    assert_eq!(got.len(), 10);
    for (i, f) in got.iter().enumerate() {
        let expected: Vec<u8> = pattern(32, 16, i as u64, 10.0)
            .iter()
            .map(|b| 255 - b)
            .collect();
        assert_eq!(f.index, i as u64);
        assert!(*f.data == expected, "frame {i} is not inverted");
    }
}

#[test]
fn filter_that_multiplies_frames_does_not_deadlock() {
    // Eight large output frames per input: far more than the queues and the pipe hold, so
    // the node must keep reading the command's output while it still writes the input.
    let params = "      timeout_s: 20
      command:
        - python3
        - -c
        - |
          import sys
          n = 256 * 256 * 3
          while frame := sys.stdin.buffer.read(n):
              for _ in range(8):
                  sys.stdout.buffer.write(frame)";
    let started = Instant::now();
    let (report, items) = run(&filter_graph(256, 256, 6, params));
    assert_ok(&report);
    assert!(started.elapsed() < Duration::from_secs(15));
    let got = frames(&items);
    assert_eq!(got.len(), 48);
    // Output frame k takes input k's stamp; the frames beyond the inputs continue at the rate.
    let indices: Vec<u64> = got.iter().map(|f| f.index).collect();
    assert_eq!(indices, (0..48).collect::<Vec<u64>>());
    assert!(*got[8].data == pattern(256, 256, 1, 10.0));
}

#[test]
fn jsonl_records_through_a_python_script() {
    let yaml = "name: t
nodes:
  - id: src
    kind: testsrc
    params: { width: 8, height: 6, count: 7, rate: 5 }
  - id: f
    kind: exec
    params:
      format: jsonl
      command:
        - python3
        - -c
        - |
          import sys, json
          for line in sys.stdin:
              r = json.loads(line)
              print(json.dumps({'index': r['index'], 'area': r['width'] * r['height'], 'ms': round(r['pts'] * 1000)}), flush=True)
    inputs: { items: src.frames }
  - id: out
    kind: collect
    inputs: { items: f.records }
";
    let (report, items) = run(yaml);
    assert_ok(&report);
    let records: Vec<&serde_json::Value> = items
        .iter()
        .map(|p| p.as_record().expect("a record"))
        .collect();
    assert_eq!(records.len(), 7);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            **r,
            serde_json::json!({"index": i, "area": 48, "ms": i * 200})
        );
    }
}

#[test]
fn records_in_records_out_between_two_exec_nodes() {
    let yaml = "name: t
nodes:
  - id: gen
    kind: exec
    params:
      format: jsonl
      command: [python3, -c, \"import json\\nfor i in range(4): print(json.dumps({'n': i}))\"]
  - id: sq
    kind: exec
    params:
      format: jsonl
      command: [python3, -c, \"import sys, json\\nfor l in sys.stdin: n = json.loads(l)['n']; print(json.dumps({'n': n, 'sq': n * n}))\"]
    inputs: { items: gen.records }
  - id: out
    kind: collect
    inputs: { items: sq.records }
";
    let (report, items) = run(yaml);
    assert_ok(&report);
    let got: Vec<serde_json::Value> = items
        .iter()
        .map(|p| p.as_record().unwrap().clone())
        .collect();
    let want: Vec<serde_json::Value> = (0..4)
        .map(|n| serde_json::json!({"n": n, "sq": n * n}))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn exec_source_produces_frames_of_declared_size() {
    let params = "      width: 6
      height: 4
      rate: 8
      command: [python3, -c, \"import sys\\nfor i in range(5): sys.stdout.buffer.write(bytes([i * 10]) * 72)\"]";
    let (report, items) = run(&source_graph(params, "frames"));
    assert_ok(&report);
    let got = frames(&items);
    assert_eq!(got.len(), 5);
    for (i, f) in got.iter().enumerate() {
        assert_eq!((f.width, f.height), (6, 4));
        assert_eq!(f.index, i as u64);
        assert!((f.pts - i as f64 / 8.0).abs() < 1e-9);
        assert_eq!(f.rate, Rate::new(8, 1));
        assert!(
            f.data.iter().all(|&b| b == i as u8 * 10),
            "frame {i} content"
        );
    }
}

#[test]
fn exec_source_produces_json_lines() {
    let params = "      format: jsonl
      command: \"printf '{\\\"a\\\": 1}\\\\n\\\\n{\\\"a\\\": 2, \\\"b\\\": [true]}\\\\n'\"";
    let (report, items) = run(&source_graph(params, "records"));
    assert_ok(&report);
    let got: Vec<serde_json::Value> = items
        .iter()
        .map(|p| p.as_record().unwrap().clone())
        .collect();
    assert_eq!(
        got,
        vec![
            serde_json::json!({"a": 1}),
            serde_json::json!({"a": 2, "b": [true]})
        ]
    );
}

#[test]
fn a_line_that_is_not_json_is_an_error() {
    let params = "      format: jsonl
      command: \"echo '{\\\"ok\\\": 1}'; echo 'not json at all'\"";
    let (report, _) = run(&source_graph(params, "records"));
    let (node, msg, _) = failure(&report);
    assert_eq!(node, "s");
    assert!(
        msg.contains("not JSON") && msg.contains("not json at all"),
        "{msg}"
    );
}

#[test]
fn command_exiting_non_zero_fails_with_its_stderr() {
    // As a filter: it reads one frame, complains and exits while input is still coming.
    let params = "      command: \"head -c 10 >/dev/null; echo 'bad things happened' >&2; exit 3\"";
    let (report, _) = run(&filter_graph(64, 64, 50, params));
    let (node, msg, _) = failure(&report);
    assert_eq!(node, "f");
    assert!(msg.contains("head -c 10"), "names the command: {msg}");
    assert!(
        msg.contains("exited with code 3"),
        "says how it exited: {msg}"
    );
    assert!(msg.contains("bad things happened"), "quotes stderr: {msg}");

    // As a filter that reads everything and fails at the end.
    let params = "      command: \"cat >/dev/null; echo 'no output for you' >&2; exit 4\"";
    let (report, _) = run(&filter_graph(8, 8, 3, params));
    let (_, msg, _) = failure(&report);
    assert!(
        msg.contains("exited with code 4") && msg.contains("no output for you"),
        "{msg}"
    );

    // As a source.
    let params = "      format: jsonl
      command: [sh, -c, \"echo '{}'; echo 'source broke' >&2; exit 5\"]";
    let (report, _) = run(&source_graph(params, "records"));
    let (node, msg, _) = failure(&report);
    assert_eq!(node, "s");
    assert!(
        msg.contains("exited with code 5") && msg.contains("source broke"),
        "{msg}"
    );
    assert!(msg.contains("sh -c"), "{msg}");
}

#[test]
fn command_that_exits_early_without_reading_its_input_fails() {
    // Exit status 0, but most frames were never read: nothing may be dropped silently.
    let (report, _) = run(&filter_graph(
        64,
        64,
        40,
        "      command: \"head -c 100 >/dev/null\"",
    ));
    let (_, msg, _) = failure(&report);
    assert!(msg.contains("before reading all its input"), "{msg}");
}

#[test]
fn hanging_filter_times_out_cleanly() {
    let started = Instant::now();
    let params = "      command: [sleep, \"30\"]\n      timeout_s: 0.5";
    let (report, _) = run(&filter_graph(16, 16, 5, params));
    let (node, msg, _) = failure(&report);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(node, "f");
    assert!(msg.contains("`sleep 30`") && msg.contains("0.5 s"), "{msg}");

    // Input large enough to fill the pipe: it fails because the command does not read.
    let started = Instant::now();
    let (report, _) = run(&filter_graph(320, 240, 20, params));
    let (_, msg, _) = failure(&report);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(msg.contains("did not read its input for 0.5 s"), "{msg}");
}

#[test]
fn hanging_source_times_out_cleanly() {
    let started = Instant::now();
    let params = "      format: jsonl\n      command: [sleep, \"30\"]\n      timeout_s: 0.5";
    let (report, _) = run(&source_graph(params, "records"));
    let (node, msg, _) = failure(&report);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(node, "s");
    assert!(
        msg.contains("`sleep 30`") && msg.contains("no output for 0.5 s"),
        "{msg}"
    );
}

#[test]
fn stopping_the_run_stops_a_silent_command_at_once() {
    // Default timeout (30 s): the stop flag, not the timeout, must end the run.
    let stop = StopFlag::new();
    let setter = stop.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        setter.stop();
    });
    let started = Instant::now();
    let (report, _) = run_with(
        &source_graph(
            "      format: jsonl\n      command: [sleep, \"30\"]",
            "records",
        ),
        stop,
    );
    t.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        report.interrupted,
        "reported as interrupted, not failed: {report:?}"
    );
    assert!(report.failure.is_none());
}

#[test]
fn partial_frame_is_an_error() {
    // 4x4 RGB24 = 48 bytes: one whole frame, then 10 bytes.
    let params = "      width: 4
      height: 4
      command: [python3, -c, \"import sys\\nsys.stdout.buffer.write(bytes(58))\"]";
    let (report, items) = run(&source_graph(params, "frames"));
    let (node, msg, _) = failure(&report);
    assert_eq!(node, "s");
    assert!(
        msg.contains("partial frame (10 of 48 bytes for 4x4"),
        "{msg}"
    );
    assert_eq!(items.len(), 1);

    // A filter that truncates its output.
    let (report, _) = run(&filter_graph(8, 8, 3, "      command: \"head -c 100\""));
    let (_, msg, _) = failure(&report);
    assert!(msg.contains("partial frame"), "{msg}");
}

#[test]
fn missing_command_is_a_clear_input_error() {
    let (report, _) = run(&filter_graph(
        8,
        8,
        3,
        "      command: [vidflow-no-such-program, --flag]",
    ));
    let (node, msg, input) = failure(&report);
    assert_eq!(node, "f");
    assert!(
        input,
        "a missing program is the user's input (exit code 1): {msg}"
    );
    assert!(
        msg.contains("cannot start `vidflow-no-such-program --flag`") && msg.contains("PATH"),
        "{msg}"
    );
    // Through `sh -c`, the shell reports it: exit code 127 and its message.
    let (report, _) = run(&filter_graph(
        8,
        8,
        3,
        "      command: vidflow-no-such-program",
    ));
    let (_, msg, _) = failure(&report);
    assert!(msg.contains("127") && msg.contains("not found"), "{msg}");
}

#[test]
fn rgb24_source_without_size_and_wrong_output_port_are_input_errors() {
    let (report, _) = run(&source_graph("      command: [cat]", "frames"));
    let (node, msg, input) = failure(&report);
    assert_eq!(node, "s");
    assert!(input && msg.contains("`width` and `height`"), "{msg}");

    let yaml = filter_graph(8, 8, 3, "      command: [cat]").replace("f.frames", "f.records");
    let (report, _) = run(&yaml);
    let (_, msg, input) = failure(&report);
    assert!(
        input && msg.contains("`records`") && msg.contains("format: rgb24"),
        "{msg}"
    );
}

#[test]
fn frame_metadata_is_carried_through() {
    // Frames from an exec source keep their stamps through a second exec node, with an
    // explicit output size different from the input's.
    let yaml = "name: t
nodes:
  - id: s
    kind: exec
    params:
      width: 2
      height: 2
      rate: 4
      command: [python3, -c, \"import sys\\nsys.stdout.buffer.write(bytes(range(36)))\"]
  - id: half
    kind: exec
    params:
      width: 1
      height: 2
      command: [python3, -c, \"import sys\\nwhile f := sys.stdin.buffer.read(12): sys.stdout.buffer.write(f[:6])\"]
    inputs: { items: s.frames }
  - id: out
    kind: collect
    inputs: { items: half.frames }
";
    let (report, items) = run(yaml);
    assert_ok(&report);
    let got = frames(&items);
    assert_eq!(got.len(), 3);
    for (i, f) in got.iter().enumerate() {
        assert_eq!((f.index, f.width, f.height), (i as u64, 1, 2));
        assert!((f.pts - i as f64 / 4.0).abs() < 1e-9);
        assert_eq!(f.rate, Rate::new(4, 1));
        let start = i as u8 * 12;
        assert_eq!(*f.data, (start..start + 6).collect::<Vec<u8>>());
    }
}

#[test]
fn frame_annotations_and_stamps_survive_the_command() {
    let yaml = "name: t
nodes:
  - id: s
    kind: metasrc
  - id: f
    kind: exec
    params: { command: [cat] }
    inputs: { items: s.frames }
  - id: out
    kind: collect
    inputs: { items: f.frames }
";
    let (report, items) = run(yaml);
    assert_ok(&report);
    let got = frames(&items);
    assert_eq!(got.len(), 3);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f.index, 10 + i as u64);
        assert!((f.pts - i as f64 * 0.5).abs() < 1e-9);
        assert_eq!(f.rate, Rate::new(2, 1));
        assert_eq!(f.meta.as_deref(), Some(&serde_json::json!({"segment": i})));
        assert_eq!(*f.data, vec![i as u8; 12]);
    }
}
