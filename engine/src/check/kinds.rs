//! Pass: every node's `kind` is a registered node kind ("did you mean" when it is not).

use super::Checker;
use crate::diag::{Diagnostic, suggest};
use crate::load::NodeSpec;
use crate::node::NodeKind;

impl<'a> Checker<'a> {
    /// The node's kind; reports an unknown one. `None` also when the loader found no `kind`
    /// (it said so itself).
    pub(super) fn kind(&mut self, n: &NodeSpec) -> Option<&'a NodeKind> {
        let registry = self.registry;
        let kind = registry.get(&n.kind);
        if kind.is_none() && !n.kind.is_empty() {
            self.diags.push(
                Diagnostic::error("unknown-kind", format!("unknown node kind `{}`", n.kind))
                    .at(n.kind_span, "not a registered node kind")
                    .help(format!(
                        "{} (`vidflow nodes` lists them all)",
                        suggest(&n.kind, registry.names(), "kinds")
                    )),
            );
        }
        kind
    }

    pub(super) fn kind_of(&self, n: &NodeSpec) -> Option<&'a NodeKind> {
        self.registry.get(&n.kind)
    }
}
