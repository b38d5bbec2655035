//! vidflow-nodes: the node kinds vidflow ships, one module per kind. [`registry`] returns all
//! of them; an embedding program can start from it and register its own kinds.
//!
//! Descriptors are always compiled, so `vidflow check` knows every kind; the heavy parts
//! (FFmpeg, Burn) sit behind cargo features and their factories say so when left out.

pub mod exec;
pub mod interpolate;
pub mod jsonl;
pub mod lipsync;
pub mod llm;
pub mod media;
pub mod neural;
pub mod null;
pub mod output;
pub mod shader;
pub mod testsrc;
pub mod travel;

use vidflow_engine::Registry;

/// Every built-in node kind.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(testsrc::kind());
    r.register(null::kind());
    r.register(jsonl::kind());
    r.register(exec::kind());
    r.register(shader::kind());
    media::register(&mut r);
    neural::register(&mut r);
    interpolate::register(&mut r);
    travel::register(&mut r);
    lipsync::register(&mut r);
    llm::register(&mut r);
    r
}
