//! The check stage: turns a loaded [`GraphSpec`] into a [`CheckedGraph`] that can be planned and
//! run, or into the full list of what is wrong with it. Every pass runs even after an earlier
//! one found errors, so a user fixes a file in one round. One file per pass: [`names`] (unique
//! ids), [`kinds`] (known kinds), [`params`] (types, ranges, required, defaults), [`settings`]
//! (workers, batch), [`wiring`] (ports, types, required inputs), [`rules`] (each kind's own
//! rules, which see the wiring), [`cycles`] and [`sessions`] (a serve graph's sessions cannot
//! mix).

mod cycles;
mod files;
mod kinds;
mod names;
pub(crate) mod params;
mod rules;
mod sessions;
mod settings;
mod wiring;

pub use crate::load::Mode;

use crate::config::{BatchConfig, OnError, ServeConfig, WhenFull};
use crate::diag::Diagnostic;
use crate::load::GraphSpec;
use crate::node::{NodeKind, Params};
use crate::registry::Registry;

/// A graph whose every node, param and connection is valid.
#[derive(Clone, Debug)]
pub struct CheckedGraph {
    pub name: String,
    pub nodes: Vec<CheckedNode>,
    pub edges: Vec<Edge>,
    /// `Some` for a serve graph (one with a `serve:` section or a node that brings sessions
    /// in): what `vidflow serve` admits.
    pub serve: Option<ServeConfig>,
}

#[derive(Clone, Debug)]
pub struct CheckedNode {
    pub id: String,
    pub kind: NodeKind,
    pub params: Params,
    pub workers: usize,
    pub batch: Option<BatchConfig>,
    pub on_error: OnError,
    /// Where the node's `kind:` is written, for diagnostics of later stages (jobs).
    pub span: crate::diag::Span,
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
}

/// Checks a loaded graph (from [`crate::load::load`], with its diagnostics). Returns the
/// graph, or every diagnostic of this stage sorted by position; a node that the loader found
/// no usable `kind` for makes this an `Err` even when this stage adds no diagnostic of its own.
pub fn check(spec: &GraphSpec, registry: &Registry) -> Result<CheckedGraph, Vec<Diagnostic>> {
    let mut cx = Checker {
        spec,
        registry,
        diags: vec![],
    };
    cx.ids();
    let mut nodes = vec![];
    for n in &spec.nodes {
        let checked = cx.kind(n).map(|kind| {
            let params = cx.params(n, kind);
            let (workers, batch) = cx.settings(n, kind);
            (
                CheckedNode {
                    id: n.id.clone(),
                    kind: kind.clone(),
                    params: params.params,
                    workers,
                    batch,
                    on_error: n.on_error,
                    span: n.kind_span,
                },
                params.complete,
            )
        });
        nodes.push(checked);
    }
    let edges = cx.wiring();
    for (i, (n, checked)) in spec.nodes.iter().zip(&nodes).enumerate() {
        if let Some((node, true)) = checked {
            cx.rules(i, n, &node.kind, &node.params, &edges);
        }
    }
    cx.cycles(&edges);
    let serve = cx.sessions(&nodes, &edges);
    cx.files(&nodes);
    let mut diags = cx.diags;
    diags.sort_by_key(|d| (d.span, d.code));
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    let Some(nodes) = nodes
        .into_iter()
        .map(|n| n.map(|(node, _)| node))
        .collect::<Option<Vec<CheckedNode>>>()
    else {
        return Err(diags);
    };
    Ok(CheckedGraph {
        name: spec.name.clone().unwrap_or_else(|| "graph".into()),
        nodes,
        edges,
        serve,
    })
}

/// The state the passes share: the graph, the kinds, and the diagnostics so far.
struct Checker<'a> {
    spec: &'a GraphSpec,
    registry: &'a Registry,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }
}
