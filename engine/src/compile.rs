//! The compiled plan as a picture: `vidflow graph` prints the checked graph as Graphviz DOT or
//! Mermaid, nodes in topological order, each edge labelled with its ports and queue.

use crate::check::CheckedGraph;
use crate::spec::WhenFull;
use std::fmt::Write as _;

fn edge_label(g: &CheckedGraph, e: &crate::check::Edge) -> String {
    let from = g.nodes[e.from.0].kind.outputs[e.from.1].name;
    let to = g.nodes[e.to.0].kind.inputs[e.to.1].name;
    let policy = if e.when_full == WhenFull::DropOldest {
        ", drop_oldest"
    } else {
        ""
    };
    format!("{from} → {to} (q{}{policy})", e.queue)
}

fn node_label(n: &crate::check::CheckedNode) -> String {
    let mut label = format!("{}\\n{}", n.id, n.kind.name);
    if n.workers > 1 {
        let _ = write!(label, " ×{}", n.workers);
    }
    if let Some(b) = n.batch {
        let _ = write!(label, "\\nbatch {} / {} ms", b.max, b.wait_ms);
    }
    label
}

/// Graphviz DOT.
pub fn to_dot(g: &CheckedGraph) -> String {
    let mut s = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n",
        g.name
    );
    for i in g.topo_order() {
        let n = &g.nodes[i];
        let _ = writeln!(s, "  \"{}\" [label=\"{}\"];", n.id, node_label(n));
    }
    for e in &g.edges {
        let _ = writeln!(
            s,
            "  \"{}\" -> \"{}\" [label=\"{}\"];",
            g.nodes[e.from.0].id,
            g.nodes[e.to.0].id,
            edge_label(g, e)
        );
    }
    s.push_str("}\n");
    s
}

/// Mermaid flowchart.
pub fn to_mermaid(g: &CheckedGraph) -> String {
    let mut s = String::from("flowchart LR\n");
    for i in g.topo_order() {
        let n = &g.nodes[i];
        let _ = writeln!(
            s,
            "  {}[\"{}\"]",
            n.id,
            node_label(n).replace("\\n", "<br/>")
        );
    }
    for e in &g.edges {
        let _ = writeln!(
            s,
            "  {} -->|\"{}\"| {}",
            g.nodes[e.from.0].id,
            edge_label(g, e),
            g.nodes[e.to.0].id
        );
    }
    s
}
