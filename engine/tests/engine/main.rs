//! The engine's integration tests, as one test binary: the executor (every graph built from test
//! kinds registered in `common`, so no media nodes are needed) and property tests of the loader.
//!
//! Waits are structural (a node signals, the test waits for it) with generous time limits that
//! only turn a deadlock into a failure; no assertion depends on the machine being fast.

mod common;

mod backpressure;
mod batching;
mod failures;
mod jobs;
mod loader_fuzz;
mod node_api;
mod on_error;
mod pipeline;
mod progress;
mod replicas;
mod stop;
