//! `stitch`: segments in order → one frame stream. Frames carry their segment in `meta`
//! (`{"segment": i}`, as `split` tags them); consecutive segments share `overlaps` frames (one
//! number for all boundaries, or one per boundary). In an overlap of N frames, frame j of the
//! later segment meets frame j of the earlier segment's last N:
//!
//! - `blend: linear` cross-fades them: weight (j+1)/(N+1) on the later segment;
//! - `blend: cut` takes the earlier segment's frame for the first ⌈N/2⌉ and the later one's after.
//!
//! Output frames are numbered 0, 1, 2… and timed at the first frame's rate from its `pts`;
//! the segment tags are removed from `meta`. Memory: the last N frames of a segment are held
//! until the next one starts. With zero overlap the output is the input frames exactly.

use std::collections::VecDeque;
use std::sync::Arc;
use vidflow_engine::Emitter;
use vidflow_engine::{
    End, Frame, Input, NodeError, NodeKind, ParamType, Payload, PortType, Process, Rate, Runtime,
    Temporal, params,
};

params! {
    /// The params of `stitch`.
    pub struct StitchParams {
        /// frames shared by consecutive segments: one for all, or one per boundary
        overlaps: Overlaps = default(ParamType::one_or_list(ParamType::int_from(0)), 0),
        /// how an overlap is joined: linear cross-fade, or a hard cut in its middle
        blend: String = default(ParamType::one_of(&["linear", "cut"]), "linear"),
    }
}

pub fn kind() -> NodeKind {
    NodeKind::new(
        "stitch",
        "Joins segments (frames tagged with `segment` in meta) into one stream, cross-fading (`blend: linear`) or cutting (`blend: cut`) where they overlap.",
        |ctx| {
            let node = ctx.node_id.to_string();
            let p: StitchParams = ctx.params()?;
            Ok(Runtime::Process(Box::new(Stitch {
                node,
                overlaps: p.overlaps,
                cut: p.blend == "cut",
                current: None,
                held: VecDeque::new(),
                blending: None,
                emitted: 0,
                timing: None,
            })))
        },
    )
    .input("frames", PortType::FRAMES, "frames of consecutive segments, tagged `segment` in meta, in order")
    .output("frames", PortType::FRAMES, "one stream, renumbered from 0")
    .params::<StitchParams>()
    .temporal(Temporal::Whole("it joins segments planned over the whole stream".into()))
    .example("- id: join\n  kind: stitch\n  params: { overlaps: 8, blend: linear }\n  inputs: { frames: gen.frames }\n")
}

/// The `overlaps` param: one number for every boundary, or one per boundary.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum Overlaps {
    All(u64),
    Each(Vec<u64>),
}

impl Overlaps {
    /// Overlap between segment `s` and `s + 1`.
    fn after(&self, s: u64) -> u64 {
        match self {
            Overlaps::All(n) => *n,
            Overlaps::Each(v) => v.get(s as usize).copied().unwrap_or(0),
        }
    }
}

struct Stitch {
    node: String,
    overlaps: Overlaps,
    cut: bool,
    /// The segment being received.
    current: Option<u64>,
    /// The current segment's last frames (up to the overlap with the next one).
    held: VecDeque<Frame>,
    /// In an overlap: the earlier segment's frames still to meet, and the overlap's length.
    blending: Option<(VecDeque<Frame>, usize)>,
    emitted: u64,
    /// First pts and the rate of the output.
    timing: Option<(f64, Rate)>,
}

/// Linear mix of two RGB buffers: `w` weight on `b`.
pub fn mix(a: &[u8], b: &[u8], w: f64) -> Vec<u8> {
    let wb = (w * 65536.0).round() as u32;
    let wa = 65536 - wb;
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ((x as u32 * wa + y as u32 * wb + 32768) >> 16) as u8)
        .collect()
}

fn untag(meta: &Option<Arc<serde_json::Value>>) -> Option<Arc<serde_json::Value>> {
    match meta.as_deref() {
        Some(serde_json::Value::Object(m)) => {
            let mut m = m.clone();
            m.remove("segment");
            m.remove("segment_frame");
            (!m.is_empty()).then(|| Arc::new(serde_json::Value::Object(m)))
        }
        _ => meta.clone(),
    }
}

impl Stitch {
    fn out(&mut self, f: Frame, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let (t0, rate) = *self.timing.get_or_insert((f.pts, f.rate));
        let n = self.emitted;
        self.emitted += 1;
        let mut g = f;
        g.meta = untag(&g.meta);
        g.index = n;
        g.pts = t0 + n as f64 * rate.den as f64 / rate.num.max(1) as f64;
        g.rate = rate;
        out.emit(0, Payload::Frame(g))
    }

    fn frame(&mut self, f: &Frame, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let seg = f
            .meta
            .as_deref()
            .and_then(|m| m.get("segment"))
            .and_then(|s| s.as_u64())
            .ok_or_else(|| NodeError::input(format!("node `{}`: frame {} has no `segment` in its meta; `stitch` needs frames tagged by `split` (or another segmenting node)", self.node, f.index)))?;
        let cur = *self.current.get_or_insert(seg);
        if seg == cur + 1 {
            // A new segment: the held frames are the earlier side of the overlap.
            let n = self.overlaps.after(cur) as usize;
            if self.blending.is_some() {
                return Err(NodeError::input(format!(
                    "node `{}`: segment {cur} is shorter than its overlap with segment {}",
                    self.node,
                    cur - 1
                )));
            }
            if self.held.len() < n {
                return Err(NodeError::input(format!(
                    "node `{}`: segment {cur} has only {} frames after its own overlap, but overlaps segment {seg} by {n}",
                    self.node,
                    self.held.len()
                )));
            }
            self.current = Some(seg);
            if n > 0 {
                self.blending = Some((std::mem::take(&mut self.held), n));
            }
        } else if seg != cur {
            return Err(NodeError::input(format!(
                "node `{}`: frame {} of segment {seg} arrived while segment {cur} was being stitched; segments must arrive in order, one after the other",
                self.node, f.index
            )));
        }
        if let Some((earlier, n)) = &mut self.blending {
            let a = earlier
                .pop_front()
                .expect("one earlier frame per overlap frame");
            let j = *n - earlier.len() - 1;
            let n = *n;
            if earlier.is_empty() {
                self.blending = None;
            }
            if (a.width, a.height) != (f.width, f.height) {
                return Err(NodeError::input(format!(
                    "node `{}`: overlapping frames differ in size ({}x{} and {}x{})",
                    self.node, a.width, a.height, f.width, f.height
                )));
            }
            let pick = if self.cut {
                if j < n.div_ceil(2) {
                    a.clone()
                } else {
                    f.clone()
                }
            } else {
                let w = (j + 1) as f64 / (n + 1) as f64;
                let mut g = f.clone();
                g.data = Arc::new(mix(&a.data, &f.data, w));
                g
            };
            return self.out(pick, out);
        }
        // Hold this segment's tail for the overlap with the next one.
        let keep = self.overlaps.after(seg) as usize;
        self.held.push_back(f.clone());
        while self.held.len() > keep {
            let g = self.held.pop_front().expect("non-empty");
            self.out(g, out)?;
        }
        Ok(())
    }
}

impl Process for Stitch {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in &input.items {
            self.frame(item.frame_for(&self.node)?, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        if end == End::Stopped {
            return Ok(());
        }
        if let Some((_, n)) = &self.blending {
            return Err(NodeError::input(format!(
                "node `{}`: the last segment ended inside its {n}-frame overlap",
                self.node
            )));
        }
        for g in std::mem::take(&mut self.held) {
            self.out(g, out)?;
        }
        Ok(())
    }
}
