//! Pass: each kind's own rules (its validator), run once a node's params are all valid, with
//! the node's wiring known, so a rule that depends on which inputs are connected is a located
//! `vidflow check` diagnostic rather than a failure at run time.

use super::{Checker, Edge};
use crate::diag::Diagnostic;
use crate::load::{NodeSpec, yaml};
use crate::node::{NodeKind, Params, ProblemAt, ValidateCtx};

impl Checker<'_> {
    pub(super) fn rules(
        &mut self,
        index: usize,
        n: &NodeSpec,
        kind: &NodeKind,
        params: &Params,
        edges: &[Edge],
    ) {
        let Some(validate) = &kind.validator else {
            return;
        };
        let mut connected = vec![false; kind.inputs.len()];
        let mut consumers = vec![0; kind.outputs.len()];
        for e in edges {
            if e.to.0 == index {
                connected[e.to.1] = true;
            }
            if e.from.0 == index {
                consumers[e.from.1] += 1;
            }
        }
        let cx = ValidateCtx {
            node_id: &n.id,
            params,
            connected_inputs: &connected,
            output_consumers: &consumers,
        };
        for problem in validate(&cx) {
            let (span, label) = match &problem.at {
                ProblemAt::Param { name, pos } => {
                    let span = n
                        .params
                        .iter()
                        .find(|e| e.key.as_str() == Some(name.as_str()))
                        .map(|e| {
                            let v = &e.raw;
                            match pos {
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
                                                *line,
                                                *col,
                                                1,
                                            )
                                        })
                                        .unwrap_or(v.span)
                                }
                                None => v.span,
                            }
                        })
                        .unwrap_or(n.id_span);
                    (span, format!("in `{name}`"))
                }
                ProblemAt::Input(port) => {
                    let span = n
                        .inputs
                        .iter()
                        .find(|i| i.port == *port)
                        .map(|i| i.from_span)
                        .unwrap_or(n.id_span);
                    (span, format!("input `{port}`"))
                }
            };
            let code = match problem.at {
                ProblemAt::Param { .. } => "invalid-param",
                ProblemAt::Input(_) => "invalid-input",
            };
            let mut d = Diagnostic::error(code, format!("node `{}`: {}", n.id, problem.message))
                .at(span, label);
            if let Some(h) = problem.help {
                d = d.help(h);
            }
            self.diags.push(d);
        }
    }
}
