//! Pass: wiring. Every input names an existing node and port (`node.port`, or `node` for a
//! node with one output), port types match, and every required input is connected. Yields the
//! graph's edges with their queue settings.

use super::{Checker, Edge};
use crate::config::DEFAULT_QUEUE;
use crate::diag::{Diagnostic, Span, suggest};
use crate::load::{InputSpec, yaml};
use std::collections::HashMap;

impl Checker<'_> {
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

    pub(super) fn wiring(&mut self) -> Vec<Edge> {
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
}
