//! Pass: no cycles. Each cycle is reported once, with its whole path.

use super::{Checker, Edge};
use crate::diag::Diagnostic;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::HashMap;

impl Checker<'_> {
    /// Reports each cycle once, with its whole path, at the input reference that closes it.
    pub(super) fn cycles(&mut self, edges: &[Edge]) {
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
