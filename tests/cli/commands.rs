//! The `vidflow` binary end to end: every subcommand, exit codes (0 ok, 1 invalid graph or
//! input, 2 runtime failure or interrupted), messages, progress modes and Ctrl-C. Graph files
//! are written to a fresh temporary folder per test.

use crate::common::{BIN, Out, TmpDir, finish, read_jsonl, vidflow_in};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tmp(name: &str) -> TmpDir {
    crate::common::tmp("cli", name)
}

/// Runs vidflow in `dir` (at most 60 s).
fn vidflow(args: &[&str], dir: &Path) -> Out {
    vidflow_in(args, dir, &[])
}

/// testsrc → jsonl, with `count` and `output` as graph params.
const LINES: &str = "name: lines
params:
  count: 5
  output: out.jsonl
nodes:
  - id: src
    kind: testsrc
    params: { width: 16, height: 8, count: \"${count}\", rate: 10 }
  - id: log
    kind: jsonl
    params: { path: \"${output}\" }
    inputs: { items: src.frames }
";

/// An unknown kind on line 4, column 11, and an unknown param on line 7, column 30.
const BAD: &str = "name: bad
nodes:
  - id: src
    kind: testsrcc
  - id: log
    kind: jsonl
    params: { path: o.jsonl, bogus: 1 }
    inputs: { items: src.frames }
";

/// testsrc → exec (`command`) → jsonl out.jsonl.
fn through(command: &str, count: u64) -> String {
    format!(
        "name: through
nodes:
  - id: src
    kind: testsrc
    params: {{ width: 16, height: 8, count: {count}, rate: 10 }}
  - id: f
    kind: exec
    params: {{ command: \"{command}\" }}
    inputs: {{ items: src.frames }}
  - id: log
    kind: jsonl
    params: {{ path: out.jsonl }}
    inputs: {{ items: f.frames }}
"
    )
}

#[test]
fn check_accepts_a_valid_graph() {
    let t = tmp("check-ok");
    let g = t.write("good.yaml", LINES);
    let o = vidflow(&["check", &g], &t);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("good.yaml: ok"), "{}", o.stderr);
}

#[test]
fn check_reports_problems_like_a_compiler() {
    let t = tmp("check-bad");
    let g = t.write("bad.yaml", BAD);
    let o = vidflow(&["check", &g], &t);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let e = &o.stderr;
    assert!(
        e.contains("bad.yaml:4:11"),
        "file:line:col of the unknown kind:\n{e}"
    );
    assert!(
        e.contains("bad.yaml:7:30"),
        "file:line:col of the unknown param:\n{e}"
    );
    assert!(e.contains("    kind: testsrcc"), "quotes the line:\n{e}");
    assert!(
        e.lines()
            .any(|l| l.trim_start().starts_with("| ") && l.contains("^^^^^^^^")),
        "a caret under the kind:\n{e}"
    );
    assert!(e.contains("did you mean `testsrc`?"), "{e}");
    assert!(o.stdout.is_empty());
}

/// Every example graph in `graphs/` passes `vidflow check`, run from the repository root as
/// the README runs them (their relative paths, e.g. shader files, resolve from there).
#[test]
fn example_graphs_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut graphs: Vec<String> = std::fs::read_dir(root.join("graphs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| format!("graphs/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    graphs.sort();
    assert!(graphs.len() >= 8, "{graphs:?}");
    let mut args = vec!["check"];
    args.extend(graphs.iter().map(String::as_str));
    let out = vidflow(&args, root);
    assert_eq!(
        out.code, 0,
        "example graphs fail `vidflow check`:\n{}",
        out.stderr
    );
    for g in &graphs {
        assert!(
            out.stderr.contains(&format!("{g}: ok")),
            "{g}: {}",
            out.stderr
        );
    }
}

#[test]
fn check_takes_several_files() {
    let t = tmp("check-many");
    let good = t.write("good.yaml", LINES);
    let good2 = t.write("good2.yaml", &LINES.replace("name: lines", "name: lines2"));
    let bad = t.write("bad.yaml", BAD);
    let o = vidflow(&["check", &good, &good2], &t);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("good.yaml: ok") && o.stderr.contains("good2.yaml: ok"));

    // One bad file among good ones: all are checked, the exit code is 1.
    let o = vidflow(&["check", &good, &bad, &good2], &t);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("good.yaml: ok") && o.stderr.contains("good2.yaml: ok"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("bad.yaml:4:11"), "{}", o.stderr);

    let o = vidflow(&["check", &good, "no-such-graph.yaml"], &t);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .contains("cannot read graph file `no-such-graph.yaml`"),
        "{}",
        o.stderr
    );

    // A command-line mistake is invalid input: 1, like `--set` without `=` (issue 17, item 12).
    let o = vidflow(&["check"], &t);
    assert_eq!(o.code, 1, "clap usage error: {}", o.stderr);
    assert!(o.stderr.contains("Usage:"), "{}", o.stderr);
    let o = vidflow(&["check", &good, "--set", "input"], &t);
    assert_eq!(o.code, 1, "--set without `=`: {}", o.stderr);
    let o = vidflow(&["check", "--help"], &t);
    assert_eq!(o.code, 0, "--help: {}", o.stderr);
}

/// Checking is linear in a list's length: a 20,000-element list on one line, and one over
/// 20,000 lines, each checked well within the 60 s limit (the line lookups behind every span
/// used to rescan the file: 4 min 47 s in a debug build for the one-line list; now 0.17 s).
#[test]
fn check_of_a_long_list_is_linear() {
    let t = tmp("check-long-list");
    let items: Vec<String> = (0..20_000).map(|i| format!("a{i}")).collect();
    let graph = |command: String| {
        format!(
            "nodes:\n  - id: src\n    kind: testsrc\n  - id: f\n    kind: exec\n    params:\n      command: {command}\n    inputs: {{ items: src.frames }}\n  - id: sink\n    kind: \"null\"\n    inputs: {{ items: f.frames }}\n"
        )
    };
    let one_line = t.write(
        "one-line.yaml",
        &graph(format!("[cat, {}]", items.join(", "))),
    );
    let block: String = items.iter().map(|i| format!("\n        - {i}")).collect();
    let many_lines = t.write("many-lines.yaml", &graph(format!("\n        - cat{block}")));
    for g in [one_line, many_lines] {
        let o = vidflow(&["check", &g], &t);
        assert_eq!(o.code, 0, "{g}: {}", o.stderr);
    }
}

#[test]
fn check_applies_overrides() {
    let t = tmp("check-set");
    let g = t.write("g.yaml", LINES);
    let o = vidflow(&["check", &g, "--set", "count=-3"], &t);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("-3"), "{}", o.stderr);
    let o = vidflow(&["check", &g, "--set", "count"], &t);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("expected `name=value`"), "{}", o.stderr);
}

#[test]
fn run_writes_one_line_per_frame() {
    let t = tmp("run");
    let g = t.write("g.yaml", LINES);
    let o = vidflow(&["run", &g, "--progress", "plain"], &t);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let got = read_jsonl(&t.path("out.jsonl"));
    assert_eq!(got.len(), 5);
    for (i, l) in got.iter().enumerate() {
        assert_eq!(l["type"], "frame");
        assert_eq!(l["index"], i as u64);
        assert_eq!(
            (l["width"].as_u64(), l["height"].as_u64()),
            (Some(16), Some(8))
        );
    }
    // The summary table, each node on a row, and the outcome.
    let e = &o.stderr;
    assert!(
        e.lines()
            .any(|l| l.starts_with("node ") && l.contains("busy")),
        "{e}"
    );
    assert!(
        e.lines()
            .any(|l| l.starts_with("src ") && l.contains("testsrc")),
        "{e}"
    );
    assert!(e.lines().any(|l| l.starts_with("finished in ")), "{e}");
    // Only the finished file is left behind.
    assert_eq!(t.files(), ["g.yaml", "out.jsonl"]);
}

#[test]
fn run_applies_set_overrides() {
    let t = tmp("run-set");
    let g = t.write("g.yaml", LINES);
    let o = vidflow(
        &[
            "run",
            &g,
            "--progress",
            "none",
            "--set",
            "count=7",
            "--set",
            "output=seven.jsonl",
        ],
        &t,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(read_jsonl(&t.path("seven.jsonl")).len(), 7);
    assert!(!t.path("out.jsonl").exists());

    // The value is YAML: a list where a number is expected is a type error, before any run.
    let o = vidflow(&["run", &g, "--set", "count=[1, 2]"], &t);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("count"), "{}", o.stderr);
    assert!(!t.path("out.jsonl").exists());

    let o = vidflow(&["run", &g, "--set", "nosuch=3"], &t);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("nosuch"), "{}", o.stderr);
}

/// Every stderr line of `--progress json` as JSON, failing the test on any other line.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{stderr}"))
        })
        .collect()
}

/// With `--progress json`, everything on stderr is JSON: check diagnostics (with file, line,
/// column, code, message, help), a missing graph file, a node failure (named once) and the
/// error after the `end` event (issue 17, item 10).
#[test]
fn json_progress_stream_is_only_json() {
    let t = tmp("run-json-only");
    let bad = t.write("bad.yaml", BAD);
    let o = vidflow(&["run", &bad, "--progress", "json"], &t);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let events = json_lines(&o.stderr);
    let unknown = events
        .iter()
        .find(|e| e["code"] == "unknown-kind")
        .expect("the unknown kind as a diagnostic event");
    assert_eq!(unknown["event"], "diagnostic");
    assert_eq!(unknown["severity"], "error");
    assert!(unknown["file"].as_str().unwrap().ends_with("bad.yaml"));
    assert_eq!(
        (unknown["line"].as_u64(), unknown["column"].as_u64()),
        (Some(4), Some(11))
    );
    assert!(unknown["message"].as_str().unwrap().contains("testsrcc"));
    assert!(unknown["help"].as_str().unwrap().contains("testsrc"));
    assert!(
        events.iter().any(|e| e["code"] == "unknown-param"),
        "{events:?}"
    );

    let o = vidflow(&["run", "nowhere.yaml", "--progress", "json"], &t);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let events = json_lines(&o.stderr);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "error");
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .contains("nowhere.yaml")
    );

    let g = t.write("fail.yaml", &through("exit 3", 3));
    let o = vidflow(&["run", &g, "--progress", "json"], &t);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let events = json_lines(&o.stderr);
    let end = events
        .iter()
        .find(|e| e["event"] == "end")
        .expect("an end event");
    let failure = end["failure"].as_str().unwrap();
    assert_eq!(
        failure.matches("node `f`").count(),
        1,
        "named once: {failure}"
    );
    assert!(failure.contains("exited with code 3"), "{failure}");
    assert_eq!(events.last().unwrap()["event"], "error", "{events:?}");
}

/// On a machine without a display session (`XDG_RUNTIME_DIR` unset: CI, containers), listing
/// the compute devices prints no line that says "error" (Mesa's device-select layer used to
/// print libwayland's complaint two to four times; issue 17, item 8).
#[test]
fn devices_without_a_display_session_print_no_error() {
    let t = tmp("devices-headless");
    let o = Command::new(BIN)
        .arg("devices")
        .current_dir(&*t)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.to_lowercase().contains("error"), "{stderr}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("cpu"));
}

#[test]
fn run_reports_json_progress_events() {
    let t = tmp("run-json");
    // The filter waits before copying, so the run lasts long enough for progress events.
    let g = t.write("g.yaml", &through("sleep 0.7; cat", 20));
    let o = vidflow(&["run", &g, "--progress", "json"], &t);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let events: Vec<serde_json::Value> = o
        .stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l}"))
        })
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"start"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"end"), "{kinds:?}");
    assert!(kinds.contains(&"progress"), "{kinds:?}");
    let start = &events[0];
    assert_eq!(start["graph"], "through");
    let ids: Vec<&str> = start["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["src", "f", "log"]);
    let progress = events.iter().find(|e| e["event"] == "progress").unwrap();
    assert!(
        progress["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "src")
    );
    let end = events.last().unwrap();
    assert_eq!(end["ok"], true);
    assert_eq!(end["interrupted"], false);
    assert!(end["failure"].is_null());
    assert_eq!(read_jsonl(&t.path("out.jsonl")).len(), 20);
    assert!(o.stdout.is_empty());
}

#[test]
fn run_with_progress_none_prints_nothing() {
    let t = tmp("run-none");
    let g = t.write("g.yaml", LINES);
    let o = vidflow(&["run", &g, "--progress", "none"], &t);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stderr, "");
    assert_eq!(o.stdout, "");
    assert_eq!(read_jsonl(&t.path("out.jsonl")).len(), 5);
}

#[test]
fn run_with_plain_progress_prints_periodic_lines() {
    let t = tmp("run-plain");
    // Plain lines come every 2 s.
    let g = t.write("g.yaml", &through("sleep 2.3; cat", 10));
    let o = vidflow(&["run", &g, "--progress", "plain"], &t);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let progress: Vec<&str> = o.stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert!(!progress.is_empty(), "{}", o.stderr);
    assert!(
        progress[0].contains("s] src ") && progress[0].contains("| log "),
        "{}",
        progress[0]
    );
    // No terminal control codes in plain mode; the summary starts on its own line.
    assert!(!o.stderr.contains('\u{1b}'), "{:?}", o.stderr);
    assert!(
        o.stderr.lines().any(|l| l.starts_with("node ")),
        "{}",
        o.stderr
    );
    let last = o.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("finished in ") && last.ends_with('s'),
        "{last}"
    );
}

#[test]
fn failing_node_exits_2_and_names_the_node() {
    let t = tmp("run-fail");
    let g = t.write(
        "g.yaml",
        &through("cat >/dev/null; echo broken filter >&2; exit 3", 5),
    );
    let o = vidflow(&["run", &g, "--progress", "none"], &t);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("node `f` failed"), "{}", o.stderr);
    assert!(
        !o.stderr.contains(": node `f`: "),
        "the node is named once: {}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains("command `cat >/dev/null; echo broken filter >&2; exit 3`"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("exited with code 3") && o.stderr.contains("broken filter"),
        "{}",
        o.stderr
    );
    // No output file that looks finished, and no temporary left either.
    assert_eq!(t.files(), ["g.yaml"]);
}

#[test]
fn bad_output_folder_exits_1_naming_node_and_path() {
    let t = tmp("run-badpath");
    let g = t.write("g.yaml", LINES);
    let o = vidflow(
        &[
            "run",
            &g,
            "--progress",
            "plain",
            "--set",
            "output=missing/dir/out.jsonl",
        ],
        &t,
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("node `log`"), "{}", o.stderr);
    assert!(
        o.stderr.contains("missing/dir/out.jsonl") && o.stderr.contains("does not exist"),
        "{}",
        o.stderr
    );
    // Nothing ran, so no summary table; the node is named once.
    assert!(
        !o.stderr.lines().any(|l| l.starts_with("node ")),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains(": node `log`: "), "{}", o.stderr);
    assert_eq!(t.files(), ["g.yaml"]);

    // A missing program in an exec node is bad input too.
    let g = t.write(
        "g.yaml",
        &through("vidflow-no-such-program", 3).replace(
            "command: \"vidflow-no-such-program\"",
            "command: [vidflow-no-such-program]",
        ),
    );
    let o = vidflow(&["run", &g, "--progress", "none"], &t);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("node `f`")
            && o.stderr.contains("cannot start `vidflow-no-such-program`"),
        "{}",
        o.stderr
    );
    assert_eq!(t.files(), ["g.yaml"]);
}

#[test]
fn jsonl_to_standard_output_and_to_a_folder() {
    let t = tmp("run-stdout");
    let g = t.write("g.yaml", LINES);
    let o = vidflow(
        &[
            "run",
            &g,
            "--progress",
            "plain",
            "--set",
            "output=\"-\"",
            "--set",
            "count=3",
        ],
        &t,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let got: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 3, "{}", o.stdout);
    assert_eq!(got[2]["index"], 2);
    assert!(
        o.stderr.contains("finished in "),
        "the summary goes to stderr: {}",
        o.stderr
    );
    assert_eq!(t.files(), ["g.yaml"]);

    std::fs::create_dir(t.path("sub")).unwrap();
    let o = vidflow(&["run", &g, "--set", "output=sub"], &t);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("node `log`")
            && o.stderr.contains("`sub`")
            && o.stderr.contains("folder"),
        "{}",
        o.stderr
    );
    assert_eq!(t.files(), ["g.yaml", "sub"]);
}

#[test]
fn run_rejects_invalid_and_missing_graphs() {
    let t = tmp("run-invalid");
    let g = t.write("bad.yaml", BAD);
    let o = vidflow(&["run", &g], &t);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("bad.yaml:4:11"), "{}", o.stderr);
    assert!(!t.path("o.jsonl").exists());
    let o = vidflow(&["run", "nowhere.yaml"], &t);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("cannot read graph file `nowhere.yaml`"),
        "{}",
        o.stderr
    );
    let o = vidflow(&["run", &g, "--progress", "fancy"], &t);
    assert_eq!(o.code, 1, "clap usage error");
    assert!(
        o.stderr.contains("possible values") && o.stderr.contains("json"),
        "{}",
        o.stderr
    );
}

#[test]
fn graph_prints_dot_and_mermaid() {
    let t = tmp("graph");
    let g = t.write("g.yaml", LINES);
    let o = vidflow(&["graph", &g], &t);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.starts_with("digraph \"lines\" {"), "{}", o.stdout);
    assert!(o.stdout.contains("\"src\" -> \"log\""), "{}", o.stdout);
    assert!(o.stdout.trim_end().ends_with('}'));
    let dot = vidflow(&["graph", "--format", "dot", &g], &t);
    assert_eq!(dot.stdout, o.stdout);

    let o = vidflow(&["graph", &g, "--format", "mermaid"], &t);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.starts_with("flowchart LR"), "{}", o.stdout);
    assert!(
        o.stdout.contains("src -->") && o.stdout.contains("log"),
        "{}",
        o.stdout
    );

    let bad = t.write("bad.yaml", BAD);
    let o = vidflow(&["graph", &bad], &t);
    assert_eq!(o.code, 1);
    assert!(o.stdout.is_empty() && o.stderr.contains("bad.yaml:4:11"));
}

#[test]
fn nodes_lists_and_describes_kinds() {
    let t = tmp("nodes");
    let o = vidflow(&["nodes"], &t);
    assert_eq!(o.code, 0);
    for kind in vidflow_nodes::registry().names() {
        assert!(
            o.stdout.lines().any(|l| l.starts_with(&format!("{kind} "))),
            "{kind} listed:\n{}",
            o.stdout
        );
    }

    let o = vidflow(&["nodes", "testsrc"], &t);
    assert_eq!(o.code, 0);
    let d = &o.stdout;
    assert!(d.starts_with("testsrc\n"), "{d}");
    assert!(
        d.contains("outputs:") && d.contains("frames"),
        "ports:\n{d}"
    );
    assert!(
        d.lines().any(|l| l.contains("width")
            && l.contains("int in 2..=16384")
            && l.contains("default 320")),
        "typed params with defaults:\n{d}"
    );
    assert!(
        d.lines()
            .any(|l| l.contains("rate") && l.contains("default 25")),
        "{d}"
    );
    assert!(d.contains("example:") && d.contains("kind: testsrc"), "{d}");

    let o = vidflow(&["nodes", "exec"], &t);
    assert!(
        o.stdout.contains("(required)") && o.stdout.contains("optional"),
        "{}",
        o.stdout
    );
}

#[test]
fn nodes_with_an_unknown_kind_suggests_one() {
    let t = tmp("nodes-unknown");
    let o = vidflow(&["nodes", "tstsrc"], &t);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("unknown node kind `tstsrc`")
            && o.stderr.contains("did you mean `testsrc`?"),
        "{}",
        o.stderr
    );
    let o = vidflow(&["nodes", "nosuch"], &t);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("`nosuch`") && o.stderr.contains("`jsonl`"),
        "lists the kinds: {}",
        o.stderr
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn schema_is_json_naming_every_kind() {
    let t = tmp("schema");
    let o = vidflow(&["schema"], &t);
    assert_eq!(o.code, 0);
    let schema: serde_json::Value = serde_json::from_str(&o.stdout).expect("valid JSON");
    assert_eq!(schema["title"], "vidflow graph");
    let kinds: Vec<&str> = schema["$defs"]["node"]["properties"]["kind"]["anyOf"][0]["enum"]
        .as_array()
        .expect("an enum of kinds")
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let registered: Vec<&str> = vidflow_nodes::registry().names().collect();
    assert_eq!(kinds, registered);
    // Each kind's params are described.
    let text = o.stdout;
    for kind in registered {
        assert!(text.contains(&format!("\"const\": \"{kind}\"")), "{kind}");
    }
}

/// `vidflow schema` checked by a standard validator (check-jsonschema from PyPI, installed by
/// scripts/install-deps.sh): every graph in `graphs/` passes (`${param}` inside lists, an
/// unquoted `kind: null`), and each golden invalid graph's structural error is reported.
#[test]
fn schema_accepts_the_graphs_and_rejects_structural_errors() {
    let t = tmp("schema-validator");
    let o = vidflow(&["schema"], &t);
    assert_eq!(o.code, 0);
    let schema = t.join("schema.json");
    std::fs::write(&schema, &o.stdout).unwrap();
    let tool = crate::common::installed_tool("check-jsonschema-0.39.0");
    let validate = |files: &[std::path::PathBuf]| {
        let out = Command::new("python3")
            .args(["-m", "check_jsonschema", "--verbose", "--schemafile"])
            .arg(&schema)
            .args(files)
            .env("PYTHONPATH", &tool)
            .output()
            .expect("python3 runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut graphs: Vec<_> = std::fs::read_dir(root.join("graphs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    graphs.sort();
    assert!(graphs.len() >= 8, "{graphs:?}");
    let (code, text) = validate(&graphs);
    assert_eq!(code, Some(0), "graphs/*.yaml against the schema:\n{text}");
    // Each golden graph with a structural mistake, and what the validator must say about it.
    for (golden, says) in [
        ("03-unknown-top-field", "'descripton' was unexpected"),
        ("04-unknown-node-field", "'colour', 'input' were unexpected"),
        ("06-missing-kind", "'kind' is a required property"),
        ("08-unknown-kind", "'tetsrc' is not valid"),
        ("10-param-wrong-type", "'wide'"),
        ("26-bad-workers", "'many' is not of type 'integer'"),
    ] {
        let file = root.join(format!("nodes/tests/golden/{golden}.yaml"));
        let (code, text) = validate(std::slice::from_ref(&file));
        assert_eq!(code, Some(1), "{golden} must be rejected:\n{text}");
        assert!(
            text.contains(says),
            "{golden}: expected {says:?} in\n{text}"
        );
    }
}

#[test]
fn help_explains_commands_and_exit_codes() {
    let t = tmp("help");
    let o = vidflow(&["--help"], &t);
    assert_eq!(o.code, 0);
    for word in [
        "run",
        "check",
        "graph",
        "nodes",
        "schema",
        "Exit codes: 0 ok, 1 invalid graph or input, 2",
    ] {
        assert!(o.stdout.contains(word), "{word}: {}", o.stdout);
    }
    let o = vidflow(&["run", "--help"], &t);
    assert!(
        o.stdout.contains("--set <NAME=VALUE>")
            && o.stdout
                .contains("possible values: auto, bars, plain, json, none"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("The graph file"), "{}", o.stdout);
}

/// Starts a long run in its own process group, waits until it is writing, and interrupts it.
/// `group`: signal the whole process group, as a terminal's Ctrl-C does.
fn interrupt(t: &TmpDir, graph: &str, progress: &str, group: bool) -> (Out, Duration) {
    interrupt_with(t, graph, progress, group, "-INT")
}

/// Like [`interrupt`], with another signal (`-TERM`, `-HUP`).
fn interrupt_with(
    t: &TmpDir,
    graph: &str,
    progress: &str,
    group: bool,
    signal: &str,
) -> (Out, Duration) {
    let g = t.write("long.yaml", graph);
    let mut cmd = Command::new(BIN);
    cmd.args(["run", &g, "--progress", progress])
        .current_dir(t)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
    }
    let child = cmd.spawn().expect("start vidflow");
    let pid = child.id();
    // Wait until items reach the sink's temporary file.
    let started = Instant::now();
    while partial_of(t, "out.jsonl")
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
        < 10_000
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run did not start writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let sent = Instant::now();
    let status = Command::new("kill")
        .args([signal, "--", &target])
        .status()
        .unwrap();
    assert!(status.success());
    let out = finish(child, Duration::from_secs(15));
    (out, sent.elapsed())
}

/// The temporary file a run writes output `name` to (`.name.<pid>-<n>.partial`), if any.
fn partial_of(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            (n.starts_with(&format!(".{name}.")) && n.ends_with(".partial")).then(|| e.path())
        })
}

const ENDLESS: &str = "name: endless
nodes:
  - id: src
    kind: testsrc
    params: { width: 16, height: 8, count: 1000000000 }
  - id: log
    kind: jsonl
    params: { path: out.jsonl }
    inputs: { items: src.frames }
";

#[test]
fn ctrl_c_stops_the_run_cleanly() {
    let t = tmp("sigint");
    let (o, took) = interrupt(&t, ENDLESS, "plain", false);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(
        o.stderr
            .contains("stopping (press Ctrl-C again to abort at once)"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("interrupted"), "{}", o.stderr);
    assert!(
        o.stderr.lines().any(|l| l.starts_with("node ")),
        "summary: {}",
        o.stderr
    );
    assert!(!o.stderr.contains("failed"), "{}", o.stderr);
    // No finished-looking output and no temporary file; the records written so far are kept
    // as `out.jsonl.partial` (issue 17, item 5).
    assert_kept_records(&t, &o);
}

/// An interrupted JSON-lines run leaves no `out.jsonl` and no temporary file, but keeps its
/// complete records in `out.jsonl.partial` (thousands of them here, each a whole JSON line)
/// and says where they are.
fn assert_kept_records(t: &TmpDir, o: &Out) {
    assert_eq!(
        t.files(),
        ["long.yaml", "out.jsonl.partial"],
        "{}",
        o.stderr
    );
    let kept = read_jsonl(&t.path("out.jsonl.partial"));
    assert!(kept.len() > 100, "{} records kept", kept.len());
    for (i, r) in kept.iter().enumerate() {
        assert_eq!(
            r["index"], i as u64,
            "record {i} is whole and in order: {r}"
        );
    }
    assert!(
        o.stderr
            .contains(&format!("the {} complete records", kept.len()))
            && o.stderr.contains("out.jsonl.partial"),
        "says where: {}",
        o.stderr
    );
}

/// Two runs writing the same output at once: each writes its own temporary file, both
/// succeed, and the output is one run's complete output (issue 17, item 2).
#[test]
fn two_runs_writing_one_output_leave_one_complete_file() {
    let t = tmp("two-writers");
    let g = t.write(
        "g.yaml",
        "name: two\nnodes:\n  - id: src\n    kind: testsrc\n    params: { width: 16, height: 8, count: 100000 }\n  - id: log\n    kind: jsonl\n    params: { path: out.jsonl }\n    inputs: { items: src.frames }\n",
    );
    let start = || {
        Command::new(BIN)
            .args(["run", &g, "--progress", "none"])
            .current_dir(&*t)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vidflow")
    };
    let (a, b) = (start(), start());
    let (a, b) = (
        finish(a, Duration::from_secs(60)),
        finish(b, Duration::from_secs(60)),
    );
    assert_eq!((a.code, b.code), (0, 0), "{}\n{}", a.stderr, b.stderr);
    let lines = read_jsonl(&t.path("out.jsonl"));
    assert_eq!(lines.len(), 100_000);
    assert!(
        lines.iter().enumerate().all(|(i, l)| l["index"] == i),
        "lines out of order or mixed"
    );
    assert_eq!(t.files(), ["g.yaml", "out.jsonl"]);
}

/// `docker stop`, systemd and `timeout` send SIGTERM, a closed terminal SIGHUP: the same clean
/// stop as Ctrl-C, no `.partial` left behind.
#[test]
fn sigterm_and_sighup_stop_the_run_like_ctrl_c() {
    for signal in ["-TERM", "-HUP"] {
        let t = tmp(&format!("signal{signal}"));
        let (o, took) = interrupt_with(&t, ENDLESS, "plain", false, signal);
        assert_eq!(o.code, 2, "{signal}: {}", o.stderr);
        assert!(
            took < Duration::from_secs(5),
            "{signal}: stopping took {took:?}"
        );
        assert!(o.stderr.contains("interrupted"), "{signal}: {}", o.stderr);
        assert_kept_records(&t, &o);
    }
}

#[test]
fn ctrl_c_on_the_terminal_stops_exec_commands_without_blaming_them() {
    // The whole process group gets SIGINT, as from a terminal: the command must not see it
    // (it runs in its own group), vidflow stops it and reports an interruption.
    let t = tmp("sigint-exec");
    let graph = "name: endless-exec
nodes:
  - id: src
    kind: testsrc
    params: { width: 16, height: 8, count: 1000000000 }
  - id: f
    kind: exec
    params: { command: [cat] }
    inputs: { items: src.frames }
  - id: log
    kind: jsonl
    params: { path: out.jsonl }
    inputs: { items: f.frames }
";
    let (o, took) = interrupt(&t, graph, "json", true);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    let end: serde_json::Value = o
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "end")
        .unwrap_or_else(|| panic!("no end event: {}", o.stderr));
    assert_eq!(end["interrupted"], true, "{end}");
    assert!(end["failure"].is_null(), "{end}");
    assert!(
        o.stderr.lines().last().unwrap().contains("interrupted"),
        "{}",
        o.stderr
    );
    assert_kept_records(&t, &o);
}
