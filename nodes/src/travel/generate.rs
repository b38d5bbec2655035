//! Running a generator over guide batches: what every travel generator (`blend` now,
//! `interpolate` later) shares.
//!
//! A [`Generator`] makes the frames of one model call from its guides and mask. The [`Runner`]
//! around it feeds batches in video order and owns everything else:
//!
//! - **Continuation**: a call that continues the previous one gets that call's last output
//!   frames as its anchored guide frames.
//! - **Anchors are kept exactly**: whatever the generator returns, anchored frames are replaced
//!   by their guide, so each keyframe's frame is exactly its image.
//! - **Retries and fallback**: a call is tried `1 + retries` times. When a consolidated batch
//!   still fails, its original segments are generated one by one instead (each with its own
//!   retries), so a failure never costs more than it would have without consolidation; batches
//!   already done are not redone. A single segment that fails is an error.
//! - **Stitching**: the video's frames come out once each, in order (`T` in all): a call's
//!   continuation frames repeat frames already emitted, and the quantize padding after a
//!   window is dropped.
//!
//! The runner never emits by itself: [`Runner::run_batch`] returns what to emit, so it can be
//! tested without an engine.

use super::guides::{GuideBatch, Guides, build_guides};
use super::plan::{Call, Role, Segment, segments_text};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use vidflow_engine::{Frame, NodeError, PixelFormat, Rate};

/// One model call as a generator sees it.
pub struct ModelCall<'a> {
    /// The batch the call belongs to.
    pub batch: usize,
    /// A segment generated alone because its consolidated batch failed.
    pub fallback: bool,
    pub call: &'a Call,
    /// The call's segments (their prompts, negative prompts and LoRAs).
    pub segments: &'a [Segment],
    /// One guide frame per model frame; continuation frames hold the previous call's output.
    pub guides: &'a [Frame],
    pub roles: &'a [Role],
    /// 0.0 keep the guide … 1.0 generate freely.
    pub mask: &'a [f32],
    /// The keyframe just after the window (no overlap there), which the call heads towards:
    /// its offset from the call's first frame and its image.
    pub target: Option<(u64, Arc<Vec<u8>>)>,
    pub width: u32,
    pub height: u32,
    /// Reports progress while the call runs: frames made so far, of the call's frames. A long
    /// call shows it beside the node's progress bar (its frames are only delivered at the end).
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
}

impl ModelCall<'_> {
    /// "batch 2" or "batch 2, segment 5 (fallback)".
    pub fn label(&self) -> String {
        if self.fallback {
            format!(
                "batch {}, {} (fallback)",
                self.batch,
                segments_text(&self.call.segments)
            )
        } else {
            format!("batch {}", self.batch)
        }
    }
}

/// Makes the frames of one model call.
pub trait Generator: Send {
    /// Returns one packed RGB24 frame (`width`x`height`) per model frame of the call. Frames
    /// whose mask is 0.0 are replaced by their guide afterwards, whatever is returned.
    fn generate(&mut self, call: &ModelCall<'_>) -> Result<Vec<Arc<Vec<u8>>>, NodeError>;
}

/// What one batch produced.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// The video's next frames, in order, each once.
    pub frames: Vec<Frame>,
    /// Every model call's output over its window (continuation frames included), for `split`.
    pub calls: Vec<Frame>,
    /// The batch's report record.
    pub report: Value,
    pub fell_back: bool,
}

/// How a batch went, for the run summary.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchOutcome {
    pub batch: usize,
    pub segments: Vec<usize>,
    pub model_calls: usize,
    pub attempts: usize,
    /// The error that made the batch fall back to its segments.
    pub fell_back: Option<String>,
}

/// A call's frames, guides and the attempts it took; or the last error and the attempts.
type CallResult = Result<(Vec<Arc<Vec<u8>>>, Guides, usize), (NodeError, usize)>;

/// A frame a batch made: its pixels, role and mask value, and whether a fallback call made it.
struct Made {
    data: Arc<Vec<u8>>,
    role: Role,
    mask: f32,
    fallback: bool,
}

/// Feeds guide batches to a generator in order; see the module docs.
pub struct Runner<G> {
    node: String,
    generator: G,
    retries: u32,
    /// The most recent output frames by video frame (the last call's window).
    recent: BTreeMap<u64, Arc<Vec<u8>>>,
    /// The next video frame to emit.
    emitted: u64,
    next_batch: usize,
    total_frames: Option<u64>,
    batches: Option<usize>,
    pub outcomes: Vec<BatchOutcome>,
}

impl<G: Generator> Runner<G> {
    pub fn new(node: &str, generator: G, retries: u32) -> Runner<G> {
        Runner {
            node: node.to_string(),
            generator,
            retries,
            recent: BTreeMap::new(),
            emitted: 0,
            next_batch: 0,
            total_frames: None,
            batches: None,
            outcomes: vec![],
        }
    }

    pub fn generator(&self) -> &G {
        &self.generator
    }

    pub fn generator_mut(&mut self) -> &mut G {
        &mut self.generator
    }

    /// Frames emitted so far.
    pub fn frames_emitted(&self) -> u64 {
        self.emitted
    }

    /// Generates one batch (falling back to its segments if it fails) and returns what to
    /// emit. On error nothing changes, so the same batch can be given again.
    pub fn run_batch(&mut self, gb: &GuideBatch) -> Result<BatchOutput, NodeError> {
        self.run_batch_with(gb, &|_, _| {})
    }

    /// [`run_batch`](Self::run_batch), with `progress` told how far each model call is.
    pub fn run_batch_with(
        &mut self,
        gb: &GuideBatch,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<BatchOutput, NodeError> {
        let record = &gb.record;
        if record.batch != self.next_batch {
            return Err(NodeError::runtime(format!(
                "node `{}`: expected batch {} but got batch {}; batches must arrive in order, each once (each continues the one before), so run this node as one worker",
                self.node, self.next_batch, record.batch
            )));
        }
        let call = &record.call;
        if let Some(t) =
            (call.start..call.start + call.continues).find(|t| !self.recent.contains_key(t))
        {
            return Err(NodeError::runtime(format!(
                "node `{}`: {} continues video frames {}..{} of the previous batch, which this node has not made (frame {t} is missing); give it every batch of the plan, in order",
                self.node,
                record.label(),
                call.start,
                call.start + call.continues
            )));
        }
        let attempts_per_call = self.retries as usize + 1;
        // Output of this batch by video frame, over the window(s) generated.
        let mut made: BTreeMap<u64, Made> = BTreeMap::new();
        let mut calls_out = vec![];
        let mut attempts = 0;
        let mut model_calls = 0;
        let mut fell_back = None;

        let batch_call =
            self.call_once(gb, &record.call, false, &made, attempts_per_call, progress);
        model_calls += 1;
        match batch_call {
            Ok((frames, guides, n)) => {
                attempts += n;
                self.collect(
                    gb,
                    &record.call,
                    &guides,
                    frames,
                    false,
                    &mut made,
                    &mut calls_out,
                );
            }
            Err((NodeError::Stopped, _)) => return Err(NodeError::Stopped),
            Err((error, n)) => {
                attempts += n;
                if !record.consolidated() {
                    return Err(wrap(
                        error,
                        format!(
                            "node `{}`: {} failed after {n} attempt{}",
                            self.node,
                            record.label(),
                            plural(n)
                        ),
                    ));
                }
                let why = error.to_string();
                for call in record.segment_calls() {
                    model_calls += 1;
                    match self.call_once(gb, &call, true, &made, attempts_per_call, progress) {
                        Ok((frames, guides, n)) => {
                            attempts += n;
                            self.collect(
                                gb,
                                &call,
                                &guides,
                                frames,
                                true,
                                &mut made,
                                &mut calls_out,
                            );
                        }
                        Err((seg_error, m)) => {
                            return Err(wrap(
                                seg_error,
                                format!(
                                    "node `{}`: {} failed after {n} attempt{} ({why}), and so did its fallback {} after {m} attempt{}",
                                    self.node,
                                    record.label(),
                                    plural(n),
                                    segments_text(&call.segments),
                                    plural(m)
                                ),
                            ));
                        }
                    }
                }
                fell_back = Some(why);
            }
        }

        // Commit: the window's frames not yet emitted, in order.
        let end = record.call.end();
        let mut frames = vec![];
        for (&t, m) in made.range(self.emitted..end) {
            let Made {
                data,
                role,
                mask,
                fallback,
            } = m;
            let segments: Vec<usize> = record
                .segments
                .iter()
                .filter(|s| s.start <= t && t < s.end())
                .map(|s| s.index)
                .collect();
            let mut meta = json!({
                "t": t,
                "batch": record.batch,
                "segments": segments,
                "mask": mask,
                "role": role.name(),
                "fallback": fallback,
            });
            if let Role::Keyframe(k) = role {
                meta["keyframe"] = json!(k);
            }
            frames.push(frame(t, gb.rate, gb.width, gb.height, data.clone(), meta));
        }
        let expected = end.saturating_sub(self.emitted);
        if frames.len() as u64 != expected {
            return Err(NodeError::runtime(format!(
                "node `{}`: {} left frames {}..{end} incomplete ({} of {expected} made)",
                self.node,
                record.label(),
                self.emitted,
                frames.len()
            )));
        }
        let outcome = BatchOutcome {
            batch: record.batch,
            segments: record.call.segments.clone(),
            model_calls,
            attempts,
            fell_back: fell_back.clone(),
        };
        let report = json!({
            "type": "batch",
            "batch": record.batch,
            "segments": record.call.segments,
            "start": record.call.start,
            "frames": record.call.model_frames,
            "model_calls": model_calls,
            "attempts": attempts,
            "fell_back": fell_back.is_some(),
            "error": fell_back,
        });
        self.recent = made.into_iter().map(|(t, m)| (t, m.data)).collect();
        self.emitted = self.emitted.max(end);
        self.next_batch += 1;
        self.total_frames = Some(record.total_frames);
        self.batches = Some(record.batches);
        self.outcomes.push(outcome);
        Ok(BatchOutput {
            frames,
            calls: calls_out,
            report,
            fell_back: fell_back.is_some(),
        })
    }

    /// Tries one call up to `attempts` times. Ok: the frames, the guides, the attempts used.
    fn call_once(
        &mut self,
        gb: &GuideBatch,
        call: &Call,
        fallback: bool,
        made: &BTreeMap<u64, Made>,
        attempts: usize,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> CallResult {
        // Continuation frames come from this batch's earlier calls, or the previous batch.
        let missing: Vec<u64> = (call.start..call.start + call.continues)
            .filter(|t| !made.contains_key(t) && !self.recent.contains_key(t))
            .collect();
        if let Some(first) = missing.first() {
            return Err((
                NodeError::runtime(format!(
                    "node `{}`: {} continues video frames {}..{} of the previous call, which this node has not made (frame {first} is missing); give it every batch of the plan, in order",
                    self.node,
                    gb.record.label(),
                    call.start,
                    call.start + call.continues
                )),
                0,
            ));
        }
        let ctx = gb.ctx(fallback);
        let lookup = |t: u64| {
            made.get(&t)
                .map(|m| m.data.clone())
                .or_else(|| self.recent.get(&t).cloned())
        };
        let guides = build_guides(call, &ctx, &lookup);
        let target = call.target().map(|k| {
            let img = ctx
                .image(k.index)
                .cloned()
                .unwrap_or_else(|| ctx.grey.clone());
            (k.local, img)
        });
        let segments: Vec<Segment> = gb
            .record
            .segments
            .iter()
            .filter(|s| call.segments.contains(&s.index))
            .cloned()
            .collect();
        let model_call = ModelCall {
            batch: gb.record.batch,
            fallback,
            call,
            segments: &segments,
            guides: &guides.frames,
            roles: &guides.roles,
            mask: &guides.mask,
            target,
            width: gb.width,
            height: gb.height,
            progress,
        };
        let len = Frame::byte_len(gb.width, gb.height);
        let mut last = None;
        for attempt in 1..=attempts {
            match self.generator.generate(&model_call) {
                Ok(frames) if frames.len() as u64 != call.model_frames => {
                    last = Some(NodeError::runtime(format!(
                        "the generator made {} frames for {}, which needs {}",
                        frames.len(),
                        model_call.label(),
                        call.model_frames
                    )));
                }
                Ok(frames) if frames.iter().any(|f| f.len() != len) => {
                    last = Some(NodeError::runtime(format!(
                        "the generator made frames of the wrong size for {} ({}x{} RGB24 expected)",
                        model_call.label(),
                        gb.width,
                        gb.height
                    )));
                }
                Ok(mut frames) => {
                    // Anchored frames are kept exactly.
                    for (i, f) in frames.iter_mut().enumerate() {
                        if guides.roles[i].anchored() {
                            *f = guides.frames[i].data.clone();
                        }
                    }
                    return Ok((frames, guides, attempt));
                }
                Err(NodeError::Stopped) => return Err((NodeError::Stopped, attempt)),
                Err(e) => last = Some(e),
            }
        }
        Err((
            last.unwrap_or_else(|| NodeError::runtime("no attempt was made")),
            attempts,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn collect(
        &self,
        gb: &GuideBatch,
        call: &Call,
        guides: &Guides,
        frames: Vec<Arc<Vec<u8>>>,
        fallback: bool,
        made: &mut BTreeMap<u64, Made>,
        calls_out: &mut Vec<Frame>,
    ) {
        for (i, data) in frames.into_iter().enumerate().take(call.frames as usize) {
            let t = call.start + i as u64;
            let role = guides.roles[i];
            let mut meta = json!({
                "t": t,
                "batch": gb.record.batch,
                "call": if fallback { "segment" } else { "batch" },
                "frame": i,
                "segments": call.segments,
                "mask": guides.mask[i],
                "role": role.name(),
                "fallback": fallback,
            });
            if let Role::Keyframe(k) = role {
                meta["keyframe"] = json!(k);
            }
            calls_out.push(frame(t, gb.rate, gb.width, gb.height, data.clone(), meta));
            // The first call that makes a frame owns it; later calls only continue from it.
            made.entry(t).or_insert(Made {
                data,
                role,
                mask: guides.mask[i],
                fallback,
            });
        }
    }

    /// The run's last report record, and an error if the video is incomplete.
    pub fn finish(&self) -> Result<Value, NodeError> {
        let fell_back: Vec<usize> = self
            .outcomes
            .iter()
            .filter(|o| o.fell_back.is_some())
            .map(|o| o.batch)
            .collect();
        let summary = json!({
            "type": "summary",
            "batches": self.outcomes.len(),
            "model_calls": self.outcomes.iter().map(|o| o.model_calls).sum::<usize>(),
            "planned_model_calls": self.outcomes.len(),
            "fell_back": fell_back,
            "frames": self.emitted,
        });
        if let (Some(total), Some(batches)) = (self.total_frames, self.batches)
            && (self.emitted != total || self.next_batch != batches)
        {
            return Err(NodeError::runtime(format!(
                "node `{}`: the video is incomplete: {} of {total} frames made, {} of {batches} batches received",
                self.node, self.emitted, self.next_batch
            )));
        }
        Ok(summary)
    }

    /// One line per batch that fell back, for the run's output.
    pub fn fallback_lines(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter_map(|o| {
                o.fell_back.as_ref().map(|why| {
                    format!(
                        "{}: batch {} ({}) fell back to generating its {} segments one by one ({} model calls) after it failed: {why}",
                        self.node,
                        o.batch,
                        segments_text(&o.segments),
                        o.segments.len(),
                        o.model_calls
                    )
                })
            })
            .collect()
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Puts context in front of an error, keeping its kind.
fn wrap(e: NodeError, context: String) -> NodeError {
    match e {
        NodeError::Input(m) => NodeError::Input(format!("{context}: {m}")),
        NodeError::Runtime(m) => NodeError::Runtime(format!("{context}: {m}")),
        NodeError::Stopped => NodeError::Stopped,
    }
}

fn frame(t: u64, rate: Rate, width: u32, height: u32, data: Arc<Vec<u8>>, meta: Value) -> Frame {
    Frame {
        index: t,
        pts: t as f64 / rate.fps(),
        rate,
        width,
        height,
        data,
        format: PixelFormat::Rgb24,
        meta: Some(Arc::new(meta)),
    }
}

/// Output ports shared by every travel generator node.
pub const FRAMES_PORT: usize = 0;
pub const CALLS_PORT: usize = 1;
pub const REPORT_PORT: usize = 2;

/// The node side shared by every travel generator (`blend`, `interpolate` in fill mode): guide
/// batches from `mask` in; the video's frames (port 0), each model call's frames (port 1, only
/// when connected) and report records (port 2, only when connected) out.
pub struct GeneratorNode<G> {
    runner: Runner<G>,
    emit_calls: bool,
    emit_report: bool,
}

impl<G: Generator + 'static> GeneratorNode<G> {
    /// The runtime node for `runner`, emitting only on the ports the graph connects.
    pub fn runtime(
        ctx: &vidflow_engine::BuildCtx<'_>,
        runner: Runner<G>,
    ) -> vidflow_engine::Runtime {
        let consumers = |port: usize| ctx.output_consumers.get(port).copied().unwrap_or(0) > 0;
        vidflow_engine::Runtime::Process(Box::new(GeneratorNode {
            runner,
            emit_calls: consumers(CALLS_PORT),
            emit_report: consumers(REPORT_PORT),
        }))
    }
}

impl<G: Generator> vidflow_engine::Process for GeneratorNode<G> {
    fn process(
        &mut self,
        input: vidflow_engine::Input,
        out: &mut vidflow_engine::Emitter<'_>,
    ) -> Result<(), NodeError> {
        use vidflow_engine::Payload;
        for item in input.items {
            let Some(batch) = item.downcast::<GuideBatch>() else {
                return Err(NodeError::input(format!(
                    "node `{}`: `guides` takes guide batches from `mask`, got {}",
                    out.node_id(),
                    item.describe()
                )));
            };
            if batch.record.batch == 0 && !self.emit_calls {
                // Known from the plan, before the first (long) model call: the video's
                // frames, and the report records.
                let reports = if self.emit_report {
                    batch.record.batches as u64 + 1
                } else {
                    0
                };
                out.set_total(batch.record.total_frames + reports);
                out.set_port_total(FRAMES_PORT, batch.record.total_frames);
                out.set_port_total(REPORT_PORT, reports);
            }
            let work = out.work();
            let made = self
                .runner
                .run_batch_with(batch, &|done, total| work.set(done, total))?;
            drop(work);
            for f in made.frames {
                out.emit(FRAMES_PORT, Payload::Frame(f))?;
            }
            if self.emit_calls {
                for f in made.calls {
                    out.emit(CALLS_PORT, Payload::Frame(f))?;
                }
            }
            if self.emit_report {
                out.emit(REPORT_PORT, Payload::record(made.report))?;
            }
        }
        Ok(())
    }

    fn finish(
        &mut self,
        out: &mut vidflow_engine::Emitter<'_>,
        end: vidflow_engine::End,
    ) -> Result<(), NodeError> {
        if end == vidflow_engine::End::Stopped {
            return Ok(());
        }
        let summary = self.runner.finish()?;
        for line in self.runner.fallback_lines() {
            vidflow_engine::progress::say(line);
        }
        if self.emit_report {
            out.emit(REPORT_PORT, vidflow_engine::Payload::record(summary))?;
        }
        Ok(())
    }
}
