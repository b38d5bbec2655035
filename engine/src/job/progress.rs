//! What a job shows while it runs: one job-level bar (chunks done of all, frames, ETA) and one
//! bar per chunk in flight (its source frames), plain lines when stderr is not a terminal, or
//! JSON events (`job_start`, `chunk_reused`, `chunk_redo`, `chunk_start`, `chunk_progress`,
//! `chunk_done`, `chunk_failed`, `assembled`, `job_end`) for programs.

use crate::exec::{NodeReport, ProgressSink};
use crate::progress::Mode;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The job's progress, shared by the threads that run chunks.
#[derive(Clone)]
pub struct JobProgress(Arc<Mutex<State>>);

struct State {
    mode: Mode,
    bars: Option<(MultiProgress, ProgressBar)>,
    chunk_bars: HashMap<usize, ProgressBar>,
    /// Chunks and frames done (including those recorded before this run) and in all.
    chunks: (usize, usize),
    frames: (u64, u64),
    /// Frames done by this run, for the ETA.
    frames_run: u64,
    started: Instant,
    last_line: Instant,
    last_event: HashMap<usize, Instant>,
}

fn emit(v: Value) {
    let _ = writeln!(std::io::stderr().lock(), "{v}");
}

fn range_text(range: (f64, Option<f64>)) -> String {
    match range.1 {
        Some(e) => format!("{}–{}", clock(range.0), clock(e)),
        None => format!("{}–end", clock(range.0)),
    }
}

/// Seconds as m:ss.s (h:mm:ss from an hour).
pub fn clock(s: f64) -> String {
    let t = s.max(0.0);
    let h = (t / 3600.0) as u64;
    let m = ((t % 3600.0) / 60.0) as u64;
    let sec = t % 60.0;
    if h > 0 {
        format!("{h}:{m:02}:{sec:04.1}")
    } else {
        format!("{m}:{sec:04.1}")
    }
}

impl JobProgress {
    pub fn new(mode: Mode) -> JobProgress {
        use std::io::IsTerminal;
        let mode = match mode {
            Mode::Auto if std::io::stderr().is_terminal() => Mode::Bars,
            Mode::Auto => Mode::Plain,
            m => m,
        };
        JobProgress(Arc::new(Mutex::new(State {
            mode,
            bars: None,
            chunk_bars: HashMap::new(),
            chunks: (0, 0),
            frames: (0, 0),
            frames_run: 0,
            started: Instant::now(),
            last_line: Instant::now(),
            last_event: HashMap::new(),
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn mode(&self) -> Mode {
        self.state().mode
    }

    /// The job begins: `done` of `total` chunks (and frames) are already recorded.
    pub fn start(&self, dir: &str, chunks: (usize, usize), frames: (u64, u64), parallel: usize) {
        let mut s = self.state();
        s.chunks = chunks;
        s.frames = frames;
        s.started = Instant::now();
        match s.mode {
            Mode::Json => emit(json!({"event": "job_start", "job": dir, "chunks": chunks.1,
                "recorded": chunks.0, "frames": frames.1, "parallel": parallel})),
            Mode::Plain => eprintln!(
                "job {dir}: {} of {} chunks recorded, {} to run ({parallel} at a time)",
                chunks.0,
                chunks.1,
                chunks.1 - chunks.0
            ),
            Mode::Bars => {
                let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
                let bar = multi.add(ProgressBar::new(frames.1));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>12} {wide_bar} {msg} frames {pos}/{len} eta {eta}",
                    )
                    .expect("template"),
                );
                bar.set_prefix("job");
                bar.set_position(frames.0);
                bar.set_message(format!("chunks {}/{}", chunks.0, chunks.1));
                s.bars = Some((multi, bar));
            }
            Mode::None | Mode::Auto => {}
        }
    }

    /// A recorded chunk is trusted (`reused`) or will run again (`why`).
    pub fn checked(&self, index: usize, redo: Option<&str>) {
        let s = self.state();
        match (s.mode, redo) {
            (Mode::Json, None) => emit(json!({"event": "chunk_reused", "chunk": index})),
            (Mode::Json, Some(why)) => {
                emit(json!({"event": "chunk_redo", "chunk": index, "reason": why}))
            }
            (Mode::Plain | Mode::Bars, Some(why)) => {
                eprintln!("chunk {index}: runs again: {why}")
            }
            _ => {}
        }
    }

    pub fn chunk_start(&self, index: usize, range: (f64, Option<f64>), frames: u64, attempt: u32) {
        self.chunk_start_on(index, range, frames, attempt, None)
    }

    /// A chunk starts, on a named worker when the job is spread over several.
    pub fn chunk_start_on(
        &self,
        index: usize,
        range: (f64, Option<f64>),
        frames: u64,
        attempt: u32,
        worker: Option<&str>,
    ) {
        let mut s = self.state();
        match s.mode {
            Mode::Json => emit(json!({"event": "chunk_start", "chunk": index,
                "range": [range.0, range.1], "frames": frames, "attempt": attempt,
                "worker": worker})),
            Mode::Plain => {
                if let Some(w) = worker {
                    eprintln!(
                        "chunk {index} ({}) started on `{w}` (attempt {attempt})",
                        range_text(range)
                    );
                }
            }
            Mode::Bars => {
                if let Some(old) = s.chunk_bars.remove(&index) {
                    old.finish_and_clear();
                }
                if let Some((multi, _)) = &s.bars {
                    let bar = multi.add(ProgressBar::new(frames));
                    bar.set_style(
                        ProgressStyle::with_template("{prefix:>12} {wide_bar} {msg} {pos}/{len}")
                            .expect("template"),
                    );
                    bar.set_prefix(format!("chunk {index}"));
                    bar.set_message(match worker {
                        Some(w) => format!("{} on {w}", range_text(range)),
                        None => range_text(range),
                    });
                    s.chunk_bars.insert(index, bar);
                }
            }
            _ => {}
        }
    }

    /// The frames the chunk's source has emitted so far.
    pub fn chunk_tick(&self, index: usize, frames: u64) {
        let mut s = self.state();
        match s.mode {
            Mode::Bars => {
                if let Some(bar) = s.chunk_bars.get(&index) {
                    bar.set_position(frames);
                }
            }
            Mode::Json => {
                let now = Instant::now();
                let due = s
                    .last_event
                    .get(&index)
                    .is_none_or(|t| now - *t >= Duration::from_millis(500));
                if due {
                    s.last_event.insert(index, now);
                    emit(json!({"event": "chunk_progress", "chunk": index, "frames": frames}));
                }
            }
            _ => {}
        }
    }

    pub fn chunk_done(&self, index: usize, range: (f64, Option<f64>), frames: u64, secs: f64) {
        let mut s = self.state();
        s.chunks.0 += 1;
        s.frames.0 += frames;
        s.frames_run += frames;
        let eta = s.eta();
        if let Some(bar) = s.chunk_bars.remove(&index) {
            bar.finish_and_clear();
        }
        match s.mode {
            Mode::Json => emit(json!({"event": "chunk_done", "chunk": index,
                "range": [range.0, range.1], "frames": frames, "seconds": secs,
                "chunks_done": s.chunks.0, "chunks": s.chunks.1,
                "eta_s": eta.map(|d| d.as_secs_f64())})),
            Mode::Plain => {
                s.last_line = Instant::now();
                eprintln!(
                    "chunk {index} ({}) done: {frames} frames in {secs:.1}s; job {}/{} chunks{}",
                    range_text(range),
                    s.chunks.0,
                    s.chunks.1,
                    eta.map(|d| format!(", eta {}", clock(d.as_secs_f64())))
                        .unwrap_or_default()
                )
            }
            Mode::Bars => {
                if let Some((_, bar)) = &s.bars {
                    bar.set_position(s.frames.0);
                    bar.set_message(format!("chunks {}/{}", s.chunks.0, s.chunks.1));
                }
            }
            _ => {}
        }
    }

    pub fn chunk_failed(&self, index: usize, range: (f64, Option<f64>), error: &str, retry: bool) {
        let mut s = self.state();
        if let Some(bar) = s.chunk_bars.remove(&index) {
            bar.finish_and_clear();
        }
        let line = format!(
            "chunk {index} ({}) failed: {error}{}",
            range_text(range),
            if retry { "; trying again" } else { "" }
        );
        match s.mode {
            Mode::Json => emit(json!({"event": "chunk_failed", "chunk": index,
                "range": [range.0, range.1], "error": error, "retry": retry})),
            Mode::Bars => match &s.bars {
                Some((multi, _)) => {
                    let _ = multi.println(line);
                }
                None => eprintln!("{line}"),
            },
            Mode::Plain => eprintln!("{line}"),
            _ => {}
        }
    }

    /// A chunk stopped by Ctrl-C: not recorded.
    pub fn chunk_abandoned(&self, index: usize) {
        let mut s = self.state();
        if let Some(bar) = s.chunk_bars.remove(&index) {
            bar.finish_and_clear();
        }
        if s.mode == Mode::Json {
            emit(json!({"event": "chunk_abandoned", "chunk": index}));
        }
    }

    pub fn assembled(&self, node: &str, path: &str) {
        let s = self.state();
        match s.mode {
            Mode::Json => emit(json!({"event": "assembled", "node": node, "path": path})),
            Mode::Plain => eprintln!("node `{node}`: assembled `{path}`"),
            _ => {}
        }
    }

    pub fn end(&self, ok: bool, interrupted: bool, failed: &[usize], elapsed: Duration) {
        let mut s = self.state();
        if let Some((_, bar)) = s.bars.take() {
            bar.finish();
        }
        if s.mode == Mode::Json {
            emit(
                json!({"event": "job_end", "ok": ok, "interrupted": interrupted,
                "chunks_done": s.chunks.0, "chunks": s.chunks.1, "failed": failed,
                "elapsed_s": elapsed.as_secs_f64()}),
            );
        }
    }

    /// A progress sink for one chunk's run, which feeds this job's display.
    pub fn chunk_sink(&self, index: usize, source: usize) -> Box<dyn ProgressSink> {
        Box::new(ChunkTicks {
            job: self.clone(),
            index,
            source,
        })
    }
}

impl State {
    /// Time left at this run's pace so far (`None` until a chunk has finished).
    fn eta(&self) -> Option<Duration> {
        if self.frames_run == 0 {
            return None;
        }
        let per_frame = self.started.elapsed().as_secs_f64() / self.frames_run as f64;
        let left = self.frames.1.saturating_sub(self.frames.0) as f64;
        Some(Duration::from_secs_f64(per_frame * left))
    }
}

struct ChunkTicks {
    job: JobProgress,
    index: usize,
    source: usize,
}

impl ProgressSink for ChunkTicks {
    fn tick(&mut self, nodes: &[NodeReport], _elapsed: Duration) {
        if let Some(n) = nodes.get(self.source) {
            self.job.chunk_tick(self.index, n.items_out);
        }
    }
}
