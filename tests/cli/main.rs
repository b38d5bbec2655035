//! The root crate's integration tests, as one test binary: the `vidflow` CLI end to end (every
//! subcommand, media, neural and LLM graphs) and the Rust plugin example run as a library.
//!
//! `cargo test -p vidflow --test cli <module>::` runs one file's tests, e.g. `llm_real_server::`.

mod common;

mod commands;
mod example;
#[cfg(feature = "media")]
mod jobs;
#[cfg(feature = "llm")]
mod llm;
#[cfg(feature = "llm")]
mod llm_litellm;
#[cfg(feature = "llm")]
mod llm_real_server;
#[cfg(feature = "media")]
mod local_workers;
#[cfg(feature = "media")]
mod media;
#[cfg(all(feature = "media", feature = "neural"))]
mod neural;
#[cfg(feature = "neural")]
mod serve;
#[cfg(feature = "media")]
mod workers;
