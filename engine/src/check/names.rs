//! Pass: node ids are unique.

use super::Checker;
use crate::diag::{Diagnostic, Span};
use std::collections::HashMap;

impl Checker<'_> {
    pub(super) fn ids(&mut self) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for n in &self.spec.nodes {
            if let Some(first) = seen.get(n.id.as_str()) {
                self.diags.push(
                    Diagnostic::error("duplicate-id", format!("node id `{}` is used twice", n.id))
                        .at(n.id_span, "used again here")
                        .help(format!(
                            "first used on line {}; give every node a unique id",
                            first.line
                        )),
                );
            } else {
                seen.insert(&n.id, n.id_span);
            }
        }
    }
}
