//! `lipsync`: redraws the mouth of a face in each frame to match the frame's audio window with
//! the Wav2Lip network (Burn, batched).
//!
//! Per frame: the face box (fixed `face: [x, y, w, h]`, per frame from a `faces` JSON file, or,
//! when neither is given, from the frame's metadata as `face-detect` writes it) is cropped and
//! resized to 96x96; Wav2Lip gets that crop with its lower half (rows 48..95)
//! set to 0 and the unmasked crop as the reference (6 channels, BGR in [0, 1] as the official
//! code feeds OpenCV images), plus the frame's 80x16 mel window. The generated 96x96 face is
//! resized back to the box and blended in with a feathered edge; pixels outside the box are
//! never touched.
//!
//! Boxes from `face-detect` (`meta.face.box`) are used as the reference Wav2Lip inference uses
//! its detector's (`inference.py`, `face_detect`): truncated to whole pixels, padded by `pads`
//! (top, bottom, left, right; default `[0, 10, 0, 0]`, more below the chin) and clipped to the
//! frame, then smoothed (`get_smoothened_boxes`): each frame's box is the mean of the boxes of
//! a window of `smooth` frames starting at it (the frame and the `smooth − 1` after it; at the
//! end of the stream, the last `smooth` frames), truncated again. This is the reference's
//! forward window, kept in streaming by holding each frame until the frames after it have
//! arrived; frames in the window without a face are left out of the mean. A frame whose
//! metadata says no face (`face: null`) passes through unchanged and is counted in the summary.
//!
//! Frames and windows arrive on two inputs and are paired by frame index; frames wait until
//! their window is there, then run in model batches of `batch: { max }` frames (8 by default;
//! fewer only at the end). At the end the node prints the batches it ran and their latency.
//!
//! The batched input is `windows`: a frame can run once its window is there, so the window is
//! what paces the model. In a serve graph every session has its own frames and windows, and the
//! engine gathers the windows of all sessions into one input (up to `max`, waiting at most
//! `wait_ms` for the oldest, the dynamic batcher's contract); the frames they make ready, of
//! whichever sessions, run at once as one model batch. So K live sessions fill a batch K times
//! sooner than one, and no frame waits longer than `wait_ms` for company.

use crate::audio::AUDIO_WINDOWS;
use std::collections::BTreeMap;
use vidflow_engine::{
    BatchConfig, Frame, NodeError, NodeKind, PortType, Problem, SessionUse, Temporal, ValidateCtx,
    node::ParamType, params,
};
#[cfg(feature = "neural")]
use {
    crate::audio::AudioWindow,
    std::collections::VecDeque,
    std::path::Path,
    std::sync::Arc,
    std::time::Instant,
    vidflow_engine::node::{SessionState, SessionStore},
    vidflow_engine::{Emitter, End, Input, Payload, Process, Runtime, SessionId},
};

/// Where users get Wav2Lip weights (shown when `weights` is missing or unreadable).
pub const WEIGHTS_HELP: &str = "vidflow ships no Wav2Lip weights (they are licensed for research and non-commercial use only): download `wav2lip.pth` or `wav2lip_gan.pth` from the links in the README of https://github.com/Rudrabha/Wav2Lip and pass it as `weights:` (a .pth in the official layout, fp16 or fp32, or a .safetensors)";

/// Side of Wav2Lip's face crops.
pub const FACE: usize = 96;

params! {
    /// The params of `lipsync`.
    pub struct LipsyncParams {
        /// Wav2Lip checkpoint: the official `wav2lip.pth` / `wav2lip_gan.pth` (not shipped;
        /// research, non-commercial licence) or a .safetensors with the same keys
        weights: Option<String> = optional(ParamType::Path),
        /// fixed face box `[x, y, w, h]` in pixels; absent or `[]`: each frame's box from its
        /// metadata (a `face-detect` node upstream)
        face: Option<Vec<u64>> = optional(ParamType::list(ParamType::int_from(0))),
        /// JSON file of per-frame face boxes: a list indexed by frame (`[x, y, w, h]` or null
        /// for no face) or an object `{"<frame>": [x, y, w, h]}`
        faces: Option<String> = optional(ParamType::Path),
        /// padding of a detected box in pixels, `[top, bottom, left, right]` (Wav2Lip's `--pads`)
        pads: Vec<u64> = default(ParamType::list(ParamType::int_in(0, 10000)), serde_json::json!([0, 10, 0, 0])),
        /// frames a detected box is averaged over (Wav2Lip's 5; 1: no smoothing)
        smooth: u64 = default(ParamType::int_in(1, 1000), 5),
        /// width of the blended edge, as a fraction of the box's smaller side
        feather: f64 = default(ParamType::float_in(0.0, 0.5), 0.1),
        /// print the latency of every batch
        verbose: bool = default(ParamType::Bool, false),
    }
}

pub fn kind() -> NodeKind {
    NodeKind::gated(
        "lipsync",
        "Lip sync with Wav2Lip: the face in each frame gets a mouth that matches the frame's audio window (from `audio-window`), batched on the compute device.",
        "neural",
        crate::gated_factory!("neural", factory),
    )
    .input("frames", PortType::FRAMES, "video frames")
    .input("windows", AUDIO_WINDOWS, "one mel window per frame, from `audio-window` (paired by frame index)")
    .output("frames", PortType::FRAMES, "the frames with the face redrawn (same count, same order)")
    .params::<LipsyncParams>()
    // Smoothing detected boxes reads `smooth − 1` frames after each frame (and, at the end of
    // the stream, before it).
    .temporal_with(|cx| match cx.params::<LipsyncParams>() {
        Some(p) if p.smooth > 1 && detected(&p) => {
            let n = (p.smooth - 1) as u32;
            Temporal::Frames { before: n, after: n }
        }
        _ => Temporal::PerItem,
    })
    .batched("windows", Some(BatchConfig { max: 8, wait_ms: 50 }))
    // In a serve graph each session has its own frames and windows; model batches mix them.
    .sessions(SessionUse::PerSession)
    .check(validate)
    .example("- id: faces\n  kind: face-detect\n  inputs: { frames: src.frames }\n- id: sync\n  kind: lipsync\n  params: { weights: wav2lip.pth }\n  batch: { max: 8 }\n  inputs: { frames: faces.frames, windows: win.windows }\n")
}

/// Whether the boxes come from the frames' metadata: neither `face` (or `face: []`) nor
/// `faces` is given.
fn detected(p: &LipsyncParams) -> bool {
    p.face.as_ref().is_none_or(|f| f.is_empty()) && p.faces.is_none()
}

fn validate(cx: &ValidateCtx<'_>) -> Vec<Problem> {
    let Some(p) = cx.params::<LipsyncParams>() else {
        return vec![];
    };
    let mut out = vec![];
    if p.weights.is_none() {
        out.push(
            Problem::param(
                "weights",
                "lipsync needs Wav2Lip weights (`weights: path/to/wav2lip.pth`)",
            )
            .help(WEIGHTS_HELP),
        );
    }
    if p.pads.len() != 4 {
        out.push(Problem::param(
            "pads",
            "`pads` must be four numbers `[top, bottom, left, right]`",
        ));
    }
    // Without `face` or `faces` the boxes come from the frames' metadata; whether the frames
    // pass through `face-detect` is not visible here (a kind's check sees its own node), so a
    // frame without `face` metadata is a run-time error naming this node.
    match (p.face.as_ref().filter(|f| !f.is_empty()), &p.faces) {
        (None, _) => {}
        (Some(_), Some(_)) => out.push(Problem::param(
            "faces",
            "give either `face` or `faces`, not both",
        )),
        (Some(f), None) => {
            if f.len() != 4 {
                out.push(Problem::param(
                    "face",
                    "`face` must be four numbers `[x, y, w, h]`",
                ))
            } else if f[2] == 0 || f[3] == 0 {
                out.push(Problem::param(
                    "face",
                    "the face box has zero width or height",
                ))
            }
        }
    }
    out
}

/// A face box in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaceBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl FaceBox {
    /// The `face` param's `[x, y, w, h]`.
    #[cfg_attr(not(feature = "neural"), allow(dead_code))]
    fn from_list(v: &[u64]) -> Option<FaceBox> {
        let n: Vec<u32> = v.iter().map(|&x| x.min(u32::MAX as u64) as u32).collect();
        match n[..] {
            [x, y, w, h] => Some(FaceBox { x, y, w, h }),
            _ => None,
        }
    }
    fn from_json(v: &serde_json::Value) -> Option<FaceBox> {
        let a = v.as_array()?;
        if a.len() != 4 {
            return None;
        }
        let n: Vec<u32> = a
            .iter()
            .map(|x| x.as_f64().map(|f| f.max(0.0).round() as u32))
            .collect::<Option<_>>()?;
        Some(FaceBox {
            x: n[0],
            y: n[1],
            w: n[2],
            h: n[3],
        })
    }
    /// The box clipped to a `width` x `height` frame; `None` when nothing is left.
    pub fn clip(self, width: u32, height: u32) -> Option<FaceBox> {
        let x1 = (self.x + self.w).min(width);
        let y1 = (self.y + self.h).min(height);
        (x1 > self.x && y1 > self.y).then(|| FaceBox {
            x: self.x,
            y: self.y,
            w: x1 - self.x,
            h: y1 - self.y,
        })
    }
}

/// Where the face is.
#[derive(Clone, Debug)]
pub enum Faces {
    Fixed(FaceBox),
    PerFrame(BTreeMap<u64, FaceBox>),
    /// From each frame's metadata (`face-detect`), padded and smoothed.
    Detected(Smoothing),
}

impl Faces {
    /// The given box of a frame; `None` for [`Faces::Detected`], whose boxes depend on the
    /// frames around it ([`Smoothing::smoothed`]).
    pub fn get(&self, frame: u64) -> Option<FaceBox> {
        match self {
            Faces::Fixed(b) => Some(*b),
            Faces::PerFrame(m) => m.get(&frame).copied(),
            Faces::Detected(_) => None,
        }
    }

    /// Reads a `faces` JSON file.
    pub fn load(node: &str, path: &str) -> Result<Faces, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            NodeError::input(format!(
                "node `{node}`: cannot read faces file `{path}`: {e}"
            ))
        })?;
        let bad =
            |why: String| NodeError::input(format!("node `{node}`: faces file `{path}`: {why}"));
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let mut m = BTreeMap::new();
        let mut add = |k: u64, b: &serde_json::Value| -> Result<(), NodeError> {
            if b.is_null() {
                return Ok(());
            }
            let fb = FaceBox::from_json(b)
                .ok_or_else(|| bad(format!("frame {k}: expected [x, y, w, h] or null, got {b}")))?;
            m.insert(k, fb);
            Ok(())
        };
        match &v {
            serde_json::Value::Array(a) => {
                for (i, b) in a.iter().enumerate() {
                    add(i as u64, b)?;
                }
            }
            serde_json::Value::Object(o) => {
                for (k, b) in o {
                    let i = k
                        .parse()
                        .map_err(|_| bad(format!("key `{k}` is not a frame index")))?;
                    add(i, b)?;
                }
            }
            _ => return Err(bad("expected a list or an object of boxes".into())),
        }
        Ok(Faces::PerFrame(m))
    }
}

/// How detected boxes become crop boxes: Wav2Lip's padding and temporal smoothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Smoothing {
    /// `[top, bottom, left, right]` in pixels.
    pub pads: [u32; 4],
    /// Frames per window (1: none).
    pub window: usize,
}

/// A padded detected box `[x1, y1, x2, y2]`, whole pixels.
pub type Rect = [u32; 4];

impl Smoothing {
    /// The padded box of a frame from its metadata: `Ok(None)` when it says no face
    /// (`face: null`); an error naming `node` when it has no `face` at all or a malformed one.
    /// As Wav2Lip's `face_detect`: the detector's box truncated to whole pixels (negatives to
    /// 0), then `y1 − top`, `y2 + bottom`, `x1 − left`, `x2 + right`, clipped to the frame.
    pub fn padded(&self, node: &str, f: &Frame) -> Result<Option<Rect>, NodeError> {
        let missing = || {
            NodeError::input(format!(
                "node `{node}`: frame {} has no `face` in its metadata: give `face: [x, y, w, h]` or `faces: boxes.json`, or connect `frames` from a `face-detect` node",
                f.index
            ))
        };
        let face = f
            .meta
            .as_deref()
            .and_then(|m| m.get("face"))
            .ok_or_else(missing)?;
        if face.is_null() {
            return Ok(None);
        }
        let b = face
            .get("box")
            .and_then(|b| b.as_array())
            .filter(|b| b.len() == 4)
            .and_then(|b| b.iter().map(|v| v.as_f64()).collect::<Option<Vec<f64>>>())
            .ok_or_else(|| {
                NodeError::input(format!(
                    "node `{node}`: frame {}: `face.box` in its metadata is not [x, y, w, h]: {face}",
                    f.index
                ))
            })?;
        // `int()` of the clipped detector box, as the reference reads it.
        let [x1, y1, x2, y2] = [b[0], b[1], b[0] + b[2], b[1] + b[3]].map(|v| v.max(0.0) as i64);
        let [top, bottom, left, right] = self.pads.map(i64::from);
        let (w, h) = (f.width as i64, f.height as i64);
        let r = [
            (x1 - left).max(0),
            (y1 - top).max(0),
            (x2 + right).min(w),
            (y2 + bottom).min(h),
        ];
        Ok(Some(r.map(|v| v.clamp(0, u32::MAX as i64) as u32)))
    }

    /// The crop box of the frame at `at` in `rects` (the padded boxes of consecutive frames):
    /// the mean over the window of `self.window` frames starting at it, or the last ones when
    /// fewer follow (the reference's `get_smoothened_boxes`), over the frames in the window
    /// that have a face, truncated. `None` when the frame itself has no face or nothing is
    /// left after clipping.
    pub fn smoothed(&self, rects: &[Option<Rect>], at: usize) -> Option<FaceBox> {
        rects.get(at).copied().flatten()?;
        let t = self.window.max(1);
        let start = if at + t > rects.len() {
            rects.len().saturating_sub(t)
        } else {
            at
        };
        let found: Vec<Rect> = rects[start..(start + t).min(rects.len())]
            .iter()
            .flatten()
            .copied()
            .collect();
        let mean =
            |i: usize| (found.iter().map(|r| r[i] as f64).sum::<f64>() / found.len() as f64) as u32;
        let [x1, y1, x2, y2] = [mean(0), mean(1), mean(2), mean(3)];
        (x2 > x1 && y2 > y1).then(|| FaceBox {
            x: x1,
            y: y1,
            w: x2 - x1,
            h: y2 - y1,
        })
    }
}

/// Bilinear resize of an interleaved 3-channel f32 image (half-pixel centres, like OpenCV's
/// INTER_LINEAR without its fixed-point rounding): the one bilinear resize of the workspace,
/// [`vidflow_kernels::resize_bilinear`] (`F.interpolate(.., align_corners=False)`, the same
/// coordinates and edge clamping), run on the three planes.
fn resize_interleaved3(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    let mut planar = vec![0.0; sw * sh * 3];
    for (i, px) in src.chunks_exact(3).enumerate() {
        for c in 0..3 {
            planar[c * sw * sh + i] = px[c];
        }
    }
    let resized = vidflow_kernels::resize_bilinear(&planar, 1, 3, sh, sw, dh, dw);
    let plane = dw * dh;
    let mut out = vec![0.0; plane * 3];
    for i in 0..plane {
        for c in 0..3 {
            out[i * 3 + c] = resized[c * plane + i];
        }
    }
    out
}

/// Crops `b` out of an RGB frame and resizes it to 96x96: interleaved BGR in [0, 1].
pub fn face_crop(f: &Frame, b: FaceBox) -> Vec<f32> {
    let (w, h) = (b.w as usize, b.h as usize);
    let mut crop = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let row = ((b.y as usize + y) * f.width as usize + b.x as usize) * 3;
        for x in 0..w {
            let p = &f.data[row + x * 3..row + x * 3 + 3];
            crop.extend([
                p[2] as f32 / 255.0,
                p[1] as f32 / 255.0,
                p[0] as f32 / 255.0,
            ]);
        }
    }
    resize_interleaved3(&crop, w, h, FACE, FACE)
}

/// Writes the 6-channel Wav2Lip input of one crop (CHW): masked crop, then the reference.
pub fn face_input(crop: &[f32], out: &mut Vec<f32>) {
    let plane = FACE * FACE;
    let base = out.len();
    out.resize(base + 6 * plane, 0.0);
    for y in 0..FACE {
        for x in 0..FACE {
            for c in 0..3 {
                let v = crop[(y * FACE + x) * 3 + c];
                if y < FACE / 2 {
                    out[base + c * plane + y * FACE + x] = v;
                }
                out[base + (3 + c) * plane + y * FACE + x] = v;
            }
        }
    }
}

/// Pastes a generated face (CHW BGR in [0, 1], 96x96) into the frame's box with a feathered
/// edge `feather` (fraction of the box's smaller side) wide. Only pixels in the box change.
pub fn paste(frame: &Frame, b: FaceBox, generated: &[f32], feather: f32) -> Vec<u8> {
    let plane = FACE * FACE;
    let mut hwc = vec![0.0f32; plane * 3];
    for i in 0..plane {
        for c in 0..3 {
            // BGR → RGB.
            hwc[i * 3 + (2 - c)] = generated[c * plane + i];
        }
    }
    let (w, h) = (b.w as usize, b.h as usize);
    let big = resize_interleaved3(&hwc, FACE, FACE, w, h);
    let edge = (feather * w.min(h) as f32).max(1e-6);
    let mut data = frame.data.to_vec();
    for y in 0..h {
        for x in 0..w {
            let d = x.min(y).min(w - 1 - x).min(h - 1 - y) as f32 + 0.5;
            let alpha = (d / edge).min(1.0);
            let o = ((b.y as usize + y) * frame.width as usize + b.x as usize + x) * 3;
            for c in 0..3 {
                let g = big[(y * w + x) * 3 + c].clamp(0.0, 1.0) * 255.0;
                let old = data[o + c] as f32;
                data[o + c] = (old + (g - old) * alpha).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    data
}

#[cfg(feature = "neural")]
fn factory(ctx: &vidflow_engine::BuildCtx<'_>) -> Result<Runtime, NodeError> {
    use crate::gpu::device::Compute;
    let node = ctx.node_id.to_string();
    let p: LipsyncParams = ctx.params()?;
    let Some(weights) = p.weights.as_deref() else {
        return Err(NodeError::input(format!(
            "node `{node}`: param `weights` is missing; {WEIGHTS_HELP}"
        )));
    };
    if !Path::new(weights).is_file() {
        return Err(NodeError::input(format!(
            "node `{node}`: weights file `{weights}` does not exist; {WEIGHTS_HELP}"
        )));
    }
    let faces = match (p.face.as_ref().filter(|f| !f.is_empty()), &p.faces) {
        (Some(f), _) => Faces::Fixed(FaceBox::from_list(f).ok_or_else(|| {
            NodeError::input(format!("node `{node}`: `face` must be [x, y, w, h]"))
        })?),
        (None, Some(path)) => Faces::load(&node, path)?,
        (None, None) => {
            let [top, bottom, left, right] = p.pads[..] else {
                return Err(NodeError::input(format!(
                    "node `{node}`: `pads` must be [top, bottom, left, right]"
                )));
            };
            Faces::Detected(Smoothing {
                pads: [top, bottom, left, right].map(|v| v.min(u32::MAX as u64) as u32),
                window: p.smooth as usize,
            })
        }
    };
    let compute = Compute::for_run(ctx.shared)?;
    // Loaded once per run, job or worker: later chunks share the network.
    let (key, version) = crate::weights::cache_key("wav2lip", Some(Path::new(weights)), ());
    let (model, _) = ctx
        .shared
        .keyed(&key, &version, || {
            let ck = crate::weights::load(Path::new(weights)).map_err(|e| e.to_string())?;
            crate::models::wav2lip::Wav2Lip::load(&ck, &compute.device)
        })
        .map_err(|e| NodeError::input(format!("node `{node}`: {e}")))?;
    Ok(Runtime::Process(Box::new(LipSync {
        node,
        model,
        faces,
        feather: p.feather as f32,
        verbose: p.verbose,
        streams: SessionState::new(|_| Stream::default()),
        batch: ctx.batch.map_or(8, |b| b.max).max(1),
        latencies: vec![],
        done: 0,
        no_face: 0,
        clipped_warned: false,
    })))
}

#[cfg(feature = "neural")]
struct LipSync {
    node: String,
    model: Arc<crate::models::wav2lip::Wav2Lip>,
    faces: Faces,
    feather: f32,
    verbose: bool,
    /// The frames and windows of each stream: one per session in a serve graph (one model
    /// serves them all, and a model batch takes frames of several sessions), one in a run.
    streams: SessionState<Stream>,
    /// Frames per model batch: the node's `batch: { max }`.
    batch: usize,
    /// (frames, seconds) per model call.
    latencies: Vec<(usize, f64)>,
    done: u64,
    /// Frames passed through without a face.
    no_face: u64,
    /// A given box reached past the frame's edge and was clipped (said once).
    clipped_warned: bool,
}

/// One stream's frames waiting for their windows (and, for detected boxes, for the frames
/// their smoothing window reads).
#[cfg(feature = "neural")]
#[derive(Default)]
struct Stream {
    frames: VecDeque<Frame>,
    /// For [`Faces::Detected`]: the padded box of each queued frame (parallel to `frames`).
    rects: VecDeque<Option<Rect>>,
    /// The padded boxes of the last frames that left, for the smoothing window at the end.
    history: VecDeque<Option<Rect>>,
    windows: BTreeMap<u64, Arc<AudioWindow>>,
    /// The latest window seen, for frames past the end of the audio.
    last_window: Option<Arc<AudioWindow>>,
}

/// A frame ready for the model: its stream, its box (`None`: no face, it passes through) and
/// its window.
#[cfg(feature = "neural")]
struct Ready {
    session: SessionId,
    frame: Frame,
    face: Option<FaceBox>,
    window: Option<Arc<AudioWindow>>,
}

#[cfg(feature = "neural")]
impl Stream {
    fn window_of(&self, frame: u64, end: bool) -> Option<Arc<AudioWindow>> {
        match self.windows.get(&frame) {
            Some(w) => Some(w.clone()),
            None if end => self.last_window.clone(),
            None => None,
        }
    }

    /// The face box of the queued frame at `k`: `None` while it cannot be known yet (its
    /// smoothing window needs frames that have not arrived), `Some(None)` for no face.
    fn box_at(&self, faces: &Faces, k: usize, end: bool) -> Option<Option<FaceBox>> {
        match faces {
            Faces::Detected(s) => {
                if !end && k + s.window > self.frames.len() {
                    return None;
                }
                let rects: Vec<Option<Rect>> =
                    self.history.iter().chain(&self.rects).copied().collect();
                Some(s.smoothed(&rects, self.history.len() + k))
            }
            faces => Some(faces.get(self.frames[k].index)),
        }
    }

    /// Takes the frames at the queue's front whose windows (and smoothed boxes) are there, in
    /// groups of `batch`, a short one only at the stream's end; `usize::MAX`: every one ready.
    fn take_ready(
        &mut self,
        faces: &Faces,
        batch: usize,
        session: SessionId,
        end: bool,
        ready: &mut Vec<Ready>,
    ) {
        loop {
            let mut take = 0;
            let mut found = vec![];
            while take < self.frames.len() && take < batch {
                let Some(b) = self.box_at(faces, take, end) else {
                    break;
                };
                let w = self.window_of(self.frames[take].index, end);
                if b.is_some() && w.is_none() {
                    break;
                }
                found.push((b, w));
                take += 1;
            }
            // In a session every ready frame runs now (the engine already waited for company
            // on the windows input); in a run, only whole batches until the end.
            let eager = batch == usize::MAX;
            let run = take > 0 && (eager || take == batch || end);
            if !run {
                return;
            }
            if let Faces::Detected(s) = faces {
                let keep = s.window.saturating_sub(1);
                self.history.extend(self.rects.drain(..take));
                while self.history.len() > keep {
                    self.history.pop_front();
                }
            }
            for (frame, (face, window)) in self.frames.drain(..take).zip(found) {
                self.windows.remove(&frame.index);
                ready.push(Ready {
                    session,
                    frame,
                    face,
                    window,
                });
            }
        }
    }
}

#[cfg(feature = "neural")]
impl LipSync {
    /// Runs the frames of `sessions` that are ready, in model batches of up to `batch` frames
    /// taken across the sessions (oldest session first), and hands each frame back to its
    /// session in order.
    fn drain(
        &mut self,
        sessions: &[SessionId],
        out: &mut Emitter<'_>,
        end: bool,
    ) -> Result<(), NodeError> {
        // A run takes whole batches of its one stream; sessions every frame that is ready.
        let take = match sessions.iter().all(|s| s.is_none()) {
            true => self.batch,
            false => usize::MAX,
        };
        let mut ready = vec![];
        for &session in sessions {
            if let Some(s) = self.streams.existing(session) {
                s.take_ready(&self.faces, take, session, end, &mut ready);
            }
        }
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let group: Vec<Ready> = ready.by_ref().take(self.batch).collect();
            self.run_group(group, out)?;
        }
        Ok(())
    }

    /// A frame's box clipped to the frame. A box the user gave (`face`, `faces`) that lies
    /// wholly outside the frame is an error (it would silently change nothing), one partly
    /// outside is clipped with a warning; a detected box is inside by construction.
    fn fit(&mut self, b: Option<FaceBox>, f: &Frame) -> Result<Option<FaceBox>, NodeError> {
        let Some(b) = b else { return Ok(None) };
        let given = !matches!(self.faces, Faces::Detected(_));
        let shown = || format!("[{}, {}, {}, {}]", b.x, b.y, b.w, b.h);
        match b.clip(f.width, f.height) {
            None if given => Err(NodeError::input(format!(
                "node `{}`: the face box {} of frame {} lies outside the {}x{} frame; give a box inside it (x + w <= {}, y + h <= {})",
                self.node,
                shown(),
                f.index,
                f.width,
                f.height,
                f.width,
                f.height
            ))),
            Some(c) if given && c != b && !self.clipped_warned => {
                self.clipped_warned = true;
                vidflow_engine::progress::say(format!(
                    "warning: node `{}`: the face box {} reaches past the {}x{} frame; it is clipped to [{}, {}, {}, {}]",
                    self.node,
                    shown(),
                    f.width,
                    f.height,
                    c.x,
                    c.y,
                    c.w,
                    c.h
                ));
                Ok(Some(c))
            }
            c => Ok(c),
        }
    }

    /// The end of one stream: its frames run with what they have (frames past the audio's
    /// end take the last window).
    fn end_stream(&mut self, session: SessionId, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        if let Some(s) = self.streams.existing(session)
            && !s.frames.is_empty()
            && s.last_window.is_none()
        {
            return Err(NodeError::input(format!(
                "node `{}`: {} frames but no audio windows: is the audio input empty?",
                self.node,
                s.frames.len()
            )));
        }
        self.drain(&[session], out, true)
    }

    /// Runs one model batch: the frames of `group` with a face; the others pass through
    /// unchanged.
    fn run_group(&mut self, group: Vec<Ready>, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let mut mel = vec![];
        let mut face = vec![];
        let mut jobs = vec![];
        for (k, r) in group.iter().enumerate() {
            let Some(b) = self.fit(r.face, &r.frame)? else {
                self.no_face += 1;
                continue;
            };
            let w = r.window.as_ref().ok_or_else(|| {
                NodeError::runtime(format!(
                    "node `{}`: no audio window for frame {}",
                    self.node, r.frame.index
                ))
            })?;
            mel.extend(w.mel());
            face_input(&face_crop(&r.frame, b), &mut face);
            jobs.push((k, b));
        }
        let mut data: Vec<Option<Vec<u8>>> = vec![None; group.len()];
        if !jobs.is_empty() {
            let t = Instant::now();
            let y = self
                .model
                .run(jobs.len(), &mel, &face)
                .map_err(|e| NodeError::runtime(format!("node `{}`: {e}", self.node)))?;
            let secs = t.elapsed().as_secs_f64();
            self.latencies.push((jobs.len(), secs));
            if self.verbose {
                vidflow_engine::progress::say(format!(
                    "{}: batch of {} frames in {:.1} ms",
                    self.node,
                    jobs.len(),
                    secs * 1000.0
                ));
            }
            let n = 3 * FACE * FACE;
            for (j, (k, b)) in jobs.iter().enumerate() {
                data[*k] = Some(paste(
                    &group[*k].frame,
                    *b,
                    &y[j * n..(j + 1) * n],
                    self.feather,
                ));
            }
        }
        for (r, d) in group.into_iter().zip(data) {
            self.done += 1;
            let f = match d {
                Some(d) => Frame {
                    data: Arc::new(d),
                    ..r.frame
                },
                None => r.frame,
            };
            out.emit_for(0, r.session, Payload::Frame(f))?;
        }
        Ok(())
    }
}

#[cfg(feature = "neural")]
impl Process for LipSync {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let mut touched: Vec<SessionId> = vec![];
        for (i, item) in input.items.into_iter().enumerate() {
            // `Input::session` would borrow `input`, whose items this loop has taken.
            let session = input.sessions.get(i).copied().unwrap_or_default();
            if !touched.contains(&session) {
                touched.push(session);
            }
            let stream = self.streams.get(session);
            match item {
                Payload::Frame(f) if input.port == 0 => {
                    // Read the detected box on arrival, so bad metadata fails at its frame.
                    let rect = match &self.faces {
                        Faces::Detected(s) => s.padded(&self.node, &f)?,
                        _ => None,
                    };
                    stream.rects.push_back(rect);
                    stream.frames.push_back(f);
                }
                Payload::Custom(c) if input.port == 1 => {
                    let Some(w) = c.as_any().downcast_ref::<AudioWindow>() else {
                        return Err(NodeError::runtime(format!(
                            "node `{}`: `windows` expects audio windows from `audio-window`, got {}",
                            self.node,
                            c.describe()
                        )));
                    };
                    let w = Arc::new(w.clone());
                    stream.last_window = Some(w.clone());
                    stream.windows.insert(w.frame, w);
                }
                other => {
                    return Err(NodeError::runtime(format!(
                        "node `{}`: unexpected {} on input #{}",
                        self.node,
                        other.describe(),
                        input.port
                    )));
                }
            }
        }
        self.drain(&touched, out, false)
    }

    fn session_state(&mut self) -> Option<&mut dyn SessionStore> {
        Some(&mut self.streams)
    }

    fn end_session(&mut self, session: SessionId, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        self.end_stream(session, out)
    }

    fn finish(&mut self, out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        if end == End::Stopped {
            return Ok(());
        }
        self.end_stream(SessionId::NONE, out)?;
        let passed = if self.no_face > 0 {
            format!(
                "; {} frames without a face passed through unchanged",
                self.no_face
            )
        } else {
            String::new()
        };
        if self.latencies.is_empty() && self.done > 0 {
            vidflow_engine::progress::say(format!("{}: no faces{passed}", self.node));
        }
        if !self.latencies.is_empty() {
            let frames: usize = self.latencies.iter().map(|l| l.0).sum();
            let busy: f64 = self.latencies.iter().map(|l| l.1).sum();
            let max = self.latencies.iter().map(|l| l.1).fold(0.0, f64::max);
            vidflow_engine::progress::say(format!(
                "{}: {frames} faces in {} batches (mean {:.1}), model latency per batch mean {:.1} ms, max {:.1} ms, {:.1} faces/s{passed}",
                self.node,
                self.latencies.len(),
                frames as f64 / self.latencies.len() as f64,
                1000.0 * busy / self.latencies.len() as f64,
                1000.0 * max,
                frames as f64 / busy.max(1e-9)
            ));
        }
        Ok(())
    }
}
