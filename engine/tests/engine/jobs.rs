//! Jobs with test kinds: a clock source whose timeline a job can cut, a node that makes a frame
//! between each pair (one frame of context after), a node that makes a record per frame from
//! it and the one before (one frame of context before), and sinks writing one line per frame or
//! record. A job's assembled output equals the plain run's, whatever the chunk length and
//! parallelism, records made from context frames included; a rerun trusts intact records and
//! redoes damaged ones; chunk cutting follows keyframes; a failing item is retried by running
//! its chunk again, N + 1 tries in all; a chunk whose node fails because the job is stopped
//! is abandoned, not recorded as failed; audio read around each frame from a source of its own
//! (lip sync's speech) is restricted to each chunk's time widened by the context, so the job
//! makes what the plain run makes, past the end of the audio too.

use crate::common::graph;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vidflow_engine::job::{self, JobOptions, journal, progress::JobProgress};
use vidflow_engine::node::{ChunkPiece, ChunkSink, ChunkSource, ParamType, Temporal, Timeline};
use vidflow_engine::{
    AudioChunk, Emitter, End, Frame, Input, NodeError, NodeKind, Params, Payload, PortType,
    Process, Rate, Registry, Runtime, Source, exec, params,
};

const EPS: f64 = 1e-9;

params! {
    struct ClockParams {
        /// frames in the stream
        frames: u64 = default(ParamType::int_in(1, 10_000), 40),
        /// a keyframe every this many frames
        gop: u64 = default(ParamType::int_in(1, 1000), 5),
        start: Option<f64> = optional(ParamType::float()),
        end: Option<f64> = optional(ParamType::float()),
    }
}

fn pts(i: u64) -> f64 {
    i as f64 / 10.0
}

struct Clock(ClockParams);
impl Source for Clock {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for i in 0..self.0.frames {
            let t = pts(i);
            if self.0.start.is_some_and(|s| t + EPS < s) || self.0.end.is_some_and(|e| t + EPS >= e)
            {
                continue;
            }
            let f = Frame::new(i, t, Rate::new(10, 1), 1, 1, vec![(i * 7 % 251) as u8; 3]);
            out.emit(0, Payload::Frame(f))?;
        }
        Ok(())
    }
}

struct ClockChunks;
impl ChunkSource for ClockChunks {
    fn timeline(&self, _node: &str, params: &Params) -> Result<Timeline, NodeError> {
        let p: ClockParams = vidflow_engine::NodeParams::from_params(params)?;
        Ok(Timeline {
            pts: (0..p.frames).map(pts).collect(),
            keyframes: (0..p.frames as usize).step_by(p.gop as usize).collect(),
            files: vec![],
        })
    }
    fn restrict(&self, params: &mut Params, start: f64, end: Option<f64>) {
        params.values.insert("start".into(), start.into());
        params.values.insert("end".into(), end.into());
    }
}

fn clock_kind() -> NodeKind {
    NodeKind::new("clock", "frames every 0.1 s", |ctx| {
        Ok(Runtime::Source(Box::new(Clock(ctx.params()?))))
    })
    .output("frames", PortType::FRAMES, "frames")
    .params::<ClockParams>()
    .temporal(Temporal::PerItem)
    .chunk_source(ClockChunks)
}

/// Emits each frame and, between it and the next, a frame at the mean time and value.
struct Pairs(Option<Frame>);
impl Process for Pairs {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            let Payload::Frame(b) = item else { continue };
            if let Some(a) = self.0.take() {
                let mid = (a.data[0] as u16 + b.data[0] as u16) / 2;
                let made = Frame::new(
                    a.index,
                    (a.pts + b.pts) / 2.0,
                    a.rate,
                    1,
                    1,
                    vec![mid as u8; 3],
                );
                out.emit(0, Payload::Frame(a))?;
                out.emit(0, Payload::Frame(made))?;
            }
            self.0 = Some(b);
        }
        Ok(())
    }
    fn finish(&mut self, out: &mut Emitter<'_>, _end: End) -> Result<(), NodeError> {
        if let Some(a) = self.0.take() {
            out.emit(0, Payload::Frame(a))?;
        }
        Ok(())
    }
}

fn pairs_kind() -> NodeKind {
    NodeKind::new("pairs", "a frame between each pair", |_| {
        Ok(Runtime::Process(Box::new(Pairs(None))))
    })
    .input("frames", PortType::FRAMES, "frames")
    .output("frames", PortType::FRAMES, "twice the frames, less one")
    .temporal(Temporal::Frames {
        before: 0,
        after: 1,
    })
}

params! {
    struct LinesParams {
        /// output file
        path: String = required(ParamType::Path),
    }
}

/// Writes `pts value` per frame, to a temporary name renamed at the end.
struct Lines {
    path: PathBuf,
    text: String,
}
impl Process for Lines {
    fn process(&mut self, input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            if let Payload::Frame(f) = item {
                self.text.push_str(&format!("{:.3} {}\n", f.pts, f.data[0]));
            }
        }
        Ok(())
    }
    fn finish(&mut self, _out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        if end == End::Stopped {
            return Ok(());
        }
        let temp = self.path.with_extension("partial");
        std::fs::write(&temp, &self.text).map_err(|e| NodeError::runtime(e.to_string()))?;
        std::fs::rename(&temp, &self.path).map_err(|e| NodeError::runtime(e.to_string()))
    }
}

struct LinesChunks;
impl ChunkSink for LinesChunks {
    fn output(&self, params: &Params) -> Result<Option<PathBuf>, String> {
        Ok(params
            .get("path")
            .and_then(|v| v.as_str())
            .map(PathBuf::from))
    }
    fn redirect(&self, params: &mut Params, path: &Path) {
        params
            .values
            .insert("path".into(), path.display().to_string().into());
    }
    fn assemble(
        &self,
        _node: &str,
        _params: &Params,
        pieces: &[ChunkPiece],
        _whole: &[vidflow_engine::WholeInput],
        output: &Path,
    ) -> Result<(), NodeError> {
        let mut all = String::new();
        for p in pieces {
            all +=
                &std::fs::read_to_string(&p.path).map_err(|e| NodeError::runtime(e.to_string()))?;
        }
        std::fs::write(output, all).map_err(|e| NodeError::runtime(e.to_string()))
    }
}

fn lines_kind() -> NodeKind {
    NodeKind::new("lines", "one line per frame", |ctx| {
        let p: LinesParams = ctx.params()?;
        Ok(Runtime::Process(Box::new(Lines {
            path: p.path.into(),
            text: String::new(),
        })))
    })
    .input("frames", PortType::FRAMES, "frames")
    .params::<LinesParams>()
    .temporal(Temporal::PerItem)
    .chunk_sink(LinesChunks)
}

/// One record per frame, `{"index", "pts", "prev"}`: the frame's time and the value of the
/// frame before it (like face-detect's `every: N`, which carries an earlier frame's detection).
struct Prev(Option<u8>);
impl Process for Prev {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            let Payload::Frame(f) = item else { continue };
            let rec = serde_json::json!({"index": f.index, "pts": f.pts, "prev": self.0});
            self.0 = Some(f.data[0]);
            out.emit(0, Payload::record(rec))?;
        }
        Ok(())
    }
}

fn prev_kind() -> NodeKind {
    NodeKind::new("prev", "a record per frame with the frame before", |_| {
        Ok(Runtime::Process(Box::new(Prev(None))))
    })
    .input("frames", PortType::FRAMES, "frames")
    .output("records", PortType::RECORDS, "one record per frame")
    .temporal(Temporal::Frames {
        before: 1,
        after: 0,
    })
}

/// Writes each record as a JSON line, to a temporary name renamed at the end.
struct RecordLines(Lines);
impl Process for RecordLines {
    fn process(&mut self, input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            if let Payload::Record(r) = item {
                self.0.text.push_str(&format!("{r}\n"));
            }
        }
        Ok(())
    }
    fn finish(&mut self, out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        self.0.finish(out, end)
    }
}

fn records_kind() -> NodeKind {
    NodeKind::new("records", "one JSON line per record", |ctx| {
        let p: LinesParams = ctx.params()?;
        Ok(Runtime::Process(Box::new(RecordLines(Lines {
            path: p.path.into(),
            text: String::new(),
        }))))
    })
    .input("records", PortType::RECORDS, "records")
    .params::<LinesParams>()
    .temporal(Temporal::PerItem)
    .chunk_sink(LinesChunks)
}

params! {
    struct FlakyParams {
        /// the frame time whose item fails
        at: f64 = required(ParamType::float()),
        /// file that gets one line per try of that item
        tries: String = required(ParamType::Str),
        /// tries that fail before one succeeds
        fails: u64 = default(ParamType::int_from(0), 1),
    }
}

/// Passes frames on; the frame at `at` fails its first `fails` tries, each try counted in a
/// file so that tries are counted across every run of its chunk.
struct Flaky(FlakyParams);
impl Process for Flaky {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            if let Payload::Frame(f) = &item
                && (f.pts - self.0.at).abs() < EPS
            {
                let mut tries = std::fs::read_to_string(&self.0.tries).unwrap_or_default();
                tries.push_str("try\n");
                std::fs::write(&self.0.tries, &tries).unwrap();
                if tries.lines().count() as u64 <= self.0.fails {
                    return Err(NodeError::runtime(format!(
                        "failing on purpose at {}",
                        f.pts
                    )));
                }
            }
            out.emit(0, item)?;
        }
        Ok(())
    }
}

fn flaky_kind() -> NodeKind {
    NodeKind::new("flaky", "fails on one frame a few times", |ctx| {
        Ok(Runtime::Process(Box::new(Flaky(ctx.params()?))))
    })
    .input("frames", PortType::FRAMES, "frames")
    .output("frames", PortType::FRAMES, "the same frames")
    .params::<FlakyParams>()
    .temporal(Temporal::PerItem)
}

params! {
    struct StallParams {
        /// the frame time from which it waits for the run to stop
        at: f64 = required(ParamType::float()),
    }
}

/// Passes frames on until the one at `at`; there it waits until the run is stopped and then
/// fails, as a node whose pipe or command is closed under it does.
struct Stall(f64);
impl Process for Stall {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            if let Payload::Frame(f) = &item
                && f.pts + EPS >= self.0
            {
                let started = std::time::Instant::now();
                while !out.stopping() {
                    assert!(
                        started.elapsed() < std::time::Duration::from_secs(60),
                        "never stopped"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                return Err(NodeError::runtime("its input was closed"));
            }
            out.emit(0, item)?;
        }
        Ok(())
    }
}

fn stall_kind() -> NodeKind {
    NodeKind::new(
        "stall",
        "waits for the stop at one frame, then fails",
        |ctx| {
            let p: StallParams = ctx.params()?;
            Ok(Runtime::Process(Box::new(Stall(p.at))))
        },
    )
    .input("frames", PortType::FRAMES, "frames")
    .output("frames", PortType::FRAMES, "the same frames")
    .params::<StallParams>()
    .temporal(Temporal::PerItem)
}

params! {
    struct ToneParams {
        /// samples in the stream (100 a second)
        samples: u64 = default(ParamType::int_in(1, 100_000), 300),
        start: Option<f64> = optional(ParamType::float()),
        end: Option<f64> = optional(ParamType::float()),
    }
}

/// Audio at 100 Hz whose sample `i` is `i`, within `start..end`, in pieces of 7 samples.
struct Tone(ToneParams);
impl Source for Tone {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let at = |t: f64| ((t * 100.0).ceil().max(0.0) as u64).min(self.0.samples);
        let (mut i, last) = (
            self.0.start.map_or(0, at),
            self.0.end.map_or(self.0.samples, at),
        );
        while i < last {
            let n = (last - i).min(7);
            out.emit(
                0,
                Payload::Audio(AudioChunk {
                    pts: i as f64 / 100.0,
                    sample_rate: 100,
                    channels: 1,
                    samples: Arc::new((i..i + n).map(|v| v as f32).collect()),
                }),
            )?;
            i += n;
        }
        Ok(())
    }
}

struct ToneChunks;
impl ChunkSource for ToneChunks {
    fn timeline(&self, node: &str, _params: &Params) -> Result<Timeline, NodeError> {
        Err(NodeError::input(format!("`{node}` has no frames")))
    }
    fn restrict(&self, params: &mut Params, start: f64, end: Option<f64>) {
        params.values.insert("start".into(), start.into());
        params.values.insert("end".into(), end.into());
    }
    fn audio_end(&self, _node: &str, params: &Params) -> Result<Option<f64>, NodeError> {
        let p: ToneParams = vidflow_engine::NodeParams::from_params(params)?;
        Ok(Some(p.samples as f64 / 100.0))
    }
}

fn tone_kind() -> NodeKind {
    NodeKind::new("tone", "audio, sample i is i", |ctx| {
        Ok(Runtime::Source(Box::new(Tone(ctx.params()?))))
    })
    .output("audio", PortType::AUDIO, "audio")
    .params::<ToneParams>()
    .temporal(Temporal::PerItem)
    .chunk_source(ToneChunks)
}

/// Each frame at time t gets the sum of the audio in `t − 0.2 s ..< t + 0.3 s` (mod 251) as
/// its value; a frame whose window runs past the end of the audio, that of its last 0.5 s
/// (as Wav2Lip's mel windows are clamped).
#[derive(Default)]
struct Hear {
    frames: Vec<Frame>,
    audio: std::collections::BTreeMap<i64, f32>,
}
impl Process for Hear {
    fn process(&mut self, input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            match item {
                Payload::Frame(f) => self.frames.push(f),
                Payload::Audio(a) => {
                    let first = (a.pts * 100.0).round() as i64;
                    for (k, v) in a.samples.iter().enumerate() {
                        self.audio.insert(first + k as i64, *v);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
    fn finish(&mut self, out: &mut Emitter<'_>, _end: End) -> Result<(), NodeError> {
        let end = self.audio.keys().next_back().map_or(0, |k| k + 1);
        for f in std::mem::take(&mut self.frames) {
            let t = (f.pts * 100.0).round() as i64;
            let (lo, hi) = if t + 30 > end {
                (end - 50, end)
            } else {
                (t - 20, t + 30)
            };
            let sum: f32 = self.audio.range(lo..hi).map(|(_, v)| v).sum();
            let heard = Frame::new(
                f.index,
                f.pts,
                f.rate,
                1,
                1,
                vec![(sum as u64 % 251) as u8; 3],
            );
            out.emit(0, Payload::Frame(heard))?;
        }
        Ok(())
    }
}

fn hear_kind() -> NodeKind {
    NodeKind::new("hear", "the audio around each frame", |_| {
        Ok(Runtime::Process(Box::new(Hear::default())))
    })
    .input("frames", PortType::FRAMES, "frames")
    .input("audio", PortType::AUDIO, "audio")
    .output("frames", PortType::FRAMES, "frames valued by their audio")
    .temporal(Temporal::AudioMs {
        before: 200,
        after: 300,
        frames_before: 0,
        frames_after: 0,
    })
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(tone_kind());
    r.register(hear_kind());
    r.register(clock_kind());
    r.register(pairs_kind());
    r.register(lines_kind());
    r.register(prev_kind());
    r.register(records_kind());
    r.register(flaky_kind());
    r.register(stall_kind());
    r
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vidflow-engine-jobs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn yaml(out: &Path, frames: u64) -> String {
    format!(
        "name: t
nodes:
  - id: src
    kind: clock
    params: {{ frames: {frames}, gop: 5 }}
  - id: mid
    kind: pairs
    inputs: {{ frames: src.frames }}
  - id: out
    kind: lines
    params: {{ path: \"{}\" }}
    inputs: {{ frames: mid.frames }}
",
        out.display()
    )
}

fn run_job(yaml: &str, dir: &Path, seconds: f64, parallel: usize) -> job::JobReport {
    run_job_until(yaml, dir, seconds, parallel, exec::StopFlag::new())
}

fn run_job_until(
    yaml: &str,
    dir: &Path,
    seconds: f64,
    parallel: usize,
    stop: exec::StopFlag,
) -> job::JobReport {
    let g = graph(&registry(), yaml);
    job::run(
        &g,
        JobOptions {
            dir: dir.to_path_buf(),
            chunk_seconds: seconds,
            parallel: Some(parallel),
            restart: false,
            progress: JobProgress::new(vidflow_engine::progress::Mode::None),
            stop,
            shared: Arc::new(Default::default()),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_job_with_context_makes_what_the_plain_run_makes() {
    let d = tmp("context");
    let plain = d.join("plain.txt");
    let report = exec::run(&graph(&registry(), &yaml(&plain, 43)), Default::default());
    assert!(report.ok(), "{:?}", report.failure);
    let expected = std::fs::read_to_string(&plain).unwrap();
    assert_eq!(expected.lines().count(), 85);
    for (seconds, parallel) in [(0.5, 1), (1.0, 3), (0.1, 2), (100.0, 1)] {
        let out = d.join(format!("job-{seconds}-{parallel}.txt"));
        let jd = d.join(format!("job-{seconds}-{parallel}"));
        let r = run_job(&yaml(&out, 43), &jd, seconds, parallel);
        assert!(r.ok(), "{r:?}");
        let chunks = (43.0f64 / 5.0).ceil() as usize;
        let expected_chunks = match seconds {
            0.5 | 0.1 => chunks,
            1.0 => 5,
            _ => 1,
        };
        assert_eq!(r.chunks, expected_chunks, "{seconds} s");
        assert_eq!(r.ran.len(), r.chunks);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            expected,
            "chunks of {seconds} s, {parallel} at a time"
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn audio_with_context_from_its_own_source_makes_what_the_plain_run_makes() {
    let d = tmp("audio");
    // 4.3 s of frames over 3 s of audio: the frames from 2.8 s on hear its last 0.5 s.
    let yaml = |out: &Path| {
        format!(
            "name: t
nodes:
  - id: src
    kind: clock
    params: {{ frames: 43, gop: 5 }}
  - id: speech
    kind: tone
    params: {{ samples: 300 }}
  - id: hear
    kind: hear
    inputs: {{ frames: src.frames, audio: speech.audio }}
  - id: out
    kind: lines
    params: {{ path: \"{}\" }}
    inputs: {{ frames: hear.frames }}
",
            out.display()
        )
    };
    let plain = d.join("plain.txt");
    let report = exec::run(&graph(&registry(), &yaml(&plain)), Default::default());
    assert!(report.ok(), "{:?}", report.failure);
    let expected = std::fs::read_to_string(&plain).unwrap();
    assert_eq!(expected.lines().count(), 43);
    for (seconds, parallel) in [(0.5, 1), (1.0, 3)] {
        let out = d.join(format!("job-{seconds}.txt"));
        let r = run_job(
            &yaml(&out),
            &d.join(format!("job-{seconds}")),
            seconds,
            parallel,
        );
        assert!(r.ok(), "{r:?}");
        assert!(r.chunks > 4, "{r:?}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            expected,
            "chunks of {seconds} s"
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_rerun_trusts_intact_records_and_redoes_the_rest() {
    let d = tmp("rerun");
    let out = d.join("out.txt");
    let jd = d.join("job");
    let y = yaml(&out, 20);
    let first = run_job(&y, &jd, 0.5, 2);
    assert_eq!((first.chunks, first.ran.len()), (4, 4));
    let expected = std::fs::read_to_string(&out).unwrap();

    let again = run_job(&y, &jd, 0.5, 2);
    assert_eq!(again.reused, vec![0, 1, 2, 3]);
    assert!(again.ran.is_empty());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);

    // One output edited (same size), one record cut short, one output removed.
    let piece = |i: usize| journal::chunk_dir(&jd, i).join("out.txt");
    let text = std::fs::read_to_string(piece(1)).unwrap();
    std::fs::write(piece(1), text.replacen('0', "9", 1)).unwrap();
    let rec = journal::record_path(&jd, 2);
    let r = std::fs::read(&rec).unwrap();
    std::fs::write(&rec, &r[..r.len() / 3]).unwrap();
    std::fs::remove_file(piece(3)).unwrap();
    let mut redone = run_job(&y, &jd, 0.5, 1);
    redone.ran.sort();
    assert_eq!(redone.reused, vec![0]);
    assert_eq!(redone.ran, vec![1, 2, 3]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);

    // The journal leaves no temporary file behind.
    let leftovers: Vec<_> = std::fs::read_dir(jd.join("chunks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_changed_graph_is_refused_with_what_changed() {
    let d = tmp("changed");
    let out = d.join("out.txt");
    let jd = d.join("job");
    run_job(&yaml(&out, 20), &jd, 0.5, 1);
    let g = graph(&registry(), &yaml(&out, 25));
    let err = job::run(
        &g,
        JobOptions {
            dir: jd.clone(),
            chunk_seconds: 0.5,
            parallel: Some(1),
            restart: false,
            progress: JobProgress::new(vidflow_engine::progress::Mode::None),
            stop: exec::StopFlag::new(),
            shared: Arc::new(Default::default()),
        },
    )
    .expect_err("another graph");
    let text = err.to_string();
    assert!(
        text.contains("node `src` param `frames` changed: 20 → 25"),
        "{text}"
    );
    assert!(
        text.contains("--restart") && text.contains("4 recorded chunks"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn chunks_are_cut_at_keyframes() {
    let t = Timeline {
        pts: (0..30).map(pts).collect(),
        keyframes: vec![0, 4, 9, 10, 21, 29],
        files: vec![],
    };
    let c = job::cut(&t, 1.0, 0, 1);
    let firsts: Vec<usize> = c.iter().map(|c| c.first).collect();
    assert_eq!(firsts, vec![0, 10, 21]);
    assert_eq!(c.iter().map(|c| c.frames).sum::<usize>(), 30);
    assert_eq!(c[0].range, (0.0, Some(1.0)));
    assert_eq!(
        c[0].read,
        (0.0, Some(pts(11))),
        "one frame of context after"
    );
    assert_eq!(c[2].range, (pts(21), None));
    assert_eq!(c[2].read, (pts(21), None));
    let c = job::cut(&t, 0.0, 2, 0);
    assert_eq!(c.len(), 6);
    assert_eq!(c[1].read.0, pts(2), "two frames of context before");
}

/// A record made from a chunk's context frame (the frame before its first) belongs to the
/// chunk before: trimmed by its `pts` like the frame, it is written once, not at every seam.
#[test]
fn records_made_from_context_frames_are_written_once() {
    let d = tmp("records");
    let y = |out: &Path| {
        format!(
            "name: t
nodes:
  - id: src
    kind: clock
    params: {{ frames: 23, gop: 5 }}
  - id: prev
    kind: prev
    inputs: {{ frames: src.frames }}
  - id: out
    kind: records
    params: {{ path: \"{}\" }}
    inputs: {{ records: prev.records }}
",
            out.display()
        )
    };
    let plain = d.join("plain.jsonl");
    let report = exec::run(&graph(&registry(), &y(&plain)), Default::default());
    assert!(report.ok(), "{:?}", report.failure);
    let expected = std::fs::read_to_string(&plain).unwrap();
    assert_eq!(expected.lines().count(), 23);
    for (seconds, parallel) in [(0.5, 2), (1.0, 1)] {
        let out = d.join(format!("job-{seconds}.jsonl"));
        let r = run_job(
            &y(&out),
            &d.join(format!("job-{seconds}")),
            seconds,
            parallel,
        );
        assert!(r.ok(), "{r:?}");
        assert!(r.chunks > 2, "{r:?}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            expected,
            "chunks of {seconds} s: a record made from a context frame is repeated or wrong"
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

fn flaky_yaml(out: &Path, tries: &Path, fails: u64) -> String {
    format!(
        "name: t
nodes:
  - id: src
    kind: clock
    params: {{ frames: 20, gop: 5 }}
  - id: flaky
    kind: flaky
    params: {{ at: 1.2, tries: \"{}\", fails: {fails} }}
    on_error: {{ retry: 2 }}
    inputs: {{ frames: src.frames }}
  - id: out
    kind: lines
    params: {{ path: \"{}\" }}
    inputs: {{ frames: flaky.frames }}
",
        tries.display(),
        out.display()
    )
}

/// `on_error: retry 2` in a job: the chunk of a failing item runs again, and the item is tried
/// three times in all, not three times in each of three runs of the chunk.
#[test]
fn a_failing_item_is_retried_by_running_its_chunk_again() {
    let d = tmp("retry");
    let count = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };

    // Fails once: the chunk's second run gets past it and the job ends well.
    let (out, tries) = (d.join("once.txt"), d.join("once.tries"));
    let r = run_job(&flaky_yaml(&out, &tries, 1), &d.join("once"), 0.5, 2);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.ran.len(), 4);
    assert_eq!(count(&tries), 2, "one failed try, one good one");
    assert!(journal::record_path(&d.join("once"), 2).exists());
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 20);

    // Fails always: three tries, then the chunk is recorded as failed with the three errors.
    let (out, tries) = (d.join("always.txt"), d.join("always.tries"));
    let jd = d.join("always");
    let r = run_job(&flaky_yaml(&out, &tries, 1000), &jd, 0.5, 2);
    assert_eq!(count(&tries), 3, "retry 2: three tries of the item in all");
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert_eq!(r.failed[0].index, 2);
    assert_eq!(r.failed[0].errors.len(), 3, "{:?}", r.failed[0].errors);
    assert!(
        r.failed[0].errors[2].contains("failing on purpose"),
        "{:?}",
        r.failed[0].errors
    );
    assert!(journal::failed_path(&jd, 2).exists());
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// A node that fails because the job was stopped under it (Ctrl-C) leaves its chunk abandoned:
/// the job is interrupted, nothing is recorded as failed and the chunk's files are removed.
#[test]
fn a_chunk_failing_as_the_job_stops_is_abandoned_not_failed() {
    let d = tmp("stop");
    let out = d.join("out.txt");
    let jd = d.join("job");
    let y = format!(
        "name: t
nodes:
  - id: src
    kind: clock
    params: {{ frames: 20, gop: 5 }}
  - id: stall
    kind: stall
    params: {{ at: 1.0 }}
    on_error: {{ retry: 3 }}
    inputs: {{ frames: src.frames }}
  - id: out
    kind: lines
    params: {{ path: \"{}\" }}
    inputs: {{ frames: stall.frames }}
",
        out.display()
    );
    let stop = exec::StopFlag::new();
    let report = std::thread::scope(|s| {
        let job = s.spawn(|| run_job_until(&y, &jd, 0.5, 1, stop.clone()));
        // Stopped once chunk 0 and 1 are recorded and chunk 2 waits in `stall`.
        let started = std::time::Instant::now();
        while !journal::record_path(&jd, 1).exists() {
            assert!(started.elapsed() < std::time::Duration::from_secs(60));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        stop.stop();
        job.join().unwrap()
    });
    assert!(report.interrupted, "{report:?}");
    assert!(report.failed.is_empty(), "recorded as failed: {report:?}");
    assert_eq!(report.ran, vec![0, 1]);
    assert!(!journal::failed_path(&jd, 2).exists());
    assert!(!journal::record_path(&jd, 2).exists());
    assert!(
        !journal::chunk_dir(&jd, 2).exists(),
        "the abandoned chunk's files are left"
    );
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&d);
}
