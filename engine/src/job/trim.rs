//! `trim`, the node a job puts in front of each sink of a chunk whose graph reads context
//! frames: it passes only the items the chunk owns, so what is made from context frames is left
//! to the neighbouring chunk and seams are exact. It is never written in a graph file.
//!
//! The rule, by item:
//! - a frame is the chunk's when `start <= pts < end`;
//! - a record is the chunk's when its top-level `pts` is a number with `start <= pts < end`:
//!   every per-frame record a node makes carries the time of the frame it was made from
//!   (face-detect's `{"index", "pts", "faces"}`, llm-analyze's, and `jsonl`'s lines for
//!   frames), and that time is the frame's own `pts`, the value chunks are cut at. `index` is
//!   not used: a sought `decode` derives it from the time, so only `pts` is exact;
//! - a record without a numeric `pts` belongs to no frame (a summary, a node's info) and
//!   passes, as does every other item (audio, custom payloads).

use crate::node::{Emitter, Input, NodeError, NodeKind, Process, Runtime};
use crate::payload::{Payload, PixelFormat, PortType};

/// Frame times are compared with this slack: they come from the same computation, but a
/// node may have carried them through arithmetic (and a record through JSON).
const EPS: f64 = 1e-6;

pub fn kind() -> NodeKind {
    NodeKind::new(
        "trim",
        "Passes the frames and per-frame records (by `pts`) with `start <= pts < end` (a job's chunk seams) and every other item.",
        |ctx| {
            let start: f64 = ctx.params.parse("start")?;
            let end: Option<f64> = ctx.params.parse("end")?;
            Ok(Runtime::Process(Box::new(Trim { start, end })))
        },
    )
    .input("items", PortType::ANY, "items of one chunk")
    .output("items", PortType::ANY, "the items the chunk owns")
    .accepts("items", PixelFormat::ALL)
    .passes("items", "items")
}

struct Trim {
    start: f64,
    end: Option<f64>,
}

impl Trim {
    fn owns(&self, pts: f64) -> bool {
        pts + EPS >= self.start && self.end.is_none_or(|e| pts + EPS < e)
    }
}

/// The time of the frame an item belongs to, when it belongs to one.
fn frame_time(item: &Payload) -> Option<f64> {
    match item {
        Payload::Frame(f) => Some(f.pts),
        Payload::Record(r) => r.get("pts").and_then(serde_json::Value::as_f64),
        _ => None,
    }
}

impl Process for Trim {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            if frame_time(&item).is_some_and(|t| !self.owns(t)) {
                continue;
            }
            out.emit(0, item)?;
        }
        Ok(())
    }
}
