//! (being written) node kinds of the neural family.

use vidflow_engine::Registry;

/// Registers this family's node kinds.
pub fn register(_r: &mut Registry) {}
