//! Media I/O end to end on clips made at test time with the ffmpeg CLI (testsrc2 + sine):
//! decode → encode keeps frame counts, timestamps (also of a variable-frame-rate clip) and the
//! audio's duration; sampling and time windows pick the right frames; PNG sequences round-trip
//! losslessly; split then stitch gives back the original frames; overlaps blend as documented.
//! Outputs are checked with ffprobe, or decoded again and compared byte for byte.

use crate::common::{assert_ok, ffmpeg, ffprobe, load, tmp};
use std::path::Path;
use std::sync::{Arc, Mutex};
use vidflow_engine::Emitter;
use vidflow_engine::exec::{self, RunOptions, RunReport};
use vidflow_engine::{
    AudioChunk, Frame, Input, Mode, NodeError, NodeKind, Payload, PixelFormat, PortType, Process,
    Runtime, SourceFile,
};

pub(crate) type Kept = Arc<Mutex<Vec<(String, Payload)>>>;

/// A sink that keeps what reaches it, by node id (tests only; the clips are small).
struct Collect(String, Kept);

impl Process for Collect {
    fn process(&mut self, input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let mut k = self.1.lock().unwrap();
        for item in input.items {
            k.push((self.0.clone(), item));
        }
        Ok(())
    }
}

/// Sets every pixel of a frame to `value` by segment (`paint: [v0, v1, …]`), to see blends.
struct Paint(Vec<u8>);

impl Process for Paint {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            let Payload::Frame(f) = item else { continue };
            let seg = f
                .meta
                .as_deref()
                .and_then(|m| m.get("segment"))
                .and_then(|s| s.as_u64())
                .unwrap_or(0) as usize;
            let mut g = f.clone();
            g.data = Arc::new(vec![self.0[seg % self.0.len()]; f.data.len()]);
            out.emit(0, Payload::Frame(g))?;
        }
        Ok(())
    }
}

/// Registers `collect`, a sink that keeps every item in `kept` (also used by `jobs_media`).
pub(crate) fn register_collect(r: &mut vidflow_engine::Registry, kept: &Kept) {
    let k = kept.clone();
    r.register(
        NodeKind::new("collect", "Keeps every item (tests only).", move |ctx| {
            Ok(Runtime::Process(Box::new(Collect(
                ctx.node_id.to_string(),
                k.clone(),
            ))))
        })
        .input("items", PortType::ANY, "anything"),
    );
}

fn registry(kept: &Kept) -> vidflow_engine::Registry {
    let mut r = vidflow_nodes::registry();
    register_collect(&mut r, kept);
    // `collect` for frames, taking YUV 4:2:0 too (as `encode` does).
    let k = kept.clone();
    r.register(
        NodeKind::new(
            "collect-yuv",
            "Keeps every frame, RGB or YUV (tests only).",
            move |ctx| {
                Ok(Runtime::Process(Box::new(Collect(
                    ctx.node_id.to_string(),
                    k.clone(),
                ))))
            },
        )
        .input("frames", PortType::FRAMES, "frames")
        .accepts("frames", &[PixelFormat::Yuv420p, PixelFormat::Rgb24]),
    );
    r.register(
        NodeKind::new("paint", "Paints frames by segment (tests only).", |ctx| {
            Ok(Runtime::Process(Box::new(Paint(
                ctx.params.parse("values")?,
            ))))
        })
        .input("frames", PortType::FRAMES, "frames")
        .output("frames", PortType::FRAMES, "painted frames")
        .param(vidflow_engine::ParamSpec::required(
            "values",
            vidflow_engine::ParamType::Json,
            "value per segment",
        )),
    );
    r
}

fn run(yaml: &str) -> (RunReport, Vec<(String, Payload)>) {
    let kept: Kept = Arc::default();
    let reg = registry(&kept);
    let graph = vidflow_engine::check_source(
        SourceFile::new("test.yaml", yaml.to_string()),
        &reg,
        &[],
        Mode::Run,
    )
    .unwrap_or_else(|e| panic!("graph does not check:\n{}", e.render()));
    let report = exec::run(&graph, RunOptions::default());
    let items = std::mem::take(&mut *kept.lock().unwrap());
    (report, items)
}

fn frames_of<'a>(items: &'a [(String, Payload)], node: &str) -> Vec<&'a Frame> {
    items
        .iter()
        .filter(|(n, _)| n == node)
        .filter_map(|(_, p)| p.as_frame())
        .collect()
}

fn audio_of<'a>(items: &'a [(String, Payload)], node: &str) -> Vec<&'a AudioChunk> {
    items
        .iter()
        .filter(|(n, _)| n == node)
        .filter_map(|(_, p)| p.as_audio())
        .collect()
}

/// A testsrc2 clip, with a sine tone when `audio` is (rate, channels).
fn clip(path: &Path, size: &str, rate: &str, secs: f64, audio: Option<(u32, u32)>, extra: &[&str]) {
    let src = format!("testsrc2=size={size}:rate={rate}");
    let t = secs.to_string();
    let mut args: Vec<String> = vec!["-f".into(), "lavfi".into(), "-i".into(), src];
    if let Some((ar, _)) = audio {
        args.extend([
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            format!("sine=frequency=440:sample_rate={ar}"),
        ]);
    }
    args.extend(["-t".into(), t]);
    args.extend(extra.iter().map(|s| s.to_string()));
    if !extra.contains(&"-c:v") {
        args.extend([
            "-c:v".into(),
            "libx264".into(),
            "-pix_fmt".into(),
            "yuv420p".into(),
        ]);
    }
    if let Some((_, ac)) = audio {
        if !extra.contains(&"-c:a") {
            args.extend(["-c:a".into(), "aac".into()]);
        }
        args.extend(["-ac".into(), ac.to_string()]);
    }
    args.push(path.to_str().unwrap().into());
    ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Presentation times of the video frames, in display order.
fn frame_times(path: &Path) -> Vec<f64> {
    let mut t: Vec<f64> = ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=best_effort_timestamp_time",
            "-of",
            "csv=p=0",
        ],
        path,
    )
    .lines()
    .filter_map(|l| l.split(',').next()?.trim().parse().ok())
    .collect();
    t.sort_by(f64::total_cmp);
    t
}

/// (codec, duration in seconds, sample rate) of the first audio stream, if any.
fn audio_stream(path: &Path) -> Option<(String, f64, u32)> {
    let s = ffprobe(
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=codec_name,duration,sample_rate",
            "-of",
            "default=nw=1",
        ],
        path,
    );
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    let codec = get("codec_name")?;
    Some((
        codec,
        get("duration")?.parse().ok()?,
        get("sample_rate")?.parse().ok()?,
    ))
}

/// Duration of the first video stream, in seconds.
fn video_duration(path: &Path) -> f64 {
    let s = ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=duration",
            "-of",
            "csv=p=0",
        ],
        path,
    );
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no video duration for {}: {s:?}", path.display()))
}

fn graph_file(name: &str) -> String {
    format!("{}/../graphs/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs graphs/transcode.yaml on `input`.
fn transcode(input: &Path, output: &Path) {
    let set = vidflow_engine::parse_overrides(&[
        format!("input={}", input.display()),
        format!("output={}", output.display()),
    ])
    .unwrap();
    let graph = vidflow_engine::load_and_check(
        &graph_file("transcode.yaml"),
        &vidflow_nodes::registry(),
        &set,
        Mode::Run,
    )
    .unwrap_or_else(|e| panic!("transcode.yaml does not check:\n{}", e.render()));
    assert_ok(&exec::run(&graph, RunOptions::default()));
}

fn check_transcode(dir: &Path, name: &str) {
    let input = dir.join(format!("{name}.mp4"));
    let output = dir.join(format!("{name}-out.mp4"));
    transcode(&input, &output);
    assert!(output.exists(), "{} was not written", output.display());
    let (a, b) = (frame_times(&input), frame_times(&output));
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len(), "{name}: frame count changed");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() < 1e-3,
            "{name}: frame {i} at {x} s became {y} s"
        );
    }
    // The last frame keeps its duration (libx264 leaves packet durations 0, and the mp4
    // muxer then gives the last frame none).
    let (vi, vo) = (video_duration(&input), video_duration(&output));
    assert!(
        (vi - vo).abs() < 1e-3,
        "{name}: the video lasted {vi} s, now {vo} s"
    );
    match (audio_stream(&input), audio_stream(&output)) {
        (None, None) => {}
        (Some((ci, di, rate)), Some((co, d_out, _))) => {
            assert_eq!(ci, co, "{name}: the audio should be copied");
            let frame = 1024.0 / rate as f64;
            assert!(
                (di - d_out).abs() <= frame,
                "{name}: audio lasted {di} s, now {d_out} s"
            );
        }
        (i, o) => panic!("{name}: audio {i:?} became {o:?}"),
    }
    // Nothing temporary is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn transcode_keeps_frames_timestamps_and_audio() {
    let dir = tmp("transcode");
    clip(
        &dir.join("a.mp4"),
        "320x240",
        "25",
        3.0,
        Some((44100, 1)),
        &[],
    );
    clip(
        &dir.join("b.mp4"),
        "640x360",
        "30000/1001",
        2.0,
        Some((48000, 2)),
        &[],
    );
    clip(&dir.join("c.mp4"), "176x144", "24", 2.0, None, &[]);
    // Variable frame rate: frames dropped irregularly, timestamps kept.
    clip(
        &dir.join("vfr.mp4"),
        "320x240",
        "30",
        3.0,
        Some((44100, 1)),
        &[
            "-vf",
            "select='not(eq(mod(n\\,5)\\,2))*not(eq(mod(n\\,7)\\,3))'",
            "-vsync",
            "vfr",
        ],
    );
    let vfr = frame_times(&dir.join("vfr.mp4"));
    let steps: Vec<i64> = vfr
        .windows(2)
        .map(|w| ((w[1] - w[0]) * 300.0).round() as i64)
        .collect();
    assert!(
        steps.iter().any(|s| *s != steps[0]),
        "the VFR clip should have uneven frame spacing"
    );
    for name in ["a", "b", "c", "vfr"] {
        check_transcode(&dir, name);
    }
}

#[test]
fn audio_that_the_container_cannot_hold_is_reencoded() {
    let dir = tmp("reencode");
    let input = dir.join("pcm.mov");
    clip(
        &input,
        "160x120",
        "25",
        2.0,
        Some((48000, 2)),
        &["-c:a", "pcm_s16le"],
    );
    let output = dir.join("pcm-out.mp4");
    transcode(&input, &output);
    let (ci, di, _) = audio_stream(&input).unwrap();
    let (co, d_out, rate) = audio_stream(&output).unwrap();
    assert_eq!((ci.as_str(), co.as_str()), ("pcm_s16le", "aac"));
    assert!(
        (di - d_out).abs() <= 1024.0 / rate as f64,
        "audio lasted {di} s, now {d_out} s"
    );
    assert_eq!(frame_times(&input).len(), frame_times(&output).len());
}

/// `decode` hands on the decoder's YUV 4:2:0 only from a 4:2:0 source: a 4:4:4 one (or any
/// other) comes as RGB24, the very frames an RGB-only consumer gets, never squeezed into 4:2:0
/// with the chroma it would lose.
#[test]
fn only_a_4_2_0_source_is_handed_on_as_yuv() {
    let dir = tmp("yuv-source");
    for (name, pix_fmt) in [("420.mp4", "yuv420p"), ("444.mp4", "yuv444p")] {
        let input = dir.join(name);
        let args = ["-c:v", "libx264", "-crf", "0", "-pix_fmt", pix_fmt];
        clip(&input, "64x48", "25", 0.4, None, &args);
        let p = input.display();
        let (report, items) = run(&format!(
            r#"
name: yuv-source
nodes:
  - {{ id: dec, kind: decode, params: {{ path: "{p}" }} }}
  - {{ id: rgb, kind: decode, params: {{ path: "{p}" }} }}
  - {{ id: either, kind: collect-yuv, inputs: {{ frames: dec.frames }} }}
  - {{ id: rgb_only, kind: collect, inputs: {{ items: rgb.frames }} }}
"#
        ));
        assert_ok(&report);
        let (got, rgb) = (frames_of(&items, "either"), frames_of(&items, "rgb_only"));
        assert_eq!(got.len(), 10, "{name}");
        assert_eq!(rgb.len(), 10, "{name}");
        for (f, r) in got.iter().zip(&rgb) {
            assert_eq!(r.format, PixelFormat::Rgb24);
            if pix_fmt == "yuv420p" {
                assert_eq!(f.format, PixelFormat::Yuv420p, "{name}");
                assert_eq!(f.data.len(), 64 * 48 * 3 / 2, "{name}");
            } else {
                assert_eq!(f.format, PixelFormat::Rgb24, "{name}");
                assert_eq!(f.data, r.data, "{name}: frame {}", f.index);
            }
        }
    }
}

#[test]
fn sampling_and_windows_pick_the_right_frames() {
    let dir = tmp("sampling");
    let input = dir.join("a.mp4");
    clip(&input, "160x120", "25", 4.0, None, &[]);
    let p = input.display();
    let yaml = format!(
        r#"
name: sampling
nodes:
  - {{ id: all, kind: decode, params: {{ path: "{p}" }} }}
  - {{ id: every, kind: decode, params: {{ path: "{p}", every: 7 }} }}
  - {{ id: fps, kind: decode, params: {{ path: "{p}", fps: 2 }} }}
  - {{ id: slow, kind: decode, params: {{ path: "{p}", fps: 0.3 }} }}
  - {{ id: window, kind: decode, params: {{ path: "{p}", start: 1.5, end: 2.5 }} }}
  - {{ id: frames, kind: decode, params: {{ path: "{p}", start_frame: 10, end_frame: 20, every: 3 }} }}
  - {{ id: small, kind: decode, params: {{ path: "{p}", width: 80 }} }}
  - {{ id: c_all, kind: collect, inputs: {{ items: all.frames }} }}
  - {{ id: c_every, kind: collect, inputs: {{ items: every.frames }} }}
  - {{ id: c_fps, kind: collect, inputs: {{ items: fps.frames }} }}
  - {{ id: c_slow, kind: collect, inputs: {{ items: slow.frames }} }}
  - {{ id: c_window, kind: collect, inputs: {{ items: window.frames }} }}
  - {{ id: c_frames, kind: collect, inputs: {{ items: frames.frames }} }}
  - {{ id: c_small, kind: collect, inputs: {{ items: small.frames }} }}
"#
    );
    let (report, items) = run(&yaml);
    assert_ok(&report);
    let all = frames_of(&items, "c_all");
    assert_eq!(all.len(), 100);
    for (i, f) in all.iter().enumerate() {
        assert_eq!(f.index, i as u64);
        assert!(
            (f.pts - i as f64 / 25.0).abs() < 1e-6,
            "frame {i} at {}",
            f.pts
        );
        assert_eq!((f.width, f.height, f.rate.fps()), (160, 120, 25.0));
    }
    // Each sampled frame must be the very frame of the full decode at its index.
    let same = |got: &[&Frame], want: &[u64], what: &str| {
        let idx: Vec<u64> = got.iter().map(|f| f.index).collect();
        assert_eq!(idx, want, "{what}: wrong frames");
        for f in got {
            let o = all[f.index as usize];
            assert!(
                f.data == o.data && (f.pts - o.pts).abs() < 1e-6,
                "{what}: frame {} differs from the full decode",
                f.index
            );
        }
    };
    same(
        &frames_of(&items, "c_every"),
        &(0..100).step_by(7).collect::<Vec<_>>(),
        "every: 7",
    );
    // fps: the first frame at or after each multiple of the interval.
    let pick = |interval: f64| -> Vec<u64> {
        let mut out = vec![];
        let mut t = 0.0;
        for f in &all {
            if f.pts + 1e-6 >= t {
                out.push(f.index);
                while t <= f.pts + 1e-6 {
                    t += interval;
                }
            }
        }
        out
    };
    same(&frames_of(&items, "c_fps"), &pick(0.5), "fps: 2");
    assert_eq!(pick(0.5), vec![0, 13, 25, 38, 50, 63, 75, 88]);
    same(&frames_of(&items, "c_slow"), &[0, 84], "fps: 0.3");
    same(
        &frames_of(&items, "c_window"),
        &(38..63).collect::<Vec<_>>(),
        "start 1.5 end 2.5",
    );
    same(
        &frames_of(&items, "c_frames"),
        &[10, 13, 16, 19],
        "start_frame 10 end_frame 20 every 3",
    );
    let small = frames_of(&items, "c_small");
    assert_eq!(small.len(), 100);
    assert_eq!((small[0].width, small[0].height), (80, 60));
}

#[test]
fn audio_decodes_to_f32_at_the_requested_rate_and_encodes_back() {
    let dir = tmp("audio");
    let input = dir.join("a.mp4");
    clip(&input, "160x120", "25", 3.0, Some((44100, 2)), &[]);
    let out = dir.join("from-f32.mp4");
    let yaml = format!(
        r#"
name: audio
nodes:
  - {{ id: lip, kind: decode, params: {{ path: "{i}", audio_rate: 16000, audio_channels: 1 }} }}
  - {{ id: dec, kind: decode, params: {{ path: "{i}" }} }}
  - {{ id: enc, kind: encode, params: {{ path: "{o}", preset: ultrafast }}, inputs: {{ frames: dec.frames, audio: dec.audio }} }}
  - {{ id: pcm, kind: collect, inputs: {{ items: lip.audio }} }}
"#,
        i = input.display(),
        o = out.display()
    );
    let (report, items) = run(&yaml);
    assert_ok(&report);
    let chunks = audio_of(&items, "pcm");
    assert!(!chunks.is_empty());
    let total: usize = chunks.iter().map(|c| c.samples.len()).sum();
    for w in chunks.windows(2) {
        assert_eq!((w[0].sample_rate, w[0].channels), (16000, 1));
        assert!(
            (w[0].pts + w[0].duration() - w[1].pts).abs() < 1e-6,
            "chunks should be contiguous"
        );
    }
    let (_, src_dur, src_rate) = audio_stream(&input).unwrap();
    let got = total as f64 / 16000.0;
    assert!(
        (got - src_dur).abs() <= 1024.0 / src_rate as f64,
        "decoded {got} s of audio from a {src_dur} s stream"
    );
    // A 440 Hz tone stays a 440 Hz tone: count zero crossings over the middle second.
    let s: Vec<f32> = chunks
        .iter()
        .flat_map(|c| c.samples.iter().copied())
        .collect();
    let mid = &s[16000..32000];
    let crossings = mid
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    assert!(
        (870..=890).contains(&crossings),
        "{crossings} zero crossings in one second"
    );
    // f32 → AAC keeps the duration within one audio frame.
    let (codec, d, rate) = audio_stream(&out).unwrap();
    assert_eq!(codec, "aac");
    assert!(
        (d - src_dur).abs() <= 1024.0 / rate as f64,
        "encoded {d} s of audio from {src_dur} s"
    );
    assert_eq!(frame_times(&out).len(), 75);
}

#[test]
fn png_sequences_round_trip_losslessly() {
    let dir = tmp("png");
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:rate=10",
        "-frames:v",
        "12",
        dir.join("in/%05d.png").to_str().unwrap(),
    ]);
    let yaml = format!(
        r#"
name: png
nodes:
  - {{ id: dec, kind: decode, params: {{ path: "{d}/in/%05d.png" }} }}
  - {{ id: enc, kind: encode, params: {{ path: "{d}/out/%05d.png" }}, inputs: {{ frames: dec.frames }} }}
  - {{ id: keep, kind: collect, inputs: {{ items: dec.frames }} }}
"#,
        d = dir.display()
    );
    let (report, items) = run(&yaml);
    assert_ok(&report);
    let src = frames_of(&items, "keep");
    assert_eq!(src.len(), 12);
    let mut names: Vec<String> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        (1..=12).map(|i| format!("{i:05}.png")).collect::<Vec<_>>()
    );
    // Read the written sequence back (by glob this time) and compare pixels.
    let yaml = format!(
        r#"
name: back
nodes:
  - {{ id: dec, kind: decode, params: {{ path: "{d}/out/*.png" }} }}
  - {{ id: keep, kind: collect, inputs: {{ items: dec.frames }} }}
"#,
        d = dir.display()
    );
    let (report, back) = run(&yaml);
    assert_ok(&report);
    let back = frames_of(&back, "keep");
    assert_eq!(back.len(), 12);
    for (a, b) in src.iter().zip(&back) {
        assert_eq!((a.width, a.height), (b.width, b.height));
        assert!(a.data == b.data, "frame {} changed through PNG", a.index);
    }
}

#[test]
fn split_then_stitch_gives_back_the_original_frames() {
    let dir = tmp("split");
    let input = dir.join("a.mp4");
    clip(&input, "128x96", "25", 3.0, None, &[]);
    let yaml = format!(
        r#"
name: split-stitch
nodes:
  - {{ id: dec, kind: decode, params: {{ path: "{i}" }} }}
  - {{ id: cut, kind: split, params: {{ segment_frames: [20, 30, 25] }}, inputs: {{ frames: dec.frames }} }}
  - {{ id: join, kind: stitch, inputs: {{ frames: cut.frames }} }}
  - {{ id: cut2, kind: split, params: {{ segment_frames: [20, 34, 30], overlaps: [5, 4] }}, inputs: {{ frames: dec.frames }} }}
  - {{ id: join2, kind: stitch, params: {{ overlaps: [5, 4], blend: linear }}, inputs: {{ frames: cut2.frames }} }}
  - {{ id: files, kind: split, params: {{ segment_frames: 30, path: "{d}/seg_{{index}}.mp4", preset: ultrafast }}, inputs: {{ frames: dec.frames }} }}
  - {{ id: orig, kind: collect, inputs: {{ items: dec.frames }} }}
  - {{ id: tagged, kind: collect, inputs: {{ items: cut2.frames }} }}
  - {{ id: back, kind: collect, inputs: {{ items: join.frames }} }}
  - {{ id: back2, kind: collect, inputs: {{ items: join2.frames }} }}
"#,
        i = input.display(),
        d = dir.display()
    );
    let (report, items) = run(&yaml);
    assert_ok(&report);
    let orig = frames_of(&items, "orig");
    assert_eq!(orig.len(), 75);
    for node in ["back", "back2"] {
        let back = frames_of(&items, node);
        assert_eq!(back.len(), orig.len(), "{node}");
        for (a, b) in orig.iter().zip(&back) {
            assert_eq!(a.index, b.index, "{node}");
            assert!(
                (a.pts - b.pts).abs() < 1e-9,
                "{node}: frame {} at {} came back at {}",
                a.index,
                a.pts,
                b.pts
            );
            assert!(a.data == b.data, "{node}: frame {} changed", a.index);
            assert!(b.meta.is_none(), "{node}: segment tags should be removed");
        }
    }
    // The tagged stream: segment by segment, overlaps repeated.
    let tagged = frames_of(&items, "tagged");
    let tags: Vec<(u64, u64, u64)> = tagged
        .iter()
        .map(|f| {
            let m = f.meta.as_deref().unwrap();
            (
                m["segment"].as_u64().unwrap(),
                m["segment_frame"].as_u64().unwrap(),
                f.index,
            )
        })
        .collect();
    assert_eq!(tags.len(), 20 + 34 + 30);
    assert_eq!(tags[19], (0, 19, 19));
    assert_eq!(tags[20], (1, 0, 15));
    assert_eq!(tags[53], (1, 33, 48));
    assert_eq!(tags[54], (2, 0, 45));
    assert_eq!(tags[83], (2, 29, 74));
    // Fixed-size segment files: 30, 30 and the 15 left.
    let counts: Vec<usize> = (0..3)
        .map(|i| frame_times(&dir.join(format!("seg_{i}.mp4"))).len())
        .collect();
    assert_eq!(counts, vec![30, 30, 15]);
    assert!(!dir.join("seg_3.mp4").exists());
}

#[test]
fn overlaps_cross_fade_or_cut() {
    let dir = tmp("blend");
    let input = dir.join("a.mp4");
    clip(&input, "64x48", "25", 1.0, None, &[]);
    let yaml = format!(
        r#"
name: blend
nodes:
  - {{ id: dec, kind: decode, params: {{ path: "{i}" }} }}
  - {{ id: cut, kind: split, params: {{ segment_frames: [10, 19], overlaps: 4 }}, inputs: {{ frames: dec.frames }} }}
  - {{ id: paint, kind: paint, params: {{ values: [200, 0] }}, inputs: {{ frames: cut.frames }} }}
  - {{ id: fade, kind: stitch, params: {{ overlaps: 4, blend: linear }}, inputs: {{ frames: paint.frames }} }}
  - {{ id: hard, kind: stitch, params: {{ overlaps: 4, blend: cut }}, inputs: {{ frames: paint.frames }} }}
  - {{ id: c_fade, kind: collect, inputs: {{ items: fade.frames }} }}
  - {{ id: c_hard, kind: collect, inputs: {{ items: hard.frames }} }}
"#,
        i = input.display()
    );
    let (report, items) = run(&yaml);
    assert_ok(&report);
    let value = |fs: Vec<&Frame>| -> Vec<u8> { fs.iter().map(|f| f.data[0]).collect() };
    let fade = value(frames_of(&items, "c_fade"));
    let hard = value(frames_of(&items, "c_hard"));
    assert_eq!(fade.len(), 25);
    // Segment 0 alone (6 frames), the 4-frame overlap, then segment 1 alone.
    let mut want = vec![200u8; 6];
    want.extend([160, 120, 80, 40]); // 200 * (1 - j/5), j = 1..4
    want.extend(vec![0u8; 15]);
    assert_eq!(fade, want);
    let mut want = vec![200u8; 8];
    want.extend(vec![0u8; 17]);
    assert_eq!(hard, want);
}

#[test]
fn a_failed_run_leaves_no_output() {
    let dir = tmp("failed");
    let input = dir.join("a.mp4");
    clip(&input, "64x48", "25", 1.0, None, &[]);
    let out = dir.join("out.mp4");
    // A plan longer than the stream fails at the end; the encoder must not leave a file.
    let yaml = format!(
        r#"
name: fail
nodes:
  - {{ id: dec, kind: decode, params: {{ path: "{i}" }} }}
  - {{ id: cut, kind: split, params: {{ segment_frames: [20, 20] }}, inputs: {{ frames: dec.frames }} }}
  - {{ id: enc, kind: encode, params: {{ path: "{o}" }}, inputs: {{ frames: cut.frames }} }}
"#,
        i = input.display(),
        o = out.display()
    );
    let (report, _) = run(&yaml);
    let f = report.failure.as_ref().expect("the run fails");
    assert_eq!(f.node, "cut");
    assert!(matches!(f.error, NodeError::Input(_)), "{f}");
    assert!(f.error.to_string().contains("ended after 25 frames"), "{f}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("a.mp4")],
        "only the input should remain"
    );
}

#[test]
fn colours_survive_encoding() {
    let dir = tmp("colours");
    let out = dir.join("bars.mp4");
    let yaml = format!(
        r#"
name: bars
nodes:
  - {{ id: src, kind: testsrc, params: {{ width: 320, height: 180, count: 10, rate: 25 }} }}
  - {{ id: enc, kind: encode, params: {{ path: "{o}", crf: 4, preset: ultrafast, pix_fmt: yuv444p }}, inputs: {{ frames: src.frames }} }}
"#,
        o = out.display()
    );
    assert_ok(&run(&yaml).0);
    let out420 = dir.join("bars420.mp4");
    assert_ok(
        &run(&yaml
            .replace("bars.mp4", "bars420.mp4")
            .replace(", pix_fmt: yuv444p", ""))
        .0,
    );
    for (file, limit) in [(&out, 2.0), (&out420, 8.0)] {
        let yaml = format!(
            "name: back\nnodes:\n  - {{ id: dec, kind: decode, params: {{ path: \"{}\" }} }}\n  - {{ id: keep, kind: collect, inputs: {{ items: dec.frames }} }}\n",
            file.display()
        );
        let (report, items) = run(&yaml);
        assert_ok(&report);
        let back = frames_of(&items, "keep");
        assert_eq!(back.len(), 10);
        for f in back {
            let want = vidflow_nodes::kinds::testsrc::pattern(320, 180, f.index, 25.0);
            // Mean absolute error per channel: a swapped or wrong colour matrix is far off.
            for c in 0..3 {
                let err: f64 = f
                    .data
                    .chunks(3)
                    .zip(want.chunks(3))
                    .map(|(a, b)| (a[c] as f64 - b[c] as f64).abs())
                    .sum::<f64>()
                    / (320.0 * 180.0);
                assert!(
                    err < limit,
                    "{}: frame {} channel {c}: mean error {err:.2}",
                    file.display(),
                    f.index
                );
            }
        }
    }
}

#[test]
fn an_interrupted_encode_leaves_no_file() {
    let dir = tmp("interrupt");
    let out = dir.join("long.mp4");
    let yaml = format!(
        "name: long\nnodes:\n  - {{ id: src, kind: testsrc, params: {{ width: 320, height: 180, count: 100000, rate: 25 }} }}\n  - {{ id: enc, kind: encode, params: {{ path: \"{}\", preset: ultrafast }}, inputs: {{ frames: src.frames }} }}\n",
        out.display()
    );
    let reg = vidflow_nodes::registry();
    let graph = load("long.yaml", &yaml, &[], &reg);
    let stop = vidflow_engine::exec::StopFlag::new();
    let stopper = stop.clone();
    let watch_dir = dir.to_path_buf();
    let watcher = std::thread::spawn(move || {
        // Stop once the encoder has started writing its temporary `.long.mp4.<pid>-<n>.partial`.
        let t = std::time::Instant::now();
        let written = || {
            std::fs::read_dir(&watch_dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(".long.mp4.")
                        && n.ends_with(".partial")
                        && e.metadata().map_or(0, |m| m.len()) > 0
                })
        };
        while !written() {
            assert!(
                t.elapsed().as_secs() < 60,
                "the encoder never started writing"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        stopper.stop();
    });
    let report = exec::run(
        &graph,
        RunOptions {
            stop,
            ..Default::default()
        },
    );
    watcher.join().unwrap();
    assert!(report.interrupted && report.failure.is_none(), "{report:?}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "files left after an interrupted run: {left:?}"
    );
}

#[test]
fn odd_sizes_are_a_clear_error() {
    let dir = tmp("sizes");
    let out = dir.join("odd.mp4");
    let yaml = format!(
        "name: odd\nnodes:\n  - {{ id: src, kind: testsrc, params: {{ width: 321, height: 180, count: 5 }} }}\n  - {{ id: enc, kind: encode, params: {{ path: \"{}\" }}, inputs: {{ frames: src.frames }} }}\n",
        out.display()
    );
    let (report, _) = run(&yaml);
    let f = report
        .failure
        .as_ref()
        .expect("odd width with yuv420p fails");
    assert_eq!(f.node, "enc");
    assert!(
        matches!(f.error, NodeError::Input(_)) && f.error.to_string().contains("even width"),
        "{f}"
    );
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "nothing should be written"
    );
    // The same frames encode with a pixel format without chroma subsampling.
    let (report, _) = run(&yaml.replace("path:", "pix_fmt: yuv444p, path:"));
    assert_ok(&report);
    assert_eq!(frame_times(&out).len(), 5);
}
