//! The `batch-planner` params read into a [`PlanSpec`] and planned ([`plan_from_params`]),
//! shared by the `batch-planner` kind and `vidflow plan` (through [`super::render`]), which
//! needs only a graph's params; and the `plan` port type between `batch-planner` and `mask`.

use super::plan::{self, Plan, PlanError, PlanSpec, Quantize};
use serde_json::Value;
use vidflow_engine::{Params, PortType};

/// The type of the planner's `plan` port: one JSON record per batch
/// ([`BatchRecord`](super::plan::BatchRecord)).
pub const PLAN: PortType = PortType("plan");
/// The planner's kind name (`vidflow plan` finds its nodes by it).
pub const PLANNER_KIND: &str = "batch-planner";

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
