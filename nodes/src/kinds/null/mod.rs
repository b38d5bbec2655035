//! `null`: a sink that consumes and discards items of any type (for benchmarks and for
//! branches whose output is not needed). In a job it writes nothing per chunk and nothing to
//! join.

use std::path::{Path, PathBuf};
use vidflow_engine::{
    ChunkPiece, ChunkSink, Emitter, Input, NodeError, NodeKind, Params, PortType, Process, Runtime,
    Temporal, WholeInput,
};

pub fn kind() -> NodeKind {
    NodeKind::new(
        "null",
        "Discards every item it receives (a sink for benchmarks and unused branches).",
        |_| Ok(Runtime::Process(Box::new(Null))),
    )
    .input("items", PortType::ANY, "items of any type")
    .example("- id: sink\n  kind: \"null\"\n  inputs: { items: src.frames }\n")
    .temporal(Temporal::PerItem)
    .chunk_sink(NullChunks)
}

/// A `null` in a job: no file, nothing to join.
pub struct NullChunks;

impl ChunkSink for NullChunks {
    fn output(&self, _params: &Params) -> Result<Option<PathBuf>, String> {
        Ok(None)
    }
    fn redirect(&self, _params: &mut Params, _path: &Path) {}
    fn assemble(
        &self,
        _node_id: &str,
        _params: &Params,
        _pieces: &[ChunkPiece],
        _whole: &[WholeInput],
        _output: &Path,
    ) -> Result<(), NodeError> {
        Ok(())
    }
}

struct Null;

impl Process for Null {
    fn process(&mut self, _input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
        Ok(())
    }
}
