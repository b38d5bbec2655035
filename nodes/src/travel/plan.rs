//! The planning core of "travel between images": keyframe positions, groups of segments with
//! identical generation parameters, greedy packing of groups into batches under the model's
//! frame limit, the frame-count rule (`quantize`), and the mask of every model call. Pure
//! functions of the counts: nothing here opens an image, so `vidflow plan` and the checker can
//! use all of it.
//!
//! # The frame model
//!
//! Segment `i` (between keyframes `i` and `i+1`) covers the video frames
//! `p(i) .. p(i) + segment_frames(i)`, where `p(0) = 0` and
//! `p(i+1) = p(i) + segment_frames(i) - overlaps(i)`: its last `overlaps(i)` frames are also the
//! first frames of segment `i+1`. The video has `T = sum(segment_frames) - sum(overlaps)`
//! frames; keyframe `k` is shown on frame `p(k)`, and the last keyframe (at position `T`) on the
//! last frame, `T - 1`.
//!
//! A model call ([`Call`]) covers the union of its segments' frames. A call that follows an
//! earlier one starts with the frames the earlier one already made (the overlap): those
//! *continue* it and are anchored to its output. A keyframe whose frame lies inside the call is
//! anchored too; one that lies just after it (no overlap there) is the call's *target*.
//!
//! Consecutive segments with identical prompt, negative prompt and LoRA set form a group. A
//! group of two or more is packed greedily: a batch runs from its first keyframe to the furthest
//! keyframe that keeps the call within `max_frames` (its length is that distance, plus the
//! overlap into the next segment where the batch ends before the video does); the next batch
//! starts at the keyframe where the last one ended. A segment unlike its neighbours is one call
//! as it is.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::ops::Range;

/// The default frame limit of one model call (Wan-style models: 81; some need 65).
pub const DEFAULT_MAX_FRAMES: u64 = 81;
/// The default number of frames on each side of an anchor that get `transition_value`.
pub const DEFAULT_TRANSITION: u64 = 2;
/// The default mask value of transition frames.
pub const DEFAULT_TRANSITION_VALUE: f64 = 0.3;

/// The frame-count rule of the model: any count, or `4n+1` (Wan-style models).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quantize {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "4n+1")]
    FourNPlusOne,
}

impl Quantize {
    pub const NAMES: [&'static str; 2] = ["none", "4n+1"];

    pub fn parse(s: &str) -> Option<Quantize> {
        match s {
            "none" => Some(Quantize::None),
            "4n+1" => Some(Quantize::FourNPlusOne),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Quantize::None => "none",
            Quantize::FourNPlusOne => "4n+1",
        }
    }
    /// Whether a model call of `n` frames is allowed.
    pub fn accepts(self, n: u64) -> bool {
        match self {
            Quantize::None => n > 0,
            Quantize::FourNPlusOne => n % 4 == 1,
        }
    }
    /// The smallest allowed frame count that is at least `n`.
    pub fn round_up(self, n: u64) -> u64 {
        match self {
            Quantize::None => n.max(1),
            Quantize::FourNPlusOne => (n.max(1) - 1).div_ceil(4) * 4 + 1,
        }
    }
    /// The largest allowed frame count that is at most `n` (0 when there is none).
    pub fn round_down(self, n: u64) -> u64 {
        match self {
            Quantize::None => n,
            Quantize::FourNPlusOne if n == 0 => 0,
            Quantize::FourNPlusOne => (n - 1) / 4 * 4 + 1,
        }
    }
}

/// What the batch-planner is given, with every per-segment list expanded to one entry per
/// segment (`keyframes` has one more entry than the others, `overlaps` one fewer).
#[derive(Clone, Debug, PartialEq)]
pub struct PlanSpec {
    pub keyframes: Vec<String>,
    pub segment_frames: Vec<u64>,
    pub overlaps: Vec<u64>,
    pub prompts: Vec<String>,
    pub negative_prompts: Vec<String>,
    /// Each segment's LoRA set (compared as a set: order and repeats do not matter).
    pub loras: Vec<Vec<String>>,
    pub max_frames: u64,
    pub quantize: Quantize,
    pub transition: u64,
    pub transition_value: f64,
}

impl PlanSpec {
    /// Segments of these frame counts and overlaps, all with the same (empty) parameters,
    /// keyframes named `keyframe-K.png`, and the default limits.
    pub fn counts(segment_frames: &[u64], overlaps: &[u64]) -> PlanSpec {
        let n = segment_frames.len();
        PlanSpec {
            keyframes: (0..=n).map(|k| format!("keyframe-{k}.png")).collect(),
            segment_frames: segment_frames.to_vec(),
            overlaps: overlaps.to_vec(),
            prompts: vec![String::new(); n],
            negative_prompts: vec![String::new(); n],
            loras: vec![vec![]; n],
            max_frames: DEFAULT_MAX_FRAMES,
            quantize: Quantize::None,
            transition: DEFAULT_TRANSITION,
            transition_value: DEFAULT_TRANSITION_VALUE,
        }
    }
    pub fn with_prompts(mut self, prompts: &[&str]) -> PlanSpec {
        self.prompts = prompts.iter().map(|p| p.to_string()).collect();
        self
    }
    pub fn with_max_frames(mut self, max_frames: u64) -> PlanSpec {
        self.max_frames = max_frames;
        self
    }
    pub fn with_quantize(mut self, quantize: Quantize) -> PlanSpec {
        self.quantize = quantize;
        self
    }
    /// Number of segments.
    pub fn n(&self) -> usize {
        self.segment_frames.len()
    }
    /// Frames of the longest call the model may run, after the quantize rule.
    pub fn effective_max(&self) -> u64 {
        self.quantize.round_down(self.max_frames)
    }
}

/// A problem with the planner's params: which param, what is wrong, how to fix it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanError {
    pub param: &'static str,
    pub message: String,
    pub help: Option<String>,
}

impl PlanError {
    pub fn new(param: &'static str, message: impl Into<String>) -> PlanError {
        PlanError {
            param,
            message: message.into(),
            help: None,
        }
    }
    /// Params that do not parse into the planner's typed params (`param` is empty: the message
    /// names it). Never after `vidflow check`, which parses them itself.
    pub fn params(message: impl Into<String>) -> PlanError {
        PlanError::new("", message)
    }
    pub fn help(mut self, help: impl Into<String>) -> PlanError {
        self.help = Some(help.into());
        self
    }
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.param.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "`{}`: {}", self.param, self.message)?;
        }
        if let Some(h) = &self.help {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

/// One original segment, as the user gave it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub index: usize,
    /// First video frame it covers.
    pub start: u64,
    pub frames: u64,
    /// Frames shared with the previous segment (0 for the first).
    pub overlap_before: u64,
    /// Frames shared with the next segment (0 for the last).
    pub overlap_after: u64,
    pub prompt: String,
    pub negative_prompt: String,
    pub loras: Vec<String>,
}

impl Segment {
    /// One past its last frame.
    pub fn end(&self) -> u64 {
        self.start + self.frames
    }
    /// Whether two segments can be generated by one call (same prompt, negative prompt and
    /// LoRA set).
    pub fn same_params(&self, other: &Segment) -> bool {
        self.prompt == other.prompt
            && self.negative_prompt == other.negative_prompt
            && lora_set(&self.loras) == lora_set(&other.loras)
    }
    /// Which parameters differ from `other`'s, for the plan's reasons.
    pub fn differences(&self, other: &Segment) -> Vec<&'static str> {
        let mut d = vec![];
        if self.prompt != other.prompt {
            d.push("prompt");
        }
        if self.negative_prompt != other.negative_prompt {
            d.push("negative prompt");
        }
        if lora_set(&self.loras) != lora_set(&other.loras) {
            d.push("LoRAs");
        }
        d
    }
}

fn lora_set(loras: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = loras
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// A keyframe and the video frame that shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Keyframe {
    pub index: usize,
    pub path: String,
    /// `p(k)`, or `T - 1` for the last keyframe.
    pub frame: u64,
}

/// One model call: a window of the video's frames.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// First video frame of the window.
    pub start: u64,
    /// Video frames the window covers.
    pub frames: u64,
    /// Frames the model generates: `frames` rounded up to the quantize rule; the extra frames
    /// come after the window, are free, and are discarded.
    pub model_frames: u64,
    /// Leading frames already made by the previous call, anchored to its output.
    pub continues: u64,
    /// The original segments it generates.
    pub segments: Vec<usize>,
    /// Keyframe indices and their frame inside the window (`local`); a keyframe whose `local`
    /// is `frames` or more lies after the window: it is the call's target, not shown in it.
    pub keyframes: Vec<LocalKeyframe>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalKeyframe {
    pub index: usize,
    pub local: u64,
}

/// What a frame of a call is, for its mask value and its guide image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Shows keyframe `k`: anchored (0.0).
    Keyframe(usize),
    /// Repeats the previous call's output: anchored (0.0).
    Continuation,
    /// Within `transition` frames of an anchor: `transition_value`.
    Transition,
    /// Generated freely (1.0), neutral grey in the guide.
    Free,
    /// After the window, only there to meet the quantize rule: free, and discarded.
    Padding,
}

impl Role {
    pub fn anchored(self) -> bool {
        matches!(self, Role::Keyframe(_) | Role::Continuation)
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::Keyframe(_) => "keyframe",
            Role::Continuation => "continuation",
            Role::Transition => "transition",
            Role::Free => "free",
            Role::Padding => "padding",
        }
    }
    /// The mask value: 0.0 keep the guide, 1.0 generate freely.
    pub fn value(self, transition_value: f64) -> f32 {
        match self {
            Role::Keyframe(_) | Role::Continuation => 0.0,
            Role::Transition => transition_value as f32,
            Role::Free | Role::Padding => 1.0,
        }
    }
}

impl Call {
    /// The call that generates `segments` (contiguous, in order) at once.
    pub fn for_segments(
        segments: &[Segment],
        keyframe_frame: impl Fn(usize) -> u64,
        quantize: Quantize,
    ) -> Call {
        let first = segments.first().expect("a call has at least one segment");
        let last = segments.last().expect("non-empty");
        let start = first.start;
        let frames = last.end() - start;
        Call {
            start,
            frames,
            model_frames: quantize.round_up(frames),
            continues: first.overlap_before,
            segments: segments.iter().map(|s| s.index).collect(),
            keyframes: (first.index..=last.index + 1)
                .map(|k| LocalKeyframe {
                    index: k,
                    local: keyframe_frame(k) - start,
                })
                .collect(),
        }
    }
    /// One past the last video frame of the window.
    pub fn end(&self) -> u64 {
        self.start + self.frames
    }
    /// The keyframe just after the window, which the call heads towards, if any.
    pub fn target(&self) -> Option<LocalKeyframe> {
        self.keyframes
            .iter()
            .copied()
            .find(|k| k.local >= self.frames)
    }
    /// The role of each of the `model_frames` frames.
    pub fn roles(&self, transition: u64) -> Vec<Role> {
        let n = self.model_frames as usize;
        let window = self.frames as usize;
        let mut roles = vec![Role::Free; n];
        for r in roles.iter_mut().skip(window) {
            *r = Role::Padding;
        }
        for r in roles.iter_mut().take((self.continues as usize).min(window)) {
            *r = Role::Continuation;
        }
        for k in &self.keyframes {
            if (k.local as usize) < window {
                roles[k.local as usize] = Role::Keyframe(k.index);
            }
        }
        let anchors: Vec<usize> = (0..window).filter(|&i| roles[i].anchored()).collect();
        let t = transition as usize;
        for a in anchors {
            let lo = a.saturating_sub(t);
            let hi = (a + t).min(window.saturating_sub(1));
            for r in &mut roles[lo..=hi] {
                if *r == Role::Free {
                    *r = Role::Transition;
                }
            }
        }
        roles
    }
    /// The mask value of each of the `model_frames` frames.
    pub fn mask(&self, transition: u64, transition_value: f64) -> Vec<f32> {
        self.roles(transition)
            .into_iter()
            .map(|r| r.value(transition_value))
            .collect()
    }
}

/// Consecutive segments with identical parameters, and what the planner made of them.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub segments: Range<usize>,
    pub batches: Range<usize>,
    /// Fewer calls than segments.
    pub consolidated: bool,
    pub reason: String,
}

/// One planned model call and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub index: usize,
    pub group: usize,
    pub segments: Range<usize>,
    pub call: Call,
}

/// How many of the video's frames are anchored, transition and free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskCounts {
    pub anchored: u64,
    pub transition: u64,
    pub free: u64,
}

impl MaskCounts {
    pub fn total(&self) -> u64 {
        self.anchored + self.transition + self.free
    }
    fn add(&mut self, role: Role) {
        match role {
            Role::Keyframe(_) | Role::Continuation => self.anchored += 1,
            Role::Transition => self.transition += 1,
            Role::Free | Role::Padding => self.free += 1,
        }
    }
}

/// The whole plan of one batch-planner.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub spec: PlanSpec,
    /// `p(0) ..= p(n)`; `p(n) = T`.
    pub positions: Vec<u64>,
    pub total_frames: u64,
    pub segments: Vec<Segment>,
    pub keyframes: Vec<Keyframe>,
    pub groups: Vec<Group>,
    pub batches: Vec<Batch>,
}

impl Plan {
    /// Checks the spec and plans it; every problem found is returned.
    pub fn new(spec: PlanSpec) -> Result<Plan, Vec<PlanError>> {
        let errors = validate(&spec);
        if !errors.is_empty() {
            return Err(errors);
        }
        let n = spec.n();
        let mut positions = vec![0u64];
        for i in 0..n {
            let ov = if i + 1 < n { spec.overlaps[i] } else { 0 };
            positions.push(positions[i] + spec.segment_frames[i] - ov);
        }
        let total = positions[n];
        let segments: Vec<Segment> = (0..n)
            .map(|i| Segment {
                index: i,
                start: positions[i],
                frames: spec.segment_frames[i],
                overlap_before: if i > 0 { spec.overlaps[i - 1] } else { 0 },
                overlap_after: if i + 1 < n { spec.overlaps[i] } else { 0 },
                prompt: spec.prompts[i].clone(),
                negative_prompt: spec.negative_prompts[i].clone(),
                loras: spec.loras[i].clone(),
            })
            .collect();
        let keyframes: Vec<Keyframe> = (0..=n)
            .map(|k| Keyframe {
                index: k,
                path: spec.keyframes[k].clone(),
                frame: positions[k].min(total - 1),
            })
            .collect();
        let kf_frame = |k: usize| keyframes[k].frame;

        let mut groups = vec![];
        let mut batches: Vec<Batch> = vec![];
        let mut a = 0;
        while a < n {
            let mut b = a + 1;
            while b < n && segments[b].same_params(&segments[b - 1]) {
                b += 1;
            }
            let first_batch = batches.len();
            // Greedy packing: from segment i, take as many following segments as fit.
            let mut i = a;
            while i < n && i < b {
                let mut j = i + 1;
                while j < b
                    && spec
                        .quantize
                        .round_up(segments[j].end() - segments[i].start)
                        <= spec.max_frames
                {
                    j += 1;
                }
                let call = Call::for_segments(&segments[i..j], kf_frame, spec.quantize);
                batches.push(Batch {
                    index: batches.len(),
                    group: groups.len(),
                    segments: i..j,
                    call,
                });
                i = j;
            }
            let batch_range = first_batch..batches.len();
            let consolidated = batch_range.len() < b - a;
            let reason = group_reason(&spec, &segments, a..b, &batches[batch_range.clone()]);
            groups.push(Group {
                segments: a..b,
                batches: batch_range,
                consolidated,
                reason,
            });
            a = b;
        }
        Ok(Plan {
            spec,
            positions,
            total_frames: total,
            segments,
            keyframes,
            groups,
            batches,
        })
    }

    /// One call per original segment (what the tools did before consolidation).
    pub fn model_calls_before(&self) -> usize {
        self.segments.len()
    }
    pub fn model_calls_after(&self) -> usize {
        self.batches.len()
    }
    /// The call that generates one original segment alone (the fallback of a failed batch).
    pub fn segment_call(&self, s: usize) -> Call {
        Call::for_segments(
            &self.segments[s..s + 1],
            |k| self.keyframes[k].frame,
            self.spec.quantize,
        )
    }
    /// The mask of the video's frames: each frame counted once, in the call that first makes it
    /// (a call's continuation frames belong to the call before).
    pub fn mask_counts(&self) -> MaskCounts {
        let mut counts = MaskCounts::default();
        for b in &self.batches {
            let roles = b.call.roles(self.spec.transition);
            for r in &roles[b.call.continues as usize..b.call.frames as usize] {
                counts.add(*r);
            }
        }
        counts
    }
    /// Every call's roles, for pictures: (batch, roles over its model frames).
    pub fn batch_roles(&self) -> Vec<Vec<Role>> {
        self.batches
            .iter()
            .map(|b| b.call.roles(self.spec.transition))
            .collect()
    }
    /// The record the batch-planner emits for batch `b` (what the mask node reads).
    pub fn batch_record(&self, b: usize) -> BatchRecord {
        let batch = &self.batches[b];
        let segs = batch.segments.clone();
        BatchRecord {
            batch: b,
            batches: self.batches.len(),
            total_frames: self.total_frames,
            call: batch.call.clone(),
            segments: self.segments[segs.clone()].to_vec(),
            keyframes: self.keyframes[segs.start..=segs.end].to_vec(),
            quantize: self.spec.quantize,
            max_frames: self.spec.max_frames,
            transition: self.spec.transition,
            transition_value: self.spec.transition_value,
        }
    }
    /// The `--json` object of `vidflow plan`, its keys in the documented order.
    pub fn json_report(&self) -> PlanJson {
        PlanJson {
            total_frames: self.total_frames,
            model_calls_before: self.model_calls_before(),
            model_calls_after: self.model_calls_after(),
            batches: self
                .batches
                .iter()
                .map(|b| BatchJson {
                    start: b.call.start,
                    frames: b.call.model_frames,
                    keyframes: b.call.keyframes.iter().map(|k| k.index).collect(),
                    segments: b.call.segments.clone(),
                })
                .collect(),
            mask: self.mask_counts(),
        }
    }
    /// The `--json` object of `vidflow plan` as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.json_report()).expect("plain data serialises")
    }
}

/// The `--json` object of `vidflow plan`: `{"total_frames": T, "model_calls_before": B,
/// "model_calls_after": A, "batches": [{"start": S, "frames": L, "keyframes": [...],
/// "segments": [...]}...], "mask": {"anchored": x, "transition": y, "free": z}}`, with
/// x + y + z = T. A batch's `frames` is what the model makes (after the quantize rule);
/// `keyframes` runs from its first keyframe to the last it heads for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanJson {
    pub total_frames: u64,
    pub model_calls_before: usize,
    pub model_calls_after: usize,
    pub batches: Vec<BatchJson>,
    pub mask: MaskCounts,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BatchJson {
    pub start: u64,
    pub frames: u64,
    pub keyframes: Vec<usize>,
    pub segments: Vec<usize>,
}

/// Why a group was or was not consolidated, in words.
fn group_reason(
    spec: &PlanSpec,
    segments: &[Segment],
    g: Range<usize>,
    batches: &[Batch],
) -> String {
    let n = segments.len();
    let limit = limit_text(spec);
    if g.len() == 1 {
        let s = g.start;
        if n == 1 {
            return "the only segment: one call as it is".into();
        }
        let mut unlike = vec![];
        for other in [s.checked_sub(1), (s + 1 < n).then_some(s + 1)]
            .into_iter()
            .flatten()
        {
            let d = segments[s].differences(&segments[other]);
            unlike.push(format!("segment {other} ({})", d.join(", ")));
        }
        return format!(
            "kept as it is: its parameters differ from {}",
            unlike.join(" and ")
        );
    }
    let joint = segments[g.end - 1].end() - segments[g.start].start;
    let sizes: Vec<String> = batches
        .iter()
        .map(|b| b.call.model_frames.to_string())
        .collect();
    if batches.len() == 1 {
        format!(
            "same prompt, negative prompt and LoRAs: consolidated into 1 call of {} frames ({limit})",
            batches[0].call.model_frames
        )
    } else if batches.len() < g.len() {
        format!(
            "same prompt, negative prompt and LoRAs, but their {joint} frames exceed {limit}: packed into {} calls of {} frames",
            batches.len(),
            sizes.join(", ")
        )
    } else {
        let pair = g
            .clone()
            .skip(1)
            .map(|j| segments[j].end() - segments[j - 1].start)
            .min()
            .unwrap_or(joint);
        format!(
            "same prompt, negative prompt and LoRAs, but no two neighbours fit in one call together (the shortest pair needs {pair} frames; {limit}): kept as they are"
        )
    }
}

fn limit_text(spec: &PlanSpec) -> String {
    match spec.quantize {
        Quantize::None => format!("max_frames {}", spec.max_frames),
        Quantize::FourNPlusOne => format!("max_frames {}, 4n+1", spec.max_frames),
    }
}

/// Everything wrong with a spec (empty when it can be planned).
pub fn validate(spec: &PlanSpec) -> Vec<PlanError> {
    let mut errors = vec![];
    if spec.keyframes.len() < 2 {
        errors.push(
            PlanError::new(
                "keyframes",
                format!(
                    "needs at least two keyframes (one segment), found {}",
                    spec.keyframes.len()
                ),
            )
            .help("list the images the video passes through, in order"),
        );
        return errors;
    }
    let n = spec.keyframes.len() - 1;
    let lens: [(&'static str, usize, usize); 5] = [
        ("segment_frames", spec.segment_frames.len(), n),
        ("overlaps", spec.overlaps.len(), n - 1),
        ("prompts", spec.prompts.len(), n),
        ("negative_prompts", spec.negative_prompts.len(), n),
        ("loras", spec.loras.len(), n),
    ];
    for (param, found, want) in lens {
        if found != want {
            errors.push(
                PlanError::new(
                    param,
                    format!("{n} keyframe pairs (segments) need {want} entries here, found {found}"),
                )
                .help(match param {
                    "overlaps" => "one overlap between each pair of neighbouring segments (n-1), or one number for all".to_string(),
                    "segment_frames" => "one frame count per segment (n), or one number for all".to_string(),
                    _ => "one entry per segment (n), or a single value meaning all the same".to_string(),
                }),
            );
        }
    }
    if !errors.is_empty() {
        return errors;
    }
    if spec.max_frames == 0 || spec.effective_max() == 0 {
        errors.push(PlanError::new("max_frames", "must be at least 1"));
        return errors;
    }
    for i in 0..n {
        let f = spec.segment_frames[i];
        let before = if i > 0 { spec.overlaps[i - 1] } else { 0 };
        let after = if i + 1 < n { spec.overlaps[i] } else { 0 };
        if f == 0 {
            errors.push(PlanError::new(
                "segment_frames",
                format!("segment {i} has no frames"),
            ));
            continue;
        }
        if f < before + after + 1 {
            errors.push(
                PlanError::new(
                    if after > 0 || before > 0 {
                        "overlaps"
                    } else {
                        "segment_frames"
                    },
                    format!(
                        "segment {i} has {f} frames, but overlaps {before} (before) and {after} (after) leave it none of its own"
                    ),
                )
                .help("each segment needs more frames than its two overlaps together"),
            );
        } else if i + 1 == n && f < 2 {
            errors.push(
                PlanError::new(
                    "segment_frames",
                    format!(
                        "the last segment ({i}) has {f} frame; it needs at least 2 so that its two keyframes have frames of their own"
                    ),
                ),
            );
        }
        let model = spec.quantize.round_up(f);
        if model > spec.max_frames {
            errors.push(
                PlanError::new(
                    "segment_frames",
                    if model == f {
                        format!(
                            "segment {i} has {f} frames, more than max_frames {} allows in one model call",
                            spec.max_frames
                        )
                    } else {
                        format!(
                            "segment {i} has {f} frames ({model} after the 4n+1 rule), more than max_frames {} allows in one model call",
                            spec.max_frames
                        )
                    },
                )
                .help("split it with another keyframe, shorten it, or raise max_frames if the model allows"),
            );
        }
    }
    if !(0.0..=1.0).contains(&spec.transition_value) {
        errors.push(PlanError::new(
            "transition_value",
            format!("{} is not in 0..=1", spec.transition_value),
        ));
    }
    errors
}

/// What the batch-planner emits for each batch on its `plan` port (as a JSON record), and what
/// the mask node and the generators read: the call, its segments (for the fallback), its
/// keyframes with their paths, and the mask settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub batch: usize,
    /// How many batches the plan has.
    pub batches: usize,
    pub total_frames: u64,
    pub call: Call,
    pub segments: Vec<Segment>,
    /// The keyframes from the batch's first to its last (or its target), with paths.
    pub keyframes: Vec<Keyframe>,
    pub quantize: Quantize,
    pub max_frames: u64,
    pub transition: u64,
    pub transition_value: f64,
}

impl BatchRecord {
    /// More than one segment in one call.
    pub fn consolidated(&self) -> bool {
        self.segments.len() > 1
    }
    /// The video frame showing keyframe `k` (which must be one of this batch's).
    pub fn keyframe_frame(&self, k: usize) -> u64 {
        self.keyframes
            .iter()
            .find(|kf| kf.index == k)
            .map(|kf| kf.frame)
            .expect("a keyframe of this batch")
    }
    /// The calls that generate the batch's segments one by one, in order (the fallback).
    pub fn segment_calls(&self) -> Vec<Call> {
        (0..self.segments.len())
            .map(|i| {
                Call::for_segments(
                    &self.segments[i..i + 1],
                    |k| self.keyframe_frame(k),
                    self.quantize,
                )
            })
            .collect()
    }
    /// "batch 2 (segments 3–5)".
    pub fn label(&self) -> String {
        format!(
            "batch {} ({})",
            self.batch,
            segments_text(&self.call.segments)
        )
    }
}

/// "segment 3" or "segments 3–5".
pub fn segments_text(segs: &[usize]) -> String {
    match segs {
        [one] => format!("segment {one}"),
        [first, .., last] => format!("segments {first}–{last}"),
        [] => "no segments".into(),
    }
}

/// The text form of a plan (what `vidflow plan` prints for one batch-planner).
pub fn text_report(node: &str, plan: &Plan) -> String {
    let spec = &plan.spec;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "batch-planner `{node}`: {} keyframes, {} segments, {} frames in the video",
        plan.keyframes.len(),
        plan.segments.len(),
        plan.total_frames
    );
    let _ = writeln!(
        s,
        "  max_frames {}, quantize {}, transition {} frames at {}",
        spec.max_frames,
        spec.quantize.name(),
        spec.transition,
        spec.transition_value
    );
    let _ = writeln!(s, "\nsegments (before: one model call each)");
    let mut rows = vec![vec![
        "#".to_string(),
        "keyframes".into(),
        "start".into(),
        "frames".into(),
        "overlap".into(),
        "prompt".into(),
        "negative".into(),
        "loras".into(),
    ]];
    for seg in &plan.segments {
        rows.push(vec![
            seg.index.to_string(),
            format!("{}→{}", seg.index, seg.index + 1),
            seg.start.to_string(),
            seg.frames.to_string(),
            seg.overlap_after.to_string(),
            quoted(&seg.prompt),
            quoted(&seg.negative_prompt),
            if seg.loras.is_empty() {
                "-".into()
            } else {
                seg.loras.join(", ")
            },
        ]);
    }
    table(&mut s, &rows, &[1, 5, 6, 7]);
    let _ = writeln!(s, "\ngroups");
    for g in &plan.groups {
        let _ = writeln!(
            s,
            "  {}: {}",
            segments_text(&g.segments.clone().collect::<Vec<_>>()),
            g.reason
        );
    }
    let _ = writeln!(s, "\nbatches (after)");
    let mut rows = vec![vec![
        "#".to_string(),
        "segments".into(),
        "keyframes".into(),
        "start".into(),
        "frames".into(),
        "model frames".into(),
        "continues".into(),
        "target".into(),
    ]];
    for b in &plan.batches {
        let c = &b.call;
        let segs = match c.segments.as_slice() {
            [one] => one.to_string(),
            [first, .., last] => format!("{first}–{last}"),
            [] => "-".into(),
        };
        let kfs: Vec<String> = c
            .keyframes
            .iter()
            .filter(|k| k.local < c.frames)
            .map(|k| format!("{}@{}", k.index, c.start + k.local))
            .collect();
        rows.push(vec![
            b.index.to_string(),
            segs,
            kfs.join(" "),
            c.start.to_string(),
            c.frames.to_string(),
            c.model_frames.to_string(),
            if c.continues > 0 {
                format!("{} frames", c.continues)
            } else {
                "-".into()
            },
            c.target()
                .map(|k| format!("keyframe {} after it", k.index))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    table(&mut s, &rows, &[1, 2, 6, 7]);
    let (before, after) = (plan.model_calls_before(), plan.model_calls_after());
    let _ = writeln!(
        s,
        "\nmodel calls: {before} before, {after} after{}",
        if after < before {
            format!(" ({:.1}× fewer)", before as f64 / after as f64)
        } else {
            " (no change)".into()
        }
    );
    let m = plan.mask_counts();
    let _ = writeln!(
        s,
        "mask over the {} frames: {} anchored (0.0), {} transition ({}), {} free (1.0)",
        plan.total_frames, m.anchored, m.transition, spec.transition_value, m.free
    );
    s
}

fn quoted(s: &str) -> String {
    const MAX: usize = 32;
    if s.chars().count() > MAX {
        format!("\"{}…\"", s.chars().take(MAX - 1).collect::<String>())
    } else {
        format!("\"{s}\"")
    }
}

/// Writes rows as an aligned table; the columns in `left` are left-aligned, others right.
fn table(s: &mut String, rows: &[Vec<String>], left: &[usize]) {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if left.contains(&c) {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        let _ = writeln!(s, "  {}", cells.join("  ").trim_end());
    }
}
