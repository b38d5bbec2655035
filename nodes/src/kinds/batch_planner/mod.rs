//! `batch-planner`: reads the travel's keyframes, segment counts, overlaps and generation
//! parameters, plans the model calls (see [`crate::travel::plan`]) and emits one plan record per batch
//! on its `plan` port, in video order. It never opens the keyframe images: the `mask` node
//! does, so `vidflow check` and `vidflow plan` need only the counts.
//!
//! The params ([`PlannerParams`]) and reading them into a plan ([`plan_from_typed`]) are shared
//! with `vidflow plan` and live in [`crate::travel::spec`].

use crate::travel::plan::Plan;
pub use crate::travel::spec::PlannerParams;
use crate::travel::spec::{PLAN, PLANNER_KIND, plan_from_typed};
use vidflow_engine::Emitter;
use vidflow_engine::{NodeError, NodeKind, Payload, PortType, Problem, Runtime, Source, Temporal};

pub const KIND: &str = PLANNER_KIND;

const PLAN_PORT: usize = 0;
const SUMMARY_PORT: usize = 1;

pub fn kind() -> NodeKind {
    NodeKind::new(
        KIND,
        "Plans a travel between images: consolidates consecutive segments with identical prompt, negative prompt and LoRA set into fewer model calls under `max_frames`, and emits one plan record per batch (`vidflow plan` shows what it will do and why).",
        |ctx| {
            let p: PlannerParams = ctx.params()?;
            let plan = plan_from_typed(&p).map_err(|errors| {
                NodeError::input(format!(
                    "node `{}`: {}",
                    ctx.node_id,
                    errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
            })?;
            Ok(Runtime::Source(Box::new(Planner { plan })))
        },
    )
    .output("plan", PLAN, "one record per batch, in video order (for `mask`)")
    .output(
        "summary",
        PortType::RECORDS,
        "one record: the plan as `vidflow plan --json` prints it",
    )
    .params::<PlannerParams>()
    .temporal(Temporal::Whole("it plans a travel over all its keyframes".into()))
    .check(|cx| {
        let Some(p) = cx.params::<PlannerParams>() else {
            return vec![];
        };
        match plan_from_typed(&p) {
            Ok(_) => vec![],
            Err(errors) => errors
                .into_iter()
                .map(|e| {
                    let problem = Problem::param(e.param, e.message);
                    match e.help {
                        Some(h) => problem.help(h),
                        None => problem,
                    }
                })
                .collect(),
        }
    })
    .example(
        "- id: planner\n  kind: batch-planner\n  params:\n    keyframes: [a.png, b.png, c.png, d.png]\n    segment_frames: [25, 29, 25]\n    overlaps: [4, 4]\n    prompts: a slow dolly through a forest\n    max_frames: 81\n",
    )
}

struct Planner {
    plan: Plan,
}

impl Source for Planner {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        // One record per batch, then the summary.
        out.set_total(self.plan.batches.len() as u64 + 1);
        for b in 0..self.plan.batches.len() {
            let record = serde_json::to_value(self.plan.batch_record(b))
                .map_err(|e| NodeError::runtime(format!("plan record: {e}")))?;
            out.emit(PLAN_PORT, Payload::record(record))?;
        }
        out.emit(SUMMARY_PORT, Payload::record(self.plan.to_json()))
    }
}
