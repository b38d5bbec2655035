//! The checker: turns a [`GraphSpec`] into a [`CheckedGraph`] the executor can run, or into the
//! full list of what is wrong with it. Every pass runs even after an earlier one found errors,
//! so a user fixes a file in one round: graph params and `--set` overrides, ids, kinds, params
//! (types, ranges, `${param}` references, required ones, kind-specific validation), wiring
//! (ports, types, required inputs), engine settings, and cycles.

use crate::diag::{Diagnostic, Span, suggest};
use crate::node::{BatchConfig, NodeKind, Params};
use crate::registry::Registry;
use crate::spec::{DEFAULT_QUEUE, GraphSpec, NodeSpec, OnError, WhenFull};
use crate::yaml::{Yv, YvKind};
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
/// Returns the graph and any warnings, or every diagnostic sorted by position.
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
    let edges = cx.wiring(&nodes);
    cx.cycles(&edges);
    let mut diags = cx.diags;
    diags.sort_by_key(|d| (d.span, d.code));
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    let nodes: Vec<CheckedNode> = nodes
        .into_iter()
        .map(|n| n.expect("no errors, so every node is checked"))
        .collect();
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
                    if let Err(msg) = pspec.ty.check(&v) {
                        let from = match value.as_str() {
                            Some(s) if s.contains("${") => format!(" (from `{s}`)"),
                            _ => String::new(),
                        };
                        self.diags.push(
                            Diagnostic::error(
                                "param-type",
                                format!("param `{name}` of node `{}`: {msg}{from}", n.id),
                            )
                            .at(value.span, format!("expected {}", pspec.ty))
                            .help(format!("{}: {}", pspec.name, pspec.doc)),
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
                    .at(n.id_span, "declared here")
                    .help(format!(
                        "add `{}: …` under `params:` — {} ({})",
                        p.name, p.doc, p.ty
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
                            // A position inside a block scalar: its text starts on the next line.
                            Some((line, col)) if v.span.line > 0 => {
                                Span::new(v.span.line + line, col, 1)
                            }
                            _ => v.span,
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
            YvKind::Str(s) if s.contains("${") => self.substitute_str(s, v.span),
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

    fn substitute_str(&mut self, s: &str, span: Span) -> Subst {
        // The column of the string's first character: a quoted scalar's span starts at the quote.
        let quote = u32::from(span.len as usize > s.chars().count());
        let mut out = String::new();
        let mut rest = s;
        let mut offset = 0u32;
        let mut whole: Option<Yv> = None;
        while let Some(start) = rest.find("${") {
            if rest[..start].ends_with('$') {
                out.push_str(&rest[..start - 1]);
                out.push_str("${");
                offset += (start + 2) as u32;
                rest = &rest[start + 2..];
                continue;
            }
            out.push_str(&rest[..start]);
            let Some(end) = rest[start..].find('}') else {
                self.diags.push(
                    Diagnostic::error("bad-reference", "unclosed `${` in a param value")
                        .at(span.sub(quote + offset + start as u32, 2), "no closing `}`")
                        .help("write `${name}`, or `$${` for a literal `${`"),
                );
                return Subst::Error;
            };
            let name = &rest[start + 2..start + end];
            let ref_span = span.sub(quote + offset + start as u32, end as u32 + 1);
            let value = match self.values.get(name) {
                None => {
                    let names: Vec<String> = self.values.keys().cloned().collect();
                    self.diags.push(
                        Diagnostic::error(
                            "unknown-reference",
                            format!("`${{{name}}}` refers to no graph param"),
                        )
                        .at(ref_span, "unknown param")
                        .help(format!(
                            "{}; declare it under the graph's `params:`",
                            suggest(name, names.iter().map(String::as_str), "declared params")
                        )),
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
                Some(Some(v)) => v.clone(),
            };
            if start == 0 && end + 1 == rest.len() && out.is_empty() && offset == 0 {
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
            offset += (start + end + 1) as u32;
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        Subst::Value(whole.unwrap_or_else(|| Yv::new(span, YvKind::Str(out))))
    }

    fn wiring(&mut self, nodes: &[Option<CheckedNode>]) -> Vec<Edge> {
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
                        .at(input.from_span, "no such node")
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
                                .at(input.from_span, "unknown output")
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
                if nodes[ti].is_some() && nodes[fi].is_some() {
                    edges.push(Edge {
                        from: (fi, from_port),
                        to: (ti, to_port),
                        queue: input.queue.unwrap_or(DEFAULT_QUEUE),
                        when_full: input.when_full,
                    });
                }
            }
            if let Some(k) = &kind {
                for p in k.inputs.iter().filter(|p| p.required) {
                    if !n.inputs.iter().any(|i| i.port == p.name) {
                        self.diags.push(
                            Diagnostic::error(
                                "unconnected-input",
                                format!(
                                    "input `{}` of node `{}` ({}) is not connected",
                                    p.name, n.id, k.name
                                ),
                            )
                            .at(n.id_span, "declared here")
                            .help(format!(
                                "add `inputs: {{ {}: <node>.<port> }}` with a {} output",
                                p.name, p.ty
                            )),
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
            // Walk the cycle from the member declared first, always to a member of the SCC.
            let start = *scc.iter().min_by_key(|i| i.index()).expect("non-empty");
            let mut path = vec![start];
            let mut cur = start;
            loop {
                let next = g
                    .neighbors(cur)
                    .filter(|n| scc.contains(n))
                    .min_by_key(|n| if *n == start { 0 } else { n.index() + 1 })
                    .expect("an SCC member has a successor in the SCC");
                if next == start || path.contains(&next) {
                    path.push(next);
                    break;
                }
                path.push(next);
                cur = next;
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
