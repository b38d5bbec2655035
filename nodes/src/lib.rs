//! vidflow-nodes: the node kinds vidflow ships, one folder per kind under [`kinds`].
//! [`registry`] returns all of them; an embedding program can start from it and register its
//! own kinds.
//!
//! Descriptors are always compiled, so `vidflow check` knows every kind; the heavy parts
//! (FFmpeg, Burn) sit behind cargo features and their factories say so when left out.
//!
//! Beside the kinds: [`models`] (the Burn networks), [`gpu`] (the compute context and pixel
//! conversion), [`weights`] (checkpoint formats), [`media`] (FFmpeg glue), [`travel`] (travel
//! planning and generation shared by several kinds and `vidflow plan`), [`audio`] (the
//! features between `audio-window` and `lipsync`) and [`output`] (files written atomically).

pub mod audio;
pub mod gpu;
pub mod kinds;
pub mod media;
#[cfg(feature = "neural")]
pub mod models;
pub mod output;
pub mod travel;
pub mod weights;

use vidflow_engine::Registry;

/// Every built-in node kind.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    kinds::register_all(&mut r);
    r
}

/// The factory of a kind whose runtime needs cargo feature `$feature`: `Some(f)` when the
/// feature was built in, else `None`, and the engine's one message says how to rebuild. Use it
/// with [`vidflow_engine::NodeKind::gated`].
#[macro_export]
#[doc(hidden)]
macro_rules! gated_factory {
    ($feature:literal, $f:expr) => {{
        #[cfg(feature = $feature)]
        let f = Some($f);
        #[cfg(not(feature = $feature))]
        let f: Option<
            fn(
                &vidflow_engine::BuildCtx<'_>,
            ) -> Result<vidflow_engine::Runtime, vidflow_engine::NodeError>,
        > = None;
        f
    }};
}
