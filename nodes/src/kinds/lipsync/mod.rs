//! `lipsync`: redraws the mouth of a face in each frame to match the frame's audio window with
//! the Wav2Lip network (Burn, batched).
//!
//! Per frame: the face box (fixed `face: [x, y, w, h]`, or per frame from a `faces` JSON file)
//! is cropped and resized to 96x96; Wav2Lip gets that crop with its lower half (rows 48..95)
//! set to 0 and the unmasked crop as the reference (6 channels, BGR in [0, 1] as the official
//! code feeds OpenCV images), plus the frame's 80x16 mel window. The generated 96x96 face is
//! resized back to the box and blended in with a feathered edge; pixels outside the box are
//! never touched.
//!
//! Frames and windows arrive on two inputs and are paired by frame index; frames wait until
//! their window is there, then run in batches (`batch: { max: 8 }`). At the end the node prints
//! the batches it ran and their latency.

use crate::audio::AUDIO_WINDOWS;
use std::collections::BTreeMap;
use vidflow_engine::{
    BatchConfig, Frame, NodeError, NodeKind, PortType, Problem, Temporal, ValidateCtx,
    node::ParamType, params,
};
#[cfg(feature = "neural")]
use {
    crate::audio::AudioWindow,
    std::collections::VecDeque,
    std::path::Path,
    std::sync::Arc,
    std::time::Instant,
    vidflow_engine::{Emitter, End, Input, Payload, Process, Runtime},
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
        /// fixed face box `[x, y, w, h]` in pixels
        face: Option<Vec<u64>> = optional(ParamType::list(ParamType::int_from(0))),
        /// JSON file of per-frame face boxes: a list indexed by frame (`[x, y, w, h]` or null
        /// for no face) or an object `{"<frame>": [x, y, w, h]}`
        faces: Option<String> = optional(ParamType::Path),
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
    .temporal(Temporal::PerItem)
    .batched("frames", Some(BatchConfig { max: 8, wait_ms: 50 }))
    .check(validate)
    .example("- id: sync\n  kind: lipsync\n  params: { weights: wav2lip.pth, face: [100, 60, 120, 120] }\n  batch: { max: 8 }\n  inputs: { frames: src.frames, windows: win.windows }\n")
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
    match (&p.face, &p.faces) {
        (None, None) => out.push(Problem::param(
            "face",
            "give the face's position: `face: [x, y, w, h]` or `faces: boxes.json`",
        )),
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
        _ => {}
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
}

impl Faces {
    pub fn get(&self, frame: u64) -> Option<FaceBox> {
        match self {
            Faces::Fixed(b) => Some(*b),
            Faces::PerFrame(m) => m.get(&frame).copied(),
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
    let faces = match (&p.face, &p.faces) {
        (Some(f), _) => Faces::Fixed(FaceBox::from_list(f).ok_or_else(|| {
            NodeError::input(format!("node `{node}`: `face` must be [x, y, w, h]"))
        })?),
        (None, Some(path)) => Faces::load(&node, path)?,
        (None, None) => {
            return Err(NodeError::input(format!(
                "node `{node}`: give `face: [x, y, w, h]` or `faces: boxes.json`"
            )));
        }
    };
    let compute = Compute::for_run(ctx.shared)?;
    let ck = crate::weights::load(Path::new(weights))
        .map_err(|e| NodeError::input(format!("node `{node}`: {e}")))?;
    let model = crate::models::wav2lip::Wav2Lip::load(&ck, &compute.device)
        .map_err(|e| NodeError::input(format!("node `{node}`: {e}")))?;
    Ok(Runtime::Process(Box::new(LipSync {
        node,
        model,
        faces,
        feather: p.feather as f32,
        verbose: p.verbose,
        frames: VecDeque::new(),
        windows: BTreeMap::new(),
        last_window: None,
        batch: 1,
        latencies: vec![],
        done: 0,
    })))
}

#[cfg(feature = "neural")]
struct LipSync {
    node: String,
    model: crate::models::wav2lip::Wav2Lip,
    faces: Faces,
    feather: f32,
    verbose: bool,
    frames: VecDeque<Frame>,
    windows: BTreeMap<u64, Arc<AudioWindow>>,
    /// The latest window seen, for frames past the end of the audio.
    last_window: Option<Arc<AudioWindow>>,
    /// Largest frame batch the engine delivered: the size model batches are cut to.
    batch: usize,
    /// (frames, seconds) per model call.
    latencies: Vec<(usize, f64)>,
    done: u64,
}

#[cfg(feature = "neural")]
impl LipSync {
    fn window_of(&self, frame: u64, end: bool) -> Option<Arc<AudioWindow>> {
        match self.windows.get(&frame) {
            Some(w) => Some(w.clone()),
            None if end => self.last_window.clone(),
            None => None,
        }
    }

    /// Runs the frames at the queue's front whose windows are there, in model batches.
    fn drain(&mut self, out: &mut Emitter<'_>, end: bool) -> Result<(), NodeError> {
        loop {
            let mut take = 0;
            while take < self.frames.len() && take < self.batch {
                let f = &self.frames[take];
                let needs = self.faces.get(f.index).is_some();
                if needs && self.window_of(f.index, end).is_none() {
                    break;
                }
                take += 1;
            }
            // A full batch, every queued frame (nothing to wait for), or the end.
            let run = take > 0 && (take == self.batch || take == self.frames.len() || end);
            if !run {
                return Ok(());
            }
            let group: Vec<Frame> = self.frames.drain(..take).collect();
            self.run_group(group, out, end)?;
        }
    }

    fn run_group(
        &mut self,
        group: Vec<Frame>,
        out: &mut Emitter<'_>,
        end: bool,
    ) -> Result<(), NodeError> {
        let mut mel = vec![];
        let mut face = vec![];
        let mut jobs = vec![];
        for (k, f) in group.iter().enumerate() {
            let Some(b) = self
                .faces
                .get(f.index)
                .and_then(|b| b.clip(f.width, f.height))
            else {
                continue;
            };
            let w = self.window_of(f.index, end).ok_or_else(|| {
                NodeError::runtime(format!(
                    "node `{}`: no audio window for frame {}",
                    self.node, f.index
                ))
            })?;
            mel.extend(w.mel());
            face_input(&face_crop(f, b), &mut face);
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
                eprintln!(
                    "{}: batch of {} frames in {:.1} ms",
                    self.node,
                    jobs.len(),
                    secs * 1000.0
                );
            }
            let n = 3 * FACE * FACE;
            for (j, (k, b)) in jobs.iter().enumerate() {
                data[*k] = Some(paste(&group[*k], *b, &y[j * n..(j + 1) * n], self.feather));
            }
        }
        for (f, d) in group.into_iter().zip(data) {
            self.windows.remove(&f.index);
            self.done += 1;
            let f = match d {
                Some(d) => Frame {
                    data: Arc::new(d),
                    ..f
                },
                None => f,
            };
            out.emit(0, Payload::Frame(f))?;
        }
        Ok(())
    }
}

#[cfg(feature = "neural")]
impl Process for LipSync {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        if input.port == 0 {
            self.batch = self.batch.max(input.items.len());
        }
        for item in input.items {
            match item {
                Payload::Frame(f) if input.port == 0 => self.frames.push_back(f),
                Payload::Custom(c) if input.port == 1 => {
                    let Some(w) = c.as_any().downcast_ref::<AudioWindow>() else {
                        return Err(NodeError::runtime(format!(
                            "node `{}`: `windows` expects audio windows from `audio-window`, got {}",
                            self.node,
                            c.describe()
                        )));
                    };
                    let w = Arc::new(w.clone());
                    self.last_window = Some(w.clone());
                    self.windows.insert(w.frame, w);
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
        self.drain(out, false)
    }

    fn finish(&mut self, out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        if end == End::Stopped {
            return Ok(());
        }
        if !self.frames.is_empty() && self.last_window.is_none() {
            return Err(NodeError::input(format!(
                "node `{}`: {} frames but no audio windows: is the audio input empty?",
                self.node,
                self.frames.len()
            )));
        }
        self.drain(out, true)?;
        if !self.latencies.is_empty() {
            let frames: usize = self.latencies.iter().map(|l| l.0).sum();
            let busy: f64 = self.latencies.iter().map(|l| l.1).sum();
            let max = self.latencies.iter().map(|l| l.1).fold(0.0, f64::max);
            eprintln!(
                "{}: {frames} faces in {} batches (mean {:.1}), model latency per batch mean {:.1} ms, max {:.1} ms, {:.1} faces/s",
                self.node,
                self.latencies.len(),
                frames as f64 / self.latencies.len() as f64,
                1000.0 * busy / self.latencies.len() as f64,
                1000.0 * max,
                frames as f64 / busy.max(1e-9)
            );
        }
        Ok(())
    }
}
