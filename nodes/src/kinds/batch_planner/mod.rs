//! `batch-planner`: reads the travel's keyframes, segment counts, overlaps and generation
//! parameters, plans the model calls (see [`crate::travel::plan`]) and emits one plan record per batch
//! on its `plan` port, in video order. It never opens the keyframe images: the `mask` node
//! does, so `vidflow check` and `vidflow plan` need only the counts.
//!
//! Reading the params into a plan ([`plan_from_params`]) is shared with `vidflow plan` and
//! lives in [`crate::travel::spec`].

use crate::travel::plan::{self, Plan, Quantize};
use crate::travel::spec::{PLAN, PLANNER_KIND, plan_from_params};
use serde_json::Value;
use vidflow_engine::exec::Emitter;
use vidflow_engine::node::ParamProblem;
use vidflow_engine::{
    NodeError, NodeKind, ParamSpec, ParamType, Payload, PortType, Runtime, Source,
};

pub const KIND: &str = PLANNER_KIND;

const PLAN_PORT: usize = 0;
const SUMMARY_PORT: usize = 1;

pub fn kind() -> NodeKind {
    NodeKind::new(
        KIND,
        "Plans a travel between images: consolidates consecutive segments with identical prompt, negative prompt and LoRA set into fewer model calls under `max_frames`, and emits one plan record per batch (`vidflow plan` shows what it will do and why).",
        |ctx| {
            let plan = plan_from_params(ctx.params).map_err(|errors| {
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
    .param(ParamSpec::required(
        "keyframes",
        ParamType::list(ParamType::Path),
        "the images the video passes through, in order (n+1 for n segments); opened by `mask`, never by the planner",
    ))
    .param(ParamSpec::required(
        "segment_frames",
        ParamType::one_or_list(ParamType::Int {
            min: Some(1),
            max: None,
        }),
        "frames of each segment (n), or one count for all",
    ))
    .param(ParamSpec::with_default(
        "overlaps",
        ParamType::one_or_list(ParamType::Int {
            min: Some(0),
            max: None,
        }),
        0,
        "frames shared by each pair of neighbouring segments (n-1), or one count for all",
    ))
    .param(ParamSpec::with_default(
        "prompts",
        ParamType::one_or_list(ParamType::Str),
        "",
        "prompt of each segment (n); a single value means all the same",
    ))
    .param(ParamSpec::with_default(
        "negative_prompts",
        ParamType::one_or_list(ParamType::Str),
        "",
        "negative prompt of each segment (n); a single value means all the same",
    ))
    .param(ParamSpec::with_default(
        "loras",
        ParamType::one_or_list(ParamType::one_or_list(ParamType::Str)),
        Value::Array(vec![]),
        "LoRA set of each segment (n entries, each a name or a list of names; compared as sets); a single entry means all the same; [] means none",
    ))
    .param(ParamSpec::with_default(
        "max_frames",
        ParamType::Int {
            min: Some(1),
            max: Some(100_000),
        },
        plan::DEFAULT_MAX_FRAMES,
        "most frames the model makes in one call (81; some models need 65)",
    ))
    .param(ParamSpec::with_default(
        "quantize",
        ParamType::Enum(Quantize::NAMES.to_vec()),
        "none",
        "frame-count rule of the model: `none`, or `4n+1` (Wan-style models; calls are padded up and the padding discarded)",
    ))
    .param(ParamSpec::with_default(
        "transition",
        ParamType::Int {
            min: Some(0),
            max: Some(1000),
        },
        plan::DEFAULT_TRANSITION,
        "frames on each side of an anchor that get `transition_value`",
    ))
    .param(ParamSpec::with_default(
        "transition_value",
        ParamType::Float {
            min: Some(0.0),
            max: Some(1.0),
        },
        plan::DEFAULT_TRANSITION_VALUE,
        "mask value of transition frames (0.0 anchored … 1.0 free)",
    ))
    .validate(|params| match plan_from_params(params) {
        Ok(_) => vec![],
        Err(errors) => errors
            .into_iter()
            .map(|e| ParamProblem {
                param: e.param.to_string(),
                message: e.message,
                help: e.help,
                at: None,
            })
            .collect(),
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
