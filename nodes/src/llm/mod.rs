//! The llm family: `llm-analyze` sends frames to a vision LLM over the OpenAI-compatible chat
//! completions API (see [`analyze`] for what it does and the records it writes).
//!
//! The descriptor is always compiled, so `vidflow check` knows the kind in every build; the
//! HTTP client, image encoding, limits and cache are behind the `llm` cargo feature, and the
//! factory says so when it is left out.

pub mod analyze;
#[cfg(feature = "llm")]
pub mod cache;
#[cfg(feature = "llm")]
pub mod client;
#[cfg(feature = "llm")]
pub mod images;
#[cfg(feature = "llm")]
pub mod limits;
#[cfg_attr(not(feature = "llm"), allow(dead_code))]
pub mod prompt;
#[cfg(feature = "llm")]
mod work;

use vidflow_engine::Registry;

/// Registers this family's node kinds.
pub fn register(r: &mut Registry) {
    r.register(analyze::kind());
}
