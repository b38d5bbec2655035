//! Pass: a serve graph's sessions cannot mix. A graph is a serve graph when it has a `serve:`
//! section or a node that brings sessions in (`session-in`). Every node of it is shared by all
//! sessions, so each must be stateless per item or keep its state per session
//! ([`SessionUse`]); its items must come only from sessions (no other source), reach a node
//! that hands them back (`session-out`), and never be dropped on a full queue (a session's
//! end travels the same queues). Replicas of a node with per-session state would split each
//! session's state, so they are refused too.

use super::{CheckedNode, Checker, Edge};
use crate::config::{ServeConfig, WhenFull};
use crate::diag::{Diagnostic, Span};
use crate::node::{SessionUse, ValidateCtx};

impl Checker<'_> {
    pub(super) fn sessions(
        &mut self,
        nodes: &[Option<(CheckedNode, bool)>],
        edges: &[Edge],
    ) -> Option<ServeConfig> {
        let spec = self.spec;
        let has = |u: SessionUse| {
            nodes
                .iter()
                .flatten()
                .any(|(n, _)| n.kind.sessions == Some(u))
        };
        let (entry, exit) = (has(SessionUse::Entry), has(SessionUse::Exit));
        if spec.serve.is_none() && !entry {
            return None;
        }
        let (cfg, span) = spec
            .serve
            .unwrap_or((ServeConfig::default(), Span::new(1, 1, 1)));
        if !entry {
            self.diags.push(
                Diagnostic::error(
                    "serve-graph",
                    "the graph has a `serve:` section but no node that brings sessions in",
                )
                .at(span, "a serve graph")
                .help("add a `session-in` node and feed the graph from it, or remove `serve:`"),
            );
        }
        if !exit {
            self.diags.push(
                Diagnostic::error(
                    "serve-graph",
                    "no node of this serve graph hands results back to the sessions",
                )
                .at(span, "a serve graph")
                .help("end the graph in a `session-out` node"),
            );
        }
        for (i, (n, checked)) in spec.nodes.iter().zip(nodes).enumerate() {
            let Some((node, complete)) = checked else {
                continue;
            };
            let kind = &node.kind;
            for input in &n.inputs {
                if input.when_full == WhenFull::DropOldest {
                    self.diags.push(
                        Diagnostic::error(
                            "serve-graph",
                            format!(
                                "node `{}`: `when_full: drop_oldest` in a serve graph could drop a session's end",
                                n.id
                            ),
                        )
                        .at(input.from_span, "dropping input")
                        .help("use `when_full: block` (the default); admission (`serve.max_sessions`) bounds the load"),
                    );
                }
            }
            if kind.is_source() && kind.sessions != Some(SessionUse::Entry) {
                self.diags.push(
                    Diagnostic::error(
                        "serve-graph",
                        format!(
                            "node `{}` (kind `{}`) is a source in a serve graph, whose items come only from sessions",
                            n.id, kind.name
                        ),
                    )
                    .at(n.kind_span, "not a session source")
                    .help("feed the graph from a `session-in` node, or run it with `vidflow run`"),
                );
                continue;
            }
            if !complete {
                continue;
            }
            let mut connected = vec![false; kind.inputs.len()];
            let mut consumers = vec![0; kind.outputs.len()];
            for e in edges {
                if e.to.0 == i {
                    connected[e.to.1] = true;
                }
                if e.from.0 == i {
                    consumers[e.from.1] += 1;
                }
            }
            let cx = ValidateCtx {
                node_id: &n.id,
                params: &node.params,
                connected_inputs: &connected,
                output_consumers: &consumers,
            };
            match kind.session_use(&cx) {
                None => self.diags.push(
                    Diagnostic::error(
                        "session-state",
                        format!(
                            "node `{}` (kind `{}`) keeps state across items but declares no per-session state, so the sessions of this serve graph would mix",
                            n.id, kind.name
                        ),
                    )
                    .at(n.kind_span, "shared by every session")
                    .help("a serve graph takes kinds that are stateless per item or keep one state per session (`NodeKind::sessions`); run this graph with `vidflow run` instead"),
                ),
                Some(SessionUse::PerSession) if node.workers > 1 => {
                    let at = n.workers.map_or(n.kind_span, |w| w.1);
                    self.diags.push(
                        Diagnostic::error(
                            "session-state",
                            format!(
                                "node `{}` keeps per-session state, which replicas would split",
                                n.id
                            ),
                        )
                        .at(at, "replicas")
                        .help("remove `workers` from this node in a serve graph"),
                    );
                }
                Some(_) => {}
            }
        }
        Some(cfg)
    }
}
