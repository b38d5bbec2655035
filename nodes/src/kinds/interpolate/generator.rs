//! Fill mode: RIFE as the travel generator. For each model call, every free or transition
//! frame between two anchors (keyframes, continuation frames, or the call's target keyframe
//! after its window) is made at its timestep between them, `t = (i - a) / (b - a)`; all of a
//! call's frames go through the network together (the batch dimension is the timesteps, in
//! calls of up to `max_batch`). Anchored frames pass through untouched; transition frames are
//! mixed with their guide by their mask value, `(1 - mask) * guide + mask * made`; frames
//! before the first or after the last anchor hold that anchor. Continuation, retries, the
//! fallback to a failed batch's segments and the stitching come from travel's
//! [`Runner`](crate::travel::generate::Runner), as for `blend`.

// Without `neural` only the descriptor and the network-free logic are compiled.
#![cfg_attr(not(feature = "neural"), allow(unused_imports, dead_code))]

use super::rife::InterpolateParams;
use crate::travel::generate::ModelCall;
use crate::travel::plan::Role;
use std::sync::Arc;
use vidflow_engine::{BuildCtx, NodeError, Runtime};

/// For each frame of a call, how to fill it: `None` for anchored frames (kept), `Some(Hold(k))`
/// to copy anchor image `k`, `Some(Between(a, b, t))` to interpolate anchor images a → b.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fill {
    Keep,
    Hold(usize),
    Between(usize, usize, f32),
}

/// A call's anchors: (frame offset, image), in order.
pub type Anchors = Vec<(u64, Arc<Vec<u8>>)>;

/// The anchors of a call (frame offset, image), with the target keyframe after the window,
/// and what each frame needs.
pub fn plan_fill(call: &ModelCall<'_>) -> (Anchors, Vec<Fill>) {
    let mut anchors: Anchors = call
        .roles
        .iter()
        .enumerate()
        .filter(|(_, r)| r.anchored())
        .map(|(i, _)| (i as u64, call.guides[i].data.clone()))
        .collect();
    if let Some((offset, img)) = &call.target
        && !anchors.iter().any(|a| a.0 == *offset)
    {
        anchors.push((*offset, img.clone()));
        anchors.sort_by_key(|a| a.0);
    }
    let fills = (0..call.guides.len())
        .map(|i| {
            if call.roles[i].anchored() {
                return Fill::Keep;
            }
            let at = i as u64;
            let idx = anchors.partition_point(|a| a.0 <= at);
            match (idx.checked_sub(1), anchors.get(idx)) {
                (Some(a), Some(_)) if anchors[a].0 == at => Fill::Hold(a),
                (Some(a), Some(_)) => {
                    let (pa, pb) = (anchors[a].0, anchors[idx].0);
                    Fill::Between(a, idx, (at - pa) as f32 / (pb - pa) as f32)
                }
                (Some(a), None) => Fill::Hold(a),
                (None, Some(_)) => Fill::Hold(idx),
                (None, None) => Fill::Keep,
            }
        })
        .collect();
    (anchors, fills)
}

/// `(1 - m) * guide + m * made`, rounded.
pub fn mix_mask(guide: &[u8], made: &[u8], m: f32) -> Vec<u8> {
    let m = m.clamp(0.0, 1.0);
    guide
        .iter()
        .zip(made)
        .map(|(&g, &x)| ((1.0 - m) * g as f32 + m * x as f32).round() as u8)
        .collect()
}

#[cfg(feature = "neural")]
pub(crate) fn build_fill(ctx: &BuildCtx<'_>, p: &InterpolateParams) -> Result<Runtime, NodeError> {
    if ctx.workers > 1 {
        return Err(NodeError::input(format!(
            "node `{}`: each batch continues the one before, so fill mode runs as one worker; remove `workers`",
            ctx.node_id
        )));
    }
    let rife = super::rife::load_rife(ctx, p)?;
    let runner = crate::travel::generate::Runner::new(ctx.node_id, RifeFill { rife }, p.retries);
    Ok(crate::travel::generate::GeneratorNode::runtime(ctx, runner))
}

/// The RIFE travel generator.
#[cfg(feature = "neural")]
pub struct RifeFill {
    pub rife: super::rife::Rife,
}

#[cfg(feature = "neural")]
impl crate::travel::generate::Generator for RifeFill {
    fn generate(&mut self, call: &ModelCall<'_>) -> Result<Vec<Arc<Vec<u8>>>, NodeError> {
        let (anchors, fills) = plan_fill(call);
        // One network item per frame to make; pairs are consecutive anchors.
        let mut pair_of: Vec<(usize, usize)> = vec![];
        let mut items: Vec<(usize, f32)> = vec![];
        let mut item_of = vec![usize::MAX; fills.len()];
        for (i, f) in fills.iter().enumerate() {
            if let Fill::Between(a, b, t) = *f {
                let k = match pair_of.iter().position(|&p| p == (a, b)) {
                    Some(k) => k,
                    None => {
                        pair_of.push((a, b));
                        pair_of.len() - 1
                    }
                };
                item_of[i] = items.len();
                items.push((k, t));
            }
        }
        let refs: Vec<(&[u8], &[u8])> = pair_of
            .iter()
            .map(|&(a, b)| (anchors[a].1.as_slice(), anchors[b].1.as_slice()))
            .collect();
        let made = if items.is_empty() {
            vec![]
        } else {
            let total = items.len() as u64;
            (call.progress)(0, total);
            self.rife.interpolate_rgb_with(
                &refs,
                call.width as usize,
                call.height as usize,
                &items,
                &|done| (call.progress)(done as u64, total),
            )
        };
        let mut made: Vec<Option<Vec<u8>>> = made.into_iter().map(Some).collect();
        Ok(fills
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let guide = &call.guides[i].data;
                let img: Arc<Vec<u8>> = match *f {
                    Fill::Keep => return guide.clone(),
                    Fill::Hold(a) => anchors[a].1.clone(),
                    Fill::Between(..) => Arc::new(made[item_of[i]].take().expect("one per item")),
                };
                if call.roles[i] == Role::Transition {
                    Arc::new(mix_mask(guide, &img, call.mask[i]))
                } else {
                    img
                }
            })
            .collect())
    }
}
