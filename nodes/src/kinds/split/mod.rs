//! `split`: a frame stream → segments. The plan is `segment_frames` (frames per segment: a
//! list, or one number for fixed-size segments until the stream ends) and `overlaps` (frames
//! shared by consecutive segments: one number for all, or a list with one entry per boundary).
//! Segment `i+1` starts `overlaps[i]` frames before segment `i` ends.
//!
//! Output `frames` carries every segment's frames in segment order, each tagged in `meta` with
//! `{"segment": i, "segment_frame": j}` (frames in an overlap appear once per segment; the
//! overlap is held back, so memory is bounded by the largest overlap). With `path` set (a
//! pattern with `{index}`, e.g. `out/seg_{index}.mp4`), each segment is also encoded to its own
//! file (needs the `media` feature); each file is renamed into place when its segment is
//! complete.
//!
//! A list plan must match the stream: frames beyond it, or a stream that ends inside it, are
//! errors. `stitch` undoes `split` (zero overlap: the original frames exactly).

use std::collections::VecDeque;
use std::sync::Arc;
use vidflow_engine::Emitter;
use vidflow_engine::{
    End, Frame, Input, NodeError, NodeKind, ParamType, Payload, PixelFormat, PortType, Problem,
    Process, Runtime, Temporal, params,
};

params! {
    /// The params of `split`.
    pub struct SplitParams {
        /// frames per segment: a list, or one number for fixed-size segments
        segment_frames: OneOrList = required(ParamType::one_or_list(ParamType::int_from(1))),
        /// frames shared by consecutive segments: one for all, or one per boundary
        overlaps: OneOrList = default(ParamType::one_or_list(ParamType::int_from(0)), 0),
        /// also write each segment to a file: a pattern with `{index}` (e.g.
        /// out/seg_{index}.mp4)
        path: Option<String> = optional(ParamType::Path),
        /// video encoder for segment files (default libx264)
        codec: Option<String> = optional(ParamType::Str),
        /// constant rate factor for segment files
        crf: Option<f64> = optional(ParamType::float_in(0.0, 63.0)),
        /// encoder preset for segment files
        preset: Option<String> = optional(ParamType::Str),
        /// pixel format of segment files (default yuv420p)
        pix_fmt: Option<String> = optional(ParamType::Str),
    }
}

/// A count param given as one number or as a list of numbers.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum OneOrList {
    One(u64),
    List(Vec<u64>),
}

pub fn kind() -> NodeKind {
    NodeKind::new(
        "split",
        "Splits a frame stream into segments (frame counts and overlaps): tagged per-segment frame streams, and optionally one video file per segment.",
        |ctx| {
            let p: SplitParams = ctx.params()?;
            let plan = Plan::from_params(&p).map_err(|e| NodeError::input(format!("node `{}`: {e}", ctx.node_id)))?;
            let files = match &p.path {
                None => None,
                Some(pattern) => Some(files(ctx.node_id, &p, pattern)?),
            };
            Ok(Runtime::Process(Box::new(Split {
                node: ctx.node_id.to_string(),
                plan,
                seen: 0,
                held: VecDeque::new(),
                files,
            })))
        },
    )
    .input("frames", PortType::FRAMES, "frames to split")
    .output("frames", PortType::FRAMES, "the frames of each segment in order, tagged `{segment, segment_frame}` in meta")
    // Its segment files take RGB24 or YUV 4:2:0, and it forwards frames as they come.
    .accepts("frames", &[PixelFormat::Rgb24, PixelFormat::Yuv420p])
    .passes("frames", "frames")
    .params::<SplitParams>()
    .temporal(Temporal::Whole("its segments are planned in frames from the start of the stream".into()))
    .example("- id: seg\n  kind: split\n  params: { segment_frames: [81, 81, 65], overlaps: 8 }\n  inputs: { frames: gen.frames }\n")
    .check(|cx| match cx.params::<SplitParams>().map(|p| Plan::from_params(&p)) {
        Some(Err(e)) => vec![Problem::param("overlaps", e).help("each overlap must be shorter than the two segments it joins")],
        _ => vec![],
    })
}

/// A segment plan: lengths and the overlaps between consecutive segments.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Explicit lengths, or one length repeated without end.
    lengths: Vec<u64>,
    repeat: bool,
    overlaps: Vec<u64>,
    overlap_all: u64,
}

impl Plan {
    pub fn from_params(p: &SplitParams) -> Result<Plan, String> {
        let (lengths, repeat) = match &p.segment_frames {
            OneOrList::List(v) => (v.clone(), false),
            OneOrList::One(n) => (vec![*n], true),
        };
        if lengths.is_empty() || lengths.contains(&0) {
            return Err("`segment_frames` must be positive and not empty".into());
        }
        let (overlaps, overlap_all) = match &p.overlaps {
            OneOrList::List(v) => (v.clone(), 0),
            OneOrList::One(n) => (vec![], *n),
        };
        if !overlaps.is_empty() && !repeat && overlaps.len() + 1 != lengths.len() {
            return Err(format!(
                "{} segments need {} overlaps (one per boundary), got {}",
                lengths.len(),
                lengths.len() - 1,
                overlaps.len()
            ));
        }
        let plan = Plan {
            lengths,
            repeat,
            overlaps,
            overlap_all,
        };
        let n = if plan.repeat { 2 } else { plan.lengths.len() };
        for i in 0..n.saturating_sub(1) {
            let ov = plan.overlap(i);
            let (a, b) = (plan.len(i), plan.len(i + 1));
            if ov >= a || ov >= b {
                return Err(format!(
                    "overlap {ov} between segments {i} and {} is not shorter than both ({a} and {b} frames)",
                    i + 1
                ));
            }
            if i + 2 < n || plan.repeat {
                let next = plan.overlap(i + 1);
                if ov + next > b {
                    return Err(format!(
                        "segment {} ({b} frames) is too short for its overlaps {ov} and {next}",
                        i + 1
                    ));
                }
            }
        }
        Ok(plan)
    }
    pub fn count(&self) -> Option<usize> {
        (!self.repeat).then_some(self.lengths.len())
    }
    pub fn len(&self, i: usize) -> u64 {
        if self.repeat {
            self.lengths[0]
        } else {
            self.lengths[i]
        }
    }
    /// Overlap between segment `i` and `i + 1`.
    pub fn overlap(&self, i: usize) -> u64 {
        self.overlaps.get(i).copied().unwrap_or(self.overlap_all)
    }
    /// First frame (stream position) of segment `i`.
    fn start(&self, i: usize) -> u64 {
        (0..i).map(|k| self.len(k) - self.overlap(k)).sum()
    }
    /// Frames emitted for a finite plan: every segment whole, overlaps counted in both.
    pub fn output_total(&self) -> Option<u64> {
        (!self.repeat).then(|| self.lengths.iter().sum())
    }
    /// Frames the whole plan covers, if finite.
    pub fn total(&self) -> Option<u64> {
        let n = self.count()?;
        Some(self.start(n - 1) + self.len(n - 1))
    }
}

/// Adds `{segment: i, segment_frame: j}` to a frame's meta (keeping what is there).
pub fn tag(f: &Frame, segment: usize, j: u64) -> Frame {
    let mut meta = match f.meta.as_deref() {
        Some(serde_json::Value::Object(m)) => m.clone(),
        Some(other) => {
            let mut m = serde_json::Map::new();
            m.insert("value".into(), other.clone());
            m
        }
        None => serde_json::Map::new(),
    };
    meta.insert("segment".into(), segment.into());
    meta.insert("segment_frame".into(), j.into());
    let mut out = f.clone();
    out.meta = Some(Arc::new(serde_json::Value::Object(meta)));
    out
}

struct Split {
    node: String,
    plan: Plan,
    /// Frames received.
    seen: u64,
    /// Frames of the current overlap, to be repeated as the next segment's start.
    held: VecDeque<Frame>,
    files: Option<Files>,
}

impl Split {
    /// The segment a stream position starts counting in (the earlier one in an overlap).
    fn segment_of(&self, k: u64) -> Option<usize> {
        let mut i = 0;
        loop {
            if self.plan.count().is_some_and(|n| i >= n) {
                return None;
            }
            let s = self.plan.start(i);
            if k < s + self.plan.len(i) {
                return Some(i);
            }
            i += 1;
        }
    }

    fn frame(&mut self, f: &Frame, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let k = self.seen;
        self.seen += 1;
        let Some(seg) = self.segment_of(k) else {
            return Err(NodeError::input(format!(
                "node `{}`: frame {} is beyond the plan, which covers {} frames; make `segment_frames` match the stream",
                self.node,
                f.index,
                self.plan.total().unwrap_or(0)
            )));
        };
        let start = self.plan.start(seg);
        let j = k - start;
        // The held overlap opens this segment (held back until the segment really continues,
        // so a stream that ends at a boundary does not start an overlap-only segment).
        if j == self.held.len() as u64 && seg > 0 {
            for (jj, h) in std::mem::take(&mut self.held).into_iter().enumerate() {
                self.emit(seg, jj as u64, &h, out)?;
            }
        }
        self.emit(seg, j, f, out)?;
        let len = self.plan.len(seg);
        let ov = if self.plan.count().is_some_and(|n| seg + 1 >= n) {
            0
        } else {
            self.plan.overlap(seg)
        };
        if j >= len - ov {
            self.held.push_back(f.clone());
        }
        if j + 1 == len
            && let Some(files) = &mut self.files
        {
            files.close(seg)?;
        }
        Ok(())
    }

    fn emit(
        &mut self,
        seg: usize,
        j: u64,
        f: &Frame,
        out: &mut Emitter<'_>,
    ) -> Result<(), NodeError> {
        if let Some(files) = &mut self.files {
            files.push(seg, f)?;
        }
        out.emit(0, Payload::Frame(tag(f, seg, j)))
    }
}

impl Process for Split {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        if self.seen == 0
            && let Some(n) = self.plan.output_total()
        {
            // Overlap frames go out once per segment: more frames out than in.
            out.set_total(n);
        }
        for item in &input.items {
            self.frame(item.frame_for(&self.node)?, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, _out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        if end == End::Stopped {
            if let Some(files) = &mut self.files {
                files.abandon();
            }
            return Ok(());
        }
        if let Some(total) = self.plan.total()
            && self.seen < total
        {
            if let Some(files) = &mut self.files {
                files.abandon();
            }
            return Err(NodeError::input(format!(
                "node `{}`: the stream ended after {} frames, but the plan covers {total}; make `segment_frames` match the stream",
                self.node, self.seen
            )));
        }
        // Fixed-size segments: the last one may be shorter.
        if let Some(files) = &mut self.files {
            files.close_all()?;
        }
        Ok(())
    }
}

#[cfg(feature = "media")]
fn files(node: &str, p: &SplitParams, pattern: &str) -> Result<Files, NodeError> {
    if !pattern.contains("{index}") {
        return Err(NodeError::input(format!(
            "node `{node}`: `path` must contain `{{index}}` (e.g. out/seg_{{index}}.mp4) so each segment gets its own file"
        )));
    }
    let dir = std::path::Path::new(pattern)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        return Err(NodeError::input(format!(
            "node `{node}`: cannot write `{pattern}`: folder `{}` does not exist; create it or choose another path",
            dir.display()
        )));
    }
    Ok(Files {
        node: node.to_string(),
        pattern: pattern.to_string(),
        // The video settings of `encode`; segment files carry no audio.
        opts: crate::media::writer::EncodeOptions {
            codec: p.codec.clone(),
            crf: p.crf,
            preset: p.preset.clone(),
            pix_fmt: p.pix_fmt.clone(),
            rate: None,
            audio_codec: "aac".into(),
            audio_bitrate: 128_000,
        },
        open: vec![],
    })
}

/// Writing segment files needs FFmpeg; splitting into frame streams does not.
#[cfg(not(feature = "media"))]
fn files(node: &str, _p: &SplitParams, _pattern: &str) -> Result<Files, NodeError> {
    Err(NodeError::runtime(format!(
        "node `{node}`: this vidflow was built without the `media` feature, so `split` cannot write segment files (`path`); rebuild with `--features media`"
    )))
}

/// Segment files being written (at most two at a time: both sides of an overlap).
struct Files {
    #[allow(dead_code)]
    node: String,
    #[allow(dead_code)]
    pattern: String,
    #[cfg(feature = "media")]
    opts: crate::media::writer::EncodeOptions,
    #[cfg(feature = "media")]
    open: Vec<(usize, crate::media::writer::Writer)>,
    #[cfg(not(feature = "media"))]
    open: Vec<usize>,
}

#[cfg(feature = "media")]
impl Files {
    fn push(&mut self, seg: usize, f: &Frame) -> Result<(), NodeError> {
        if !self.open.iter().any(|(s, _)| *s == seg) {
            let path = self.pattern.replace("{index}", &seg.to_string());
            let w =
                crate::media::writer::Writer::create(&self.node, &path, self.opts.clone(), false)?;
            self.open.push((seg, w));
        }
        let (_, w) = self
            .open
            .iter_mut()
            .find(|(s, _)| *s == seg)
            .expect("opened");
        w.push_frame(f)
    }
    fn close(&mut self, seg: usize) -> Result<(), NodeError> {
        if let Some(pos) = self.open.iter().position(|(s, _)| *s == seg) {
            let (_, mut w) = self.open.remove(pos);
            w.finish(End::Complete)?;
        }
        Ok(())
    }
    fn close_all(&mut self) -> Result<(), NodeError> {
        for (_, mut w) in std::mem::take(&mut self.open) {
            w.finish(End::Complete)?;
        }
        Ok(())
    }
    fn abandon(&mut self) {
        for (_, mut w) in std::mem::take(&mut self.open) {
            w.abandon();
        }
    }
}

#[cfg(not(feature = "media"))]
impl Files {
    fn push(&mut self, _seg: usize, _f: &Frame) -> Result<(), NodeError> {
        Ok(())
    }
    fn close(&mut self, _seg: usize) -> Result<(), NodeError> {
        Ok(())
    }
    fn close_all(&mut self) -> Result<(), NodeError> {
        Ok(())
    }
    fn abandon(&mut self) {
        self.open.clear();
    }
}
