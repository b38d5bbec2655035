//! Jobs through the `vidflow` binary (`run --job DIR`): chunk seams are exact (a chunked run
//! decodes to the same frames, timing and audio length as the plain run), a job killed with
//! SIGKILL resumes without running a recorded chunk again, damaged chunk outputs and
//! half-written records are redone, a changed graph or input is refused, a failing chunk
//! leaves the job resumable and a rerun redoes only it, a chunk is retried as its failing
//! node's `on_error` says, a job stopped with SIGINT records nothing as failed and resumes,
//! a lip-sync job (speech from a second source, read with its audio context) makes the frames
//! and soundtrack of the plain run, and graphs that cannot be cut (one source without a
//! timeline, a whole-stream node, audio context taken from the cut source itself, a kind that
//! declares no temporal context) get a located diagnostic.

use crate::common::{Proc, TmpDir, assert_ok, ffmpeg, probe};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn tmp(name: &str) -> TmpDir {
    crate::common::tmp("jobs", name)
}

/// A clip of `secs` seconds at 25 fps with a keyframe every `gop` frames and AAC audio;
/// `filter` is added to the video source (e.g. a box drawn over a time range).
pub(crate) fn clip(path: &Path, size: &str, secs: u32, gop: u32, filter: &str) {
    let video = format!("testsrc2=size={size}:rate=25{filter}");
    let (t, g) = (secs.to_string(), gop.to_string());
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &video,
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        &t,
        "-c:v",
        "libx264",
        "-g",
        &g,
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        path.to_str().unwrap(),
    ]);
}

/// Runs `vidflow args` in `dir` to its end.
pub(crate) fn vidflow(dir: &Path, args: &[&str]) -> Output {
    Command::new(crate::common::BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("vidflow runs")
}

/// Runs `g.yaml` in `dir` on the CPU twice, plainly (`output=plain.mp4`) and as job `job` cut
/// every 0.4 s (`output=job.mp4`, progress as JSON events), each checked to succeed; returns
/// the job's output and the frames of the plain run and of the job.
#[cfg(feature = "neural")]
fn plain_and_job_on_cpu(dir: &Path) -> (Output, [Vec<(String, String)>; 2]) {
    let run = |args: &[&str]| {
        Command::new(crate::common::BIN)
            .args(args)
            .env("VIDFLOW_DEVICE", "cpu")
            .current_dir(dir)
            .output()
            .expect("vidflow runs")
    };
    let plain = run(PLAIN_RUN);
    assert_ok(&plain, "plain run");
    let job = run(&job_args("job", &["--set", "output=job.mp4"]));
    assert_ok(&job, "job");
    let frames = [frames(&dir.join("plain.mp4")), frames(&dir.join("job.mp4"))];
    (job, frames)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `g.yaml` run as a plain run (no job) into `plain.mp4`: the reference a job's output is
/// compared with.
const PLAIN_RUN: &[&str] = &[
    "run",
    "g.yaml",
    "--progress",
    "none",
    "--set",
    "output=plain.mp4",
];

/// `run g.yaml --progress json --job JOB --chunk-seconds 0.4`, then `extra`.
pub(crate) fn job_args<'a>(job: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "run",
        "g.yaml",
        "--progress",
        "json",
        "--job",
        job,
        "--chunk-seconds",
        "0.4",
    ];
    v.extend_from_slice(extra);
    v
}

/// The frames of `g.yaml` run in `dir` as job `name` in one process (the reference a farm's
/// output must equal): `--set output=NAME.mp4 --job NAME --chunk-seconds 0.4`.
pub(crate) fn local_job_frames(dir: &Path, name: &str) -> Vec<(String, String)> {
    let output = format!("output={name}.mp4");
    let o = vidflow(
        dir,
        &[
            "run",
            "g.yaml",
            "--progress",
            "none",
            "--set",
            &output,
            "--job",
            name,
            "--chunk-seconds",
            "0.4",
        ],
    );
    assert_ok(&o, "the job run in one process");
    frames(&dir.join(format!("{name}.mp4")))
}

/// Every decoded video frame of a file: (pts, MD5 of its pixels), from ffmpeg's framemd5.
pub(crate) fn frames(path: &Path) -> Vec<(String, String)> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v", "-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(out.status.success(), "framemd5 of {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            (f[2].to_string(), f[5].to_string())
        })
        .collect()
}

fn duration(path: &Path, stream: &str) -> f64 {
    let p = probe(path, stream, "duration");
    p.trim()
        .strip_prefix("duration=")
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration for {stream} of {}: {p}", path.display()))
}

/// The JSON events among the lines of `text` (those starting with `{`).
pub(crate) fn json_events(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The JSON events of a `--progress json` run.
fn events(o: &Output) -> Vec<serde_json::Value> {
    json_events(&stderr(o))
}

/// Every chunk of `0..n` has exactly one `chunk_done` event.
pub(crate) fn assert_each_chunk_done_once(events: &[serde_json::Value], n: u64) {
    for c in 0..n {
        let done: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["event"] == "chunk_done" && e["chunk"] == c)
            .collect();
        assert_eq!(
            done.len(),
            1,
            "chunk {c} recorded {} times: {done:?}",
            done.len()
        );
    }
}

/// Chunk indices of the events named `name`.
fn chunks_of(events: &[serde_json::Value], name: &str) -> Vec<u64> {
    let mut v: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == name)
        .map(|e| e["chunk"].as_u64().unwrap())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Recorded chunks of a job directory.
pub(crate) fn records(job: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(job.join("chunks"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.ends_with(".json") && !n.ends_with(".failed.json") && !n.starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A lossless transcode graph (x264 qp 0 in 4:4:4), keeping the source audio.
const LOSSLESS: &str = "name: lossless
params:
  input: { default: in.mp4 }
  output: { default: out.mp4 }
  crf: { default: 0 }
nodes:
  - id: dec
    kind: decode
    params: { path: \"${input}\" }
  - id: enc
    kind: encode
    params: { path: \"${output}\", crf: \"${crf}\", pix_fmt: yuv444p, preset: ultrafast }
    inputs: { frames: dec.frames, audio_packets: dec.audio_packets }
";

#[test]
fn chunk_seams_are_exact_and_audio_is_whole() {
    let d = tmp("seams");
    clip(&d.path("in.mp4"), "160x120", 4, 10, "");
    d.write("g.yaml", LOSSLESS);
    let plain = vidflow(&d, PLAIN_RUN);
    assert_ok(&plain, "plain run");
    let job = vidflow(
        &d,
        &[
            "run",
            "g.yaml",
            "--progress",
            "json",
            "--set",
            "output=job.mp4",
            "--job",
            "job",
            "--chunk-seconds",
            "0.8",
        ],
    );
    assert_ok(&job, "job");
    let ev = events(&job);
    let start = ev.iter().find(|e| e["event"] == "job_start").unwrap();
    let n = start["chunks"].as_u64().unwrap();
    assert_eq!(
        n, 5,
        "4 s cut every 0.8 s at keyframes every 0.4 s: {start}"
    );
    assert_eq!(chunks_of(&ev, "chunk_done"), (0..n).collect::<Vec<_>>());
    assert_eq!(records(&d.path("job")).len(), n as usize);

    let (a, b) = (frames(&d.path("plain.mp4")), frames(&d.path("job.mp4")));
    assert_eq!(a.len(), 100);
    assert_eq!(a, b, "the chunked run decodes to other frames or timing");
    let (va, vb) = (
        duration(&d.path("plain.mp4"), "v:0"),
        duration(&d.path("job.mp4"), "v:0"),
    );
    assert!((va - vb).abs() < 1e-3, "video duration {va} vs {vb}");
    let (aa, ab) = (
        duration(&d.path("plain.mp4"), "a:0"),
        duration(&d.path("job.mp4"), "a:0"),
    );
    assert!(
        (aa - ab).abs() <= 1024.0 / 44100.0,
        "audio duration {aa} vs {ab}"
    );
}

/// A per-frame program that copies frames through, sleeping `ms` on each, and fails on a
/// frame whose top-left pixel is white while `fail-marker` exists in its folder.
pub(crate) const SLOW_COPY: &str = r#"import os, sys, time
w, h, ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fail-marker")
n = w * h * 3
while True:
    f = sys.stdin.buffer.read(n)
    if len(f) < n:
        break
    if f[0] > 240 and f[1] > 240 and f[2] > 240 and os.path.exists(marker):
        sys.stderr.write("white frame: failing on purpose\n")
        sys.exit(3)
    time.sleep(ms / 1000.0)
    sys.stdout.buffer.write(f)
    sys.stdout.buffer.flush()
"#;

/// A white box in the top-left corner from 2.0 s to 2.4 s (chunk 5 of 0.4 s chunks), a
/// [`clip`] filter: [`SLOW_COPY`] fails on it while its marker exists.
pub(crate) const WHITE_CORNER: &str =
    ",drawbox=x=0:y=0:w=16:h=16:color=white:t=fill:enable='between(t,2,2.39)'";

/// A clip of 4 s at 25 fps with a keyframe every 10 frames (ten chunks of 0.4 s), the copying
/// program and a graph running it at `ms` per frame.
pub(crate) fn setup(d: &TmpDir, ms: u32, filter: &str) {
    clip(&d.path("in.mp4"), "64x48", 4, 10, filter);
    d.write("copy.py", SLOW_COPY);
    d.write("g.yaml", &exec_graph(64, 48, ms));
}

/// A graph `name` that decodes `${input}`, runs `python3 ARGS…` (`args`, YAML list items) on
/// every frame as node `copy` (`copy_extra`: more lines of that node) and encodes the result
/// losslessly to `${output}` with the source audio.
fn copy_graph(name: &str, args: &str, copy_extra: &str) -> String {
    format!(
        "name: {name}
params:
  input: {{ default: in.mp4 }}
  output: {{ default: out.mp4 }}
nodes:
  - id: dec
    kind: decode
    params: {{ path: \"${{input}}\" }}
  - id: copy
    kind: exec
    params: {{ command: [python3, {args}], format: rgb24 }}
{copy_extra}    inputs: {{ items: dec.frames }}
  - id: enc
    kind: encode
    params: {{ path: \"${{output}}\", crf: 0, pix_fmt: yuv444p, preset: ultrafast }}
    inputs: {{ frames: copy.frames, audio_packets: dec.audio_packets }}
"
    )
}

/// [`SLOW_COPY`] on `w`×`h` frames at `ms` per frame, as graph `slow`.
pub(crate) fn exec_graph(w: u32, h: u32, ms: u32) -> String {
    copy_graph("slow", &format!("copy.py, \"{w}\", \"{h}\", \"{ms}\""), "")
}

#[test]
fn a_killed_job_resumes_without_rerunning_recorded_chunks() {
    let d = tmp("kill");
    setup(&d, 40, "");
    let args = job_args("job", &["--parallel", "1"]);
    let mut child = Proc::start(&d, &args);
    // Killed once the journal holds some chunks, not after a fixed time.
    child.wait_until("3 records to kill it at", || {
        records(&d.path("job")).len() >= 3
    });
    child.kill(); // SIGKILL
    assert!(
        !d.path("out.mp4").exists(),
        "the job finished before the kill"
    );
    let before: Vec<(PathBuf, Vec<u8>)> = records(&d.path("job"))
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let recorded: Vec<u64> = before
        .iter()
        .map(|(p, _)| p.file_stem().unwrap().to_string_lossy().parse().unwrap())
        .collect();
    assert!(recorded.len() >= 3 && recorded.len() < 10, "{recorded:?}");

    let resumed = vidflow(&d, &args);
    assert_ok(&resumed, "resume");
    let ev = events(&resumed);
    assert_eq!(
        chunks_of(&ev, "chunk_reused"),
        recorded,
        "recorded chunks trusted"
    );
    let ran = chunks_of(&ev, "chunk_start");
    assert!(
        ran.iter().all(|c| !recorded.contains(c)),
        "a recorded chunk ran again: ran {ran:?}, recorded {recorded:?}"
    );
    let mut all: Vec<u64> = ran.iter().chain(&recorded).copied().collect();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    // The records of the chunks done before the kill are untouched.
    for (p, bytes) in &before {
        assert_eq!(
            &std::fs::read(p).unwrap(),
            bytes,
            "{} rewritten",
            p.display()
        );
    }

    // The same as a job that was never interrupted.
    assert_eq!(frames(&d.path("out.mp4")), local_job_frames(&d, "clean"));
}

#[test]
fn damaged_chunks_are_redone_and_a_changed_job_is_refused() {
    let d = tmp("damage");
    clip(&d.path("in.mp4"), "64x48", 4, 10, "");
    d.write("g.yaml", LOSSLESS);
    let args = job_args("job", &[]);
    assert_ok(&vidflow(&d, &args), "first run");
    let reference = frames(&d.path("out.mp4"));
    assert_eq!(reference.len(), 100);
    let job = d.path("job");
    let chunk_file = |i: usize| job.join(format!("chunks/{i:05}/enc.mp4"));
    // Chunk 1's output truncated, chunk 4's deleted, chunk 6's flipped in one byte, chunk 8's
    // record half-written.
    let f1 = std::fs::read(chunk_file(1)).unwrap();
    std::fs::write(chunk_file(1), &f1[..f1.len() / 2]).unwrap();
    std::fs::remove_file(chunk_file(4)).unwrap();
    let mut f6 = std::fs::read(chunk_file(6)).unwrap();
    let mid = f6.len() / 2;
    f6[mid] ^= 0xff;
    std::fs::write(chunk_file(6), &f6).unwrap();
    let r8 = job.join("chunks/00008.json");
    let text = std::fs::read(&r8).unwrap();
    std::fs::write(&r8, &text[..text.len() / 2]).unwrap();
    std::fs::remove_file(d.path("out.mp4")).unwrap();

    let again = vidflow(&d, &args);
    assert_ok(&again, "rerun");
    let ev = events(&again);
    assert_eq!(chunks_of(&ev, "chunk_redo"), vec![1, 4, 6, 8]);
    assert_eq!(chunks_of(&ev, "chunk_start"), vec![1, 4, 6, 8]);
    assert_eq!(chunks_of(&ev, "chunk_reused"), vec![0, 2, 3, 5, 7, 9]);
    assert_eq!(frames(&d.path("out.mp4")), reference);

    // A finished job reruns without running anything.
    let done = vidflow(&d, &args);
    assert_ok(&done, "finished job");
    assert!(chunks_of(&events(&done), "chunk_start").is_empty());

    // Another param value: refused, saying what changed and how to start over.
    let changed = vidflow(&d, &[&args[..], &["--set", "crf=1"]].concat());
    assert_eq!(changed.status.code(), Some(1), "{}", stderr(&changed));
    let e = stderr(&changed);
    assert!(e.contains("param `crf` changed: 0 → 1"), "{e}");
    assert!(e.contains("--restart"), "{e}");

    // Another input file: refused, naming it.
    clip(&d.path("in.mp4"), "64x48", 4, 10, ",hue=h=90");
    let changed = vidflow(&d, &args);
    assert_eq!(changed.status.code(), Some(1), "{}", stderr(&changed));
    let e = stderr(&changed);
    assert!(e.contains("input `in.mp4` changed"), "{e}");

    // --restart starts over.
    let restarted = vidflow(&d, &[&args[..], &["--restart"]].concat());
    assert_ok(&restarted, "restart");
    assert_eq!(chunks_of(&events(&restarted), "chunk_start").len(), 10);
    assert_ne!(
        frames(&d.path("out.mp4")),
        reference,
        "the new input is used"
    );
}

#[test]
fn a_failing_chunk_is_reported_and_only_it_is_rerun() {
    let d = tmp("fail");
    // A white box in the top-left corner from 2.0 s to 2.4 s: chunk 5 of 0.4 s chunks.
    setup(&d, 0, WHITE_CORNER);
    d.write("fail-marker", "");
    let args = job_args("job", &[]);
    let failed = vidflow(&d, &args);
    assert_eq!(failed.status.code(), Some(2), "{}", stderr(&failed));
    let e = stderr(&failed);
    assert!(
        // `--progress json`: the error is an event too.
        e.contains(r#"{"event":"error","message":"chunk 5 (0:02.0–0:02.4) failed"#)
            && e.contains("failing on purpose"),
        "{e}"
    );
    assert!(e.contains("rerun the same command"), "{e}");
    assert!(!d.path("out.mp4").exists());
    assert_eq!(chunks_of(&events(&failed), "chunk_failed"), vec![5]);

    let s = stdout(&vidflow(&d, &["job", "status", "job"]));
    assert!(
        s.contains("9 of 10 chunks done") && s.contains("1 failed"),
        "{s}"
    );
    assert!(s.contains("failed: chunk 5 (0:02.0–0:02.4)"), "{s}");

    std::fs::remove_file(d.path("fail-marker")).unwrap();
    let rerun = vidflow(&d, &args);
    assert_ok(&rerun, "rerun");
    assert_eq!(chunks_of(&events(&rerun), "chunk_start"), vec![5]);
    assert_eq!(frames(&d.path("out.mp4")).len(), 100);
}

#[test]
fn graphs_that_cannot_be_cut_get_a_located_diagnostic() {
    let d = tmp("uncuttable");
    d.write(
        "g.yaml",
        "name: g
nodes:
  - id: src
    kind: testsrc
    params: { count: 10 }
  - id: out
    kind: jsonl
    params: { path: \"-\" }
    inputs: { items: src.frames }
",
    );
    let out = vidflow(&d, &["check", "--job", "g.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("error[not-chunkable]"), "{e}");
    assert!(e.contains("g.yaml:4:11"), "located at `src`'s kind: {e}");
    assert!(e.contains("source `src` (testsrc) has no timeline"), "{e}");
    assert!(
        e.contains("g.yaml:7:11") && e.contains("standard output"),
        "{e}"
    );
    // Plain `check` is still fine with it.
    assert_ok(&vidflow(&d, &["check", "g.yaml"]), "check");
}

/// Interpolation reads one frame past each chunk and drops what belongs to the next one, and
/// the upscaler after it is per frame: the chunked run makes the same frames as the plain run,
/// the made ones across the seams included.
#[cfg(feature = "neural")]
#[test]
fn interpolate_and_upscale_seams_are_exact() {
    let d = tmp("interp");
    clip(&d.path("in.mp4"), "96x64", 2, 10, "");
    d.write(
        "g.yaml",
        "name: smooth
params:
  output: { default: out.mp4 }
nodes:
  - id: dec
    kind: decode
    params: { path: in.mp4 }
  - id: double
    kind: interpolate
    params: { multi: 2 }
    inputs: { frames: dec.frames }
  - id: sr
    kind: upscale
    params: { scale: 2 }
    inputs: { frames: double.frames }
  - id: enc
    kind: encode
    params: { path: \"${output}\", crf: 0, pix_fmt: yuv444p, preset: ultrafast }
    inputs: { frames: sr.frames, audio_packets: dec.audio_packets }
",
    );
    let (job, [a, b]) = plain_and_job_on_cpu(&d);
    assert_eq!(chunks_of(&events(&job), "chunk_done").len(), 5);
    assert_eq!(a.len(), 99, "multi 2 on 50 frames");
    assert_eq!(a, b, "frames across the seams differ");
}

/// Lip sync as a job: the speech comes from a second `decode` (AAC at 44.1 kHz, so it is
/// decoded after a seek and resampled to 16 kHz), which each chunk reads over its own time
/// widened by audio-window's context; the mel windows are placed by the audio's time, so the
/// chunked run makes the very frames of the plain run, across the seams and past the end of
/// the speech (1 s of it under 1.6 s of video: the last windows clamp to its end), and the
/// speech is the soundtrack. (The encoder's noise substitution is turned off: its noise
/// follows a generator that a seek restarts, see `decode`.)
#[cfg(feature = "neural")]
#[test]
fn a_lip_sync_job_makes_the_frames_of_the_plain_run() {
    let d = tmp("lipsync");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=128x96:rate=25",
        "-t",
        "1.6",
        "-c:v",
        "libx264",
        "-g",
        "10",
        "-pix_fmt",
        "yuv420p",
        d.path("in.mp4").to_str().unwrap(),
    ]);
    let speech = format!(
        "{}/nodes/tests/fixtures/speech_16k_mono_2s.wav",
        env!("CARGO_MANIFEST_DIR")
    );
    ffmpeg(&[
        "-i",
        &speech,
        "-t",
        "1",
        "-ar",
        "44100",
        "-c:a",
        "aac",
        "-aac_pns",
        "0",
        d.path("speech.m4a").to_str().unwrap(),
    ]);
    let weights = format!(
        "{}/nodes/tests/fixtures/wav2lip-random-seed0.fp16.pth",
        env!("CARGO_MANIFEST_DIR")
    );
    d.write(
        "g.yaml",
        &format!(
            "name: lip
params:
  output: {{ default: out.mp4 }}
nodes:
  - id: src
    kind: decode
    params: {{ path: in.mp4 }}
  - id: speech
    kind: decode
    params: {{ path: speech.m4a, audio_rate: 16000, audio_channels: 1 }}
  - id: windows
    kind: audio-window
    params: {{ mode: mel, span: 8 }}
    inputs: {{ audio: speech.audio, frames: src.frames }}
  - id: sync
    kind: lipsync
    params: {{ weights: \"{weights}\", face: [32, 24, 64, 48] }}
    batch: {{ max: 8, wait_ms: 50 }}
    inputs: {{ frames: src.frames, windows: windows.windows }}
  - id: out
    kind: encode
    params: {{ path: \"${{output}}\", crf: 0, pix_fmt: yuv444p, preset: ultrafast }}
    inputs: {{ frames: sync.frames, audio_packets: speech.audio_packets }}
"
        ),
    );
    assert_ok(&vidflow(&d, &["check", "--job", "g.yaml"]), "check --job");
    let shipped = format!("{}/graphs/lipsync.yaml", env!("CARGO_MANIFEST_DIR"));
    assert_ok(
        &vidflow(&d, &["check", "--job", &shipped]),
        "check --job graphs/lipsync.yaml",
    );
    let (job, [a, b]) = plain_and_job_on_cpu(&d);
    assert_eq!(chunks_of(&events(&job), "chunk_done"), vec![0, 1, 2, 3]);
    assert_eq!(a.len(), 40);
    assert_eq!(a, b, "the chunked run made other frames");
    // The soundtrack is the speech, copied once.
    let (aa, ab) = (
        duration(&d.path("plain.mp4"), "a:0"),
        duration(&d.path("job.mp4"), "a:0"),
    );
    assert!((aa - 1.0).abs() < 0.05, "the speech's 1 s: {aa}");
    assert!(
        (aa - ab).abs() <= 1024.0 / 44100.0,
        "audio duration {aa} vs {ab}"
    );

    // The speech is one of the job's inputs: another one is refused, naming it.
    ffmpeg(&[
        "-i",
        &speech,
        "-t",
        "0.8",
        "-ar",
        "44100",
        "-c:a",
        "aac",
        d.path("speech.m4a").to_str().unwrap(),
    ]);
    let changed = vidflow(
        &d,
        &[
            "run",
            "g.yaml",
            "--set",
            "output=job.mp4",
            "--job",
            "job",
            "--chunk-seconds",
            "0.4",
        ],
    );
    assert_eq!(changed.status.code(), Some(1), "{}", stderr(&changed));
    let e = stderr(&changed);
    assert!(e.contains("input `speech.m4a` changed"), "{e}");
}

/// Exit code and stderr of a `vidflow check --job` of `yaml`, written as `g.yaml`.
fn check_job(d: &TmpDir, yaml: &str) -> (Option<i32>, String) {
    d.write("g.yaml", yaml);
    let out = vidflow(d, &["check", "--job", "g.yaml"]);
    // Plain `check` is fine with every one of these graphs: only a job cannot cut them.
    assert_ok(&vidflow(d, &["check", "g.yaml"]), "check");
    (out.status.code(), stderr(&out))
}

#[test]
fn whole_stream_audio_context_and_undeclared_kinds_cannot_be_cut() {
    let d = tmp("uncuttable-kinds");
    // A whole-stream node (stitch).
    let (code, e) = check_job(
        &d,
        "name: g
nodes:
  - id: dec
    kind: decode
    params: { path: in.mp4 }
  - id: join
    kind: stitch
    params: { overlaps: 4 }
    inputs: { frames: dec.frames }
  - id: enc
    kind: encode
    params: { path: out.mp4 }
    inputs: { frames: join.frames }
",
    );
    assert_eq!(code, Some(1), "{e}");
    assert!(e.contains("error[not-chunkable]"), "{e}");
    assert!(e.contains("g.yaml:7:11"), "located at `join`'s kind: {e}");
    assert!(
        e.contains("node `join` (stitch) needs the whole stream: it joins segments"),
        "{e}"
    );
    assert!(e.contains("g.yaml: 1 error"), "only `join`: {e}");

    // Audio context (audio-window, in chunks mode 8 chunks before and 7 after) from the cut
    // source itself: a chunk's audio would end with its frames.
    let (code, e) = check_job(
        &d,
        "name: g
nodes:
  - id: dec
    kind: decode
    params: { path: in.mp4, audio_rate: 16000 }
  - id: win
    kind: audio-window
    params: { mode: chunks }
    inputs: { audio: dec.audio, frames: dec.frames }
  - id: out
    kind: jsonl
    params: { path: w.jsonl }
    inputs: { items: win.windows }
",
    );
    assert_eq!(code, Some(1), "{e}");
    assert!(e.contains("error[not-chunkable]"), "{e}");
    assert!(e.contains("g.yaml:7:11"), "located at `win`'s kind: {e}");
    assert!(
        e.contains(
            "node `win` (audio-window) needs 8 frames + 1 ms of audio before and 8 frames + 1 ms after each frame"
        ) && e.contains("gets its audio from `dec`, the source whose frames the job cuts")
            && e.contains("a second `decode` of the file"),
        "{e}"
    );
    assert!(e.contains("g.yaml: 1 error"), "only `win`: {e}");

    // A kind that does not declare its temporal context (session-out, a serve graph's exit).
    let (code, e) = check_job(
        &d,
        "name: g
nodes:
  - id: dec
    kind: decode
    params: { path: in.mp4 }
  - id: out
    kind: session-out
    inputs: { frames: dec.frames }
",
    );
    assert_eq!(code, Some(1), "{e}");
    assert!(e.contains("error[not-chunkable]"), "{e}");
    assert!(e.contains("g.yaml:7:11"), "located at `out`'s kind: {e}");
    assert!(
        e.contains("node `out` (session-out) does not declare its temporal context")
            && e.contains("a job cannot tell whether chunk seams would change its output"),
        "{e}"
    );
}

/// Like [`SLOW_COPY`] without the sleep, but the first white frame a run of the program sees
/// adds a line to the file named by its fourth argument, and the run fails while that file has
/// at most as many lines as its fifth: the program fails that many runs, then succeeds.
const FLAKY_COPY: &str = r#"import os, sys
w, h = int(sys.argv[1]), int(sys.argv[2])
tries, fails = os.path.join(os.path.dirname(os.path.abspath(__file__)), sys.argv[3]), int(sys.argv[4])
n = w * h * 3
counted = False
while True:
    f = sys.stdin.buffer.read(n)
    if len(f) < n:
        break
    if f[0] > 240 and f[1] > 240 and f[2] > 240 and not counted:
        counted = True
        with open(tries, "a") as t:
            t.write("try\n")
        with open(tries) as t:
            if len(t.readlines()) <= fails:
                sys.stderr.write("white frame: failing on purpose\n")
                sys.exit(3)
    sys.stdout.buffer.write(f)
    sys.stdout.buffer.flush()
"#;

fn flaky_graph(tries: &str, fails: u32) -> String {
    copy_graph(
        "flaky",
        &format!("flaky.py, \"64\", \"48\", \"{tries}\", \"{fails}\""),
        "    on_error: { retry: 2 }\n",
    )
}

#[test]
fn a_failing_chunk_is_retried_as_on_error_says() {
    let d = tmp("retry");
    // A white box in the top-left corner from 2.0 s to 2.4 s: chunk 5 of 0.4 s chunks.
    clip(&d.path("in.mp4"), "64x48", 4, 10, WHITE_CORNER);
    d.write("flaky.py", FLAKY_COPY);
    let tries = |name: &str| {
        std::fs::read_to_string(d.path(name))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let failures = |ev: &[serde_json::Value]| -> Vec<(u64, bool)> {
        ev.iter()
            .filter(|e| e["event"] == "chunk_failed")
            .map(|e| (e["chunk"].as_u64().unwrap(), e["retry"].as_bool().unwrap()))
            .collect()
    };

    // The program fails its first run on the white frames: the chunk's second run succeeds.
    d.write("once.yaml", &flaky_graph("once.tries", 1));
    let args = [
        "run",
        "once.yaml",
        "--progress",
        "json",
        "--job",
        "once",
        "--chunk-seconds",
        "0.4",
    ];
    let once = vidflow(&d, &args);
    assert_ok(&once, "a chunk that fails once");
    let ev = events(&once);
    assert_eq!(failures(&ev), vec![(5, true)], "{}", stderr(&once));
    let starts: Vec<u64> = ev
        .iter()
        .filter(|e| e["event"] == "chunk_start" && e["chunk"] == 5)
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, vec![1, 2]);
    assert_eq!(
        tries("once.tries"),
        2,
        "one failed run of the program, one good"
    );
    assert!(
        d.path("once/chunks/00005.json").exists(),
        "chunk 5 recorded"
    );
    assert!(!d.path("once/chunks/00005.failed.json").exists());
    assert_eq!(records(&d.path("once")).len(), 10);
    assert_eq!(frames(&d.path("out.mp4")).len(), 100);

    // It always fails: `retry: 2` runs the chunk three times in all, then it is failed.
    d.write("always.yaml", &flaky_graph("always.tries", 1000));
    let always = vidflow(
        &d,
        &[
            "run",
            "always.yaml",
            "--progress",
            "json",
            "--set",
            "output=always.mp4",
            "--job",
            "always",
            "--chunk-seconds",
            "0.4",
        ],
    );
    assert_eq!(always.status.code(), Some(2), "{}", stderr(&always));
    assert_eq!(
        failures(&events(&always)),
        vec![(5, true), (5, true), (5, false)]
    );
    assert_eq!(tries("always.tries"), 3, "retry 2: three tries in all");
    assert!(d.path("always/chunks/00005.failed.json").exists());
    assert!(!d.path("always.mp4").exists());
}

#[test]
fn an_interrupted_job_records_nothing_as_failed_and_resumes() {
    let d = tmp("sigint");
    setup(&d, 40, "");
    let args = job_args("job", &["--parallel", "1"]);
    let mut child = Proc::start(&d, &args);
    // Interrupted once the journal holds some chunks, while the next one runs.
    child.wait_until("2 records to interrupt it at", || {
        records(&d.path("job")).len() >= 2
    });
    assert!(child.signal("-INT"));
    // SIGINT stops the job (a hang fails the test).
    let (code, lines) = child.finish_within(Duration::from_secs(120));
    let log = lines.join("\n");
    // main.rs: "2 runtime failure or interrupted".
    assert_eq!(code, 2, "{log}");
    let ev = json_events(&log);
    assert!(
        chunks_of(&ev, "chunk_failed").is_empty(),
        "an interrupted chunk was failed: {log}"
    );
    let end = ev.iter().find(|e| e["event"] == "job_end").expect(&log);
    assert_eq!(end["interrupted"], true, "{end}");
    assert_eq!(end["failed"], serde_json::json!([]), "{end}");

    let recorded: Vec<u64> = records(&d.path("job"))
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().parse().unwrap())
        .collect();
    assert!(recorded.len() >= 2 && recorded.len() < 10, "{recorded:?}");
    let in_flight: Vec<u64> = chunks_of(&ev, "chunk_start")
        .into_iter()
        .filter(|c| !recorded.contains(c))
        .collect();
    assert_eq!(chunks_of(&ev, "chunk_abandoned"), in_flight, "{log}");
    // Nothing failed, nothing half-written: no failed record, no partial file in the chunks
    // or where the output goes, and no output.
    let mut leftovers = vec![];
    let mut folders = vec![d.path("job"), d.path("job/chunks"), d.to_path_buf()];
    while let Some(dir) = folders.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() && dir.ends_with("chunks") {
                folders.push(p.clone());
            }
            if name.ends_with(".failed.json") || name.contains(".partial") || name.ends_with(".tmp")
            {
                leftovers.push(p);
            }
        }
    }
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for c in &in_flight {
        assert!(
            !d.path(&format!("job/chunks/{c:05}")).exists(),
            "the abandoned chunk {c} left its folder"
        );
    }
    assert!(!d.path("out.mp4").exists(), "the job finished");

    // The same command resumes: the recorded chunks are reused, the others run, the job ends.
    let resumed = vidflow(&d, &args);
    assert_ok(&resumed, "resume");
    let ev = events(&resumed);
    assert_eq!(chunks_of(&ev, "chunk_reused"), recorded);
    let ran = chunks_of(&ev, "chunk_start");
    let mut all: Vec<u64> = ran.iter().chain(&recorded).copied().collect();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>(), "ran {ran:?}");
    assert_eq!(frames(&d.path("out.mp4")).len(), 100);
}
