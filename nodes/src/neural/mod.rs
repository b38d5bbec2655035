//! The neural family: the compute context ([`device`]), checkpoint loading ([`weights`]),
//! the Burn networks (`models`, with the `neural` feature) and the node kinds built on them.
//!
//! Descriptors compile in every build so `vidflow check` knows the kinds; without the
//! `neural` feature their factories say how to get them.

#[cfg(feature = "neural")]
pub mod bench;
pub mod device;
#[cfg(feature = "neural")]
pub mod gpu;
#[cfg(feature = "neural")]
pub mod models;
#[cfg(feature = "neural")]
pub mod pixels;
pub mod upscale;
pub mod weights;

use vidflow_engine::Registry;

/// Registers this family's node kinds.
pub fn register(r: &mut Registry) {
    r.register(upscale::kind());
}
