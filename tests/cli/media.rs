//! Media bad input through the `vidflow` binary: a missing file, a text file named .mp4, a
//! truncated mp4 (without and with its index at the front), a video with no frames, audio asked
//! of a video without audio, and an output folder that cannot be written. Each must give one
//! clear `error:` line naming the node and the path, exit with 1 or 2, never panic, and leave no
//! output file (nor a temporary one). Plus the happy paths: graphs/transcode.yaml, a valid AVI
//! that announces more frames than it holds, and progress totals that are exact or absent.

use crate::common::{TmpDir, ffmpeg, ffmpeg_stdout, graph, probe, vidflow};
use std::path::{Path, PathBuf};
use std::process::Output;

fn tmp(name: &str) -> TmpDir {
    crate::common::tmp("media-cli", name)
}

fn clip(path: &Path, audio: bool, extra: &[&str]) {
    let mut args = vec!["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25"];
    if audio {
        args.extend([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-c:a",
            "aac",
        ]);
    }
    args.extend(["-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p"]);
    args.extend(extra);
    args.push(path.to_str().unwrap());
    ffmpeg(&args);
}

fn transcode(input: &Path, output: &Path) -> Output {
    transcode_with(input, output, &["--progress", "none"])
}

/// graphs/transcode.yaml from `input` to `output`, with more arguments.
fn transcode_with(input: &Path, output: &Path, more: &[&str]) -> Output {
    let (g, input, output) = (
        graph("transcode"),
        format!("input={}", input.display()),
        format!("output={}", output.display()),
    );
    let mut args = vec!["run", &g, "--set", &input, "--set", &output];
    args.extend(more);
    vidflow(&args)
}

/// The run failed cleanly: exit 1 or 2, one `error:` line naming `node` and `path`, no panic,
/// and nothing written next to `output`.
fn assert_clean_failure(out: &Output, node: &str, path: &str, output: &Path, case: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        matches!(code, Some(1) | Some(2)),
        "{case}: exit code {code:?}, stderr:\n{stderr}"
    );
    assert!(!stderr.contains("panic"), "{case}: panicked:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(
        errors.len(),
        1,
        "{case}: want exactly one error line, got:\n{stderr}"
    );
    let line = errors[0];
    assert!(
        line.contains(&format!("`{node}`")),
        "{case}: the message should name node `{node}`: {line}"
    );
    assert!(
        line.contains(path),
        "{case}: the message should name `{path}`: {line}"
    );
    assert!(!output.exists(), "{case}: {} was written", output.display());
    if let Some(dir) = output.parent().filter(|d| d.is_dir()) {
        let partial: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(
            partial.is_empty(),
            "{case}: temporary files left: {partial:?}"
        );
    }
}

#[test]
fn transcode_graph_runs_from_the_cli() {
    let dir = tmp("ok");
    let input = dir.join("in.mp4");
    clip(&input, true, &[]);
    let output = dir.join("out.mp4");
    let out = transcode(&input, &output);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(output.exists());
    let check = vidflow(&["check", &graph("transcode")]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A transcode keeps the decoder's YUV 4:2:0 from end to end: with a lossless encoder (x264 at
/// crf 0) the output's pictures are the input's, byte for byte, which a detour through RGB
/// would not give; and `vidflow graph` shows the format the plan negotiated on the edge.
#[test]
fn a_transcode_never_leaves_yuv() {
    let dir = tmp("yuv");
    let input = dir.join("in.mp4");
    clip(&input, true, &[]);
    let output = dir.join("out.mp4");
    let out = transcode_with(
        &input,
        &output,
        &[
            "--progress",
            "none",
            "--set",
            "crf=0",
            "--set",
            "preset=ultrafast",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yuv = |p: &Path| {
        let p = p.to_str().unwrap();
        ffmpeg_stdout(&["-i", p, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
    };
    let (a, b) = (yuv(&input), yuv(&output));
    assert_eq!(a.len(), 160 * 120 * 3 / 2 * 50, "the input's 50 frames");
    assert_eq!(b.len(), a.len(), "as many frames out as in");
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert_eq!(
        differing, 0,
        "bytes of the pictures changed by the transcode"
    );

    let dot = vidflow(&["graph", &graph("transcode")]);
    let dot = String::from_utf8_lossy(&dot.stdout);
    assert!(
        dot.contains("frames → frames (q") && dot.contains(", yuv420p)"),
        "{dot}"
    );
}

/// Widths that are multiples of 8 but not of 16 once made swscale's SIMD YUV → RGB store spill
/// past the last row of the frame buffer and corrupt the heap (`malloc(): invalid size`).
#[test]
fn narrow_frames_decode_and_encode() {
    let dir = tmp("narrow");
    for size in ["40x24", "24x40", "16x8", "38x22"] {
        let input = dir.join(format!("in-{size}.mp4"));
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=10"),
            "-frames:v",
            "4",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            input.to_str().unwrap(),
        ]);
        let output = dir.join(format!("out-{size}.mp4"));
        let out = transcode(&input, &output);
        assert!(
            out.status.success(),
            "{size}: exit {:?}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v = probe(&output, "v:0", "width,height,nb_read_frames");
        let (w, h) = size.split_once('x').unwrap();
        assert!(
            v.contains(&format!("width={w}\n")) && v.contains(&format!("height={h}\n")),
            "{size}: {v}"
        );
        assert!(v.contains("nb_read_frames=4"), "{size}: {v}");
    }
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tmp("bad");
    let output = dir.join("out.mp4");
    let good = dir.join("good.mp4");
    clip(&good, true, &[]);

    // A missing file.
    let missing = dir.join("missing.mp4");
    assert_clean_failure(
        &transcode(&missing, &output),
        "dec",
        "missing.mp4",
        &output,
        "missing file",
    );

    // A text file named .mp4.
    let text = dir.join("notes.mp4");
    std::fs::write(&text, "these are not the frames you are looking for\n").unwrap();
    assert_clean_failure(
        &transcode(&text, &output),
        "dec",
        "notes.mp4",
        &output,
        "text file",
    );

    // Truncated: the index (at the end) is cut off…
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_failure(
        &transcode(&cut, &output),
        "dec",
        "cut.mp4",
        &output,
        "truncated mp4",
    );
    // …or the index is at the front and the frames are cut off.
    let fast = dir.join("fast.mp4");
    clip(&fast, true, &["-movflags", "+faststart"]);
    let bytes = std::fs::read(&fast).unwrap();
    let cut2 = dir.join("cut-faststart.mp4");
    std::fs::write(&cut2, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_failure(
        &transcode(&cut2, &output),
        "dec",
        "cut-faststart.mp4",
        &output,
        "truncated faststart mp4",
    );

    // A video stream without frames, and a file without a video stream.
    let zero = dir.join("zero.avi");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=25",
        "-frames:v",
        "0",
        "-c:v",
        "mpeg4",
        zero.to_str().unwrap(),
    ]);
    let out = transcode(&zero, &output);
    assert_clean_failure(&out, "dec", "zero.avi", &output, "zero-frame video");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no video frames"));
    let empty = dir.join("zero.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=25",
        "-frames:v",
        "0",
        "-c:v",
        "libx264",
        empty.to_str().unwrap(),
    ]);
    assert_clean_failure(
        &transcode(&empty, &output),
        "dec",
        "zero.mp4",
        &output,
        "mp4 with no video",
    );

    // Audio asked of a video without audio.
    let silent = dir.join("silent.mp4");
    clip(&silent, false, &[]);
    let graph = dir.join("with-audio.yaml");
    std::fs::write(
        &graph,
        format!(
            "name: with-audio\nnodes:\n  - {{ id: dec, kind: decode, params: {{ path: \"{}\", audio_rate: 16000 }} }}\n  - {{ id: enc, kind: encode, params: {{ path: \"{}\" }}, inputs: {{ frames: dec.frames, audio: dec.audio }} }}\n",
            silent.display(),
            output.display()
        ),
    )
    .unwrap();
    let out = vidflow(&["run", graph.to_str().unwrap(), "--progress", "none"]);
    assert_clean_failure(
        &out,
        "dec",
        "silent.mp4",
        &output,
        "audio of a silent video",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no audio stream"));

    // The same graph keeps working on the silent clip with the audio passed through instead.
    let out = transcode(&silent, &output);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&output).unwrap();
}

#[test]
fn unwritable_outputs_fail_before_any_work() {
    let dir = tmp("unwritable");
    let input = dir.join("in.mp4");
    clip(&input, false, &[]);
    // A folder that does not exist.
    let nowhere = dir.join("no-such-folder").join("out.mp4");
    assert_clean_failure(
        &transcode(&input, &nowhere),
        "enc",
        "no-such-folder",
        &nowhere,
        "missing folder",
    );
    // A folder without write permission (root may write anyway; /proc refuses everyone).
    let ro = dir.join("read-only");
    std::fs::create_dir(&ro).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let writable_anyway = std::fs::write(ro.join("probe"), b"x").is_ok();
    let _ = std::fs::remove_file(ro.join("probe"));
    let target = if writable_anyway {
        PathBuf::from(format!("/proc/vidflow-test-{}.mp4", std::process::id()))
    } else {
        ro.join("out.mp4")
    };
    let shown = target.to_string_lossy().into_owned();
    assert_clean_failure(
        &transcode(&input, &target),
        "enc",
        &shown,
        &target,
        "unwritable folder",
    );
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The last `progress` event's `(items, total)` per node of a `--progress json` run.
fn final_counts(out: &Output) -> Vec<(String, u64, Option<u64>)> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|e| e["event"] == "progress")
        .unwrap_or_else(|| panic!("no progress event:\n{stderr}"));
    last["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["items"].as_u64().unwrap(),
                n["total"].as_u64(),
            )
        })
        .collect()
}

/// A variable-rate AVI whose index announces more frames than it holds (zero-size "dropped
/// frame" entries, as capture tools write; ffmpeg's AVI muxer writes them too, for the gaps a
/// `select` leaves) with PCM audio, whose announced count is in samples. It is a valid file:
/// every frame decodes, and the progress totals are exact (issue 17, item 1). Before, the run
/// failed with "only 34 of the 100 frames announced could be decoded…".
#[test]
fn an_avi_announcing_dropped_frames_is_read_whole_with_exact_totals() {
    let dir = tmp("avi-dropped");
    let input = dir.join("vfr.avi");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=25:duration=4",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=4",
        "-vf",
        "select='not(mod(n\\,3))'",
        "-fps_mode",
        "passthrough",
        "-c:v",
        "mpeg4",
        "-c:a",
        "pcm_s16le",
        input.to_str().unwrap(),
    ]);
    let announced = probe(&input, "v:0", "nb_frames");
    assert_eq!(
        announced.trim(),
        "nb_frames=100",
        "the file announces the dropped frames too"
    );
    let output = dir.join("out.mp4");
    let out = transcode_with(&input, &output, &["--progress", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let frames = |p: &Path| probe(p, "v:0", "nb_read_frames").trim().to_string();
    assert_eq!(frames(&input), "nb_read_frames=34");
    assert_eq!(
        frames(&output),
        "nb_read_frames=34",
        "every frame the file holds"
    );
    for (node, items, total) in final_counts(&out) {
        assert_eq!(total, Some(items), "node `{node}`: exact total\n{stderr}");
    }
}

/// Decoded audio comes in as many chunks as the decoder makes, so its count is not announced
/// (no "speech 200/199"); audio-window makes one window per frame, so its total is the
/// frames' (not the audio chunks': "windows 50/99").
#[test]
fn totals_of_decoded_audio_and_windows_are_exact_or_absent() {
    let dir = tmp("totals-audio");
    let input = dir.join("in.mp4");
    clip(&input, true, &[]);
    let g = dir.join("g.yaml");
    std::fs::write(
        &g,
        format!(
            "nodes:
  - id: src
    kind: decode
    params: {{ path: {} }}
  - id: speech
    kind: decode
    params: {{ path: {}, audio_rate: 16000, audio_channels: 1 }}
  - id: windows
    kind: audio-window
    params: {{ mode: mel, span: 8 }}
    inputs: {{ audio: speech.audio, frames: src.frames }}
  - id: sink
    kind: \"null\"
    inputs: {{ items: windows.windows }}
",
            input.display(),
            input.display()
        ),
    )
    .unwrap();
    let out = vidflow(&["run", g.to_str().unwrap(), "--progress", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let counts = final_counts(&out);
    let get = |id: &str| counts.iter().find(|c| c.0 == id).unwrap().clone();
    assert_eq!(get("src").1, 50);
    assert_eq!(get("src").2, Some(50));
    assert_eq!(get("speech").2, None, "decoded audio: no guessed total");
    assert_eq!(get("windows").1, 50);
    assert_eq!(get("windows").2, Some(50), "one window per frame");
}

/// An output that is an input of the graph (the same name, a symlink to it, a hard link to
/// it) is refused by the checker, located at the output's param, and the source is left as it
/// was (issue 17, item 3). Before, the run overwrote the source while reading it.
#[test]
fn an_output_that_is_an_input_is_refused_at_check_time() {
    let dir = tmp("output-is-input");
    let input = dir.join("a.mp4");
    clip(&input, true, &[]);
    let before = std::fs::read(&input).unwrap();
    let link = dir.join("link.mp4");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let hard = dir.join("hard.mp4");
    std::fs::hard_link(&input, &hard).unwrap();
    for output in [&input, &link, &hard] {
        for command in ["check", "run"] {
            let out = vidflow(&[
                command,
                &graph("transcode"),
                "--set",
                &format!("input={}", input.display()),
                "--set",
                &format!("output={}", output.display()),
            ]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{command} {}: {stderr}",
                output.display()
            );
            assert!(
                stderr.contains("error[output-is-input]")
                    && stderr.contains("node `enc` would overwrite")
                    && stderr.contains("which node `dec` reads"),
                "{stderr}"
            );
            assert!(stderr.contains("transcode.yaml:"), "located: {stderr}");
        }
    }
    assert!(
        std::fs::read(&input).unwrap() == before,
        "the source is untouched"
    );
}

/// Encoder settings are checked with the graph, against this FFmpeg, each at its param with a
/// did-you-mean: a preset, an encoder that does not exist, a codec the container cannot hold,
/// an audio encoder (issue 17, item 9). And what the hints suggest works from
/// graphs/transcode.yaml: `.webm` (VP9 + Opus, the source's 44.1 kHz AAC resampled to 48 kHz)
/// and a PNG sequence.
#[test]
fn encoder_settings_are_checked_with_the_graph() {
    let dir = tmp("encoder-settings");
    let input = dir.join("in.mp4");
    clip(&input, true, &[]);
    let set_input = format!("input={}", input.display());
    let check = |graph: &str, sets: &[&str]| {
        let mut args = vec!["check", graph, "--set", &set_input];
        for s in sets {
            args.extend(["--set", s]);
        }
        let out = vidflow(&args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let transcode = graph("transcode");
    let (code, e) = check(&transcode, &["output=o.mp4", "preset=fastt"]);
    assert_eq!(code, Some(1), "{e}");
    assert!(
        e.contains("encoder `libx264` has no preset `fastt`")
            && e.contains("did you mean `fast`?")
            && e.contains("transcode.yaml:14:"),
        "{e}"
    );
    let (code, e) = check(&transcode, &["output=o.webm", "preset=medium"]);
    assert_eq!(code, Some(1), "{e}");
    assert!(e.contains("encoder `libvpx-vp9` has no presets"), "{e}");

    let own = dir.join("own.yaml");
    let write = |params: &str| {
        std::fs::write(
            &own,
            format!(
                "params: {{ input: in.mp4 }}
nodes:
  - id: dec
    kind: decode
    params: {{ path: \"${{input}}\" }}
  - id: enc
    kind: encode
    params: {{ {params} }}
    inputs: {{ frames: dec.frames, audio_packets: dec.audio_packets }}
"
            ),
        )
        .unwrap();
        own.to_str().unwrap().to_string()
    };
    let g = write("path: o.mp4, codec: libx265x");
    let (code, e) = check(&g, &[]);
    assert_eq!(code, Some(1), "{e}");
    assert!(
        e.contains("this FFmpeg has no video encoder `libx265x`")
            && e.contains("did you mean `libx265`?"),
        "{e}"
    );
    let g = write("path: o.webm, codec: libx264");
    let (code, e) = check(&g, &[]);
    assert_eq!(code, Some(1), "{e}");
    assert!(
        e.contains("a .webm file cannot hold libx264 (h264) video"),
        "{e}"
    );
    assert!(e.contains("`codec: libvpx-vp9`"), "{e}");
    let g = write("path: o.mp4, audio_codec: opuss");
    let (code, e) = check(&g, &[]);
    assert_eq!(code, Some(1), "{e}");
    assert!(
        e.contains("no audio encoder `opuss`") && e.contains("did you mean `opus`?"),
        "{e}"
    );
    let g = write("path: o.mp4, codec: mpeg4, crf: 20");
    let (code, e) = check(&g, &[]);
    assert_eq!(code, Some(1), "{e}");
    assert!(e.contains("encoder `mpeg4` takes no `crf`"), "{e}");

    // What the hints suggest runs.
    let webm = dir.join("out.webm");
    let out = vidflow(&[
        "run",
        &transcode,
        "--progress",
        "none",
        "--set",
        &set_input,
        "--set",
        &format!("output={}", webm.display()),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(probe(&webm, "v:0", "codec_name").contains("codec_name=vp9"));
    let audio = probe(&webm, "a:0", "codec_name,sample_rate");
    assert!(
        audio.contains("codec_name=opus") && audio.contains("sample_rate=48000"),
        "{audio}"
    );
    assert!(probe(&webm, "v:0", "nb_read_frames").contains("nb_read_frames=50"));
    std::fs::create_dir(dir.join("seq")).unwrap();
    let out = vidflow(&[
        "run",
        &transcode,
        "--progress",
        "none",
        "--set",
        &set_input,
        "--set",
        &format!("output={}/seq/%03d.png", dir.display()),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(dir.join("seq")).unwrap().count(), 50);
}
