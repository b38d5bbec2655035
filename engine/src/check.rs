//! The checker: turns a [`GraphSpec`] into a [`CheckedGraph`] the executor can run, or into the
//! full list of what is wrong with it. Every pass runs even after an earlier one found errors,
//! so a user fixes a file in one round: graph params and `--set` overrides, ids, kinds, params
//! (types, ranges, `${param}` references, required ones, kind-specific validation), wiring
//! (ports, types, required inputs), engine settings, and cycles.

use crate::diag::{Diagnostic, Span, suggest};
use crate::node::{BatchConfig, NodeKind, ParamType, Params};
use crate::registry::Registry;
use crate::spec::{DEFAULT_QUEUE, GraphSpec, InputSpec, NodeSpec, OnError, WhenFull};
use crate::yaml::{self, Yv, YvKind};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::{BTreeMap, HashMap};

/// A graph ready to compile and run.
#[derive(Clone, Debug)]
pub struct CheckedGraph {
    pub name: String,
    pub nodes: Vec<CheckedNode>,
    pub edges: Vec<Edge>,
}

#[derive(Clone, Debug)]
pub struct CheckedNode {
    pub id: String,
    pub kind: NodeKind,
    pub params: Params,
    pub workers: usize,
    pub batch: Option<BatchConfig>,
    pub on_error: OnError,
}

/// One connection: output port `from.1` of node `from.0` feeds input `to.1` of node `to.0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub from: (usize, usize),
    pub to: (usize, usize),
    pub queue: usize,
    pub when_full: WhenFull,
}

impl CheckedGraph {
    pub fn node(&self, id: &str) -> Option<&CheckedNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
    /// Nodes in an order where every producer comes before its consumers.
    pub fn topo_order(&self) -> Vec<usize> {
        let g = self.digraph();
        petgraph::algo::toposort(&g, None)
            .map(|order| order.into_iter().map(|i| i.index()).collect())
            .unwrap_or_else(|_| (0..self.nodes.len()).collect())
    }
    /// The graph as a petgraph `DiGraph` (node weights: indices into `nodes`).
    pub fn digraph(&self) -> DiGraph<usize, usize> {
        let mut g = DiGraph::new();
        let idx: Vec<NodeIndex> = (0..self.nodes.len()).map(|i| g.add_node(i)).collect();
        for (e, edge) in self.edges.iter().enumerate() {
            g.add_edge(idx[edge.from.0], idx[edge.to.0], e);
        }
        g
    }
}

/// How strict the check is about graph params without a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `vidflow check`: a param with no default is fine (it will be given with `--set`).
    Check,
    /// `vidflow run`: every referenced param needs a value.
    Run,
}

/// Checks a graph. `overrides` are `--set name=value` pairs (values parsed as YAML).
/// Returns the graph, or every diagnostic sorted by position. The spec should come from
/// [`crate::spec::load`] with its diagnostics; a node that the loader found no usable `kind` for
/// makes this an `Err` even when this pass adds no diagnostic of its own.
pub fn check(
    spec: &GraphSpec,
    registry: &Registry,
    overrides: &[(String, Yv)],
    mode: Mode,
) -> Result<CheckedGraph, Vec<Diagnostic>> {
    let mut cx = Checker {
        spec,
        registry,
        mode,
        diags: vec![],
        values: BTreeMap::new(),
    };
    cx.graph_params(overrides);
    cx.ids();
    let nodes: Vec<Option<CheckedNode>> = spec.nodes.iter().map(|n| cx.node(n)).collect();
    let edges = cx.wiring();
    cx.cycles(&edges);
    let mut diags = cx.diags;
    diags.sort_by_key(|d| (d.span, d.code));
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    // A node without a usable `kind` (the loader reported why) cannot be checked: the graph is
    // invalid even though this pass found nothing more to say.
    let Some(nodes) = nodes.into_iter().collect::<Option<Vec<CheckedNode>>>() else {
        return Err(diags);
    };
    Ok(CheckedGraph {
        name: spec.name.clone().unwrap_or_else(|| "graph".into()),
        nodes,
        edges,
    })
}

struct Checker<'a> {
    spec: &'a GraphSpec,
    registry: &'a Registry,
    mode: Mode,
    diags: Vec<Diagnostic>,
    /// Graph param values after overrides (`None`: declared without default and not set).
    values: BTreeMap<String, Option<Yv>>,
}

/// The outcome of substituting `${name}` references in a value.
enum Subst {
    Value(Yv),
    /// References a param that has no value yet (only in `Mode::Check`).
    Unresolved,
    Error,
}

impl Checker<'_> {
    fn graph_params(&mut self, overrides: &[(String, Yv)]) {
        for p in &self.spec.params {
            if self
                .values
                .insert(p.name.clone(), p.default.clone())
                .is_some()
            {
                self.diags.push(
                    Diagnostic::error(
                        "duplicate-param",
                        format!("graph param `{}` is declared twice", p.name),
                    )
                    .at(p.span, "declared again here"),
                );
            }
        }
        for (name, value) in overrides {
            match self.values.get_mut(name) {
                Some(slot) => *slot = Some(value.clone()),
                None => {
                    let names: Vec<&str> =
                        self.spec.params.iter().map(|p| p.name.as_str()).collect();
                    self.diags.push(
                        Diagnostic::error(
                            "unknown-param",
                            format!("`--set {name}=…` names no param of this graph"),
                        )
                        .help(suggest(
                            name,
                            names.iter().copied(),
                            "the graph's params",
                        )),
                    );
                }
            }
        }
    }

    fn ids(&mut self) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for n in &self.spec.nodes {
            if let Some(first) = seen.get(n.id.as_str()) {
                self.diags.push(
                    Diagnostic::error("duplicate-id", format!("node id `{}` is used twice", n.id))
                        .at(n.id_span, "used again here")
                        .help(format!(
                            "first used on line {}; give every node a unique id",
                            first.line
                        )),
                );
            } else {
                seen.insert(&n.id, n.id_span);
            }
        }
    }

    fn kind_of(&self, n: &NodeSpec) -> Option<&NodeKind> {
        self.registry.get(&n.kind)
    }

    fn node(&mut self, n: &NodeSpec) -> Option<CheckedNode> {
        let registry = self.registry;
        let Some(kind) = registry.get(&n.kind) else {
            if !n.kind.is_empty() {
                self.diags.push(
                    Diagnostic::error("unknown-kind", format!("unknown node kind `{}`", n.kind))
                        .at(n.kind_span, "not a registered node kind")
                        .help(format!(
                            "{} (`vidflow nodes` lists them all)",
                            suggest(&n.kind, registry.names(), "kinds")
                        )),
                );
            }
            return None;
        };
        let errors_before = self.error_count();
        let mut params = Params {
            node: n.id.clone(),
            values: serde_json::Map::new(),
        };
        let mut unresolved = false;
        for (key, value) in &n.params {
            let name = key.key_text();
            let Some(pspec) = kind.param_spec(&name) else {
                self.diags.push(
                    Diagnostic::error(
                        "unknown-param",
                        format!("node kind `{}` has no param `{name}`", kind.name),
                    )
                    .at(key.span, "unknown param")
                    .help(suggest(
                        &name,
                        kind.params.iter().map(|p| p.name),
                        "its params",
                    )),
                );
                continue;
            };
            match self.substitute(value) {
                Subst::Value(v) => {
                    if let Some(bad) = non_finite(&v) {
                        self.diags.push(
                            Diagnostic::error(
                                "param-type",
                                format!(
                                    "param `{name}` of node `{}`: `{}` is not a finite number",
                                    n.id, bad
                                ),
                            )
                            .at(bad.span, "not a finite number")
                            .help(format!("{}: {} ({})", pspec.name, pspec.doc, pspec.ty)),
                        );
                    } else if let Err(msg) = pspec.ty.check(&v) {
                        // In a list, point at the first item that is wrong.
                        let (at, expected) = failing_item(&pspec.ty, &v).unwrap_or((&v, &pspec.ty));
                        let from = match value.as_str() {
                            Some(s) if s.contains("${") => format!(" (from `{s}`)"),
                            _ => String::new(),
                        };
                        let hint = match (&pspec.ty, v.as_str()) {
                            (ParamType::Enum(options), Some(s)) => {
                                crate::diag::did_you_mean(s, options.iter().copied())
                                    .map(|best| format!("; did you mean `{best}`?"))
                                    .unwrap_or_default()
                            }
                            _ => String::new(),
                        };
                        self.diags.push(
                            Diagnostic::error(
                                "param-type",
                                format!("param `{name}` of node `{}`: {msg}{from}", n.id),
                            )
                            .at(at.span, format!("expected {expected}"))
                            .help(format!("{}: {}{hint}", pspec.name, pspec.doc)),
                        );
                    }
                    params.values.insert(name, v.to_json());
                }
                Subst::Unresolved => unresolved = true,
                Subst::Error => {}
            }
        }
        for p in &kind.params {
            if params.values.contains_key(p.name)
                || n.params.iter().any(|(k, _)| k.as_str() == Some(p.name))
            {
                continue;
            }
            if p.required {
                self.diags.push(
                    Diagnostic::error(
                        "missing-param",
                        format!("node `{}` ({}) needs param `{}`", n.id, kind.name, p.name),
                    )
                    .at(n.id_span, format!("no `{}` given", p.name))
                    .help(format!(
                        "add `{}: <{}>` under the node's `params:`; {}: {}",
                        p.name, p.ty, p.name, p.doc
                    )),
                );
            } else if let Some(d) = &p.default {
                params.values.insert(p.name.to_string(), d.clone());
            }
        }
        // Kind-specific validation needs every param's final value.
        if let Some(validate) = kind
            .validator
            .as_ref()
            .filter(|_| self.error_count() == errors_before && !unresolved)
        {
            {
                for problem in validate(&params) {
                    let span = n
                        .params
                        .iter()
                        .find(|(k, _)| k.as_str() == Some(problem.param.as_str()))
                        .map(|(_, v)| match problem.at {
                            // A position inside the value's text (a string, often a block
                            // scalar); the whole value when it cannot be mapped exactly.
                            Some((line, col)) => {
                                // Not when `${…}` changed the text the validator saw.
                                v.as_str()
                                    .filter(|s| !s.contains("${"))
                                    .and_then(|s| {
                                        yaml::position_in_str(
                                            &self.spec.file.text,
                                            v.span,
                                            s,
                                            line,
                                            col,
                                            1,
                                        )
                                    })
                                    .unwrap_or(v.span)
                            }
                            None => v.span,
                        })
                        .unwrap_or(n.id_span);
                    let mut d = Diagnostic::error(
                        "invalid-param",
                        format!("node `{}`: {}", n.id, problem.message),
                    )
                    .at(span, format!("in `{}`", problem.param));
                    if let Some(h) = problem.help {
                        d = d.help(h);
                    }
                    self.diags.push(d);
                }
            }
        }
        let workers = n.workers.map(|w| w.0).unwrap_or(1);
        if let (true, Some((w, span))) = (kind.is_source(), n.workers)
            && w > 1
        {
            {
                self.diags.push(
                    Diagnostic::error(
                        "bad-workers",
                        format!("node `{}` is a source; sources run as one worker", n.id),
                    )
                    .at(span, "replicas of a source")
                    .help(
                        "remove `workers`, or put `workers` on the node that does the heavy work",
                    ),
                );
            }
        }
        let batch = match (n.batch, kind.batch_port) {
            (Some((cfg, _)), Some(_)) => Some(cfg),
            (Some((_, span)), None) => {
                self.diags.push(
                    Diagnostic::error(
                        "not-batchable",
                        format!("node kind `{}` takes no batches", kind.name),
                    )
                    .at(span, "batching is not supported here")
                    .help("remove `batch`; `vidflow nodes` marks the kinds with a batched input"),
                );
                None
            }
            (None, _) => kind.default_batch,
        };
        Some(CheckedNode {
            id: n.id.clone(),
            kind: kind.clone(),
            params,
            workers,
            batch,
            on_error: n.on_error,
        })
    }

    fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }

    /// Replaces `${name}` references inside a value. A string that is exactly `${name}` takes
    /// the param's value with its type; inside a longer string the value is spliced in as text.
    /// `$${` writes a literal `${`.
    fn substitute(&mut self, v: &Yv) -> Subst {
        match &v.v {
            YvKind::Str(s) if s.contains("${") => self.substitute_str(s, v),
            YvKind::Seq(items) => {
                let mut out = vec![];
                for item in items {
                    match self.substitute(item) {
                        Subst::Value(x) => out.push(x),
                        other => return other,
                    }
                }
                Subst::Value(Yv::new(v.span, YvKind::Seq(out)))
            }
            YvKind::Map(entries) => {
                let mut out = vec![];
                for (k, item) in entries {
                    match self.substitute(item) {
                        Subst::Value(x) => out.push((k.clone(), x)),
                        other => return other,
                    }
                }
                Subst::Value(Yv::new(v.span, YvKind::Map(out)))
            }
            _ => Subst::Value(v.clone()),
        }
    }

    /// The span of the `${` at byte `at` of string value `v`'s text `s`, up to the closing `}`
    /// when `closed`; found in the source, so that quotes, escapes and block scalars do not
    /// shift it. The whole value when it cannot be found.
    fn reference_span(&self, v: &Yv, s: &str, at: usize, closed: bool) -> Span {
        let n = s[..at].matches("${").count();
        match yaml::locate_nth(&self.spec.file.text, v.span, "${", n) {
            Some((line, col, text)) => {
                let len = if closed {
                    text.chars()
                        .skip(col as usize - 1)
                        .position(|c| c == '}')
                        .map_or(2, |p| p + 1)
                } else {
                    2
                };
                Span::new(line, col, len as u32)
            }
            None => v.span,
        }
    }

    fn substitute_str(&mut self, s: &str, v: &Yv) -> Subst {
        let mut out = String::new();
        // Byte offset in `s` of the text not yet copied.
        let mut pos = 0;
        let mut whole: Option<Yv> = None;
        while let Some(found) = s[pos..].find("${") {
            let start = pos + found;
            if s[pos..start].ends_with('$') {
                // `$${`: a literal `${`.
                out.push_str(&s[pos..start - 1]);
                out.push_str("${");
                pos = start + 2;
                continue;
            }
            out.push_str(&s[pos..start]);
            let Some(end) = s[start..].find('}').map(|e| start + e) else {
                self.diags.push(
                    Diagnostic::error("bad-reference", "unclosed `${` in a param value")
                        .at(self.reference_span(v, s, start, false), "no closing `}`")
                        .help("write `${name}`, or `$${` for a literal `${`"),
                );
                return Subst::Error;
            };
            let name = &s[start + 2..end];
            let ref_span = self.reference_span(v, s, start, true);
            let value = match self.values.get(name) {
                None => {
                    let names: Vec<&str> = self.values.keys().map(String::as_str).collect();
                    let help = match crate::diag::did_you_mean(name, names.iter().copied()) {
                        Some(best) => format!("did you mean `${{{best}}}`?"),
                        None if names.is_empty() => format!(
                            "the graph declares no params; add `{name}: <default>` under a top-level `params:`"
                        ),
                        None => format!(
                            "declare `{name}` under the graph's `params:` (declared: {})",
                            names
                                .iter()
                                .map(|n| format!("`{n}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    self.diags.push(
                        Diagnostic::error(
                            "unknown-reference",
                            format!("`${{{name}}}` refers to no graph param"),
                        )
                        .at(ref_span, "unknown param")
                        .help(help),
                    );
                    return Subst::Error;
                }
                Some(None) if self.mode == Mode::Check => return Subst::Unresolved,
                Some(None) => {
                    self.diags.push(
                        Diagnostic::error(
                            "missing-value",
                            format!("graph param `{name}` has no value"),
                        )
                        .at(ref_span, "used here")
                        .help(format!(
                            "pass `--set {name}=…`, or give it a default under `params:`"
                        )),
                    );
                    return Subst::Error;
                }
                Some(Some(value)) => value.clone(),
            };
            if start == 0 && end + 1 == s.len() {
                whole = Some(Yv::new(ref_span, value.v));
            } else if matches!(value.v, YvKind::Seq(_) | YvKind::Map(_)) {
                self.diags.push(
                    Diagnostic::error(
                        "bad-reference",
                        format!(
                            "`${{{name}}}` is a list or mapping and cannot be spliced into text"
                        ),
                    )
                    .at(ref_span, "not a plain value")
                    .help(format!("use `${{{name}}}` as the whole value")),
                );
                return Subst::Error;
            } else {
                out.push_str(&value.to_string());
            }
            pos = end + 1;
        }
        out.push_str(&s[pos..]);
        Subst::Value(whole.unwrap_or_else(|| Yv::new(v.span, YvKind::Str(out))))
    }

    /// The span of part of an input's `node.port` reference (`len` characters at `offset`).
    fn reference_part(&self, input: &InputSpec, offset: usize, len: usize) -> Span {
        let written = match &input.from_port {
            Some(p) => format!("{}.{p}", input.from_node),
            None => input.from_node.clone(),
        };
        yaml::position_in_str(
            &self.spec.file.text,
            input.from_span,
            &written,
            1,
            offset as u32 + 1,
            len as u32,
        )
        .unwrap_or(input.from_span)
    }

    fn wiring(&mut self) -> Vec<Edge> {
        let spec = self.spec;
        let index: HashMap<&str, usize> = spec
            .nodes
            .iter()
            .enumerate()
            .rev()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let mut edges = vec![];
        for (ti, n) in spec.nodes.iter().enumerate() {
            let kind = self.kind_of(n).cloned();
            for input in &n.inputs {
                let to_port = match &kind {
                    Some(k) => match k.input_index(&input.port) {
                        Some(p) => Some(p),
                        None => {
                            let help = if k.inputs.is_empty() {
                                format!("`{}` is a source and takes no inputs", k.name)
                            } else {
                                suggest(&input.port, k.inputs.iter().map(|p| p.name), "its inputs")
                            };
                            self.diags.push(
                                Diagnostic::error(
                                    "unknown-port",
                                    format!("node kind `{}` has no input `{}`", k.name, input.port),
                                )
                                .at(input.port_span, "unknown input")
                                .help(help),
                            );
                            None
                        }
                    },
                    None => None,
                };
                let Some(&fi) = index.get(input.from_node.as_str()) else {
                    self.diags.push(
                        Diagnostic::error(
                            "unknown-node",
                            format!(
                                "input `{}` of node `{}` refers to a node `{}` that does not exist",
                                input.port, n.id, input.from_node
                            ),
                        )
                        .at(
                            self.reference_part(input, 0, input.from_node.chars().count()),
                            "no such node",
                        )
                        .help(suggest(
                            &input.from_node,
                            spec.nodes.iter().map(|n| n.id.as_str()),
                            "the graph's nodes",
                        )),
                    );
                    continue;
                };
                let Some(from_kind) = self.kind_of(&spec.nodes[fi]).cloned() else {
                    continue;
                };
                let from_port = match &input.from_port {
                    Some(p) => match from_kind.output_index(p) {
                        Some(i) => i,
                        None => {
                            let help = if from_kind.outputs.is_empty() {
                                format!("`{}` is a sink and has no outputs", from_kind.name)
                            } else {
                                suggest(p, from_kind.outputs.iter().map(|p| p.name), "its outputs")
                            };
                            self.diags.push(
                                Diagnostic::error(
                                    "unknown-port",
                                    format!(
                                        "node `{}` ({}) has no output `{p}`",
                                        input.from_node, from_kind.name
                                    ),
                                )
                                .at(
                                    self.reference_part(
                                        input,
                                        input.from_node.chars().count() + 1,
                                        p.chars().count(),
                                    ),
                                    "unknown output",
                                )
                                .help(help),
                            );
                            continue;
                        }
                    },
                    None if from_kind.outputs.len() == 1 => 0,
                    None => {
                        let outs: Vec<String> = from_kind
                            .outputs
                            .iter()
                            .map(|p| format!("`{}.{}`", input.from_node, p.name))
                            .collect();
                        self.diags.push(
                            Diagnostic::error(
                                "ambiguous-port",
                                format!(
                                    "`{}` has {} outputs; say which one",
                                    input.from_node,
                                    outs.len()
                                ),
                            )
                            .at(input.from_span, "which output?")
                            .help(if outs.is_empty() {
                                "it has no outputs".to_string()
                            } else {
                                format!("write one of {}", outs.join(", "))
                            }),
                        );
                        continue;
                    }
                };
                let (Some(k), Some(to_port)) = (&kind, to_port) else {
                    continue;
                };
                let (out_spec, in_spec) = (&from_kind.outputs[from_port], &k.inputs[to_port]);
                if !in_spec.ty.accepts(out_spec.ty) {
                    self.diags.push(
                        Diagnostic::error(
                            "type-mismatch",
                            format!(
                                "`{}.{}` produces {}, but input `{}.{}` takes {}",
                                input.from_node,
                                out_spec.name,
                                out_spec.ty,
                                n.id,
                                in_spec.name,
                                in_spec.ty
                            ),
                        )
                        .at(
                            input.from_span,
                            format!("{} here, {} expected", out_spec.ty, in_spec.ty),
                        )
                        .help(format!(
                            "connect an output of type {} to `{}`",
                            in_spec.ty, in_spec.name
                        )),
                    );
                    continue;
                }
                // Also between nodes with param errors, so that cycles through them are found in
                // the same round; the edges are only used when there is no error at all.
                edges.push(Edge {
                    from: (fi, from_port),
                    to: (ti, to_port),
                    queue: input.queue.unwrap_or(DEFAULT_QUEUE),
                    when_full: input.when_full,
                });
            }
            if let Some(k) = &kind
                && !n.inputs_invalid
            {
                for p in k.inputs.iter().filter(|p| p.required) {
                    // A misspelt port (reported above) is not also reported as unconnected.
                    let misspelt = n.inputs.iter().any(|i| {
                        k.input_index(&i.port).is_none()
                            && crate::diag::did_you_mean(&i.port, k.inputs.iter().map(|p| p.name))
                                == Some(p.name)
                    });
                    if !misspelt && !n.inputs.iter().any(|i| i.port == p.name) {
                        self.diags.push(
                            Diagnostic::error(
                                "unconnected-input",
                                format!(
                                    "input `{}` of node `{}` ({}) is not connected",
                                    p.name, n.id, k.name
                                ),
                            )
                            .at(n.id_span, format!("`{}` not connected", p.name))
                            .help(if p.ty == crate::payload::PortType::ANY {
                                format!("add `inputs: {{ {}: <node>.<port> }}`", p.name)
                            } else {
                                format!(
                                    "add `inputs: {{ {}: <node>.<port> }}` naming an output of type {}",
                                    p.name, p.ty
                                )
                            }),
                        );
                    }
                }
            }
        }
        edges
    }

    /// Reports each cycle once, with its whole path, at the input reference that closes it.
    fn cycles(&mut self, edges: &[Edge]) {
        let spec = self.spec;
        let mut g: DiGraph<usize, ()> = DiGraph::new();
        let idx: Vec<NodeIndex> = (0..spec.nodes.len()).map(|i| g.add_node(i)).collect();
        for e in edges {
            g.add_edge(idx[e.from.0], idx[e.to.0], ());
        }
        for scc in petgraph::algo::tarjan_scc(&g) {
            let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            // The shortest way from the member declared first back to itself (breadth first,
            // visiting successors in declaration order, so the path is deterministic).
            let start = *scc.iter().min_by_key(|i| i.index()).expect("non-empty");
            let mut came_from: HashMap<NodeIndex, NodeIndex> = HashMap::new();
            let mut queue = std::collections::VecDeque::from([start]);
            'search: while let Some(cur) = queue.pop_front() {
                let mut next: Vec<NodeIndex> =
                    g.neighbors(cur).filter(|n| scc.contains(n)).collect();
                next.sort();
                next.dedup();
                for n in next {
                    if n == start {
                        came_from.insert(start, cur);
                        break 'search;
                    }
                    if let std::collections::hash_map::Entry::Vacant(e) = came_from.entry(n) {
                        e.insert(cur);
                        queue.push_back(n);
                    }
                }
            }
            let mut path = vec![start];
            let mut cur = start;
            while let Some(&prev) = came_from.get(&cur) {
                path.push(prev);
                if prev == start || path.len() > scc.len() + 1 {
                    break;
                }
                cur = prev;
            }
            path.reverse();
            if path.len() < 2 {
                continue;
            }
            let names: Vec<&str> = path
                .iter()
                .map(|i| spec.nodes[i.index()].id.as_str())
                .collect();
            let (last, closing) = (path[path.len() - 2].index(), path[path.len() - 1].index());
            let span = spec.nodes[closing]
                .inputs
                .iter()
                .find(|i| i.from_node == spec.nodes[last].id)
                .map(|i| i.from_span)
                .unwrap_or(spec.nodes[closing].id_span);
            self.diags.push(
                Diagnostic::error(
                    "cycle",
                    format!("the graph has a cycle: {}", names.join(" → ")),
                )
                .at(span, "this input closes the cycle")
                .help("data must flow one way; remove one of these connections"),
            );
        }
    }
}

/// The first number in a value that JSON cannot carry (`.inf`, `.nan`), if any.
fn non_finite(v: &Yv) -> Option<&Yv> {
    match &v.v {
        YvKind::Float(f) if !f.is_finite() => Some(v),
        YvKind::Seq(items) => items.iter().find_map(non_finite),
        YvKind::Map(entries) => entries.iter().find_map(|(_, x)| non_finite(x)),
        _ => None,
    }
}

/// The first item of a list value that its list type rejects, with the type it should have.
fn failing_item<'v, 't>(ty: &'t ParamType, v: &'v Yv) -> Option<(&'v Yv, &'t ParamType)> {
    match (ty, &v.v) {
        (ParamType::List(of) | ParamType::OneOrList(of), YvKind::Seq(items)) => {
            let item = items.iter().find(|i| of.check(i).is_err())?;
            Some(failing_item(of, item).unwrap_or((item, of)))
        }
        _ => None,
    }
}
