//! The neural pipelines of `graphs/` run through the `vidflow` binary on clips made at test
//! time, on the CPU backend: upscale (size, frame count, the source audio kept, PNG sequence
//! output), interpolate (2N-1 frames at twice the rate, audio kept) and lipsync with the
//! fixture Wav2Lip checkpoint (same frame count, audio present, every pixel outside the face
//! box unchanged).

use crate::common::{TmpDir, assert_ok, ffmpeg, files, graph, probe, rgb24, vidflow};
use std::path::Path;

fn tmp(name: &str) -> TmpDir {
    crate::common::tmp("neural-cli", name)
}

/// A `frames`-frame clip of `size` at `rate` fps with a 440 Hz tone as AAC.
fn clip(path: &Path, size: &str, rate: u32, frames: u32) {
    let secs = format!("{}", frames as f64 / rate as f64);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate={rate}"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        &secs,
        "-frames:v",
        &frames.to_string(),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        path.to_str().unwrap(),
    ]);
}

fn run(graph_name: &str, sets: &[String]) -> std::process::Output {
    run_showing("none", graph_name, sets)
}

/// `vidflow run graphs/<graph_name>.yaml --progress <progress> --device cpu --set …`.
fn run_showing(progress: &str, graph_name: &str, sets: &[String]) -> std::process::Output {
    let g = graph(graph_name);
    let mut args = vec!["run", g.as_str(), "--progress", progress, "--device", "cpu"];
    for s in sets {
        args.extend(["--set", s.as_str()]);
    }
    vidflow(&args)
}

/// `input=…` and `output=…`, for `--set`.
fn io(input: &Path, output: &Path) -> Vec<String> {
    vec![
        format!("input={}", input.display()),
        format!("output={}", output.display()),
    ]
}

/// The file has an AAC audio stream.
fn assert_aac(path: &Path, what: &str) {
    let a = probe(path, "a:0", "codec_name");
    assert!(a.contains("codec_name=aac"), "{what} is missing: {a:?}");
}

#[test]
fn upscale_graph_makes_a_4x_video_with_the_source_audio() {
    let dir = tmp("upscale");
    let input = dir.join("in.mp4");
    clip(&input, "48x32", 12, 6);
    let output = dir.join("out.mp4");
    let out = run("upscale", &io(&input, &output));
    assert_ok(&out, "upscale.yaml");
    let v = probe(&output, "v:0", "width,height,nb_read_frames");
    assert!(v.contains("width=192") && v.contains("height=128"), "{v}");
    assert!(v.contains("nb_read_frames=6"), "{v}");
    assert_aac(&output, "the source audio");
}

#[test]
fn upscale_graph_writes_an_image_sequence() {
    let dir = tmp("upscale-png");
    let input = dir.join("in.mp4");
    clip(&input, "40x24", 10, 3);
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let out = run(
        "upscale",
        &[
            format!("input={}", input.display()),
            format!("output={}/%05d.png", frames.display()),
            "scale=2".into(),
        ],
    );
    assert_ok(&out, "upscale.yaml to PNG");
    let pngs = files(&frames);
    assert_eq!(pngs.len(), 3, "{pngs:?}");
    for p in &pngs {
        let v = probe(p, "v:0", "width,height");
        // `scale: 2` with the x4 network: the result resized down, like Real-ESRGAN's outscale.
        assert!(
            v.contains("width=80") && v.contains("height=48"),
            "{}: {v}",
            p.display()
        );
    }
}

#[test]
fn interpolate_graph_doubles_the_frame_rate_and_keeps_the_audio() {
    let dir = tmp("interpolate");
    let input = dir.join("in.mp4");
    clip(&input, "64x48", 10, 5);
    let output = dir.join("out.mp4");
    let out = run("interpolate", &io(&input, &output));
    assert_ok(&out, "interpolate.yaml");
    let v = probe(&output, "v:0", "nb_read_frames,r_frame_rate");
    // 5 frames → 2·5 − 1 (the last frame ends the stream), at 20 fps.
    assert!(v.contains("nb_read_frames=9"), "{v}");
    assert!(v.contains("r_frame_rate=20/1"), "{v}");
    assert_aac(&output, "the source audio");
}

fn wav2lip_fixture() -> String {
    format!(
        "{}/nodes/tests/fixtures/wav2lip-random-seed0.fp16.pth",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn speech() -> String {
    format!(
        "{}/nodes/tests/fixtures/speech_16k_mono_2s.wav",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn lipsync_graph_changes_only_the_face_box() {
    let dir = tmp("lipsync-png");
    let src = dir.join("in");
    let dst = dir.join("out");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=128x96:rate=25",
        "-frames:v",
        "10",
        src.join("%05d.png").to_str().unwrap(),
    ]);
    let (bx, by, bw, bh) = (32usize, 24usize, 64usize, 48usize);
    let out = run(
        "lipsync",
        &[
            format!("input={}/%05d.png", src.display()),
            format!("audio={}", speech()),
            format!("output={}/%05d.png", dst.display()),
            format!("weights={}", wav2lip_fixture()),
            format!("face=[{bx}, {by}, {bw}, {bh}]"),
        ],
    );
    assert_ok(&out, "lipsync.yaml to PNG");
    let (ins, outs) = (files(&src), files(&dst));
    assert_eq!(outs.len(), ins.len(), "same frame count: {outs:?}");
    for (a, b) in ins.iter().zip(&outs) {
        let (before, after) = (rgb24(a), rgb24(b));
        assert_eq!(before.len(), 128 * 96 * 3);
        assert_eq!(after.len(), before.len());
        let mut changed_inside = 0;
        for y in 0..96 {
            for x in 0..128 {
                let o = (y * 128 + x) * 3;
                let inside = (bx..bx + bw).contains(&x) && (by..by + bh).contains(&y);
                if inside {
                    changed_inside += (before[o..o + 3] != after[o..o + 3]) as usize;
                } else {
                    assert_eq!(
                        before[o..o + 3],
                        after[o..o + 3],
                        "{}: pixel ({x}, {y}) outside the face box changed",
                        b.display()
                    );
                }
            }
        }
        assert!(
            changed_inside > bw * bh / 4,
            "{}: only {changed_inside} pixels of the face box were redrawn",
            b.display()
        );
    }
}

#[test]
fn lipsync_graph_encodes_the_speech_as_the_soundtrack() {
    let dir = tmp("lipsync-mp4");
    let input = dir.join("in.mp4");
    // The clip carries the speech as its own audio: the graph's default use.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=128x96:rate=25",
        "-i",
        &speech(),
        "-frames:v",
        "25",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        input.to_str().unwrap(),
    ]);
    let output = dir.join("out.mp4");
    let out = run(
        "lipsync",
        &[
            format!("input={}", input.display()),
            format!("audio={}", input.display()),
            format!("output={}", output.display()),
            format!("weights={}", wav2lip_fixture()),
            "face=[32, 24, 64, 48]".into(),
        ],
    );
    assert_ok(&out, "lipsync.yaml to mp4");
    let v = probe(&output, "v:0", "nb_read_frames,width,height");
    assert!(
        v.contains("nb_read_frames=25") && v.contains("width=128"),
        "{v}"
    );
    assert_aac(&output, "the speech");
}

/// A face box wholly outside the frame is an error naming the box and the frame size (it
/// used to change nothing and exit 0); one reaching past the edge is clipped with a warning
/// (issue 17, item 7).
#[test]
fn a_face_box_outside_the_frame_is_said() {
    let dir = tmp("lipsync-outside");
    let input = dir.join("in.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=128x96:rate=25",
        "-i",
        &speech(),
        "-frames:v",
        "5",
        "-t",
        "0.2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        input.to_str().unwrap(),
    ]);
    let output = dir.join("out.mp4");
    let with_box = |face: &str| {
        run(
            "lipsync",
            &[
                format!("input={}", input.display()),
                format!("audio={}", input.display()),
                format!("output={}", output.display()),
                format!("weights={}", wav2lip_fixture()),
                format!("face={face}"),
            ],
        )
    };
    let out = with_box("[5000, 5000, 100, 100]");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("the face box [5000, 5000, 100, 100] of frame 0 lies outside the 128x96 frame"),
        "{e}"
    );
    assert!(!output.exists());
    let out = with_box("[100, 60, 64, 64]");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_ok(&out, "a box reaching past the edge");
    assert_eq!(
        e.matches("reaches past the 128x96 frame; it is clipped to [100, 60, 28, 36]")
            .count(),
        1,
        "warned once: {e}"
    );
}

/// Progress totals follow ports: the upscaler's bar counts frames (not the decoder's frames
/// plus audio packets), and the encoder's counts everything it consumes, so both reach 100 %.
#[test]
fn progress_totals_are_per_port() {
    let dir = tmp("totals");
    let input = dir.join("in.mp4");
    clip(&input, "32x24", 12, 4);
    let output = dir.join("out.mp4");
    let g = graph("upscale");
    let (i, o) = (
        format!("input={}", input.display()),
        format!("output={}", output.display()),
    );
    let out = vidflow(&[
        "run",
        &g,
        "--progress",
        "json",
        "--device",
        "cpu",
        "--set",
        &i,
        "--set",
        &o,
    ]);
    assert_ok(&out, "upscale.yaml --progress json");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let node = |event: &str, id: &str| {
        let e = events.iter().rfind(|v| v["event"] == event).expect(event);
        e["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap()
            .clone()
    };
    let total = |id: &str| node("progress", id)["total"].as_u64().unwrap();
    // What each node finally handled (the `end` event's statistics).
    let (src, sr, enc) = (node("end", "src"), node("end", "sr"), node("end", "out"));
    assert_eq!(total("sr"), 4);
    assert_eq!(sr["items_out"], 4, "{sr}");
    // The decoder also sends the audio packets (and their stream header) to the encoder.
    assert!(total("src") > 4);
    assert_eq!(src["items_out"].as_u64(), Some(total("src")), "{src}");
    assert_eq!(total("out"), total("src"));
    assert_eq!(enc["items_in"].as_u64(), Some(total("out")), "{enc}");
}
