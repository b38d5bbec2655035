//! audio-window: Wav2Lip's mel spectrogram and windows against the reference fixtures, the
//! chunk-span arithmetic, batched windows equal to windows formed one frame at a time, and
//! windows placed by the audio's time: a job chunk's audio (its time plus the declared
//! context) gives the chunk's frames the windows of the whole stream.

use crate::common::{fixture, max_abs_diff, read_npy};
use vidflow_nodes::audio::mel::{self, N_MELS};
use vidflow_nodes::kinds::audio_window::{WindowBuilder, WindowConfig, chunk_span};

fn speech() -> Vec<f32> {
    let bytes = std::fs::read(fixture("speech_16k_mono_2s.wav")).unwrap();
    let (rate, samples) = mel::read_wav(&bytes).unwrap();
    assert_eq!(rate, 16_000);
    assert_eq!(samples.len(), 32_000);
    samples
}

#[test]
fn mel_spectrogram_matches_reference() {
    let (shape, want) = read_npy("speech_mel_80xT.npy");
    assert_eq!(shape, vec![80, 161]);
    let cols = mel::mel_columns(&speech());
    assert_eq!(cols.len(), 161);
    let mut got = vec![0.0f32; 80 * 161];
    for (t, col) in cols.iter().enumerate() {
        for m in 0..N_MELS {
            got[m * 161 + t] = col[m];
        }
    }
    let d = max_abs_diff(&got, &want);
    eprintln!("mel max abs diff {d:e}");
    assert!(d <= 1e-3, "max abs diff {d}");
}

/// Feeds the speech in uneven pieces, as decode would.
fn windows(cfg: WindowConfig) -> Vec<vidflow_nodes::audio::AudioWindow> {
    let samples = speech();
    let mut b = WindowBuilder::new(cfg, false);
    let mut out = vec![];
    for piece in samples.chunks(1024 + 7) {
        b.push_audio(16_000, piece).unwrap();
        out.extend(b.take());
    }
    b.finish();
    out.extend(b.take());
    eprintln!("{}", b.summary());
    out
}

#[test]
fn mel_windows_match_reference() {
    let (shape, want) = read_npy("speech_mel_windows_50x1x80x16.npy");
    assert_eq!(shape, vec![50, 1, 80, 16]);
    let ws = windows(WindowConfig::default());
    assert_eq!(ws.len(), 50);
    let mut worst = 0.0f32;
    for (i, w) in ws.iter().enumerate() {
        assert_eq!(w.frame, i as u64);
        worst = worst.max(max_abs_diff(&w.mel(), &want[i * 1280..(i + 1) * 1280]));
    }
    eprintln!("windows max abs diff {worst:e}");
    assert!(worst <= 1e-3, "max abs diff {worst}");
}

#[test]
fn batched_windows_equal_one_frame_at_a_time() {
    for chunks in [false, true] {
        let one = windows(WindowConfig {
            span: 1,
            chunks,
            ..Default::default()
        });
        for span in [2, 4, 8, 20] {
            let many = windows(WindowConfig {
                span,
                chunks,
                ..Default::default()
            });
            assert_eq!(one.len(), many.len());
            for (a, b) in one.iter().zip(&many) {
                assert_eq!(a.frame, b.frame);
                assert_eq!(a.first_unit(), b.first_unit());
                assert_eq!(a.values(), b.values(), "frame {} span {span}", a.frame);
            }
            // Consecutive windows of a group share one span.
            assert!(std::sync::Arc::ptr_eq(&many[0].span, &many[1].span));
        }
    }
}

#[test]
fn chunk_span_arithmetic() {
    let expect = [(1, 0), (2, 47), (4, 70), (8, 82), (20, 89)];
    for (n, pct) in expect {
        let s = chunk_span(100, n, 8, 7);
        assert_eq!(s.start, 92, "F - 8");
        assert_eq!(s.end, 100 + n as i64 + 7, "F + N + 6 inclusive");
        assert_eq!(s.used, n + 15);
        assert_eq!(s.naive, n * 16);
        assert_eq!((s.savings() * 100.0).round() as u64, pct, "N = {n}");
    }
}

#[test]
fn chunk_windows_are_padded_at_the_edges() {
    let ws = windows(WindowConfig {
        chunks: true,
        span: 4,
        ..Default::default()
    });
    assert_eq!(ws.len(), 50);
    let samples = speech();
    // Frame 0: chunks -8..=7; the first 8 are padding (zeros), then 640-sample chunks.
    let w0 = &ws[0];
    assert_eq!(w0.len, 16);
    assert_eq!(w0.first_unit(), -8);
    let v = w0.values();
    assert_eq!(v.len(), 16 * 640);
    assert!(v[..8 * 640].iter().all(|x| *x == 0.0));
    assert_eq!(&v[8 * 640..], &samples[..8 * 640]);
    // Frame 49: chunks 41..=56, past the end of the 50 chunks: zero-padded.
    let w = &ws[49];
    assert_eq!(w.first_unit(), 41);
    let v = w.values();
    assert_eq!(&v[..9 * 640], &samples[41 * 640..]);
    assert!(v[9 * 640..].iter().all(|x| *x == 0.0));
    // Spans of 4 frames: 4 + 15 chunks each.
    assert_eq!(ws[4].span.units, 19);
}

/// The windows of frames `frames` (at 25 fps) from `samples[from..to]` of the speech, given
/// at its time and in uneven pieces, as a job's chunk gives them.
fn windows_of(
    cfg: WindowConfig,
    frames: std::ops::Range<u64>,
    from: usize,
    to: usize,
) -> Vec<vidflow_nodes::audio::AudioWindow> {
    let samples = speech();
    let mut b = WindowBuilder::new(cfg, true);
    let mut out = vec![];
    for i in frames {
        b.push_frame(i, i as f64 / 25.0);
    }
    let mut at = from;
    for piece in samples[from..to].chunks(999) {
        b.push_audio_at(16_000, at as f64 / 16_000.0, piece)
            .unwrap();
        at += piece.len();
        out.extend(b.take());
    }
    b.finish();
    out.extend(b.take());
    out
}

#[test]
fn a_chunks_audio_with_its_context_gives_the_whole_streams_windows() {
    use vidflow_nodes::kinds::audio_window::{AUDIO_AFTER_MS, AUDIO_BEFORE_MS};
    // 60 frames over 2 s of speech: the last 10 lie past the audio's end.
    let end = 32_000;
    for chunks in [false, true] {
        let cfg = WindowConfig {
            chunks,
            ..Default::default()
        };
        let whole = windows_of(cfg, 0..60, 0, end);
        assert_eq!(whole.len(), 60);
        // Audio context as a job reads it: the declared ms (mel) or 8 frames before and 8
        // after (chunks), from a sample off the hop grid.
        let (before, after) = if chunks {
            (8 * 640 + 16, 8 * 640 + 16)
        } else {
            (AUDIO_BEFORE_MS as usize * 16, AUDIO_AFTER_MS as usize * 16)
        };
        for (frames, from, to) in [
            (10..20, 10 * 640 - before, 20 * 640 + after),
            (23..31, 23 * 640 - before, 31 * 640 + after),
            (40..50, 40 * 640 - before, end),
            // Past the end: the audio's last stretch (windows clamp to it).
            (50..60, end - before - after, end),
        ] {
            let what = format!("chunks: {chunks}, frames {frames:?}, samples {from}..{to}");
            let got = windows_of(cfg, frames.clone(), from, to);
            assert_eq!(got.len(), frames.clone().count(), "{what}");
            for (g, w) in got.iter().zip(&whole[frames.start as usize..]) {
                assert_eq!(g.frame, w.frame, "{what}");
                assert_eq!(g.first_unit(), w.first_unit(), "{what}: frame {}", w.frame);
                assert!(g.values() == w.values(), "{what}: frame {}", w.frame);
            }
            // Without the context before, the first window differs: the context is needed.
            if frames.start < 50 {
                let start = frames.start as usize * 640;
                let short = windows_of(cfg, frames.clone(), start, to);
                assert!(
                    short[0].values() != whole[frames.start as usize].values(),
                    "{what}"
                );
            }
        }
    }
}

/// Frames past the end of the audio get its last 16 columns, whether they arrive before the
/// audio or after it, and whether frames before them are still waiting (they used to get
/// silence once the frames before them had their windows: the columns they clamp to were
/// dropped by then).
#[test]
fn windows_past_the_end_are_the_last_columns() {
    let samples = speech();
    let cols = mel::mel_columns(&samples);
    assert_eq!(cols.len(), 161);
    let last: Vec<f32> = cols[161 - 16..].iter().flatten().copied().collect();
    for late in [false, true] {
        let mut b = WindowBuilder::new(WindowConfig::default(), true);
        let mut out = vec![];
        let frames = |b: &mut WindowBuilder, r: std::ops::Range<u64>| {
            for i in r {
                b.push_frame(i, i as f64 / 25.0);
            }
        };
        // Five whole spans of 8, all formed before the audio ends.
        frames(&mut b, 0..40);
        if !late {
            frames(&mut b, 55..70);
        }
        for piece in samples.chunks(1000) {
            b.push_audio(16_000, piece).unwrap();
            out.extend(b.take());
        }
        if late {
            frames(&mut b, 55..70);
            out.extend(b.take());
        }
        b.finish();
        out.extend(b.take());
        assert_eq!(out.len(), 55, "late: {late}");
        for w in &out[40..] {
            assert_eq!(w.first_unit(), 161 - 16, "late: {late}, frame {}", w.frame);
            assert!(w.values() == last, "late: {late}, frame {}", w.frame);
        }
    }
}

#[test]
fn mel_needs_16k_audio() {
    let mut b = WindowBuilder::new(WindowConfig::default(), false);
    let e = b.push_audio(44_100, &[0.0; 10]).unwrap_err();
    assert!(e.contains("audio_rate: 16000"), "{e}");
}

#[test]
fn lipsync_graph_checks_and_weights_are_explained() {
    use vidflow_engine::{Mode, load_and_check};
    let registry = vidflow_nodes::registry();
    let graph = concat!(env!("CARGO_MANIFEST_DIR"), "/../graphs/lipsync.yaml");
    if let Err(e) = load_and_check(graph, &registry, &[], Mode::Check) {
        panic!("{}", e.render());
    }
    // A lipsync node without weights: the diagnostic says where Wav2Lip weights come from.
    let text = "name: t\nnodes:\n  - id: a\n    kind: testsrc\n  - id: w\n    kind: audio-window\n    inputs: { frames: a.frames, audio: a.frames }\n  - id: sync\n    kind: lipsync\n    params: { face: [1, 2, 3, 4] }\n    inputs: { frames: a.frames, windows: w.windows }\n";
    let file = vidflow_engine::SourceFile::new("t.yaml", text.to_string());
    let e = vidflow_engine::check_source(file, &registry, &[], Mode::Check).unwrap_err();
    let shown = e.render();
    assert!(
        shown.contains("Rudrabha/Wav2Lip") && shown.contains("non-commercial"),
        "{shown}"
    );
}
