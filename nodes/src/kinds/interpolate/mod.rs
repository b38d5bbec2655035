//! The `interpolate` node: RIFE v4.25 frame interpolation.
//!
//! **Stream mode** (`frames` connected): frame-rate conversion. With `multi: N` it makes N-1
//! new frames between each pair of consecutive frames, at timesteps 1/N … (N-1)/N; with
//! `fps: x` it places output frames on a grid of 1/x seconds from the first frame's time and
//! makes each one at its timestep between the input frames around it (a slot that falls on an
//! input frame is that frame, unchanged).
//!
//! End rule: the last input frame is emitted once and nothing is made after it, so `multi: N`
//! on a clip of F frames gives N·(F-1)+1 frames (2F-1 for `multi: 2`), timestamps strictly
//! increasing, rate multiplied by N.
//!
//! Scene changes: when two consecutive frames differ by more than `scene_threshold` (mean
//! absolute difference of a subsample of their pixels, 0…1) — or change size — the new frames
//! between them repeat the earlier frame instead of morphing across the cut.
//!
//! Batching: the `frames` input is batched (default up to 4 frames); every new frame of a batch
//! goes through the network in calls of up to `max_batch` frames, the batch dimension being
//! the timesteps (each pair's Head features are computed once per call).
//!
//! **Fill mode** (`guides` connected, from travel's `mask` node): the travel generator. See
//! [`generator`].
//!
//! The network is [`IfNet`](crate::models::ifnet::IfNet) (Practical-RIFE's IFNet v4.25 in
//! Burn); [`rife`] loads it (the built-in weights `models/rife-v4.25-flownet.pkl`, or any
//! v4.25 `flownet.pkl` or the same keys as `.safetensors`) for both modes. Imports flow one
//! way: this module → [`generator`] → [`rife`].

// Without `neural` only the descriptor and the network-free logic are compiled.
#![cfg_attr(not(feature = "neural"), allow(unused_imports, dead_code))]

pub mod generator;
pub mod rife;

#[cfg(feature = "neural")]
pub use rife::{BUILTIN, Rife, load_checkpoint};
pub use rife::{BUILTIN_WEIGHTS, InterpolateParams};

#[cfg(feature = "neural")]
use self::rife::load_rife;
use crate::travel::guides::GUIDES;
#[cfg(feature = "neural")]
use serde_json::{Value, json};
#[cfg(feature = "neural")]
use std::sync::Arc;
use vidflow_engine::Emitter;
use vidflow_engine::{
    BatchConfig, BuildCtx, End, Frame, Input, NodeError, NodeKind, Payload, PortType, Problem,
    Process, Rate, Runtime, Temporal,
};

pub use rife::KIND;

pub(crate) const FRAMES_PORT: usize = 0;

/// The input ports.
const IN_FRAMES: usize = 0;
const IN_GUIDES: usize = 1;

/// What is wrong when both inputs are connected (said by `vidflow check`, and by the factory
/// for a node built without the checker).
const BOTH_INPUTS: &str =
    "connect either `frames` (frame-rate conversion) or `guides` (travel fill), not both";

pub fn kind() -> NodeKind {
    NodeKind::gated(
        KIND,
        "Frame interpolation with RIFE v4.25 (Practical-RIFE IFNet, in Burn). Connect `frames` to raise a clip's frame rate (`multi: N` makes N-1 frames between each pair; or `fps: x`), with a scene-change test that repeats a frame instead of morphing across a cut; the last frame ends the stream, so `multi: 2` turns F frames into 2F-1. Connect `guides` (from `mask`) to generate travel frames between anchors, like `blend` but with motion.",
        "neural",
        crate::gated_factory!("neural", build),
    )
    .optional_input("frames", PortType::FRAMES, "a frame stream to interpolate (stream mode)")
    .optional_input("guides", GUIDES, "guide batches from `mask`, in order (fill mode, for travel)")
    .output(
        "frames",
        PortType::FRAMES,
        "stream mode: the frames at the new rate; fill mode: the video, every frame once, in order",
    )
    .output(
        "calls",
        PortType::FRAMES,
        "fill mode: every model call's frames over its window (for `split`)",
    )
    .output(
        "report",
        PortType::RECORDS,
        "fill mode: one record per batch and a summary at the end",
    )
    .params::<InterpolateParams>()
    // A made frame depends on the frames on either side of it: a chunk reads one frame past
    // its end. With `fps` the output grid starts at the stream's first frame, which a chunk
    // does not see.
    .temporal_with(|cx| {
        if cx.connected_inputs.get(IN_GUIDES).copied().unwrap_or(false) {
            return Temporal::Whole("it generates travel frames from planned guides, not from a timeline".into());
        }
        match cx.params::<InterpolateParams>() {
            Some(p) if p.fps.is_some() => Temporal::Whole(
                "with `fps` its output grid starts at the stream's first frame; use `multi`".into(),
            ),
            _ => Temporal::Frames { before: 0, after: 1 },
        }
    })
    .batched("frames", Some(BatchConfig { max: 4, wait_ms: 50 }))
    .check(|cx| {
        let mut problems = vec![];
        let connected = |port: usize| cx.connected_inputs.get(port).copied().unwrap_or(false);
        if connected(IN_FRAMES) && connected(IN_GUIDES) {
            problems.push(Problem::input("guides", BOTH_INPUTS).help(
                "keep `frames` to raise a clip's frame rate, or `guides` to generate travel frames from `mask`; for both, use two `interpolate` nodes",
            ));
        }
        let Some(p) = cx.params::<InterpolateParams>() else {
            return problems;
        };
        if ![1.0, 0.5, 0.25].contains(&p.scale) {
            problems.push(
                Problem::param("scale", format!("scale {} is not supported", p.scale))
                    .help("use 1.0, 0.5 (large frames) or 0.25 (4K)"),
            );
        }
        problems
    })
    .example("- id: double\n  kind: interpolate\n  params: { multi: 2 }\n  inputs: { frames: decode.frames }\n")
}

#[cfg(feature = "neural")]
fn build(ctx: &BuildCtx<'_>) -> Result<Runtime, NodeError> {
    let frames = ctx
        .connected_inputs
        .get(IN_FRAMES)
        .copied()
        .unwrap_or(false);
    let guides = ctx
        .connected_inputs
        .get(IN_GUIDES)
        .copied()
        .unwrap_or(false);
    match (frames, guides) {
        (true, true) => Err(NodeError::input(format!(
            "node `{}`: {BOTH_INPUTS}",
            ctx.node_id
        ))),
        (false, false) => Err(NodeError::input(format!(
            "node `{}`: connect `frames` (frame-rate conversion) or `guides` (travel fill from `mask`)",
            ctx.node_id
        ))),
        (true, false) => build_stream(ctx, &ctx.params()?),
        (false, true) => generator::build_fill(ctx, &ctx.params()?),
    }
}

#[cfg(feature = "neural")]
fn build_stream(ctx: &BuildCtx<'_>, p: &InterpolateParams) -> Result<Runtime, NodeError> {
    let rife = load_rife(ctx, p)?;
    let timing = match p.fps {
        Some(fps) => Timing::Fps(fps),
        None => Timing::Multi(p.multi),
    };
    Ok(Runtime::Process(Box::new(StreamNode {
        rife,
        state: Stream::new(timing, p.scene_threshold),
    })))
}

/// How output frames are placed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Timing {
    /// N output frames per input frame.
    Multi(u32),
    /// Output frames every 1/x seconds.
    Fps(f64),
}

/// One output frame of a pair: the earlier frame itself (t = 0), or one made at timestep t.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slot {
    pub pts: f64,
    /// 0.0: the earlier frame; otherwise the timestep in (0, 1).
    pub t: f32,
}

/// The timing and scene-cut logic of stream mode, without the network (testable alone).
#[derive(Clone, Debug)]
pub struct Stream {
    pub timing: Timing,
    pub scene_threshold: f64,
    prev: Option<Frame>,
    /// Stream mode, fps: the next output slot's number (time = first + n / fps).
    next_slot: u64,
    first_pts: Option<f64>,
    out_index: u64,
}

impl Stream {
    pub fn new(timing: Timing, scene_threshold: f64) -> Stream {
        Stream {
            timing,
            scene_threshold,
            prev: None,
            next_slot: 0,
            first_pts: None,
            out_index: 0,
        }
    }

    /// The output rate for an input rate.
    pub fn out_rate(&self, input: Rate) -> Rate {
        match self.timing {
            Timing::Multi(n) => Rate::new(input.num.saturating_mul(n), input.den),
            Timing::Fps(fps) => Rate::from_fps(fps),
        }
    }

    /// The output slots between `a` (included) and `b` (excluded).
    pub fn slots(&mut self, a: &Frame, b: &Frame) -> Vec<Slot> {
        let (pa, mut pb) = (a.pts, b.pts);
        if pb <= pa || !pb.is_finite() {
            // Timestamps that do not increase: space the frames by the nominal rate.
            pb = pa + 1.0 / a.rate.fps().max(1e-9);
        }
        let dt = pb - pa;
        match self.timing {
            Timing::Multi(n) => (0..n)
                .map(|k| Slot {
                    pts: pa + dt * k as f64 / n as f64,
                    t: k as f32 / n as f32,
                })
                .collect(),
            Timing::Fps(fps) => {
                let first = *self.first_pts.get_or_insert(pa);
                let mut out = vec![];
                loop {
                    let time = first + self.next_slot as f64 / fps;
                    if time >= pb - 1e-9 {
                        break;
                    }
                    self.next_slot += 1;
                    if time < pa - 1e-9 {
                        continue;
                    }
                    let t = ((time - pa) / dt) as f32;
                    out.push(Slot {
                        pts: time,
                        t: if t < 1e-6 { 0.0 } else { t },
                    });
                }
                out
            }
        }
    }

    /// Whether the last frame of the stream is an output slot (always for `multi`; for `fps`
    /// when a slot falls on it).
    fn last_is_slot(&mut self, last: &Frame) -> bool {
        match self.timing {
            Timing::Multi(_) => true,
            Timing::Fps(fps) => {
                let first = *self.first_pts.get_or_insert(last.pts);
                let time = first + self.next_slot as f64 / fps;
                (time - last.pts).abs() < 1e-6
            }
        }
    }

    /// The next output frame's index.
    fn take_index(&mut self) -> u64 {
        let i = self.out_index;
        self.out_index += 1;
        i
    }
}

/// Whether two frames are on two sides of a scene cut: a size change, or a mean absolute
/// difference (0…1) over a subsample of about 4096 pixels above `threshold`.
pub fn is_scene_cut(a: &Frame, b: &Frame, threshold: f64) -> bool {
    if (a.width, a.height) != (b.width, b.height) {
        return true;
    }
    if threshold >= 1.0 {
        return false;
    }
    let px = a.width as usize * a.height as usize;
    let step = (px / 4096).max(1);
    let (mut sum, mut n) = (0u64, 0u64);
    for i in (0..px).step_by(step) {
        for c in 0..3 {
            sum += (a.data[3 * i + c] as i32 - b.data[3 * i + c] as i32).unsigned_abs() as u64;
        }
        n += 3;
    }
    (sum as f64 / n.max(1) as f64 / 255.0) > threshold
}

#[cfg(feature = "neural")]
struct StreamNode {
    rife: Rife,
    state: Stream,
}

/// What an output slot will hold once the network ran.
#[cfg(feature = "neural")]
enum Pending {
    Copy(Frame),
    Made {
        item: usize,
        from: Frame,
        between: (u64, u64),
        t: f32,
        cut: bool,
    },
    Held {
        from: Frame,
        between: (u64, u64),
        t: f32,
    },
}

#[cfg(feature = "neural")]
impl Process for StreamNode {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let mut frames = Vec::with_capacity(input.items.len());
        for item in &input.items {
            match item.as_frame() {
                Some(f) => frames.push(f.clone()),
                None => {
                    return Err(NodeError::input(format!(
                        "node `{}`: takes frames, got {}",
                        out.node_id(),
                        item.describe()
                    )));
                }
            }
        }
        // Plan every output slot of this batch, and the network items, per frame size.
        let mut plan: Vec<(f64, Rate, Pending)> = vec![];
        let mut pairs: Vec<(Frame, Frame)> = vec![];
        let mut items: Vec<(usize, f32)> = vec![];
        for cur in frames {
            let Some(prev) = self.state.prev.replace(cur.clone()) else {
                continue;
            };
            let cut = is_scene_cut(&prev, &cur, self.state.scene_threshold);
            let rate = self.state.out_rate(prev.rate);
            let between = (prev.index, cur.index);
            let slots = self.state.slots(&prev, &cur);
            let mut pair_idx = None;
            for s in slots {
                let pending = if s.t == 0.0 {
                    Pending::Copy(prev.clone())
                } else if cut {
                    Pending::Held {
                        from: prev.clone(),
                        between,
                        t: s.t,
                    }
                } else {
                    let k = *pair_idx.get_or_insert_with(|| {
                        pairs.push((prev.clone(), cur.clone()));
                        pairs.len() - 1
                    });
                    items.push((k, s.t));
                    Pending::Made {
                        item: items.len() - 1,
                        from: prev.clone(),
                        between,
                        t: s.t,
                        cut: false,
                    }
                };
                plan.push((s.pts, rate, pending));
            }
        }
        // Run the network per frame size (a stream normally has one).
        let mut made: Vec<Option<Arc<Vec<u8>>>> = vec![None; items.len()];
        let mut sizes: Vec<(u32, u32)> = pairs.iter().map(|(a, _)| (a.width, a.height)).collect();
        sizes.sort_unstable();
        sizes.dedup();
        for (w, h) in sizes {
            let in_size: Vec<usize> = (0..pairs.len())
                .filter(|&k| (pairs[k].0.width, pairs[k].0.height) == (w, h))
                .collect();
            let refs: Vec<(&[u8], &[u8])> = in_size
                .iter()
                .map(|&k| (pairs[k].0.data.as_slice(), pairs[k].1.data.as_slice()))
                .collect();
            let (which, local): (Vec<usize>, Vec<(usize, f32)>) = items
                .iter()
                .enumerate()
                .filter_map(|(i, &(k, t))| {
                    in_size
                        .iter()
                        .position(|&kk| kk == k)
                        .map(|local_k| (i, (local_k, t)))
                })
                .unzip();
            let outs = self
                .rife
                .interpolate_rgb(&refs, w as usize, h as usize, &local);
            for (i, f) in which.into_iter().zip(outs) {
                made[i] = Some(Arc::new(f));
            }
        }
        for (pts, rate, pending) in plan {
            let index = self.state.take_index();
            let frame = match pending {
                Pending::Copy(f) => Frame {
                    index,
                    pts,
                    rate,
                    ..f
                },
                Pending::Made {
                    item,
                    from,
                    between,
                    t,
                    cut,
                } => Frame {
                    index,
                    pts,
                    rate,
                    data: made[item].take().expect("made above"),
                    meta: Some(Arc::new(gen_meta(between, t, cut))),
                    ..from
                },
                Pending::Held { from, between, t } => Frame {
                    index,
                    pts,
                    rate,
                    meta: Some(Arc::new(gen_meta(between, t, true))),
                    ..from
                },
            };
            out.emit(FRAMES_PORT, Payload::Frame(frame))?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        if end == End::Stopped {
            return Ok(());
        }
        if let Some(last) = self.state.prev.take()
            && self.state.last_is_slot(&last)
        {
            let index = self.state.take_index();
            let rate = self.state.out_rate(last.rate);
            out.emit(
                FRAMES_PORT,
                Payload::Frame(Frame {
                    index,
                    rate,
                    ..last
                }),
            )?;
        }
        Ok(())
    }
}

/// The metadata of a new frame: its timestep, the input frames around it, and whether it
/// repeats the earlier one because of a scene cut.
#[cfg(feature = "neural")]
fn gen_meta(between: (u64, u64), t: f32, cut: bool) -> Value {
    json!({
        "interpolated": t,
        "between": [between.0, between.1],
        "scene_cut": cut,
    })
}
