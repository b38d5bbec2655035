//! `null`: a sink that consumes and discards items of any type (for benchmarks and for
//! branches whose output is not needed).

use vidflow_engine::{Emitter, Input, NodeError, NodeKind, PortType, Process, Runtime};

pub fn kind() -> NodeKind {
    NodeKind::new(
        "null",
        "Discards every item it receives (a sink for benchmarks and unused branches).",
        |_| Ok(Runtime::Process(Box::new(Null))),
    )
    .input("items", PortType::ANY, "items of any type")
    .example("- id: sink\n  kind: null\n  inputs: { items: src.frames }\n")
}

struct Null;

impl Process for Null {
    fn process(&mut self, _input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
        Ok(())
    }
}
