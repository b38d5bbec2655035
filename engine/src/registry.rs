//! The registry of node kinds: built-in kinds and plugins live side by side; the checker,
//! the catalogue (`vidflow nodes`) and the JSON Schema all read from it.

use crate::node::NodeKind;
use std::collections::BTreeMap;

#[derive(Clone, Default, Debug)]
pub struct Registry {
    kinds: BTreeMap<&'static str, NodeKind>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }
    /// Adds a kind; a later registration under the same name replaces the earlier one, so an
    /// embedding program can override a built-in.
    pub fn register(&mut self, kind: NodeKind) -> &mut Self {
        self.kinds.insert(kind.name, kind);
        self
    }
    pub fn get(&self, name: &str) -> Option<&NodeKind> {
        self.kinds.get(name)
    }
    /// Kinds in name order.
    pub fn kinds(&self) -> impl Iterator<Item = &NodeKind> + Clone {
        self.kinds.values()
    }
    pub fn names(&self) -> impl Iterator<Item = &'static str> + Clone + '_ {
        self.kinds.keys().copied()
    }
}
