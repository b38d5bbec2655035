//! The `batch-planner` params read into a [`PlanSpec`] and planned ([`plan_from_params`]),
//! shared by the `batch-planner` kind and `vidflow plan` (through [`super::render`]), which
//! needs only a graph's params; and the `plan` port type between `batch-planner` and `mask`.

use super::plan::{self, Plan, PlanError, PlanSpec, Quantize};
use serde::Deserialize;
use serde_json::json;
use vidflow_engine::node::{NodeParams, ParamType};
use vidflow_engine::{Params, PortType, params};

/// The type of the planner's `plan` port: one JSON record per batch
/// ([`BatchRecord`](super::plan::BatchRecord)).
pub const PLAN: PortType = PortType("plan");
/// The planner's kind name (`vidflow plan` finds its nodes by it).
pub const PLANNER_KIND: &str = "batch-planner";

/// A param that takes one value (the same for all) or a list of values.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrList<T> {
    List(Vec<T>),
    One(T),
}

impl<T> OneOrList<T> {
    /// A single value (or a one-entry list) repeated `n` times, or the list as it is.
    fn expand(&self, n: usize) -> Vec<&T> {
        match self {
            OneOrList::List(items) if items.len() == 1 => vec![&items[0]; n],
            OneOrList::List(items) => items.iter().collect(),
            OneOrList::One(single) => vec![single; n],
        }
    }
}

params! {
    /// The params of `batch-planner` (read by the kind and by `vidflow plan`).
    pub struct PlannerParams {
        /// the images the video passes through, in order (n+1 for n segments); opened by
        /// `mask`, never by the planner
        keyframes: Vec<String> = required(ParamType::list(ParamType::Path)),
        /// frames of each segment (n), or one count for all
        segment_frames: OneOrList<u64> = required(ParamType::one_or_list(ParamType::int_from(1))),
        /// frames shared by each pair of neighbouring segments (n-1), or one count for all
        overlaps: OneOrList<u64> = default(ParamType::one_or_list(ParamType::int_from(0)), 0),
        /// prompt of each segment (n); a single value means all the same
        prompts: OneOrList<String> = default(ParamType::one_or_list(ParamType::Str), ""),
        /// negative prompt of each segment (n); a single value means all the same
        negative_prompts: OneOrList<String> = default(ParamType::one_or_list(ParamType::Str), ""),
        /// LoRA set of each segment (n entries, each a name or a list of names; compared as
        /// sets); a single entry means all the same; [] means none
        loras: OneOrList<OneOrList<String>> = default(
            ParamType::one_or_list(ParamType::one_or_list(ParamType::Str)),
            json!([])
        ),
        /// most frames the model makes in one call (81; some models need 65)
        max_frames: u64 = default(ParamType::int_in(1, 100_000), plan::DEFAULT_MAX_FRAMES),
        /// frame-count rule of the model: `none`, or `4n+1` (Wan-style models; calls are padded
        /// up and the padding discarded)
        quantize: Quantize = default(ParamType::Enum(Quantize::NAMES.to_vec()), "none"),
        /// frames on each side of an anchor that get `transition_value`
        transition: u64 = default(ParamType::int_in(0, 1000), plan::DEFAULT_TRANSITION),
        /// mask value of transition frames (0.0 anchored … 1.0 free)
        transition_value: f64 = default(
            ParamType::float_in(0.0, 1.0),
            plan::DEFAULT_TRANSITION_VALUE
        ),
    }
}

/// Plans from a node's checked params (what `vidflow plan` does, from the graph alone).
pub fn plan_from_params(p: &Params) -> Result<Plan, Vec<PlanError>> {
    let typed =
        PlannerParams::from_params(p).map_err(|e| vec![PlanError::params(e.to_string())])?;
    plan_from_typed(&typed)
}

/// Plans from the planner's typed params.
pub fn plan_from_typed(p: &PlannerParams) -> Result<Plan, Vec<PlanError>> {
    Plan::new(spec_from_params(p))
}

/// Reads the planner's params, expanding single values to one per segment.
pub fn spec_from_params(p: &PlannerParams) -> PlanSpec {
    let n = p.keyframes.len().saturating_sub(1);
    PlanSpec {
        keyframes: p.keyframes.clone(),
        segment_frames: p.segment_frames.expand(n).into_iter().copied().collect(),
        overlaps: p
            .overlaps
            .expand(n.saturating_sub(1))
            .into_iter()
            .copied()
            .collect(),
        prompts: p.prompts.expand(n).into_iter().cloned().collect(),
        negative_prompts: p.negative_prompts.expand(n).into_iter().cloned().collect(),
        loras: lora_sets(&p.loras, n),
        max_frames: p.max_frames,
        quantize: p.quantize,
        transition: p.transition,
        transition_value: p.transition_value,
    }
}

/// `loras`: `[]` or `""` (none), a name (all the same), a one-entry list (all the same), or one
/// entry per segment, each a name or a list of names.
fn lora_sets(loras: &OneOrList<OneOrList<String>>, n: usize) -> Vec<Vec<String>> {
    let set = |v: &OneOrList<String>| -> Vec<String> {
        match v {
            OneOrList::One(s) if s.trim().is_empty() => vec![],
            OneOrList::One(s) => vec![s.clone()],
            OneOrList::List(items) => items.clone(),
        }
    };
    match loras {
        OneOrList::List(items) if items.is_empty() => vec![vec![]; n],
        entries => entries.expand(n).into_iter().map(set).collect(),
    }
}
