//! `audio-window`: one window of audio features per video frame, sliced out of spans that
//! consecutive frames share.
//!
//! Two modes:
//! - `mel` (Wav2Lip): the mel spectrogram of [`crate::audio::mel`] is computed once, incrementally,
//!   for the whole stream (80 columns per second). Frame `i`'s window is the 16 columns
//!   starting at `floor(i * 80 / fps)`, or the last 16 columns where that runs past the end.
//! - `chunks`: the audio is cut into chunks of one frame's duration (40 ms at 25 fps); frame
//!   `i`'s window is chunks `i - before ..= i + after` (16 with the defaults 8 and 7). A group
//!   of N consecutive frames starting at F shares one span of `N + before + after` chunks
//!   (`F - before .. F + N + after`), zero-padded at the stream's edges, instead of N x 16:
//!   see [`chunk_span`].
//!
//! Windows are emitted in groups of `span` frames; every window of a group points into the
//! same `Arc`'d span ([`AudioWindow`]), so nothing is copied per frame. At the end the node
//! prints how much audio it computed against the naive one-window-per-frame cost.
//!
//! Audio and frames meet by time: the audio's samples are placed by the time of its first
//! chunk (sample `round(pts × rate)` of a timeline that starts at 0, silence before it), and
//! frame `i` is at `i / fps`. Mel columns sit on the hop grid of that timeline (column `c` is
//! centred on sample `200 c`), chunks at `floor(c × rate / fps)`. So a window depends only on
//! the audio around its frame, not on where the audio given to the node starts: a job that
//! gives each chunk the audio of the chunk's time widened by the declared context (see
//! [`AUDIO_BEFORE_MS`]) makes the windows of the unchunked run, bit for bit, as long as the
//! samples themselves are the same (`decode` makes sure of that; see its `restrict_audio`).
//!
//! The window payload and the mel spectrogram are shared with `lipsync` and live in
//! [`crate::audio`]; this module is the kind: descriptor, window building and runtime.

use std::collections::VecDeque;
use std::sync::Arc;
use vidflow_engine::node::{SessionState, SessionStore};
use vidflow_engine::{
    Emitter, End, Input, NodeError, NodeKind, Payload, PortType, Process, Runtime, SessionId,
    SessionUse, Temporal, node::ParamType, params,
};

use crate::audio::mel::{HOP, MelStream, N_FFT, N_MELS, SAMPLE_RATE, window_start};
pub use crate::audio::{AUDIO_WINDOWS, AudioWindow, MEL_STEPS, Span, SpanKind};

/// Mel mode: the audio a frame's window reads before the frame's time, in ms. The window
/// starts at column `floor(i × 80 / fps)`, up to one hop (12.5 ms) before the frame; a column
/// reads half an FFT (25 ms) each side of its centre, and pre-emphasis one sample more.
pub const AUDIO_BEFORE_MS: u32 = 38;
/// Mel mode: the audio a frame's window reads after the frame's time, in ms: 15 hops to the
/// window's last column (187.5 ms) and half an FFT beyond it (25 ms).
pub const AUDIO_AFTER_MS: u32 = 213;

// The two above, from the definition of the columns.
const _: () = {
    let hop_us = HOP as u32 * 1_000_000 / SAMPLE_RATE;
    let half_fft_us = (N_FFT / 2) as u32 * 1_000_000 / SAMPLE_RATE;
    assert!(AUDIO_BEFORE_MS * 1000 > hop_us + half_fft_us);
    assert!(AUDIO_AFTER_MS * 1000 >= (MEL_STEPS as u32 - 1) * hop_us + half_fft_us);
};

/// The chunk span a group of `n` consecutive frames starting at `first` needs, as absolute
/// chunk indices `start..end` (`end - start = n + before + after`), with how many chunks that
/// is against the naive `n * (before + 1 + after)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSpan {
    pub start: i64,
    pub end: i64,
    pub used: u64,
    pub naive: u64,
}

impl ChunkSpan {
    /// Fraction of the naive chunk count saved, 0..1.
    pub fn savings(&self) -> f64 {
        if self.naive == 0 {
            0.0
        } else {
            1.0 - self.used as f64 / self.naive as f64
        }
    }
}

pub fn chunk_span(first: u64, n: u64, before: u64, after: u64) -> ChunkSpan {
    let start = first as i64 - before as i64;
    let end = (first + n + after) as i64;
    ChunkSpan {
        start,
        end,
        used: (end - start) as u64,
        naive: n * (before + 1 + after),
    }
}

/// Settings of the window builder.
#[derive(Clone, Copy, Debug)]
pub struct WindowConfig {
    pub chunks: bool,
    /// Video frame rate (replaced by the frames' own rate when frames are given).
    pub fps: f64,
    /// Frames per shared span.
    pub span: usize,
    pub before: u64,
    pub after: u64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            chunks: false,
            fps: 25.0,
            span: 8,
            before: 8,
            after: 7,
        }
    }
}

/// The engine-free core of `audio-window`: feed audio (and optionally frame indices), take
/// windows. Without frames, frame `i` exists for every `i < ceil(duration * fps)`.
pub struct WindowBuilder {
    cfg: WindowConfig,
    sample_rate: u32,
    mel: MelStream,
    /// The absolute column of the mel stream's column 0: the stream starts on the hop grid.
    mel_offset: i64,
    /// Mel columns from absolute index `col_base`.
    cols: VecDeque<[f32; N_MELS]>,
    col_base: i64,
    /// Mono samples from absolute index `sample_base` (chunk mode).
    samples: VecDeque<f32>,
    sample_base: i64,
    /// The absolute index of the first sample given (set by the first audio).
    origin: Option<i64>,
    n_samples: usize,
    /// Frames waiting for their window: (index, pts).
    pending: VecDeque<(u64, f64)>,
    /// Frames come from a frames input (else they are generated).
    external_frames: bool,
    next_generated: u64,
    finished: bool,
    /// Units computed (mel columns or chunks in spans) and the naive per-frame count.
    pub used_units: u64,
    pub naive_units: u64,
    pub windows: u64,
    pub spans: u64,
}

impl WindowBuilder {
    pub fn new(cfg: WindowConfig, external_frames: bool) -> WindowBuilder {
        WindowBuilder {
            cfg,
            sample_rate: if cfg.chunks { 0 } else { SAMPLE_RATE },
            mel: MelStream::new(),
            mel_offset: 0,
            cols: VecDeque::new(),
            col_base: 0,
            samples: VecDeque::new(),
            sample_base: 0,
            origin: None,
            n_samples: 0,
            pending: VecDeque::new(),
            external_frames,
            next_generated: 0,
            finished: false,
            used_units: 0,
            naive_units: 0,
            windows: 0,
            spans: 0,
        }
    }

    pub fn set_fps(&mut self, fps: f64) {
        self.cfg.fps = fps;
    }

    fn chunk_len(&self) -> usize {
        ((self.sample_rate as f64 / self.cfg.fps).round() as usize).max(1)
    }
    fn chunk_start(&self, c: i64) -> i64 {
        (c as f64 * self.sample_rate as f64 / self.cfg.fps).floor() as i64
    }

    /// Adds mono samples at `rate` Hz, following the samples given before (the first at
    /// time 0).
    pub fn push_audio(&mut self, rate: u32, mono: &[f32]) -> Result<(), String> {
        self.push_audio_at(rate, 0.0, mono)
    }

    /// Adds mono samples at `rate` Hz; the first audio given places the stream on the
    /// timeline (`pts`: its first sample's time in seconds), later audio follows on.
    pub fn push_audio_at(&mut self, rate: u32, pts: f64, mono: &[f32]) -> Result<(), String> {
        if self.origin.is_none() {
            let origin = (pts * rate as f64).round() as i64;
            self.origin = Some(origin);
            self.sample_base = origin;
            if !self.cfg.chunks && rate == SAMPLE_RATE {
                // The mel stream starts on the hop grid: silence up to the first sample.
                let grid = origin.div_euclid(HOP as i64);
                self.mel_offset = grid;
                self.col_base = grid;
                let lead = (origin - grid * HOP as i64) as usize;
                let mut new = vec![];
                self.mel.push(&vec![0.0; lead], &mut new);
                self.cols.extend(new);
            }
        }
        if self.cfg.chunks {
            if self.sample_rate == 0 {
                self.sample_rate = rate;
            } else if self.sample_rate != rate {
                return Err(format!(
                    "the audio's sample rate changed from {} to {rate} Hz",
                    self.sample_rate
                ));
            }
            self.samples.extend(mono.iter().copied());
        } else {
            if rate != SAMPLE_RATE {
                return Err(format!(
                    "mel windows need 16000 Hz audio, got {rate} Hz; set `audio_rate: 16000` on the decode node"
                ));
            }
            let mut new = vec![];
            self.mel.push(mono, &mut new);
            self.cols.extend(new);
        }
        self.n_samples += mono.len();
        Ok(())
    }

    /// The absolute index one past the last sample given.
    fn audio_end(&self) -> i64 {
        self.origin.unwrap_or(0) + self.n_samples as i64
    }

    /// Absolute mel columns computed so far, and in all once the stream is finished.
    fn columns_done(&self) -> i64 {
        self.mel_offset + self.mel.columns_done() as i64
    }
    fn total_columns(&self) -> Option<i64> {
        self.mel.total_columns().map(|t| self.mel_offset + t as i64)
    }

    /// Adds a video frame that needs a window.
    pub fn push_frame(&mut self, index: u64, pts: f64) {
        self.pending.push_back((index, pts));
        self.next_generated = self.next_generated.max(index + 1);
    }

    /// Ends the stream: every pending frame gets its window.
    pub fn finish(&mut self) {
        if !self.cfg.chunks {
            let mut new = vec![];
            self.mel.finish(&mut new);
            self.cols.extend(new);
        }
        self.finished = true;
    }

    fn generate_frames(&mut self) {
        if self.external_frames {
            return;
        }
        // Frames whose start time lies inside the audio received so far.
        let rate = if self.cfg.chunks {
            self.sample_rate
        } else {
            SAMPLE_RATE
        };
        if rate == 0 {
            return;
        }
        let secs = self.audio_end().max(0) as f64 / rate as f64;
        let limit = if self.finished {
            (secs * self.cfg.fps - 1e-9).ceil().max(0.0) as u64
        } else {
            (secs * self.cfg.fps).floor() as u64
        };
        while self.next_generated < limit {
            let i = self.next_generated;
            self.pending.push_back((i, i as f64 / self.cfg.fps));
            self.next_generated += 1;
        }
    }

    /// Whether frame `i`'s window can be formed now.
    fn ready(&self, i: u64) -> bool {
        if self.finished {
            return true;
        }
        if self.cfg.chunks {
            let last = i as i64 + self.cfg.after as i64;
            let end = self.chunk_start(last) + self.chunk_len() as i64;
            end <= self.audio_end()
        } else {
            (window_start(i, self.cfg.fps) + MEL_STEPS) as i64 <= self.columns_done()
        }
    }

    /// Takes the windows that are ready, in groups of `span` frames (fewer at the end).
    pub fn take(&mut self) -> Vec<AudioWindow> {
        self.generate_frames();
        let mut out = vec![];
        loop {
            let n_ready = self
                .pending
                .iter()
                .take(self.cfg.span)
                .take_while(|(i, _)| self.ready(*i))
                .count();
            if n_ready == 0 || (n_ready < self.cfg.span && !self.finished) {
                break;
            }
            let group: Vec<(u64, f64)> = self.pending.drain(..n_ready).collect();
            out.extend(self.make_span(&group));
        }
        self.trim();
        out
    }

    fn make_span(&mut self, group: &[(u64, f64)]) -> Vec<AudioWindow> {
        self.spans += 1;
        self.windows += group.len() as u64;
        if self.cfg.chunks {
            self.chunk_group(group)
        } else {
            self.mel_group(group)
        }
    }

    /// Start column of frame `i`'s window (clamped at the end when the total is known).
    fn mel_start(&self, i: u64) -> i64 {
        let s = window_start(i, self.cfg.fps) as i64;
        match self.total_columns() {
            Some(total) if s + MEL_STEPS as i64 > total => total - MEL_STEPS as i64,
            _ => s,
        }
    }

    fn mel_group(&mut self, group: &[(u64, f64)]) -> Vec<AudioWindow> {
        let starts: Vec<i64> = group.iter().map(|(i, _)| self.mel_start(*i)).collect();
        let first = *starts.iter().min().expect("non-empty group");
        let end = starts.iter().max().expect("non-empty group") + MEL_STEPS as i64;
        let units = (end - first) as usize;
        let mut data = Vec::with_capacity(units * N_MELS);
        for c in first..end {
            // Before the first column (a stream under 200 ms, or one that starts after the
            // frame): silence, the normalised floor.
            let col = if c < self.col_base {
                None
            } else {
                self.cols.get((c - self.col_base) as usize)
            };
            match col {
                Some(col) => data.extend_from_slice(col),
                None => data.extend(std::iter::repeat_n(-4.0f32, N_MELS)),
            }
        }
        self.used_units += units as u64;
        self.naive_units += (group.len() * MEL_STEPS) as u64;
        let span = Arc::new(Span {
            kind: SpanKind::Mel,
            first,
            units,
            data,
            frames: group.len(),
        });
        group
            .iter()
            .zip(&starts)
            .map(|(&(frame, pts), &s)| AudioWindow {
                frame,
                pts,
                span: span.clone(),
                offset: (s - first) as usize,
                len: MEL_STEPS,
            })
            .collect()
    }

    fn chunk_group(&mut self, group: &[(u64, f64)]) -> Vec<AudioWindow> {
        let (before, after) = (self.cfg.before as i64, self.cfg.after as i64);
        let first = group.iter().map(|g| g.0).min().expect("non-empty") as i64 - before;
        let end = group.iter().map(|g| g.0).max().expect("non-empty") as i64 + after + 1;
        let units = (end - first) as usize;
        let len = self.chunk_len();
        let mut data = Vec::with_capacity(units * len);
        for c in first..end {
            let s0 = self.chunk_start(c);
            for k in 0..len as i64 {
                let abs = s0 + k;
                let v = if c < 0 || abs < self.sample_base {
                    0.0
                } else {
                    self.samples
                        .get((abs - self.sample_base) as usize)
                        .copied()
                        .unwrap_or(0.0)
                };
                data.push(v);
            }
        }
        let wlen = (before + after + 1) as usize;
        self.used_units += units as u64;
        self.naive_units += (group.len() * wlen) as u64;
        let span = Arc::new(Span {
            kind: SpanKind::Chunks { samples: len },
            first,
            units,
            data,
            frames: group.len(),
        });
        group
            .iter()
            .map(|&(frame, pts)| AudioWindow {
                frame,
                pts,
                span: span.clone(),
                offset: (frame as i64 - before - first) as usize,
                len: wlen,
            })
            .collect()
    }

    /// Drops columns/samples no pending or future frame can need.
    fn trim(&mut self) {
        let Some(&(next, _)) = self.pending.front() else {
            // Later frames continue after the last one seen.
            self.trim_before(self.next_generated);
            return;
        };
        let lowest = self.pending.iter().map(|p| p.0).min().unwrap_or(next);
        self.trim_before(lowest);
    }

    fn trim_before(&mut self, frame: u64) {
        if self.finished {
            return; // clamped end windows may reach back; the stream is over anyway
        }
        if self.cfg.chunks {
            let keep = self.chunk_start(frame as i64 - self.cfg.before as i64);
            while self.sample_base < keep && !self.samples.is_empty() {
                self.samples.pop_front();
                self.sample_base += 1;
            }
        } else {
            // A frame whose window runs past the end of the audio gets the last 16 columns
            // (`mel_start`), and the end is not known yet: the last 16 columns computed are
            // kept whatever frame comes next. Trimming them (the frame's start alone) made the
            // windows of frames past the end depend on whether they arrived before the audio.
            let keep = (window_start(frame, self.cfg.fps) as i64).min(self.columns_done())
                - MEL_STEPS as i64;
            while self.col_base < keep && !self.cols.is_empty() {
                self.cols.pop_front();
                self.col_base += 1;
            }
        }
    }

    /// One line on the work done: units computed against one window per frame.
    pub fn summary(&self) -> String {
        let what = if self.cfg.chunks {
            "chunks"
        } else {
            "mel columns"
        };
        let saved = if self.naive_units == 0 {
            0.0
        } else {
            100.0 * (1.0 - self.used_units as f64 / self.naive_units as f64)
        };
        format!(
            "{} windows in {} spans: {} {what} used against {} for one window per frame ({saved:.0} % saved)",
            self.windows, self.spans, self.used_units, self.naive_units
        )
    }
}

params! {
    /// The params of `audio-window`.
    pub struct AudioWindowParams {
        /// `mel`: Wav2Lip mel windows (16 columns, 200 ms); `chunks`: raw audio, one chunk per
        /// frame, `before` + 1 + `after` chunks per window
        mode: String = default(ParamType::one_of(&["mel", "chunks"]), "mel"),
        /// video frame rate when no `frames` input is connected
        fps: f64 = default(ParamType::float_in(0.001, 1000.0), 25.0),
        /// frames per shared span (match the model's batch size)
        span: usize = default(ParamType::int_in(1, 4096), 8),
        /// chunks mode: chunks before the frame's own
        before: u64 = default(ParamType::int_in(0, 1000), 8),
        /// chunks mode: chunks after the frame's own
        after: u64 = default(ParamType::int_in(0, 1000), 7),
    }
}

pub fn kind() -> NodeKind {
    NodeKind::new(
        "audio-window",
        "One window of audio features per video frame (Wav2Lip mel windows or raw per-frame audio chunks), sliced from spans computed once and shared by consecutive frames.",
        |ctx| {
            let p: AudioWindowParams = ctx.params()?;
            let cfg = WindowConfig {
                chunks: p.mode == "chunks",
                fps: p.fps,
                span: p.span,
                before: p.before,
                after: p.after,
            };
            let external = ctx.connected_inputs.get(1).copied().unwrap_or(false);
            Ok(Runtime::Process(Box::new(AudioWindowNode {
                node: ctx.node_id.to_string(),
                streams: SessionState::new(move |_| Stream {
                    builder: WindowBuilder::new(cfg, external),
                    fps_set: false,
                }),
                external,
            })))
        },
    )
    .input("audio", PortType::AUDIO, "decoded audio (mel mode: 16 kHz; several channels are averaged)")
    .optional_input("frames", PortType::FRAMES, "the video frames: one window per frame, at their rate (default: frames at `fps` over the audio's duration)")
    .output("windows", AUDIO_WINDOWS, "one `AudioWindow` per frame (mel: 80x16), in frame order; consecutive windows share one span")
    .params::<AudioWindowParams>()
    // In a serve graph each session is its own audio stream: one builder per session.
    .sessions(SessionUse::PerSession)
    // One window per frame: its progress total is the frames' (none without frames).
    .counts_like("frames")
    // A frame's window reaches into the audio around it: `before`/`after` chunks of one
    // frame each (a chunk starts up to a sample early and ends up to one late: 1 ms), or the
    // mel columns of its window. Without `frames` it makes its frames from the audio's length,
    // which a chunk would change.
    .temporal_with(|cx| {
        if !cx.connected_inputs.get(1).copied().unwrap_or(false) {
            return Temporal::Whole(
                "without `frames` it makes one window per frame of the audio's whole length; connect the video's frames".into(),
            );
        }
        match cx.params::<AudioWindowParams>() {
            Some(p) if p.mode == "chunks" => Temporal::AudioMs {
                before: 1,
                after: 1,
                frames_before: p.before.min(u32::MAX as u64) as u32,
                frames_after: p.after.saturating_add(1).min(u32::MAX as u64) as u32,
            },
            _ => Temporal::AudioMs {
                before: AUDIO_BEFORE_MS,
                after: AUDIO_AFTER_MS,
                frames_before: 0,
                frames_after: 0,
            },
        }
    })
    .example("- id: windows\n  kind: audio-window\n  params: { mode: mel }\n  inputs: { audio: src.audio, frames: src.frames }\n")
}

struct AudioWindowNode {
    node: String,
    /// One audio stream per session (one, [`SessionId::NONE`], in a batch run).
    streams: SessionState<Stream>,
    external: bool,
}

struct Stream {
    builder: WindowBuilder,
    fps_set: bool,
}

impl AudioWindowNode {
    fn emit(&mut self, session: SessionId, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let Some(s) = self.streams.existing(session) else {
            return Ok(());
        };
        for w in s.builder.take() {
            out.emit_for(0, session, Payload::Custom(Arc::new(w)))?;
        }
        Ok(())
    }

    /// The end of one stream: every pending frame gets its window.
    fn end(&mut self, session: SessionId, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let Some(s) = self.streams.existing(session) else {
            return Ok(());
        };
        s.builder.finish();
        let summary = s.builder.summary();
        self.emit(session, out)?;
        if session.is_none() {
            vidflow_engine::progress::say(format!("{}: {summary}", self.node));
        }
        Ok(())
    }
}

impl Process for AudioWindowNode {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let mut touched: Vec<SessionId> = vec![];
        for (i, item) in input.items.iter().enumerate() {
            let session = input.session(i);
            if !touched.contains(&session) {
                touched.push(session);
            }
            let s = self.streams.get(session);
            match item {
                Payload::Audio(a) => {
                    let ch = a.channels.max(1) as usize;
                    let mono: Vec<f32> = if ch == 1 {
                        a.samples.to_vec()
                    } else {
                        a.samples
                            .chunks_exact(ch)
                            .map(|f| f.iter().sum::<f32>() / ch as f32)
                            .collect()
                    };
                    s.builder
                        .push_audio_at(a.sample_rate, a.pts, &mono)
                        .map_err(|e| NodeError::input(format!("node `{}`: {e}", self.node)))?;
                }
                Payload::Frame(f) if self.external => {
                    if !s.fps_set {
                        s.builder.set_fps(f.rate.fps());
                        s.fps_set = true;
                    }
                    s.builder.push_frame(f.index, f.pts);
                }
                other => {
                    return Err(NodeError::runtime(format!(
                        "node `{}`: expected audio or frames, got {}",
                        self.node,
                        other.describe()
                    )));
                }
            }
        }
        for session in touched {
            self.emit(session, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        if end == End::Stopped {
            return Ok(());
        }
        // A batch run's one stream; sessions ended in `end_session`.
        self.end(SessionId::NONE, out)
    }

    fn session_state(&mut self) -> Option<&mut dyn SessionStore> {
        Some(&mut self.streams)
    }

    fn end_session(&mut self, session: SessionId, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        self.end(session, out)
    }
}
