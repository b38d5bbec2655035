//! `batch-planner`: reads the travel's keyframes, segment counts, overlaps and generation
//! parameters, plans the model calls (see [`super::plan`]) and emits one plan record per batch
//! on its `plan` port, in video order. It never opens the keyframe images: the `mask` node
//! does, so `vidflow check` and `vidflow plan` need only the counts.

use super::plan::{self, Plan, PlanError, PlanSpec, Quantize};
use serde_json::Value;
use vidflow_engine::exec::Emitter;
use vidflow_engine::node::ParamProblem;
use vidflow_engine::{
    NodeError, NodeKind, ParamSpec, ParamType, Params, Payload, PortType, Runtime, Source,
};

/// The type of the planner's `plan` port: one JSON record per batch ([`plan::BatchRecord`]).
pub const PLAN: PortType = PortType("plan");
pub const KIND: &str = "batch-planner";

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

/// Plans from a node's checked params (also what `vidflow plan` does, from the graph alone).
pub fn plan_from_params(p: &Params) -> Result<Plan, Vec<PlanError>> {
    Plan::new(spec_from_params(p)?)
}

/// Reads the planner's params, expanding single values to one per segment.
pub fn spec_from_params(p: &Params) -> Result<PlanSpec, Vec<PlanError>> {
    let mut errors = vec![];
    let keyframes: Vec<String> = match p.get("keyframes") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => {
            return Err(vec![
                PlanError::new("keyframes", "has no value").help("give a list of image paths"),
            ]);
        }
    };
    let n = keyframes.len().saturating_sub(1);
    let segment_frames = ints(p, "segment_frames", n, &mut errors);
    let overlaps = ints(p, "overlaps", n.saturating_sub(1), &mut errors);
    let prompts = strings(p, "prompts", n, &mut errors);
    let negative_prompts = strings(p, "negative_prompts", n, &mut errors);
    let loras = lora_sets(p, n, &mut errors);
    let max_frames = p.get("max_frames").and_then(Value::as_u64);
    let quantize = p
        .get("quantize")
        .and_then(Value::as_str)
        .map(|q| Quantize::parse(q).ok_or(q));
    let transition = p.get("transition").and_then(Value::as_u64);
    let transition_value = p.get("transition_value").and_then(Value::as_f64);
    let max_frames = max_frames.unwrap_or_else(|| {
        errors.push(PlanError::new("max_frames", "must be a positive integer"));
        0
    });
    let quantize = match quantize {
        Some(Ok(q)) => q,
        Some(Err(other)) => {
            errors.push(PlanError::new(
                "quantize",
                format!("`{other}` is not `none` or `4n+1`"),
            ));
            Quantize::None
        }
        None => Quantize::None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(PlanSpec {
        keyframes,
        segment_frames,
        overlaps,
        prompts,
        negative_prompts,
        loras,
        max_frames,
        quantize,
        transition: transition.unwrap_or(plan::DEFAULT_TRANSITION),
        transition_value: transition_value.unwrap_or(plan::DEFAULT_TRANSITION_VALUE),
    })
}

/// A single value (or a one-entry list) repeated `n` times, or the list as it is.
fn expand(v: Option<&Value>, n: usize) -> Vec<&Value> {
    match v {
        None => vec![],
        Some(Value::Array(items)) if items.len() == 1 => vec![&items[0]; n],
        Some(Value::Array(items)) => items.iter().collect(),
        Some(single) => vec![single; n],
    }
}

fn ints(p: &Params, name: &'static str, n: usize, errors: &mut Vec<PlanError>) -> Vec<u64> {
    if p.get(name).is_none() {
        if n > 0 {
            errors.push(PlanError::new(name, "has no value"));
        }
        return vec![];
    }
    let mut out = vec![];
    for (i, v) in expand(p.get(name), n).into_iter().enumerate() {
        match v.as_u64() {
            Some(x) => out.push(x),
            None => errors.push(PlanError::new(
                name,
                format!("entry {i} is `{v}`, not a non-negative integer"),
            )),
        }
    }
    out
}

fn strings(p: &Params, name: &'static str, n: usize, errors: &mut Vec<PlanError>) -> Vec<String> {
    match p.get(name) {
        None => vec![String::new(); n],
        Some(v) => expand(Some(v), n)
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => s.clone(),
                other => {
                    errors.push(PlanError::new(
                        name,
                        format!("entry {i} is `{other}`, not a string"),
                    ));
                    String::new()
                }
            })
            .collect(),
    }
}

/// `loras`: `[]` or `""` (none), a name (all the same), a one-entry list (all the same), or one
/// entry per segment, each a name or a list of names.
fn lora_sets(p: &Params, n: usize, errors: &mut Vec<PlanError>) -> Vec<Vec<String>> {
    let set = |v: &Value, i: usize, errors: &mut Vec<PlanError>| -> Vec<String> {
        match v {
            Value::String(s) if s.trim().is_empty() => vec![],
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s.clone()),
                    other => {
                        errors.push(PlanError::new(
                            "loras",
                            format!("entry {i} holds `{other}`, not a LoRA name"),
                        ));
                        None
                    }
                })
                .collect(),
            other => {
                errors.push(PlanError::new(
                    "loras",
                    format!("entry {i} is `{other}`, not a LoRA name or list of names"),
                ));
                vec![]
            }
        }
    };
    match p.get("loras") {
        None => vec![vec![]; n],
        Some(Value::Array(items)) if items.is_empty() => vec![vec![]; n],
        Some(v) => {
            let entries = expand(Some(v), n);
            entries
                .into_iter()
                .enumerate()
                .map(|(i, e)| set(e, i, errors))
                .collect()
        }
    }
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
