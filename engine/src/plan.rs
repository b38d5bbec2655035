//! The plan stage: a checked graph as the executor runs it — a petgraph `DiGraph` with the
//! nodes in topological order, one edge config per connection (queue size, what a full queue
//! does), each node's replicas, batched port and error policy. `vidflow graph` renders it as
//! Graphviz DOT or Mermaid, `vidflow run` executes it. Planning also negotiates the pixel
//! format of each frame output (see [`PixelFormat`]).

use crate::check::{CheckedGraph, CheckedNode};
use crate::config::{BatchConfig, OnError, WhenFull};
use crate::node::{NodeKind, Params};
use crate::payload::PixelFormat;
use petgraph::graph::{DiGraph, NodeIndex};
use std::fmt::Write as _;

/// A graph ready to run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    /// The nodes in the order the graph file declares them (reports and progress use it).
    pub nodes: Vec<PlanNode>,
    pub edges: Vec<PlanEdge>,
    /// Node indices in topological order: every producer before its consumers.
    pub order: Vec<usize>,
    /// The graph: node weights are indices into `nodes`, edge weights into `edges`.
    pub graph: DiGraph<usize, usize>,
}

/// One node of a plan.
#[derive(Clone, Debug)]
pub struct PlanNode {
    pub id: String,
    pub kind: NodeKind,
    pub params: Params,
    /// Replicas, each on its own thread (1: the node runs on one thread).
    pub workers: usize,
    /// The batched input port and its batching.
    pub batch: Option<(usize, BatchConfig)>,
    pub on_error: OnError,
    /// Per output port, the pixel format its frames travel in (negotiated by
    /// [`Plan::from_parts`]; whatever is here before is replaced).
    pub output_formats: Vec<PixelFormat>,
}

/// One connection: output port `from.1` of node `from.0` feeds input `to.1` of node `to.0`
/// through a bounded queue of `queue` items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanEdge {
    pub from: (usize, usize),
    pub to: (usize, usize),
    pub queue: usize,
    pub when_full: WhenFull,
}

impl Plan {
    /// Plans a checked graph.
    pub fn new(graph: &CheckedGraph) -> Plan {
        let nodes: Vec<PlanNode> = graph.nodes.iter().map(plan_node).collect();
        let edges: Vec<PlanEdge> = graph
            .edges
            .iter()
            .map(|e| PlanEdge {
                from: e.from,
                to: e.to,
                queue: e.queue,
                when_full: e.when_full,
            })
            .collect();
        Plan::from_parts(graph.name.clone(), nodes, edges)
    }

    /// A plan of these nodes and edges (a job's plan for one chunk is its graph's plan with
    /// params rewritten and nodes inserted). The edges must form no cycle.
    pub fn from_parts(name: String, mut nodes: Vec<PlanNode>, edges: Vec<PlanEdge>) -> Plan {
        let mut g = DiGraph::new();
        let idx: Vec<NodeIndex> = (0..nodes.len()).map(|i| g.add_node(i)).collect();
        for (i, e) in edges.iter().enumerate() {
            g.add_edge(idx[e.from.0], idx[e.to.0], i);
        }
        // The checker rejected cycles, so the sort succeeds.
        let order: Vec<usize> = petgraph::algo::toposort(&g, None)
            .map(|order| order.into_iter().map(|i| g[i]).collect())
            .unwrap_or_else(|_| (0..nodes.len()).collect());
        negotiate(&mut nodes, &edges, &order);
        Plan {
            name,
            nodes,
            edges,
            order,
            graph: g,
        }
    }

    pub fn node(&self, id: &str) -> Option<&PlanNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Graphviz DOT: nodes in topological order, each edge labelled with its ports and queue.
    pub fn to_dot(&self) -> String {
        let mut s = format!(
            "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n",
            self.name
        );
        for &i in &self.order {
            let n = &self.nodes[i];
            let _ = writeln!(s, "  \"{}\" [label=\"{}\"];", n.id, node_label(n));
        }
        for e in &self.edges {
            let _ = writeln!(
                s,
                "  \"{}\" -> \"{}\" [label=\"{}\"];",
                self.nodes[e.from.0].id,
                self.nodes[e.to.0].id,
                self.edge_label(e)
            );
        }
        s.push_str("}\n");
        s
    }

    /// A Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut s = String::from("flowchart LR\n");
        for &i in &self.order {
            let n = &self.nodes[i];
            let _ = writeln!(
                s,
                "  {}[\"{}\"]",
                n.id,
                node_label(n).replace("\\n", "<br/>")
            );
        }
        for e in &self.edges {
            let _ = writeln!(
                s,
                "  {} -->|\"{}\"| {}",
                self.nodes[e.from.0].id,
                self.edge_label(e),
                self.nodes[e.to.0].id
            );
        }
        s
    }

    fn edge_label(&self, e: &PlanEdge) -> String {
        let from = self.nodes[e.from.0].kind.outputs[e.from.1].name;
        let to = self.nodes[e.to.0].kind.inputs[e.to.1].name;
        let policy = if e.when_full == WhenFull::DropOldest {
            ", drop_oldest"
        } else {
            ""
        };
        let format = match self.nodes[e.from.0].output_formats.get(e.from.1) {
            Some(f) if *f != PixelFormat::Rgb24 => format!(", {}", f.name()),
            _ => String::new(),
        };
        format!("{from} → {to} (q{}{policy}{format})", e.queue)
    }
}

fn plan_node(n: &CheckedNode) -> PlanNode {
    PlanNode {
        id: n.id.clone(),
        kind: n.kind.clone(),
        params: n.params.clone(),
        workers: n.workers,
        batch: n.kind.batch_port.zip(n.batch),
        on_error: n.on_error,
        output_formats: vec![],
    }
}

/// Picks each output port's pixel format: the first the port offers that every input it
/// feeds accepts, where an input a node passes frames through from (see
/// [`NodeKind::passes`]) accepts what it takes itself and all of the pass-through output's
/// consumers accept, and
/// a pass-through output carries what arrives. RGB24 is on every list, so there is always one;
/// a port nothing consumes makes RGB24. `order` is topological.
fn negotiate(nodes: &mut [PlanNode], edges: &[PlanEdge], order: &[usize]) {
    for &i in order {
        let kind = &nodes[i].kind;
        let formats = (0..kind.outputs.len())
            .map(|p| match kind.passes.iter().find(|&&(_, o)| o == p) {
                Some(&(q, _)) => edges
                    .iter()
                    .find(|e| e.to == (i, q))
                    .and_then(|e| nodes[e.from.0].output_formats.get(e.from.1).copied())
                    .unwrap_or(PixelFormat::Rgb24),
                None => {
                    let accepted = consumers_accept(nodes, edges, (i, p));
                    kind.outputs[p]
                        .formats
                        .iter()
                        .copied()
                        .find(|f| accepted.as_ref().is_some_and(|a| a.contains(f)))
                        .unwrap_or(PixelFormat::Rgb24)
                }
            })
            .collect();
        nodes[i].output_formats = formats;
    }
}

/// The formats every consumer of output `from` accepts (`None`: it has no consumer).
fn consumers_accept(
    nodes: &[PlanNode],
    edges: &[PlanEdge],
    from: (usize, usize),
) -> Option<Vec<PixelFormat>> {
    let mut all: Option<Vec<PixelFormat>> = None;
    for e in edges.iter().filter(|e| e.from == from) {
        let (j, q) = e.to;
        let kind = &nodes[j].kind;
        let own = kind.inputs[q].formats;
        let accepts = match kind.passes.iter().find(|&&(i, _)| i == q) {
            // What passes through must suit the node and everything behind it.
            Some(&(_, o)) => consumers_accept(nodes, edges, (j, o))
                .unwrap_or_else(|| PixelFormat::ALL.to_vec())
                .into_iter()
                .filter(|f| own.contains(f))
                .collect(),
            None => own.to_vec(),
        };
        all = Some(match all {
            None => accepts,
            Some(a) => a.into_iter().filter(|f| accepts.contains(f)).collect(),
        });
    }
    all
}
fn node_label(n: &PlanNode) -> String {
    let mut label = format!("{}\\n{}", n.id, n.kind.name);
    if n.workers > 1 {
        let _ = write!(label, " ×{}", n.workers);
    }
    if let Some((_, b)) = n.batch {
        let _ = write!(label, "\\nbatch {} / {} ms", b.max, b.wait_ms);
    }
    label
}

/// What [`crate::exec::run`] takes: a plan, or a checked graph (planned on the way).
pub trait ToPlan {
    fn to_plan(&self) -> std::borrow::Cow<'_, Plan>;
}

impl ToPlan for Plan {
    fn to_plan(&self) -> std::borrow::Cow<'_, Plan> {
        std::borrow::Cow::Borrowed(self)
    }
}

impl ToPlan for CheckedGraph {
    fn to_plan(&self) -> std::borrow::Cow<'_, Plan> {
        std::borrow::Cow::Owned(Plan::new(self))
    }
}
