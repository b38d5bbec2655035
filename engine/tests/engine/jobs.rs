//! Jobs with test kinds: a clock source whose timeline a job can cut, a node that makes a frame
//! between each pair (one frame of context after), and a sink writing one line per frame. A
//! job's assembled output equals the plain run's, whatever the chunk length and parallelism;
//! a rerun trusts intact records and redoes damaged ones; chunk cutting follows keyframes.

use crate::common::graph;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vidflow_engine::job::{self, JobOptions, journal, progress::JobProgress};
use vidflow_engine::node::{ChunkPiece, ChunkSink, ChunkSource, ParamType, Temporal, Timeline};
use vidflow_engine::{
    Emitter, End, Frame, Input, NodeError, NodeKind, Params, Payload, PortType, Process, Rate,
    Registry, Runtime, Source, exec, params,
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

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(clock_kind());
    r.register(pairs_kind());
    r.register(lines_kind());
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
    let g = graph(&registry(), yaml);
    job::run(
        &g,
        JobOptions {
            dir: dir.to_path_buf(),
            chunk_seconds: seconds,
            parallel: Some(parallel),
            restart: false,
            progress: JobProgress::new(vidflow_engine::progress::Mode::None),
            stop: exec::StopFlag::new(),
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
