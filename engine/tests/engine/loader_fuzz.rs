//! Property tests of the loader and checker: whatever text a graph file holds, `check_source`
//! returns (never panics), every diagnostic points inside the file, and rendering never panics.
//!
//! Inputs: arbitrary strings, arbitrary bytes read as lossy UTF-8, soups of YAML-ish tokens,
//! and structured mutations of a valid graph (lines and characters deleted, inserted,
//! duplicated, swapped; tokens spliced in), each checked in both modes and with random
//! `--set` overrides. The registry holds a few kinds built here (this crate cannot depend on
//! vidflow-nodes): a source, a batchable filter with a validator that reports positions inside
//! its `code` param, and a sink with typed inputs.

use proptest::prelude::*;
use proptest::test_runner::Config;
use vidflow_engine::Problem;
use vidflow_engine::diag::source_lines;
use vidflow_engine::load::yaml::Yv;
use vidflow_engine::{
    BatchConfig, LoadError, Mode, NodeError, NodeKind, ParamSpec, ParamType, Plan, PortType,
    Registry, Runtime, SourceFile, check_source, parse_overrides,
};

/// Cases per property; `VIDFLOW_FUZZ_CASES=100000` for a longer run.
fn cases() -> u32 {
    std::env::var("VIDFLOW_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn registry() -> Registry {
    let never = |_: &vidflow_engine::BuildCtx<'_>| -> Result<Runtime, NodeError> {
        Err(NodeError::runtime("fuzz kinds do not run"))
    };
    let mut r = Registry::new();
    r.register(
        NodeKind::new("src", "a source", never)
            .output("frames", PortType::FRAMES, "frames")
            .param(ParamSpec::with_default(
                "n",
                ParamType::Int {
                    min: Some(0),
                    max: Some(100),
                },
                5,
                "how many",
            ))
            .param(ParamSpec::with_default(
                "mode",
                ParamType::Enum(vec!["fast", "slow"]),
                "fast",
                "speed",
            ))
            .param(ParamSpec::optional(
                "sizes",
                ParamType::list(ParamType::float()),
                "sizes",
            )),
    );
    r.register(
        NodeKind::new("map", "a batchable filter", never)
            .input("items", PortType::ANY, "anything")
            .output("out", PortType::FRAMES, "frames")
            .output("records", PortType::RECORDS, "records")
            .param(ParamSpec::required("code", ParamType::Str, "code"))
            .param(ParamSpec::optional(
                "args",
                ParamType::one_or_list(ParamType::Str),
                "arguments",
            ))
            .batched("items", Some(BatchConfig { max: 2, wait_ms: 1 }))
            // Reports a position for every `bad` in the code, and one far outside it.
            .check(|cx| {
                let code = cx.params.get("code").and_then(|c| c.as_str()).unwrap_or("");
                let mut out = vec![];
                for (i, line) in code.split('\n').enumerate() {
                    if let Some(b) = line.find("bad") {
                        out.push(
                            Problem::param("code", "bad code")
                                .at_position(i as u32 + 1, line[..b].chars().count() as u32 + 1),
                        );
                    }
                }
                if code.contains("far") {
                    out.push(
                        Problem::param("code", "far away")
                            .help("a position past the end of the value")
                            .at_position(1000, 1000),
                    );
                }
                out
            }),
    );
    r.register(
        NodeKind::new("sink", "a sink", never)
            .input("items", PortType::FRAMES, "frames")
            .optional_input("audio", PortType::AUDIO, "audio"),
    );
    r
}

const VALID: &str = r#"name: fuzz
description: "a valid graph that the mutations start from"
params:
  count: 5
  label: { default: "x", doc: "a label" }
  sizes: [1.5, 2]
nodes:
  - id: src
    kind: src
    params: { n: "${count}", mode: 'fast', sizes: "${sizes}" }
  - id: m
    kind: map
    workers: 2
    batch: { max: 4, wait_ms: 5 }
    on_error: { retry: 1 }
    params:
      code: |
        line one
        line ${label} and $${literal}
      args: [a, "b-${label}"]
    inputs:
      items: { from: src.frames, queue: 4, when_full: drop_oldest }
  - id: out
    kind: sink
    on_error: skip
    inputs: { items: "m.out" }
"#;

/// YAML-ish tokens for soups and insertions.
const TOKENS: &[&str] = &[
    "nodes:",
    "params:",
    "name:",
    "inputs:",
    "- ",
    "id: ",
    "kind: ",
    "src",
    "map",
    "sink",
    "m.out",
    "src.frames",
    "m.records",
    "from: ",
    "queue: ",
    "0",
    "-1",
    "99999999999999999999",
    ".inf",
    ".nan",
    "1.5e300",
    "when_full: ",
    "workers: ",
    "batch: ",
    "on_error: ",
    "retry",
    "{",
    "}",
    "[",
    "]",
    "{}",
    "[]",
    ",",
    ":",
    ": ",
    "\n",
    "\r\n",
    "\r",
    "  ",
    "    ",
    "\t",
    "\"",
    "'",
    "\\",
    "\\\"",
    "''",
    "${",
    "${count}",
    "${label}",
    "${nope}",
    "$${",
    "|",
    "|-",
    ">",
    ">+2",
    "&a ",
    "*a",
    "!!str ",
    "!!binary ",
    "!custom ",
    "!!map ",
    "? ",
    "#",
    " # comment",
    "---",
    "...",
    "%YAML 1.2",
    "~",
    "null",
    "true",
    "é",
    "日本",
    "🎞",
    "\u{feff}",
    "\0",
    "bad",
    "far",
    "code: ",
];

fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(TOKENS)
}

/// One edit of a text; positions are taken modulo the text's size when applied.
#[derive(Clone, Debug)]
enum Edit {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    InsertLine(usize, &'static str),
    DeleteChars(usize, usize),
    InsertToken(usize, &'static str),
    ReplaceChar(usize, char),
    IndentLine(usize, bool),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::DeleteLine),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (any::<usize>(), token()).prop_map(|(a, t)| Edit::InsertLine(a, t)),
        (any::<usize>(), 1usize..12).prop_map(|(a, n)| Edit::DeleteChars(a, n)),
        (any::<usize>(), token()).prop_map(|(a, t)| Edit::InsertToken(a, t)),
        (any::<usize>(), any::<char>()).prop_map(|(a, c)| Edit::ReplaceChar(a, c)),
        (any::<usize>(), any::<bool>()).prop_map(|(a, more)| Edit::IndentLine(a, more)),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let chars: Vec<char> = text.chars().collect();
    let n = lines.len();
    let at_char = |i: usize| i % (chars.len() + 1);
    match edit {
        Edit::DeleteLine(i) => {
            lines.remove(i % n);
        }
        Edit::DuplicateLine(i) => {
            let l = lines[i % n].clone();
            lines.insert(i % n, l);
        }
        Edit::SwapLines(a, b) => lines.swap(a % n, b % n),
        Edit::InsertLine(i, t) => lines.insert(i % (n + 1), t.to_string()),
        Edit::IndentLine(i, more) => {
            let l = &mut lines[i % n];
            if *more {
                l.insert_str(0, "  ");
            } else if l.starts_with(' ') {
                l.remove(0);
            }
        }
        Edit::DeleteChars(i, len) => {
            let start = at_char(*i);
            let end = (start + len).min(chars.len());
            return chars[..start].iter().chain(&chars[end..]).collect();
        }
        Edit::InsertToken(i, t) => {
            let at = at_char(*i);
            let mut out: String = chars[..at].iter().collect();
            out.push_str(t);
            out.extend(&chars[at..]);
            return out;
        }
        Edit::ReplaceChar(i, c) => {
            let mut chars = chars;
            if !chars.is_empty() {
                let at = i % chars.len();
                chars[at] = *c;
            }
            return chars.into_iter().collect();
        }
    }
    lines.join("\n")
}

/// `--set` overrides: some name graph params of the valid graph, some do not, values of every
/// type.
fn overrides() -> impl Strategy<Value = Vec<(String, Yv)>> {
    let name = prop::sample::select(&["count", "label", "sizes", "nope", ""][..]);
    let value = prop::sample::select(
        &[
            "3", "-7", "x", "[1, 2]", "{a: 1}", "${count}", "", ".nan", "\"q\"", "[",
        ][..],
    );
    prop::collection::vec((name, value), 0..3).prop_map(|pairs| {
        let args: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // A value that is not valid YAML is refused by the parser: drop those.
        args.iter()
            .filter_map(|a| parse_overrides(std::slice::from_ref(a)).ok())
            .flatten()
            .collect()
    })
}

/// Checks `text` and asserts the invariants: no panic (a panic fails the case), spans inside the
/// file, rendering works and shows every diagnostic.
fn check_invariants(
    text: &str,
    overrides: &[(String, Yv)],
    mode: Mode,
) -> Result<(), TestCaseError> {
    let registry = registry();
    let file = SourceFile::new("fuzz.yaml", text);
    let line_count = source_lines(text).count() as u32;
    match check_source(file.clone(), &registry, overrides, mode) {
        Ok(graph) => {
            // A graph that passes can be planned and printed.
            let plan = Plan::new(&graph);
            prop_assert_eq!(plan.order.len(), graph.nodes.len());
            let _ = plan.to_dot();
            let _ = plan.to_mermaid();
        }
        Err(LoadError::Io { .. }) => prop_assert!(false, "no I/O happens here"),
        Err(e @ LoadError::Invalid { .. }) => {
            let LoadError::Invalid { diagnostics, .. } = &e else {
                unreachable!()
            };
            prop_assert!(
                diagnostics.iter().any(|d| d.is_error()),
                "an invalid graph has at least one error"
            );
            let mut last = None;
            for d in diagnostics {
                if let Some(span) = d.span {
                    prop_assert!(span.line >= 1 && span.col >= 1, "{:?}", d);
                    prop_assert!(
                        span.line <= line_count,
                        "line {} of a {}-line file: {:?}",
                        span.line,
                        line_count,
                        d
                    );
                    let line = file.line(span.line).unwrap_or("");
                    prop_assert!(
                        span.col <= line.chars().count() as u32 + 1,
                        "column {} of a line of {} characters: {:?}",
                        span.col,
                        line.chars().count(),
                        d
                    );
                }
                // Sorted by position (diagnostics without one come first).
                prop_assert!(last <= Some(d.span), "not sorted: {:?}", diagnostics);
                last = Some(d.span);
                let one = d.render(&file);
                prop_assert!(one.starts_with(&format!("error[{}]: ", d.code)), "{}", one);
                if let Some(span) = d.span {
                    let at = format!("--> fuzz.yaml:{}:{}\n", span.line, span.col);
                    prop_assert!(one.contains(&at), "{}", one);
                    prop_assert!(one.contains('^'), "no caret: {}", one);
                }
            }
            let all = e.render();
            prop_assert!(
                all.ends_with(" error\n") || all.ends_with(" errors\n"),
                "{}",
                all
            );
        }
    }
    Ok(())
}

#[test]
fn the_valid_graph_is_valid() {
    let registry = registry();
    let g = check_source(
        SourceFile::new("valid.yaml", VALID),
        &registry,
        &[],
        Mode::Run,
    )
    .unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(g.nodes.len(), 3);
    assert_eq!(g.edges.len(), 2);
    let src = g.node("src").expect("src");
    assert_eq!(src.params.values["n"], serde_json::json!(5));
    assert_eq!(src.params.values["sizes"], serde_json::json!([1.5, 2]));
    let m = g.node("m").expect("m");
    assert_eq!(
        m.params.values["code"],
        serde_json::json!("line one\nline x and ${literal}\n")
    );
    assert_eq!(m.params.values["args"], serde_json::json!(["a", "b-x"]));
}

/// Each kind of edit leaves a text the invariants hold for (a deterministic smoke test of the
/// mutation machinery itself, so a broken `apply` cannot make the properties vacuous).
#[test]
fn edits_change_the_text() {
    let edits = [
        Edit::DeleteLine(3),
        Edit::DuplicateLine(9),
        Edit::SwapLines(2, 12),
        Edit::InsertLine(5, "- "),
        Edit::DeleteChars(40, 5),
        Edit::InsertToken(100, "${nope}"),
        Edit::ReplaceChar(7, '{'),
        Edit::IndentLine(8, true),
    ];
    for e in &edits {
        let out = apply(VALID, e);
        assert_ne!(out, VALID, "{e:?} changed nothing");
        check_invariants(&out, &[], Mode::Check).unwrap_or_else(|f| panic!("{e:?}: {f}"));
    }
}

/// Odd YAML that once could panic or mislead: each is checked against the invariants.
#[test]
fn odd_yaml_never_panics() {
    let cases = [
        "",
        "\n",
        "~",
        "5",
        "- a\n- b\n",
        "nodes: 5\n",
        "nodes: ~\n",
        "nodes: [1, \"x\", [2], {}]\n",
        "nodes:\n  - id: a\n",
        "nodes:\n  - id: a\n    kind: 5\n",
        "nodes:\n  - id: a\n    kind: \"\"\n",
        "nodes:\n  - id:\n    kind: src\n",
        "nodes: !custom [ {id: a, kind: src} ]\n",
        "nodes:\n  - !!binary aGVsbG8=\n",
        "? [a, b]\n: c\nnodes: []\n",
        "1: 2\nnodes: []\n",
        "~: 1\nnodes: []\n",
        "a: &x 1\nb: *x\nnodes: []\n",
        "nodes:\n  - &n {id: a, kind: src}\n  - *n\n",
        "---\nnodes: []\n---\nnodes: []\n",
        "nodes: []\n...\n",
        "\u{feff}nodes: []\n",
        "nodes:\r  - id: a\r    kind: nope\r",
        "nodes:\r\n  - id: a\r\n    kind: nope\r\n",
        "params: {a: \"${a}\"}\nnodes:\n  - {id: s, kind: src, params: {n: \"${a}\"}}\n",
        "nodes:\n  - {id: s, kind: src, params: {n: \"${\"}}\n",
        "nodes:\n  - {id: s, kind: src, params: {n: \"$${x}${\"}}\n",
        "nodes:\n  - {id: s, kind: src, params: {n: .inf, sizes: [.nan]}}\n",
        "nodes:\n  - {id: m, kind: map, params: {code: far}, inputs: {items: m.out}}\n",
        "nodes:\n  - {id: m, kind: map, params: {code: \"\\tbad\"}, inputs: {items: m}}\n",
        "nodes:\n  - id: m\n    kind: map\n    params:\n      code: |\n\n\n        x bad\n    inputs: {items: m.out}\n",
        "nodes:\n  - id: m\n    kind: map\n    params:\n      code: >\n        folded\n        bad\n    inputs: {items: m.out}\n",
        "nodes:\n  - {id: a, kind: map, params: {code: x}, inputs: {items: c.out}}\n  - {id: b, kind: map, params: {code: x}, inputs: {items: a.out}}\n  - {id: c, kind: map, params: {code: x}, inputs: {items: b.out}}\n",
        "nodes:\n  - {id: a, kind: src, workers: 0, batch: {max: 0}, on_error: {retry: -1}}\n",
        "nodes:\n  - id: m\n    kind: map\n    params:\n      code: |\n        far\n    inputs: {items: m.out}\n",
        "nodes:\n  - id: m\n    kind: map\n    params:\n      code: |\n        far bad\n",
        "nodes:\n  - id: m\n    kind: map\n    params:\n      code: |",
    ];
    for text in cases {
        for mode in [Mode::Check, Mode::Run] {
            check_invariants(text, &[], mode).unwrap_or_else(|f| panic!("{text:?}: {f}"));
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: cases(), failure_persistence: None, ..Config::default() })]

    #[test]
    fn arbitrary_strings(text in any::<String>(), mode in prop::bool::ANY) {
        let mode = if mode { Mode::Run } else { Mode::Check };
        check_invariants(&text, &[], mode)?;
    }

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let text = String::from_utf8_lossy(&bytes);
        check_invariants(&text, &[], Mode::Check)?;
    }

    #[test]
    fn token_soup(tokens in prop::collection::vec(token(), 0..80), ov in overrides()) {
        check_invariants(&tokens.concat(), &ov, Mode::Check)?;
    }

    #[test]
    fn mutated_valid_graph(
        edits in prop::collection::vec(edit(), 1..6),
        ov in overrides(),
        mode in prop::bool::ANY,
    ) {
        let mode = if mode { Mode::Run } else { Mode::Check };
        let text = edits.iter().fold(VALID.to_string(), |t, e| apply(&t, e));
        check_invariants(&text, &ov, mode)?;
    }
}
