//! The media side of jobs (`vidflow run --job`), on clips made at test time: a source's
//! timeline (read from packets) lists exactly the frames `decode` emits, with the very same
//! `pts`, and keyframes where the encoder put them (`encode`'s `gop`); `decode` restricted to
//! a chunk emits exactly that chunk's frames; chunks encoded apart and joined (`encode`'s
//! assembly, with the source audio copied once) give the same frames, timing and audio as one
//! unchunked encode; `jsonl` joins its chunk files in order.

use crate::common::{assert_ok, ffmpeg, ffprobe, tmp};
use crate::media::{Kept, register_collect};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vidflow_engine::exec::{self, RunOptions, RunReport};
use vidflow_engine::{
    ChunkPiece, ChunkSink, ChunkSource, Frame, Mode, NodeError, Params, Payload, SourceFile,
    Temporal, Timeline, ValidateCtx, WholeInput,
};
use vidflow_nodes::media::packets::AudioPacket;

fn run(yaml: &str) -> (RunReport, Vec<(String, Payload)>) {
    let kept: Kept = Arc::default();
    let mut reg = vidflow_nodes::registry();
    register_collect(&mut reg, &kept);
    let graph = vidflow_engine::check_source(
        SourceFile::new("job-test.yaml", yaml.to_string()),
        &reg,
        &[],
        Mode::Run,
    )
    .unwrap_or_else(|e| panic!("graph does not check:\n{}\n{yaml}", e.render()));
    let report = exec::run(&graph, RunOptions::default());
    let items = std::mem::take(&mut *kept.lock().unwrap());
    (report, items)
}

fn frames_of(items: &[(String, Payload)], node: &str) -> Vec<Frame> {
    items
        .iter()
        .filter(|(n, _)| n == node)
        .filter_map(|(_, p)| p.as_frame().cloned())
        .collect()
}

/// The frames `decode` emits with `params` (a JSON object, written into the graph as is).
fn decode(params: &Value) -> Vec<Frame> {
    let yaml = format!(
        "name: dec\nnodes:\n  - {{ id: dec, kind: decode, params: {params} }}\n  - {{ id: keep, kind: collect, inputs: {{ items: dec.frames }} }}\n"
    );
    let (report, items) = run(&yaml);
    assert_ok(&report);
    frames_of(&items, "keep")
}

fn params(node: &str, values: &Value) -> Params {
    Params {
        node: node.into(),
        values: values.as_object().expect("an object").clone(),
    }
}

fn value(p: &Params) -> Value {
    Value::Object(p.values.clone())
}

fn source() -> Arc<dyn ChunkSource> {
    vidflow_nodes::registry()
        .get("decode")
        .and_then(|k| k.chunk_source.clone())
        .expect("decode is a chunk source")
}

fn sink(kind: &str) -> Arc<dyn ChunkSink> {
    vidflow_nodes::registry()
        .get(kind)
        .and_then(|k| k.chunk_sink.clone())
        .unwrap_or_else(|| panic!("{kind} is a chunk sink"))
}

fn timeline(values: &Value) -> Result<Timeline, NodeError> {
    source().timeline("dec", &params("dec", values))
}

/// Params of `decode` that emit exactly the frames `start <= pts < end` of its timeline.
fn restricted(values: &Value, start: f64, end: Option<f64>) -> Value {
    let mut p = params("dec", values);
    source().restrict(&mut p, start, end);
    value(&p)
}

/// A testsrc2 clip with a keyframe every 10 frames (B-frames between), with a sine tone
/// (`audio`: AAC unless `extra` picks a codec) when asked.
fn clip(path: &Path, rate: &str, secs: f64, audio: bool, extra: &[&str]) {
    let mut args = vec![
        "-f".to_string(),
        "lavfi".into(),
        "-i".into(),
        format!("testsrc2=size=160x120:rate={rate}"),
    ];
    if audio {
        args.extend(
            ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"].map(String::from),
        );
    }
    args.extend(["-t".into(), secs.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(
        [
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "10",
            "-keyint_min",
            "10",
            "-sc_threshold",
            "0",
            "-bf",
            "3",
        ]
        .map(String::from),
    );
    if audio && !extra.contains(&"-c:a") {
        args.extend(["-c:a", "aac"].map(String::from));
    }
    if audio {
        args.extend(["-ac", "1"].map(String::from));
    }
    args.push(path.to_str().unwrap().into());
    ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

fn pts_of(frames: &[Frame]) -> Vec<f64> {
    frames.iter().map(|f| f.pts).collect()
}

#[test]
fn timeline_lists_exactly_the_decoded_frames_and_the_keyframes() {
    let dir = tmp("job-timeline");
    let mp4 = dir.join("a.mp4");
    clip(&mp4, "25", 3.0, true, &[]);
    let mkv = dir.join("a.mkv");
    ffmpeg(&[
        "-i",
        mp4.to_str().unwrap(),
        "-c",
        "copy",
        mkv.to_str().unwrap(),
    ]);
    // Variable frame rate: frames dropped irregularly, timestamps kept.
    let vfr = dir.join("vfr.mp4");
    clip(
        &vfr,
        "30",
        3.0,
        false,
        &[
            "-vf",
            "select='not(eq(mod(n\\,5)\\,2))*not(eq(mod(n\\,7)\\,3))'",
            "-vsync",
            "vfr",
        ],
    );
    let ntsc = dir.join("ntsc.mkv");
    clip(&ntsc, "30000/1001", 2.0, true, &[]);
    // Cut without re-encoding between keyframes: an edit list starts the video at 0.32 s, and
    // the demuxer marks the 8 frames before it (the first keyframe among them) to be dropped.
    let cut = dir.join("cut.mp4");
    ffmpeg(&[
        "-ss",
        "0.3",
        "-i",
        mp4.to_str().unwrap(),
        "-c",
        "copy",
        cut.to_str().unwrap(),
    ]);

    for path in [&mp4, &mkv, &vfr, &ntsc, &cut] {
        let whole = json!({ "path": path });
        let frames = decode(&whole);
        let tl = timeline(&whole).unwrap();
        let what = path.display();
        assert!(frames.len() > 40, "{what}");
        // Bit for bit: a job hands these values back to `decode` as `start`/`end`.
        assert_eq!(
            tl.pts,
            pts_of(&frames),
            "{what}: timeline and decode differ"
        );
        // Every tenth frame of the encoded clip; the cut one starts 8 frames in, and its first
        // frame is a place to start too (decode begins there).
        let skipped = if path == &cut { 8 } else { 0 };
        let mut keyframes: Vec<usize> = (0..frames.len() + skipped)
            .step_by(10)
            .filter(|&k| k >= skipped)
            .map(|k| k - skipped)
            .collect();
        if keyframes[0] != 0 {
            keyframes.insert(0, 0);
        }
        assert_eq!(tl.keyframes, keyframes, "{what}: keyframes");
        assert_eq!(tl.files, vec![path.to_path_buf()], "{what}");

        // Windows in seconds and in frames keep the frames `decode` keeps.
        for window in [
            json!({ "path": path, "start": 0.5, "end": 1.3 }),
            json!({ "path": path, "start": frames[13].pts, "end": frames[27].pts }),
            json!({ "path": path, "start_frame": 7, "end_frame": 33 }),
            json!({ "path": path, "start_frame": 12 }),
        ] {
            let got = timeline(&window).unwrap();
            let want = decode(&window);
            assert!(!want.is_empty());
            assert_eq!(got.pts, pts_of(&want), "{what}: window {window}");
            // The window's first frame is always a place to start (decode seeks before it).
            assert_eq!(got.keyframes[0], 0, "{what}: window {window}");
            for &k in &got.keyframes[1..] {
                let i = frames.iter().position(|f| f.pts == got.pts[k]).unwrap();
                assert!(
                    keyframes.contains(&i),
                    "{what}: window {window}: keyframe at frame {i}"
                );
            }
        }
    }
    // The mp4 clip: 25 fps from 0 (the clip's audio does not move the video's origin).
    let tl = timeline(&json!({ "path": &mp4 })).unwrap();
    assert_eq!(tl.pts.len(), 75);
    assert!((tl.pts[10] - 0.4).abs() < 1e-9, "{}", tl.pts[10]);
    assert_eq!(timeline(&json!({ "path": &cut })).unwrap().pts.len(), 67);
}

#[test]
fn image_sequences_start_anywhere() {
    let dir = tmp("job-images");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=10",
        "-frames:v",
        "12",
        dir.join("f%03d.png").to_str().unwrap(),
    ]);
    for path in [dir.join("f%03d.png"), dir.join("f*.png")] {
        let p = json!({ "path": path, "rate": 10 });
        let tl = timeline(&p).unwrap();
        assert_eq!(tl.pts, pts_of(&decode(&p)), "{}", path.display());
        assert_eq!(tl.keyframes, (0..12).collect::<Vec<_>>());
        assert_eq!(tl.files.len(), 12);
        assert_eq!(tl.files[0], dir.join("f001.png"));
        // A chunk from the middle: exactly its frames, the same pixels.
        let all = decode(&p);
        let part = decode(&restricted(&p, tl.pts[5], Some(tl.pts[9])));
        assert_eq!(pts_of(&part), &tl.pts[5..9]);
        for (a, b) in part.iter().zip(&all[5..9]) {
            assert!(a.data == b.data);
        }
    }
}

#[test]
fn encode_gop_sets_the_keyframe_interval() {
    let dir = tmp("job-gop");
    for (gop, want) in [(Some(10), vec![0, 10, 20, 30]), (None, vec![0])] {
        let out = dir.join(format!("gop-{gop:?}.mp4"));
        let gop = gop.map(|g| format!(", gop: {g}")).unwrap_or_default();
        let yaml = format!(
            "name: gop\nnodes:\n  - {{ id: src, kind: testsrc, params: {{ width: 160, height: 120, count: 40, rate: 25 }} }}\n  - {{ id: enc, kind: encode, params: {{ path: \"{}\", preset: veryfast{gop} }}, inputs: {{ frames: src.frames }} }}\n",
            out.display()
        );
        assert_ok(&run(&yaml).0);
        let tl = timeline(&json!({ "path": out })).unwrap();
        assert_eq!(tl.pts.len(), 40);
        assert_eq!(tl.keyframes, want, "gop {gop:?}");
    }
}

#[test]
fn a_sampled_source_is_refused() {
    let dir = tmp("job-sampled");
    let mp4 = dir.join("a.mp4");
    clip(&mp4, "25", 1.0, false, &[]);
    for sampler in [
        json!({ "every": 2 }),
        json!({ "fps": 5.0 }),
        json!({ "interval": 0.5 }),
    ] {
        let mut p = sampler.clone();
        p["path"] = json!(mp4);
        let e = timeline(&p).unwrap_err().to_string();
        assert!(
            e.contains("node `dec`") && e.contains("cannot cut a sampled source"),
            "{sampler}: {e}"
        );
    }
    let e = timeline(&json!({ "path": dir.join("missing.mp4") }))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn a_restricted_decode_emits_exactly_its_chunk() {
    let dir = tmp("job-restrict");
    let mp4 = dir.join("a.mp4");
    clip(&mp4, "25", 2.0, true, &[]);
    // The same cut between keyframes without re-encoding (an edit list; 42 frames).
    let cut = dir.join("cut.mp4");
    ffmpeg(&[
        "-ss",
        "0.3",
        "-i",
        mp4.to_str().unwrap(),
        "-c",
        "copy",
        cut.to_str().unwrap(),
    ]);
    for (path, chunks) in [
        (
            &mp4,
            [
                (0, Some(10)),
                (10, Some(20)),
                (20, Some(37)),
                (30, None),
                (40, None),
            ],
        ),
        (
            &cut,
            [
                (0, Some(2)),
                (2, Some(12)),
                (12, Some(29)),
                (22, None),
                (32, None),
            ],
        ),
    ] {
        let whole = json!({ "path": path });
        let all = decode(&whole);
        let tl = timeline(&whole).unwrap();
        assert_eq!(all.len(), if path == &mp4 { 50 } else { 42 });
        for (i, j) in chunks {
            let what = format!("{}: chunk {i}..{j:?}", path.display());
            assert!(tl.keyframes.contains(&i), "{what}");
            let chunk = decode(&restricted(&whole, tl.pts[i], j.map(|j| tl.pts[j])));
            let want = &all[i..j.unwrap_or(all.len())];
            assert_eq!(chunk.len(), want.len(), "{what}");
            for (got, want) in chunk.iter().zip(want) {
                assert_eq!(got.pts, want.pts, "{what}");
                assert_eq!(got.index, want.index, "{what}");
                assert!(
                    got.data == want.data,
                    "{what}: frame {} differs",
                    want.index
                );
            }
        }
    }
    let whole = json!({ "path": &mp4 });
    let tl = timeline(&whole).unwrap();
    let pts = &tl.pts;

    // Without an `end`, a chunk keeps the source window's own end, in frames or seconds.
    let framed = json!({ "path": &mp4, "start_frame": 3, "end_frame": 33 });
    let tl = timeline(&framed).unwrap();
    let last = *tl.keyframes.last().unwrap();
    let tail = decode(&restricted(&framed, tl.pts[last], None));
    assert_eq!(pts_of(&tail), &tl.pts[last..]);
    assert_eq!(tail.last().unwrap().index, 32);
    let timed = json!({ "path": &mp4, "end": 1.5 });
    let tl = timeline(&timed).unwrap();
    let tail = decode(&restricted(&timed, tl.pts[20], None));
    assert_eq!(pts_of(&tail), &tl.pts[20..]);

    // The source audio of a chunk: the packets overlapping it, as for any window.
    let p = restricted(&whole, pts[20], Some(pts[30]));
    let yaml = format!(
        "name: dec\nnodes:\n  - {{ id: dec, kind: decode, params: {p} }}\n  - {{ id: v, kind: collect, inputs: {{ items: dec.frames }} }}\n  - {{ id: a, kind: collect, inputs: {{ items: dec.audio_packets }} }}\n"
    );
    let (report, items) = run(&yaml);
    assert_ok(&report);
    assert_eq!(frames_of(&items, "v").len(), 10);
    let times: Vec<(f64, f64)> = items
        .iter()
        .filter(|(n, _)| n == "a")
        .filter_map(|(_, p)| match p.downcast::<AudioPacket>()? {
            AudioPacket::Packet {
                stream,
                pts,
                duration,
                ..
            } => {
                let tb = stream.time_base.0 as f64 / stream.time_base.1 as f64;
                Some((pts.unwrap() as f64 * tb, *duration as f64 * tb))
            }
            AudioPacket::Stream(_) => None,
        })
        .collect();
    assert!(!times.is_empty());
    let (first, last) = (times[0], times[times.len() - 1]);
    assert!(
        first.0 <= pts[20] && first.0 + first.1 > pts[20],
        "{first:?}"
    );
    assert!(last.0 < pts[30] && last.0 + last.1 >= pts[30], "{last:?}");
}

/// The audio `decode` emits with `params` (16 kHz mono): its first sample's time and the
/// samples, which follow on without gaps.
fn decode_audio(params: &Value) -> (f64, Vec<f32>) {
    let yaml = format!(
        "name: dec\nnodes:\n  - {{ id: dec, kind: decode, params: {params} }}\n  - {{ id: keep, kind: collect, inputs: {{ items: dec.audio }} }}\n"
    );
    let (report, items) = run(&yaml);
    assert_ok(&report);
    let mut first = None;
    let mut samples = vec![];
    for (_, p) in items.iter().filter(|(n, _)| n == "keep") {
        let Payload::Audio(a) = p else { continue };
        assert_eq!((a.sample_rate, a.channels), (16_000, 1));
        let at = a.pts - samples.len() as f64 / 16_000.0;
        let t0 = *first.get_or_insert(a.pts);
        assert!((at - t0).abs() < 1e-6, "a gap before {}", a.pts);
        samples.extend_from_slice(&a.samples);
    }
    (first.expect("some audio"), samples)
}

/// A job gives lip sync's speech to each chunk restricted to the chunk's time plus context
/// (`restrict_audio`): the samples it decodes are the unrestricted decode's, bit for bit, on
/// the same 16 kHz grid, for PCM at 16 kHz, at 44.1 kHz (resampled with a 441-sample phase
/// cycle) and at 48 kHz stereo (mixed down), and AAC at 44.1 kHz (decoded after a seek, from
/// the pre-roll); `audio_end` says where the audio ends. AAC with noise substitution, the
/// encoder's default, is left out: its noise follows a generator that a seek restarts.
#[test]
fn restricted_audio_is_the_unrestricted_decodes_samples() {
    let dir = tmp("job-audio");
    let speech = crate::common::fixture("speech_16k_mono_2s.wav");
    let (w44, w48) = (dir.join("s44.wav"), dir.join("s48.wav"));
    let s = speech.to_str().unwrap();
    ffmpeg(&["-i", s, "-ar", "44100", w44.to_str().unwrap()]);
    ffmpeg(&["-i", s, "-ar", "48000", "-ac", "2", w48.to_str().unwrap()]);
    let aac = dir.join("s44.m4a");
    ffmpeg(&[
        "-i",
        s,
        "-ar",
        "44100",
        "-c:a",
        "aac",
        "-aac_pns",
        "0",
        aac.to_str().unwrap(),
    ]);
    for path in [&speech, &w44, &w48, &aac] {
        let whole = json!({ "path": path, "audio_rate": 16000, "audio_channels": 1 });
        let (t0, all) = decode_audio(&whole);
        assert_eq!(t0, 0.0);
        // The 2 s (AAC decodes its last frame whole: up to 1024 samples at 44.1 kHz more).
        assert!((31_999..32_400).contains(&all.len()), "{}", all.len());
        let end = source().audio_end("dec", &params("dec", &whole)).unwrap();
        assert!(end.is_some_and(|e| (e - 2.0).abs() < 1e-3), "{end:?}");
        // Starts on and off the sample grids, an end, and a start before the beginning.
        for (start, stop) in [
            (0.61, Some(1.37)),
            (1.0013, None),
            (0.30007, Some(0.9)),
            (-0.2, Some(0.5)),
        ] {
            let what = format!("{}: {start}..{stop:?}", path.display());
            let mut p = params("dec", &whole);
            source().restrict_audio(&mut p, start, stop);
            let (t, got) = decode_audio(&value(&p));
            let at = (t * 16_000.0).round() as usize;
            assert!(
                (t - at as f64 / 16_000.0).abs() < 1e-6,
                "{what}: {t} is off the grid"
            );
            assert!(
                (t - start.max(0.0)).abs() <= 0.5 / 16_000.0 + 1e-9,
                "{what}: starts at {t}"
            );
            let want = &all[at..stop.map_or(all.len(), |e| (e * 16_000.0).round() as usize)];
            assert_eq!(got.len(), want.len(), "{what}");
            let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "{what}: {differ} samples differ");
        }
    }
}

/// Runs `encode` (params `enc`) on the frames of `decode` (params `dec`), with the source
/// audio when `audio`.
fn encode(dec: &Value, enc: &Value, audio: bool) {
    let audio = if audio {
        ", audio_packets: dec.audio_packets"
    } else {
        ""
    };
    let yaml = format!(
        "name: enc\nnodes:\n  - {{ id: dec, kind: decode, params: {dec} }}\n  - {{ id: enc, kind: encode, params: {enc}, inputs: {{ frames: dec.frames{audio} }} }}\n"
    );
    assert_ok(&run(&yaml).0);
}

/// The audio packets of a file: (pts, duration) in seconds.
fn audio_packets(path: &Path) -> Vec<(f64, f64)> {
    ffprobe(
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "packet=pts_time,duration_time",
            "-of",
            "csv=p=0",
        ],
        path,
    )
    .lines()
    .filter_map(|l| {
        let mut it = l.split(',').map(|s| s.trim().parse::<f64>());
        Some((it.next()?.ok()?, it.next()?.ok()?))
    })
    .collect()
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect()
}

#[test]
fn chunks_encoded_apart_join_into_the_unchunked_file() {
    let dir = tmp("job-join");
    let src = dir.join("src.mp4");
    clip(&src, "25", 2.0, true, &[]);
    // The whole clip; a window that starts between keyframes (the audio is then shifted by
    // the first frame's time) and ends early (the audio is cut there too).
    // And frames re-timed to a fixed `rate`: they are counted, so each chunk follows on
    // where the previous one ends.
    let cases = [
        ("mp4", json!({ "path": &src }), None),
        ("mkv", json!({ "path": &src }), None),
        (
            "mp4",
            json!({ "path": &src, "start": 0.3, "end": 1.7 }),
            None,
        ),
        ("mkv", json!({ "path": &src, "start": 0.3 }), None),
        ("mp4", json!({ "path": &src }), Some(10.0)),
    ];
    for (n, (ext, dec, rate)) in cases.iter().enumerate() {
        let what = format!("{ext} {dec} rate {rate:?}");
        let tl = timeline(dec).unwrap();
        assert!(tl.keyframes.len() >= 4, "{what}: {:?}", tl.keyframes);
        // Three chunks, cut at keyframes, of uneven length.
        let cuts = [0, tl.keyframes[2], tl.keyframes[3]];
        // Lossless, so frames encoded in another chunk come back identical; B-frames on, so
        // decode times restart at each chunk.
        let enc_params = |path: &Path| {
            let mut p =
                json!({ "path": path, "crf": 0, "pix_fmt": "yuv444p", "preset": "veryfast" });
            if let Some(r) = rate {
                p["rate"] = json!(r);
            }
            p
        };
        let whole_out = dir.join(format!("whole{n}.{ext}"));
        encode(dec, &enc_params(&whole_out), true);

        let enc = sink("encode");
        let mut pieces = vec![];
        for (k, &i) in cuts.iter().enumerate() {
            let end = cuts.get(k + 1).map(|&j| tl.pts[j]);
            let chunk = dir.join(format!("chunk{n}-{k}.{ext}"));
            let mut p = params("enc", &enc_params(&dir.join("ignored.mp4")));
            enc.redirect(&mut p, &chunk);
            // A job feeds `audio_packets` once at assembly, not per chunk.
            encode(&restricted(dec, tl.pts[i], end), &value(&p), false);
            pieces.push(ChunkPiece {
                path: chunk,
                start: tl.pts[i] - tl.pts[0],
            });
        }
        let joined = dir.join(format!("joined{n}.{ext}"));
        let p = params("enc", &enc_params(&joined));
        assert_eq!(enc.output(&p).unwrap(), Some(joined.clone()));
        assert_eq!(enc.whole_inputs(), &[1]);
        let audio = WholeInput {
            port: 1,
            source_kind: "decode",
            source_params: params("dec", dec),
            start: tl.pts[0],
            end: None,
        };
        enc.prepare("enc", &p, std::slice::from_ref(&audio))
            .unwrap();
        enc.assemble("enc", &p, &pieces, &[audio], &joined)
            .unwrap_or_else(|e| panic!("{what}: {e}"));

        let want = decode(&json!({ "path": &whole_out }));
        let got = decode(&json!({ "path": &joined }));
        assert_eq!(want.len(), tl.pts.len(), "{what}");
        assert_eq!(got.len(), want.len(), "{what}: frame count");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.pts - w.pts).abs() < 1e-6,
                "{what}: frame {} at {} s, not {} s",
                w.index,
                g.pts,
                w.pts
            );
            assert!(g.data == w.data, "{what}: frame {} differs", w.index);
        }
        // The same audio packets at the same times, so the same audio.
        let (a_want, a_got) = (audio_packets(&whole_out), audio_packets(&joined));
        assert!(a_want.len() > 50, "{what}: {} audio packets", a_want.len());
        assert_eq!(a_got.len(), a_want.len(), "{what}: audio packet count");
        for (g, w) in a_got.iter().zip(&a_want) {
            assert!(
                (g.0 - w.0).abs() < 1e-3 && (g.1 - w.1).abs() < 1e-3,
                "{what}: audio packet at {g:?}, not {w:?}"
            );
        }
        // Audio and video packets alternate in the file.
        let order = ffprobe(
            &["-show_entries", "packet=codec_type", "-of", "csv=p=0"],
            &joined,
        );
        let kinds: Vec<&str> = order.lines().map(str::trim).collect();
        let first_audio = kinds.iter().position(|k| *k == "audio").unwrap();
        let last_video = kinds.iter().rposition(|k| *k == "video").unwrap();
        assert!(first_audio < last_video, "{what}: not interleaved");
        assert!(leftovers(&dir).is_empty(), "{what}: {:?}", leftovers(&dir));
    }
}

#[test]
fn a_failed_join_leaves_no_output() {
    let dir = tmp("job-join-fails");
    let out = dir.join("out.mp4");
    let p = params("enc", &json!({ "path": &out }));
    let pieces = [ChunkPiece {
        path: dir.join("missing.mp4"),
        start: 0.0,
    }];
    let e = sink("encode")
        .assemble("enc", &p, &pieces, &[], &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("node `enc`") && e.contains("missing.mp4"), "{e}");
    assert!(!out.exists());
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
}

#[test]
fn audio_the_output_cannot_hold_is_refused_before_any_chunk() {
    let dir = tmp("job-pcm");
    let src = dir.join("pcm.mov");
    clip(&src, "25", 1.0, true, &["-c:a", "pcm_s16le"]);
    let audio = WholeInput {
        port: 1,
        source_kind: "decode",
        source_params: params("dec", &json!({ "path": &src })),
        start: 0.0,
        end: None,
    };
    let enc = sink("encode");
    let mp4 = params("enc", &json!({ "path": dir.join("out.mp4") }));
    let e = enc
        .prepare("enc", &mp4, std::slice::from_ref(&audio))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node `enc`") && e.contains("pcm_s16le") && e.contains(".mkv"),
        "{e}"
    );
    let mkv = params("enc", &json!({ "path": dir.join("out.mkv") }));
    enc.prepare("enc", &mkv, &[audio]).unwrap();
    // Without source audio there is nothing to check.
    enc.prepare("enc", &mp4, &[]).unwrap();
}

#[test]
fn sinks_say_what_a_job_can_cut() {
    let enc = sink("encode");
    let seq = params("enc", &json!({ "path": "out/%05d.png" }));
    let e = enc.output(&seq).unwrap_err();
    assert!(e.contains("image sequence"), "{e}");
    let jsonl = sink("jsonl");
    assert!(jsonl.output(&params("j", &json!({ "path": "-" }))).is_err());
    let mut p = params("j", &json!({ "path": "a.jsonl" }));
    assert_eq!(jsonl.output(&p).unwrap(), Some(PathBuf::from("a.jsonl")));
    jsonl.redirect(&mut p, Path::new("job/chunk-0.jsonl"));
    assert_eq!(p.values["path"], json!("job/chunk-0.jsonl"));
    assert_eq!(sink("null").output(&params("n", &json!({}))).unwrap(), None);

    // `encode` is cut per frame, unless it encodes decoded audio.
    let kinds = vidflow_nodes::registry();
    let encode = kinds.get("encode").unwrap();
    let temporal = encode.temporal.as_ref().unwrap();
    let p = params("enc", &json!({ "path": "out.mp4" }));
    let cx = |connected: &[bool]| -> Temporal {
        temporal(&ValidateCtx {
            node_id: "enc",
            params: &p,
            connected_inputs: connected,
            output_consumers: &[],
        })
    };
    assert_eq!(cx(&[true, true, false]), Temporal::PerItem);
    match cx(&[true, false, true]) {
        Temporal::Whole(why) => assert!(why.contains("audio_packets"), "{why}"),
        other => panic!("{other:?}"),
    }
    for kind in ["decode", "jsonl", "null"] {
        let t = kinds.get(kind).unwrap().temporal.as_ref().unwrap();
        let cx = ValidateCtx {
            node_id: "n",
            params: &p,
            connected_inputs: &[],
            output_consumers: &[],
        };
        assert_eq!(t(&cx), Temporal::PerItem, "{kind}");
    }
}

#[test]
fn jsonl_joins_its_chunks_in_order() {
    let dir = tmp("job-jsonl");
    let mut pieces = vec![];
    for k in 0..3 {
        let path = dir.join(format!("chunk{k}.jsonl"));
        let lines: String = (0..=k)
            .map(|i| format!("{{\"chunk\":{k},\"i\":{i}}}\n"))
            .collect();
        std::fs::write(&path, lines).unwrap();
        pieces.push(ChunkPiece {
            path,
            start: k as f64,
        });
    }
    // Out of order on disk, so the order comes from the list.
    pieces.swap(0, 2);
    let out = dir.join("out.jsonl");
    let p = params("j", &json!({ "path": &out }));
    sink("jsonl").assemble("j", &p, &pieces, &[], &out).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let got: Vec<(u64, u64)> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["chunk"].as_u64().unwrap(), v["i"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(got, vec![(2, 0), (2, 1), (2, 2), (1, 0), (1, 1), (0, 0)]);
    assert!(leftovers(&dir).is_empty());

    // A missing chunk: an error, and no output.
    let out2 = dir.join("out2.jsonl");
    pieces.push(ChunkPiece {
        path: dir.join("gone.jsonl"),
        start: 3.0,
    });
    let e = sink("jsonl")
        .assemble("j", &p, &pieces, &[], &out2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gone.jsonl"), "{e}");
    assert!(!out2.exists() && leftovers(&dir).is_empty());
}
