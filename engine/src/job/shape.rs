//! Whether a checked graph can be cut into chunks of its source's timeline, and how: the one
//! source that is cut, the frames of context a chunk must read on each side (from the kinds'
//! declared [`Temporal`] contexts, added up along the graph), and every sink with the file it
//! writes and the inputs it gets once at assembly. A graph that cannot be cut gets one located
//! diagnostic per reason, naming the node.

use crate::check::CheckedGraph;
use crate::diag::Diagnostic;
use crate::node::{Temporal, ValidateCtx};
use std::path::PathBuf;

/// How a job cuts a graph.
#[derive(Clone, Debug)]
pub struct Shape {
    /// The node whose timeline is cut.
    pub source: usize,
    /// Frames of context each chunk reads before its first and after its last frame.
    pub before: u32,
    pub after: u32,
    pub sinks: Vec<SinkShape>,
}

#[derive(Clone, Debug)]
pub struct SinkShape {
    pub node: usize,
    /// The file it writes (`None`: it writes none).
    pub output: Option<PathBuf>,
    /// Edges (indices into the graph's edges) that the assembly feeds once instead of each
    /// chunk.
    pub whole_edges: Vec<usize>,
}

const CODE: &str = "not-chunkable";
const HELP: &str = "run the graph without `--job`, or change the node as said";

/// Decides whether `g` can be cut into chunks.
pub fn analyse(g: &CheckedGraph) -> Result<Shape, Vec<Diagnostic>> {
    let mut diags = vec![];
    let not = |i: usize, message: String| {
        let n = &g.nodes[i];
        Diagnostic::error(CODE, message)
            .at(n.span, "a job cannot cut this node into chunks")
            .help(HELP)
    };
    let n = g.nodes.len();
    let mut connected: Vec<Vec<bool>> = g
        .nodes
        .iter()
        .map(|n| vec![false; n.kind.inputs.len()])
        .collect();
    let mut consumers: Vec<Vec<usize>> = g
        .nodes
        .iter()
        .map(|n| vec![0; n.kind.outputs.len()])
        .collect();
    for e in &g.edges {
        connected[e.to.0][e.to.1] = true;
        consumers[e.from.0][e.from.1] += 1;
    }

    // The source: exactly one, and one whose timeline can be read.
    let sources: Vec<usize> = (0..n).filter(|&i| g.nodes[i].kind.is_source()).collect();
    let source = match sources.as_slice() {
        [s] => Some(*s),
        _ => {
            let names: Vec<String> = sources
                .iter()
                .map(|&i| format!("`{}`", g.nodes[i].id))
                .collect();
            for &s in sources.iter().skip(1) {
                diags.push(not(
                    s,
                    format!(
                        "a job cuts the timeline of one source, and this graph has {} ({})",
                        sources.len(),
                        names.join(", ")
                    ),
                ));
            }
            None
        }
    };
    if let Some(s) = source
        && g.nodes[s].kind.chunk_source.is_none()
    {
        diags.push(not(
            s,
            format!(
                "source `{}` ({}) has no timeline a job can cut; jobs cut a `decode` of a video file",
                g.nodes[s].id, g.nodes[s].kind.name
            ),
        ));
    }

    // Context: each node's frames of context, added up along every path from the source.
    let order = topological(g);
    let mut ctx = vec![(0u32, 0u32); n];
    for &i in &order {
        let node = &g.nodes[i];
        let cx = ValidateCtx {
            node_id: &node.id,
            params: &node.params,
            connected_inputs: &connected[i],
            output_consumers: &consumers[i],
        };
        let upstream = g
            .edges
            .iter()
            .filter(|e| e.to.0 == i)
            .map(|e| ctx[e.from.0])
            .fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
        let own = match node.kind.temporal.as_ref().map(|f| f(&cx)) {
            Some(Temporal::PerItem) => (0, 0),
            Some(Temporal::Frames { before, after }) => (before, after),
            Some(Temporal::AudioMs { before, after }) => {
                diags.push(not(i, format!(
                    "node `{}` ({}) needs {before} ms of audio before and {after} ms after each frame, and jobs do not cut audio with context yet",
                    node.id, node.kind.name
                )));
                (0, 0)
            }
            Some(Temporal::Whole(why)) => {
                diags.push(not(
                    i,
                    format!(
                        "node `{}` ({}) needs the whole stream: {why}",
                        node.id, node.kind.name
                    ),
                ));
                (0, 0)
            }
            None => {
                diags.push(not(i, format!(
                    "node `{}` ({}) does not declare its temporal context, so a job cannot tell whether chunk seams would change its output (a kind declares it with `NodeKind::temporal`)",
                    node.id, node.kind.name
                )));
                (0, 0)
            }
        };
        ctx[i] = (upstream.0 + own.0, upstream.1 + own.1);
    }

    // Sinks: every node none of whose outputs is consumed.
    let mut sinks = vec![];
    let (mut before, mut after) = (0, 0);
    for i in 0..n {
        if consumers[i].iter().any(|&c| c > 0) || Some(i) == source {
            continue;
        }
        let node = &g.nodes[i];
        before = before.max(ctx[i].0);
        after = after.max(ctx[i].1);
        let Some(sink) = &node.kind.chunk_sink else {
            diags.push(not(
                i,
                format!(
                    "node `{}` ({}) ends the graph but cannot write its results chunk by chunk",
                    node.id, node.kind.name
                ),
            ));
            continue;
        };
        let output = match sink.output(&node.params) {
            Ok(o) => o,
            Err(why) => {
                diags.push(not(
                    i,
                    format!("node `{}` ({}) {why}", node.id, node.kind.name),
                ));
                continue;
            }
        };
        let whole = sink.whole_inputs();
        let mut whole_edges = vec![];
        for (k, e) in g.edges.iter().enumerate() {
            if e.to.0 != i || !whole.contains(&e.to.1) {
                continue;
            }
            if Some(e.from.0) != source {
                diags.push(not(
                    i,
                    format!(
                        "input `{}` of node `{}` must come straight from the source in a job (the assembly copies it once from the source), not from `{}`",
                        node.kind.inputs[e.to.1].name, node.id, g.nodes[e.from.0].id
                    ),
                ));
            }
            whole_edges.push(k);
        }
        sinks.push(SinkShape {
            node: i,
            output,
            whole_edges,
        });
    }
    match source {
        Some(source) if diags.is_empty() => Ok(Shape {
            source,
            before,
            after,
            sinks,
        }),
        _ => {
            diags.sort_by_key(|d| d.span);
            Err(diags)
        }
    }
}

/// Node indices with every producer before its consumers (the checker rejected cycles).
fn topological(g: &CheckedGraph) -> Vec<usize> {
    let mut graph = petgraph::graph::DiGraph::<usize, ()>::new();
    let idx: Vec<_> = (0..g.nodes.len()).map(|i| graph.add_node(i)).collect();
    for e in &g.edges {
        graph.add_edge(idx[e.from.0], idx[e.to.0], ());
    }
    petgraph::algo::toposort(&graph, None)
        .map(|o| o.into_iter().map(|i| graph[i]).collect())
        .unwrap_or_else(|_| (0..g.nodes.len()).collect())
}
