//! `blend`: a stand-in generator for travel pipelines until `interpolate` lands. It fills each
//! call's free and transition frames with a linear cross-fade between the anchors around them
//! (towards the call's target keyframe after its last anchor), keeps anchored frames exactly,
//! and mixes transition frames with their guide by their mask value. Continuation, retries, the
//! per-batch fallback to the original segments and the stitching into one stream of `T` frames
//! come from [`crate::travel::generate::Runner`].
//!
//! Outputs: `frames` is the video (every frame once, in order, tagged with its batch, segments,
//! mask value and whether it came from a fallback); `calls` is every model call's output over
//! its window, tagged with the call (what `split` cuts per segment); `report` gives one record
//! per batch and a summary record at the end, which says which batches fell back.

use crate::travel::generate::{Generator, GeneratorNode, ModelCall, Runner};
use crate::travel::guides::GUIDES;
use crate::travel::plan::Role;
use serde_json::json;
use std::sync::Arc;
use vidflow_engine::{NodeError, NodeKind, PortType, Temporal, node::ParamType, params};

pub const KIND: &str = "blend";

params! {
    /// The params of `blend`.
    pub struct BlendParams {
        /// tries again this many times before a batch falls back to its segments (and before a
        /// segment fails)
        retries: u32 = default(ParamType::int_in(0, 100), 1),
        /// testing aid: the batch calls of these batches fail, so that their fallback runs
        fail_batches: Vec<usize> = default(ParamType::list(ParamType::int_from(0)), json!([])),
        /// testing aid: fallback calls of these segments fail too
        fail_segments: Vec<usize> = default(ParamType::list(ParamType::int_from(0)), json!([])),
    }
}

pub fn kind() -> NodeKind {
    NodeKind::new(
        KIND,
        "Generates travel frames by cross-fading between anchors (a stand-in for `interpolate`): keeps anchored frames exactly, continues each batch from the last, falls back to a failed batch's original segments, and emits the stitched video.",
        |ctx| {
            if ctx.workers > 1 {
                return Err(NodeError::input(format!(
                    "node `{}`: each batch continues the one before, so `blend` runs as one worker; remove `workers`",
                    ctx.node_id
                )));
            }
            let p: BlendParams = ctx.params()?;
            let blend = Blend {
                fail_batches: p.fail_batches,
                fail_segments: p.fail_segments,
            };
            let runner = Runner::new(ctx.node_id, blend, p.retries);
            Ok(GeneratorNode::runtime(ctx, runner))
        },
    )
    .input("guides", GUIDES, "guide batches from `mask`, in order")
    .output(
        "frames",
        PortType::FRAMES,
        "the video: every frame once, in order (T frames), tagged with batch, segments, mask value and fallback",
    )
    .output(
        "calls",
        PortType::FRAMES,
        "every model call's frames over its window, tagged with batch, call and segments (for `split`)",
    )
    .output(
        "report",
        PortType::RECORDS,
        "one record per batch (model calls, attempts, whether it fell back) and a summary at the end",
    )
    .params::<BlendParams>()
    .temporal(Temporal::Whole("it generates a travel's batches, each continuing the last".into()))
    .example("- id: gen\n  kind: blend\n  inputs: { guides: mask.guides }\n")
}

/// The cross-fade generator.
#[derive(Clone, Debug, Default)]
pub struct Blend {
    pub fail_batches: Vec<usize>,
    pub fail_segments: Vec<usize>,
}

impl Generator for Blend {
    fn generate(&mut self, call: &ModelCall<'_>) -> Result<Vec<Arc<Vec<u8>>>, NodeError> {
        if !call.fallback && self.fail_batches.contains(&call.batch) {
            return Err(NodeError::runtime(format!(
                "{} failed on purpose (`fail_batches`)",
                call.label()
            )));
        }
        if call.fallback
            && call
                .call
                .segments
                .iter()
                .any(|s| self.fail_segments.contains(s))
        {
            return Err(NodeError::runtime(format!(
                "{} failed on purpose (`fail_segments`)",
                call.label()
            )));
        }
        Ok(cross_fade(call))
    }
}

/// Fills a call's frames: anchors as they are; between two anchors a linear cross-fade; before
/// the first or after the last (and no target) a hold; transition frames mixed with their
/// guide: `(1 - mask) * guide + mask * fade`.
pub fn cross_fade(call: &ModelCall<'_>) -> Vec<Arc<Vec<u8>>> {
    let mut anchors: Vec<(u64, &Arc<Vec<u8>>)> = call
        .roles
        .iter()
        .enumerate()
        .filter(|(_, r)| r.anchored())
        .map(|(i, _)| (i as u64, &call.guides[i].data))
        .collect();
    if let Some((offset, img)) = &call.target {
        anchors.push((*offset, img));
        anchors.sort_by_key(|a| a.0);
    }
    (0..call.guides.len())
        .map(|i| {
            let guide = &call.guides[i].data;
            let role = call.roles[i];
            if role.anchored() {
                return guide.clone();
            }
            let at = i as u64;
            let idx = anchors.partition_point(|a| a.0 <= at);
            let fade = match (idx.checked_sub(1).map(|j| anchors[j]), anchors.get(idx)) {
                (Some((a, pa)), Some(&(b, pb))) => {
                    let w = (((at - a) * 256 + (b - a) / 2) / (b - a)) as u32;
                    mix(pa, pb, w)
                }
                (Some((_, pa)), None) => pa.clone(),
                (None, Some((_, pb))) => (*pb).clone(),
                (None, None) => guide.clone(),
            };
            if role == Role::Transition {
                let m = (call.mask[i].clamp(0.0, 1.0) * 256.0).round() as u32;
                mix(guide, &fade, m)
            } else {
                fade
            }
        })
        .collect()
}

/// `a * (256 - w) / 256 + b * w / 256`, rounded; `w` in 0..=256.
fn mix(a: &Arc<Vec<u8>>, b: &Arc<Vec<u8>>, w: u32) -> Arc<Vec<u8>> {
    match w {
        0 => a.clone(),
        256.. => b.clone(),
        _ => Arc::new(
            a.iter()
                .zip(b.iter())
                .map(|(&x, &y)| ((x as u32 * (256 - w) + y as u32 * w + 128) >> 8) as u8)
                .collect(),
        ),
    }
}
