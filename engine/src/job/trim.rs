//! `trim`, the node a job puts in front of each sink of a chunk whose graph reads context
//! frames: it passes only the frames the chunk owns (`start <= pts < end`), so the outputs made
//! from context frames are left to the neighbouring chunk and seams are exact. Items that are
//! not frames pass through. It is never written in a graph file.

use crate::node::{Emitter, Input, NodeError, NodeKind, Process, Runtime};
use crate::payload::{Payload, PortType};

/// Frame times are compared with this slack: they come from the same computation, but a
/// node may have carried them through arithmetic.
const EPS: f64 = 1e-6;

pub fn kind() -> NodeKind {
    NodeKind::new(
        "trim",
        "Passes the frames with `start <= pts < end` (a job's chunk seams) and every other item.",
        |ctx| {
            let start: f64 = ctx.params.parse("start")?;
            let end: Option<f64> = ctx.params.parse("end")?;
            Ok(Runtime::Process(Box::new(Trim { start, end })))
        },
    )
    .input("items", PortType::ANY, "items of one chunk")
    .output("items", PortType::ANY, "the items the chunk owns")
}

struct Trim {
    start: f64,
    end: Option<f64>,
}

impl Process for Trim {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            if let Payload::Frame(f) = &item
                && (f.pts + EPS < self.start || self.end.is_some_and(|e| f.pts + EPS >= e))
            {
                continue;
            }
            out.emit(0, item)?;
        }
        Ok(())
    }
}
