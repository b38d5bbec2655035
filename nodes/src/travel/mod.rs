//! The travel family: "travel between images". Keyframe images with per-segment frame counts,
//! overlaps and prompts become a plan that consolidates segments sharing every generation
//! parameter into fewer model calls under the model's frame limit (`batch-planner`), then guide
//! frames and masks per batch (`mask`), then frames generated between the anchors (`blend` now,
//! `interpolate` later, through the shared [`generate::Runner`]).
//!
//! ```text
//! batch-planner ──plan──▶ mask ──guides──▶ blend ──frames──▶ encode
//!                                                 ├─calls───▶ (split → stitch)
//!                                                 └─report──▶ jsonl
//! ```
//!
//! `vidflow plan` calls [`plan_report`], which needs only the graph's params.

pub mod blend;
pub mod generate;
pub mod mask;
pub mod plan;
pub mod planner;
pub mod render;

pub use render::{graph_plans, plan_report, write_png};

use vidflow_engine::Registry;

/// Registers this family's node kinds.
pub fn register(r: &mut Registry) {
    r.register(planner::kind());
    r.register(mask::kind());
    r.register(blend::kind());
}
