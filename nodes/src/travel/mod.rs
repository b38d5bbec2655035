//! Travel ("travel between images"), the code shared by the travel kinds (`batch-planner`,
//! `mask`, `blend`, and `interpolate`'s fill mode; see [`crate::kinds`]) and by
//! `vidflow plan`: planning ([`plan`], and the planner's params in [`spec`]), guides
//! ([`guides`]), the generation runner every generator uses ([`generate`]) and the plan report
//! ([`render`]).
//!
//! Keyframe images with per-segment frame counts, overlaps and prompts become a plan that
//! consolidates segments sharing every generation parameter into fewer model calls under the
//! model's frame limit (`batch-planner`), then guide frames and masks per batch (`mask`), then
//! frames generated between the anchors (`blend` now, `interpolate` later, through the shared
//! [`generate::Runner`]).
//!
//! ```text
//! batch-planner ──plan──▶ mask ──guides──▶ blend ──frames──▶ encode
//!                                                 ├─calls───▶ (split → stitch)
//!                                                 └─report──▶ jsonl
//! ```
//!
//! `vidflow plan` calls [`plan_report`], which needs only the graph's params.

pub mod generate;
pub mod guides;
pub mod plan;
pub mod render;
pub mod spec;

pub use render::{graph_plans, plan_report, write_png};
