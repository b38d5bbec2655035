//! `mask`: turns each batch plan into guide frames and a mask value per frame, what a
//! generator (`blend`, `interpolate`, or a plugin) fills in. The guides themselves (building
//! them, loading keyframes) are shared with the generators and live in
//! [`crate::travel::guides`]; this module is the kind: its descriptor and runtime.

use crate::travel::guides::{Fit, GUIDES, GuideBatch, load_keyframe};
use crate::travel::plan::BatchRecord;
use crate::travel::spec::PLAN;
use std::collections::HashMap;
use std::sync::Arc;
use vidflow_engine::Emitter;
use vidflow_engine::{
    Input, NodeError, NodeKind, Payload, PortType, Process, Rate, Runtime, Temporal,
    node::ParamType, params,
};

pub const KIND: &str = "mask";

const GUIDES_PORT: usize = 0;
const FRAMES_PORT: usize = 1;

params! {
    /// The params of `mask`.
    pub struct MaskParams {
        /// output width in pixels (keyframes are fitted to it)
        width: u32 = default(ParamType::int_in(2, 16384), 832),
        /// output height in pixels
        height: u32 = default(ParamType::int_in(2, 16384), 480),
        /// frame rate of the video
        rate: f64 = default(ParamType::float_in(0.001, 1000.0), 16.0),
        /// how keyframes are fitted: `cover` (fill and crop evenly) or `stretch`
        fit: String = default(ParamType::one_of(&["cover", "stretch"]), "cover"),
    }
}

pub fn kind() -> NodeKind {
    NodeKind::new(
        KIND,
        "Makes the guide frames and per-frame mask of each planned batch: keyframes anchored (0.0) at their frames, a batch that continues the previous one anchored to its last output frames, `transition` frames around anchors at `transition_value`, the rest free (1.0, neutral grey).",
        |ctx| {
            let p: MaskParams = ctx.params()?;
            Ok(Runtime::Process(Box::new(MaskNode {
                node: ctx.node_id.to_string(),
                width: p.width,
                height: p.height,
                rate: Rate::from_fps(p.rate),
                fit: if p.fit == "stretch" {
                    Fit::Stretch
                } else {
                    Fit::Cover
                },
                emit_frames: ctx.output_consumers.get(FRAMES_PORT).copied().unwrap_or(0) > 0,
                cache: HashMap::new(),
            })))
        },
    )
    .input("plan", PLAN, "batch plan records from `batch-planner`")
    .output(
        "guides",
        GUIDES,
        "one guide batch per plan record: guide frames, mask values and keyframe images (for `blend` or `interpolate`)",
    )
    .output(
        "frames",
        PortType::FRAMES,
        "the guide frames one by one, tagged in their metadata with batch, frame, mask value and role (for plugins and inspection)",
    )
    .params::<MaskParams>()
    .temporal(Temporal::Whole("it builds the guides of a travel's planned batches".into()))
    .example(
        "- id: mask\n  kind: mask\n  params: { width: 832, height: 480, rate: 16 }\n  inputs: { plan: planner.plan }\n",
    )
}

struct MaskNode {
    node: String,
    width: u32,
    height: u32,
    rate: Rate,
    fit: Fit,
    emit_frames: bool,
    /// Images of the previous batch's keyframes (its last is the next batch's first).
    cache: HashMap<String, Arc<Vec<u8>>>,
}

impl Process for MaskNode {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            let Some(value) = item.as_record() else {
                return Err(NodeError::input(format!(
                    "node `{}`: takes plan records from `batch-planner`, got {}",
                    self.node,
                    item.describe()
                )));
            };
            let record: BatchRecord = serde_json::from_value(value.clone()).map_err(|e| {
                NodeError::input(format!(
                    "node `{}`: not a batch-planner plan record ({e})",
                    self.node
                ))
            })?;
            let mut images = vec![];
            let mut cache = HashMap::new();
            for kf in &record.keyframes {
                let img = match self.cache.get(&kf.path) {
                    Some(img) => img.clone(),
                    None => Arc::new(
                        load_keyframe(&kf.path, self.width, self.height, self.fit).map_err(
                            |e| {
                                NodeError::input(format!(
                                    "node `{}`: keyframe {}: {e}; check the planner's `keyframes`",
                                    self.node, kf.index
                                ))
                            },
                        )?,
                    ),
                };
                cache.insert(kf.path.clone(), img.clone());
                images.push((kf.index, img));
            }
            self.cache = cache;
            if !self.emit_frames {
                out.set_total(record.batches as u64);
            }
            let batch = GuideBatch::new(record, self.width, self.height, self.rate, images);
            if self.emit_frames {
                for f in &batch.guides.frames {
                    out.emit(FRAMES_PORT, Payload::Frame(f.clone()))?;
                }
            }
            out.emit(GUIDES_PORT, Payload::Custom(Arc::new(batch)))?;
        }
        Ok(())
    }
}
