//! The load stage: a graph file's YAML → [`GraphSpec`], the graph as written, with source
//! spans, and with graph params (`params:` defaults, `--set` overrides) substituted into the
//! node params that reference them (`${name}`, see [`subst`]). This stage checks structure
//! only (known fields, field types, ranges of the engine's own settings); node kinds, params
//! and wiring are the checker's job. Unknown fields are errors.
//!
//! ```yaml
//! name: demo
//! params:
//!   output: out.jsonl            # a graph param with its default
//! nodes:
//!   - id: src
//!     kind: testsrc
//!     params: { width: 64, height: 48, count: 30 }
//!   - id: sink
//!     kind: jsonl
//!     params: { path: "${output}" }
//!     inputs:
//!       items: { from: src.frames, queue: 4, when_full: block }
//! ```
//!
//! A serve graph (run by `vidflow serve`) may add `serve: { max_sessions: 8, idle_timeout_s:
//! 30 }`.

pub mod subst;
pub mod yaml;

pub use crate::config::{DEFAULT_QUEUE, MAX_QUEUE, MAX_WORKERS, OnError, WhenFull};
pub use subst::Resolved;

use crate::config::{BatchConfig, ServeConfig};
use crate::diag::{Diagnostic, SourceFile, Span, did_you_mean, source_line, suggest};
use yaml::{Yv, YvKind};

/// How strict loading is about graph params without a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `vidflow check`: a param with no default is fine (it will be given with `--set`).
    Check,
    /// `vidflow run`: every referenced param needs a value.
    Run,
}

#[derive(Clone, Debug)]
pub struct GraphSpec {
    pub file: SourceFile,
    pub name: Option<String>,
    pub description: Option<String>,
    pub params: Vec<GraphParam>,
    pub nodes: Vec<NodeSpec>,
    /// The `serve:` section, with where it is written.
    pub serve: Option<(ServeConfig, Span)>,
}

/// A graph-level param: `name: default` or `name: {default: …, doc: …}`.
#[derive(Clone, Debug)]
pub struct GraphParam {
    pub name: String,
    pub span: Span,
    pub default: Option<Yv>,
    pub doc: Option<String>,
}

#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: String,
    pub id_span: Span,
    pub kind: String,
    pub kind_span: Span,
    /// The `params:` mapping, in the order written.
    pub params: Vec<NodeParam>,
    pub inputs: Vec<InputSpec>,
    pub workers: Option<(usize, Span)>,
    pub batch: Option<(BatchConfig, Span)>,
    pub on_error: OnError,
    /// The loader found a problem in the node's inputs (or a misspelt `inputs` field) and
    /// reported it; the checker then does not also report its inputs as unconnected.
    pub inputs_invalid: bool,
}

/// One entry of a node's `params:`.
#[derive(Clone, Debug)]
pub struct NodeParam {
    /// The key as written (with its span).
    pub key: Yv,
    /// The value as written, before `${param}` substitution.
    pub raw: Yv,
    /// The value after substitution.
    pub value: Resolved,
}

impl NodeParam {
    pub fn name(&self) -> String {
        self.key.key_text()
    }
}

/// `port: node.port`, or the long form `port: {from: node.port, queue: N, when_full: …}`.
#[derive(Clone, Debug)]
pub struct InputSpec {
    pub port: String,
    pub port_span: Span,
    pub from_node: String,
    /// `None` when written as just `node` (the node's only output).
    pub from_port: Option<String>,
    pub from_span: Span,
    pub queue: Option<usize>,
    pub when_full: WhenFull,
}

const TOP_FIELDS: &[&str] = &["name", "description", "params", "nodes", "serve"];
const SERVE_FIELDS: &[&str] = &["max_sessions", "idle_timeout_s", "warmup_size"];
const NODE_FIELDS: &[&str] = &[
    "id", "kind", "params", "inputs", "workers", "batch", "on_error",
];
const INPUT_FIELDS: &[&str] = &["from", "queue", "when_full"];
const BATCH_FIELDS: &[&str] = &["max", "wait_ms"];

/// Loads a graph file's text with `--set` overrides (values parsed as YAML) and substitutes
/// graph params into node params. Diagnostics are collected, not returned at the first
/// problem; the spec is as complete as the file allows.
pub fn load(
    file: SourceFile,
    overrides: &[(String, Yv)],
    mode: Mode,
) -> (GraphSpec, Vec<Diagnostic>) {
    let (mut spec, mut diags) = load_structure(file);
    if diags.iter().any(|d| d.code == "yaml-syntax") {
        return (spec, diags);
    }
    let values = subst::Values::new(&spec.file.text, &spec.params, overrides, mode, &mut diags);
    for node in &mut spec.nodes {
        for p in &mut node.params {
            p.value = values.resolve(&p.raw);
        }
    }
    diags.sort_by_key(|d| (d.span, d.code));
    (spec, diags)
}

/// The file's structure, before substitution.
fn load_structure(file: SourceFile) -> (GraphSpec, Vec<Diagnostic>) {
    let mut diags = vec![];
    let mut spec = GraphSpec {
        file: file.clone(),
        name: None,
        description: None,
        params: vec![],
        nodes: vec![],
        serve: None,
    };
    let root = match yaml::parse(&file.text) {
        Ok(root) => root,
        Err(d) => return (spec, vec![d]),
    };
    let Some(entries) = expect_map(&root, "the graph file", &mut diags) else {
        return (spec, diags);
    };
    for (key, value) in entries {
        match key.key_text().as_str() {
            "name" => spec.name = expect_str(value, "`name`", &mut diags).map(str::to_string),
            "description" => {
                spec.description =
                    expect_str(value, "`description`", &mut diags).map(str::to_string)
            }
            "params" => spec.params = load_params(value, &mut diags),
            "nodes" => spec.nodes = load_nodes(value, &file.text, &mut diags),
            "serve" => spec.serve = load_serve(key, value, &mut diags),
            other => diags.push(unknown_field(key, other, TOP_FIELDS, "the graph")),
        }
    }
    if !entries.iter().any(|(k, _)| k.as_str() == Some("nodes")) {
        diags.push(
            Diagnostic::error("missing-field", "the graph has no `nodes`")
                .at(Span::new(1, 1, 1), "")
                .help("add a `nodes:` list; `vidflow nodes` shows the kinds you can use"),
        );
    }
    diags.sort_by_key(|d| (d.span, d.code));
    (spec, diags)
}

fn unknown_field(key: &Yv, name: &str, known: &[&str], what: &str) -> Diagnostic {
    Diagnostic::error("unknown-field", format!("unknown field `{name}` in {what}"))
        .at(key.span, "not a known field")
        .help(suggest(name, known.iter().copied(), "known fields"))
}

fn expect_map<'a>(v: &'a Yv, what: &str, diags: &mut Vec<Diagnostic>) -> Option<&'a [(Yv, Yv)]> {
    match &v.v {
        YvKind::Map(m) => Some(m),
        YvKind::Null => Some(&[]),
        _ => {
            diags.push(type_error(v, what, "a mapping (`key: value` lines)"));
            None
        }
    }
}

fn expect_str<'a>(v: &'a Yv, what: &str, diags: &mut Vec<Diagnostic>) -> Option<&'a str> {
    let s = v.as_str();
    if s.is_none() {
        diags.push(type_error(v, what, "a string"));
    }
    s
}

fn type_error(v: &Yv, what: &str, expected: &str) -> Diagnostic {
    Diagnostic::error(
        "wrong-type",
        format!("{what} must be {expected}, found {}", v.type_name()),
    )
    .at(v.span, format!("expected {expected}"))
}

fn expect_int(v: &Yv, what: &str, min: i64, max: i64, diags: &mut Vec<Diagnostic>) -> Option<i64> {
    match v.v {
        YvKind::Int(i) if (min..=max).contains(&i) => Some(i),
        YvKind::Int(i) => {
            diags.push(
                Diagnostic::error(
                    "out-of-range",
                    format!("{what} is {i}, out of range {min}..={max}"),
                )
                .at(v.span, "out of range")
                .help(format!("use a value from {min} to {max}")),
            );
            None
        }
        _ => {
            diags.push(type_error(v, what, "an integer"));
            None
        }
    }
}

/// `serve: { max_sessions: N, idle_timeout_s: T, warmup_size: S }` (all optional).
fn load_serve(key: &Yv, v: &Yv, diags: &mut Vec<Diagnostic>) -> Option<(ServeConfig, Span)> {
    let entries = expect_map(v, "`serve`", diags)?;
    let mut cfg = ServeConfig::default();
    for (k, value) in entries {
        match k.key_text().as_str() {
            "max_sessions" => {
                if let Some(n) = expect_int(
                    value,
                    "`serve.max_sessions`",
                    1,
                    crate::config::MAX_SESSIONS,
                    diags,
                ) {
                    cfg.max_sessions = n as usize;
                }
            }
            "idle_timeout_s" => {
                if let Some(n) = expect_int(
                    value,
                    "`serve.idle_timeout_s`",
                    0,
                    crate::config::MAX_IDLE_TIMEOUT_S,
                    diags,
                ) {
                    cfg.idle_timeout_s = n as u64;
                }
            }
            "warmup_size" => {
                if let Some(n) = expect_int(
                    value,
                    "`serve.warmup_size`",
                    crate::config::MIN_WARMUP_SIZE,
                    crate::config::MAX_WARMUP_SIZE,
                    diags,
                ) {
                    cfg.warmup_size = n as u32;
                }
            }
            other => diags.push(unknown_field(k, other, SERVE_FIELDS, "`serve`")),
        }
    }
    Some((cfg, key.span))
}

fn load_params(v: &Yv, diags: &mut Vec<Diagnostic>) -> Vec<GraphParam> {
    let Some(entries) = expect_map(v, "`params`", diags) else {
        return vec![];
    };
    let mut out = vec![];
    for (key, value) in entries {
        let name = key.key_text();
        if !valid_ident(&name) {
            diags.push(
                Diagnostic::error("bad-name", format!("`{name}` is not a valid param name"))
                    .at(key.span, "invalid name")
                    .help("names use letters, digits, `_` and `-`, and start with a letter or `_`"),
            );
            continue;
        }
        // The long form is a mapping whose keys are all `default` / `doc`.
        let long = value.as_map().filter(|m| {
            !m.is_empty()
                && m.iter()
                    .all(|(k, _)| matches!(k.as_str(), Some("default" | "doc")))
        });
        let (default, doc) = match long {
            Some(m) => {
                let get = |f: &str| {
                    m.iter()
                        .find(|(k, _)| k.as_str() == Some(f))
                        .map(|(_, v)| v)
                };
                let doc = get("doc")
                    .and_then(|d| expect_str(d, "a param's `doc`", diags))
                    .map(str::to_string);
                // An explicit `default: null` is a default: an optional node param given
                // null is not given, so `--set` may give it or leave it to the node.
                (get("default").cloned(), doc)
            }
            None if value.v == YvKind::Null => (None, None),
            None => (Some(value.clone()), None),
        };
        out.push(GraphParam {
            name,
            span: key.span,
            default,
            doc,
        });
    }
    out
}

pub fn valid_ident(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn load_nodes(v: &Yv, text: &str, diags: &mut Vec<Diagnostic>) -> Vec<NodeSpec> {
    let YvKind::Seq(items) = &v.v else {
        diags.push(type_error(
            v,
            "`nodes`",
            "a list of nodes (lines starting with `- id: …`)",
        ));
        return vec![];
    };
    items
        .iter()
        .filter_map(|item| load_node(item, text, diags))
        .collect()
}

/// A name (`id`, `kind`): a string, or a plain scalar that YAML reads as another type, taken as
/// written (`kind: null` names the `null` kind, `id: 7` is the name `7`). An empty value
/// (`kind:` with nothing after it) is `""`.
fn name_of(v: &Yv, text: &str, what: &str, diags: &mut Vec<Diagnostic>) -> Option<String> {
    match &v.v {
        YvKind::Str(s) => Some(s.clone()),
        YvKind::Null | YvKind::Bool(_) | YvKind::Int(_) | YvKind::Float(_) => {
            let written: String = source_line(text, v.span.line)
                .unwrap_or("")
                .chars()
                .skip(v.span.col.saturating_sub(1) as usize)
                .take(v.span.len as usize)
                .collect();
            let plain = written
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | '~'));
            match &v.v {
                YvKind::Null if !plain || written == "~" => Some(String::new()),
                _ if plain && !written.is_empty() => Some(written),
                _ => {
                    diags.push(type_error(v, what, "a string"));
                    None
                }
            }
        }
        YvKind::Seq(_) | YvKind::Map(_) => {
            diags.push(type_error(v, what, "a string"));
            None
        }
    }
}

fn load_node(v: &Yv, text: &str, diags: &mut Vec<Diagnostic>) -> Option<NodeSpec> {
    let entries = expect_map(v, "a node", diags)?;
    let field = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v)
    };
    for (key, _) in entries {
        let name = key.key_text();
        if !NODE_FIELDS.contains(&name.as_str()) {
            diags.push(unknown_field(key, &name, NODE_FIELDS, "a node"));
        }
    }
    let Some(id_v) = field("id") else {
        diags.push(
            Diagnostic::error("missing-field", "a node has no `id`")
                .at(v.span, "this node")
                .help("give every node a unique `id: name`"),
        );
        return None;
    };
    let id = name_of(id_v, text, "a node's `id`", diags)?;
    if id.is_empty() {
        diags.push(
            Diagnostic::error("missing-field", "a node has an empty `id`")
                .at(id_v.span, "no id")
                .help("give every node a unique `id: name`"),
        );
        return None;
    }
    if !valid_ident(&id) {
        diags.push(
            Diagnostic::error("bad-name", format!("`{id}` is not a valid node id"))
                .at(id_v.span, "invalid id")
                .help(
                    "ids use letters, digits, `_` and `-` (no `.`), and start with a letter or `_`",
                ),
        );
    }
    let (kind, kind_span) = match field("kind") {
        Some(k) => {
            let kind = name_of(k, text, "`kind`", diags);
            if kind.as_deref() == Some("") {
                diags.push(
                    Diagnostic::error("missing-field", format!("node `{id}` has an empty `kind`"))
                        .at(k.span, "no kind")
                        .help("write `kind: …`; `vidflow nodes` lists the kinds"),
                );
            }
            (kind.unwrap_or_default(), k.span)
        }
        None => {
            diags.push(
                Diagnostic::error("missing-field", format!("node `{id}` has no `kind`"))
                    .at(id_v.span, "this node")
                    .help("add `kind: …`; `vidflow nodes` lists the kinds"),
            );
            (String::new(), id_v.span)
        }
    };
    let params = field("params")
        .and_then(|p| expect_map(p, &format!("`params` of node `{id}`"), diags))
        .map(|entries| {
            entries
                .iter()
                .map(|(key, raw)| NodeParam {
                    key: key.clone(),
                    raw: raw.clone(),
                    value: Resolved::Value(raw.clone()),
                })
                .collect()
        })
        .unwrap_or_default();
    let before = diags.len();
    let inputs = field("inputs")
        .map(|i| load_inputs(i, &id, diags))
        .unwrap_or_default();
    let inputs_invalid = diags.len() > before
        || entries.iter().any(|(k, _)| {
            let name = k.key_text();
            !NODE_FIELDS.contains(&name.as_str())
                && did_you_mean(&name, NODE_FIELDS.iter().copied()) == Some("inputs")
        });
    let workers = field("workers").and_then(|w| {
        Some((
            expect_int(w, "`workers`", 1, MAX_WORKERS, diags)? as usize,
            w.span,
        ))
    });
    let batch = field("batch").and_then(|b| load_batch(b, diags));
    let on_error = field("on_error")
        .map(|e| load_on_error(e, diags))
        .unwrap_or_default();
    Some(NodeSpec {
        id,
        id_span: id_v.span,
        kind,
        kind_span,
        params,
        inputs,
        workers,
        batch,
        on_error,
        inputs_invalid,
    })
}

fn load_inputs(v: &Yv, node: &str, diags: &mut Vec<Diagnostic>) -> Vec<InputSpec> {
    let Some(entries) = expect_map(v, &format!("`inputs` of node `{node}`"), diags) else {
        return vec![];
    };
    let mut out = vec![];
    for (key, value) in entries {
        let port = key.key_text();
        let (reference, queue, when_full) = match &value.v {
            YvKind::Str(_) => (value, None, WhenFull::Block),
            YvKind::Map(m) => {
                let mut reference = None;
                let mut queue = None;
                let mut when_full = WhenFull::Block;
                for (k, fv) in m {
                    match k.key_text().as_str() {
                        "from" => reference = Some(fv),
                        "queue" => {
                            queue =
                                expect_int(fv, "`queue`", 1, MAX_QUEUE, diags).map(|q| q as usize)
                        }
                        "when_full" => match fv.as_str() {
                            Some("block") => when_full = WhenFull::Block,
                            Some("drop_oldest") => when_full = WhenFull::DropOldest,
                            _ => diags.push(
                                Diagnostic::error(
                                    "wrong-value",
                                    format!(
                                        "`when_full` must be `block` or `drop_oldest`, found `{fv}`"
                                    ),
                                )
                                .at(fv.span, "unknown policy")
                                .help(suggest(
                                    &fv.to_string(),
                                    ["block", "drop_oldest"],
                                    "policies",
                                )),
                            ),
                        },
                        other => diags.push(unknown_field(k, other, INPUT_FIELDS, "an input")),
                    }
                }
                match reference {
                    Some(r) => (r, queue, when_full),
                    None => {
                        diags.push(
                            Diagnostic::error(
                                "missing-field",
                                format!("input `{port}` of node `{node}` has no `from`"),
                            )
                            .at(key.span, "no source")
                            .help("write `from: node.port`"),
                        );
                        continue;
                    }
                }
            }
            _ => {
                diags.push(type_error(
                    value,
                    &format!("input `{port}`"),
                    "a `node.port` reference",
                ));
                continue;
            }
        };
        let Some(text) = expect_str(reference, &format!("input `{port}`"), diags) else {
            continue;
        };
        let (from_node, from_port) = match text.split_once('.') {
            Some((n, p)) => (n.to_string(), Some(p.to_string())),
            None => (text.to_string(), None),
        };
        out.push(InputSpec {
            port,
            port_span: key.span,
            from_node,
            from_port,
            from_span: reference.span,
            queue,
            when_full,
        });
    }
    out
}

fn load_batch(v: &Yv, diags: &mut Vec<Diagnostic>) -> Option<(BatchConfig, Span)> {
    let entries = expect_map(v, "`batch`", diags)?;
    let mut cfg = BatchConfig { max: 0, wait_ms: 0 };
    let mut ok = true;
    for (k, fv) in entries {
        match k.key_text().as_str() {
            "max" => match expect_int(fv, "`batch.max`", 1, 4096, diags) {
                Some(m) => cfg.max = m as usize,
                None => ok = false,
            },
            "wait_ms" => match expect_int(fv, "`batch.wait_ms`", 0, 600_000, diags) {
                Some(w) => cfg.wait_ms = w as u64,
                None => ok = false,
            },
            other => diags.push(unknown_field(k, other, BATCH_FIELDS, "`batch`")),
        }
    }
    if !ok {
        return None;
    }
    if cfg.max == 0 {
        diags.push(
            Diagnostic::error("missing-field", "`batch` has no `max`")
                .at(v.span, "no batch size")
                .help("write `batch: { max: 8, wait_ms: 20 }`"),
        );
        return None;
    }
    Some((cfg, v.span))
}

fn load_on_error(v: &Yv, diags: &mut Vec<Diagnostic>) -> OnError {
    let bad = |diags: &mut Vec<Diagnostic>| {
        diags.push(
            Diagnostic::error(
                "wrong-value",
                format!("`on_error` must be `fail`, `skip` or `{{retry: N}}`, found `{v}`"),
            )
            .at(v.span, "unknown policy")
            .help("write `on_error: skip`, `on_error: fail` or `on_error: {retry: 2}`"),
        );
        OnError::Fail
    };
    match &v.v {
        YvKind::Str(s) if s == "fail" => OnError::Fail,
        YvKind::Str(s) if s == "skip" => OnError::Skip,
        YvKind::Map(m) if m.len() == 1 && m[0].0.as_str() == Some("retry") => {
            match expect_int(&m[0].1, "`retry`", 0, 100, diags) {
                Some(n) => OnError::Retry(n as u32),
                None => OnError::Fail,
            }
        }
        _ => bad(diags),
    }
}
