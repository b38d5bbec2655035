//! Pass: the engine's own per-node settings fit the kind: `workers` (sources run as one),
//! `batch` (only on kinds with a batched input; the kind's default otherwise).

use super::Checker;
use crate::config::BatchConfig;
use crate::diag::Diagnostic;
use crate::load::NodeSpec;
use crate::node::NodeKind;

impl Checker<'_> {
    /// The node's replica count and batching.
    pub(super) fn settings(
        &mut self,
        n: &NodeSpec,
        kind: &NodeKind,
    ) -> (usize, Option<BatchConfig>) {
        let workers = n.workers.map(|w| w.0).unwrap_or(1);
        if let (true, Some((w, span))) = (kind.is_source(), n.workers)
            && w > 1
        {
            self.diags.push(
                Diagnostic::error(
                    "bad-workers",
                    format!("node `{}` is a source; sources run as one worker", n.id),
                )
                .at(span, "replicas of a source")
                .help("remove `workers`, or put `workers` on the node that does the heavy work"),
            );
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
        (workers, batch)
    }
}
