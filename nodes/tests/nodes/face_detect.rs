//! `face-detect` (MTCNN in Burn on facenet-pytorch's weights) against facenet-pytorch 2.6.0
//! itself: `fixtures/mtcnn/mtcnn_astronaut.json`, made by `fixtures/mtcnn/make_reference.py`
//! from scikit-image's `astronaut` photograph (public domain, NASA) at 512x512 and 256x256.

use crate::common::fixture;
use burn::tensor::Device;
use serde_json::Value;
use vidflow_nodes::kinds::face_detect::builtin_detector;
use vidflow_nodes::models::mtcnn::{DetectParams, Detector, Face, Rgb};

/// A PNG fixture as packed RGB: (data, width, height).
fn png(name: &str) -> (Vec<u8>, usize, usize) {
    let img = image::open(fixture(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .to_rgb8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w as usize, h as usize)
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("mtcnn/mtcnn_astronaut.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: [f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    inter / (area(a) + area(b) - inter)
}

/// Compares detections with the reference's for one image: same count, and face by face (both
/// largest first) IoU ≥ 0.95, probability within 1e-3, landmarks within 2 px.
fn assert_matches(name: &str, got: &[Face], want: &Value) {
    let want = want.as_array().map(|a| a.as_slice()).unwrap_or(&[]);
    assert_eq!(got.len(), want.len(), "{name}: faces found {got:?}");
    for (g, w) in got.iter().zip(want) {
        let wb: [f32; 4] = floats(&w["box_xyxy"]).try_into().unwrap();
        let overlap = iou(g.box_xyxy, wb);
        let dp = (g.prob - w["prob"].as_f64().unwrap() as f32).abs();
        let dl = g
            .landmarks
            .iter()
            .zip(w["landmarks"].as_array().unwrap())
            .map(|(p, q)| {
                let q = floats(q);
                (p[0] - q[0]).abs().max((p[1] - q[1]).abs())
            })
            .fold(0.0, f32::max);
        let dbox = g
            .box_xyxy
            .iter()
            .zip(&wb)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!(
            "{name}: IoU {overlap:.6} (box max diff {dbox:.4} px), prob diff {dp:.2e}, landmarks max diff {dl:.4} px"
        );
        assert!(overlap >= 0.95, "{name}: IoU {overlap} with {wb:?}: {g:?}");
        assert!(dp <= 1e-3, "{name}: prob {} vs {}", g.prob, w["prob"]);
        assert!(dl <= 2.0, "{name}: landmarks differ by {dl} px: {g:?}");
    }
}

fn detector(device: &Device) -> Detector {
    builtin_detector(device).expect("the built-in weights load")
}

/// Every image of the reference, in one call: the astronaut at three sizes (one face each)
/// and two images without a face (none found).
fn parity(device: &Device) {
    let det = detector(device);
    let want = reference();
    let names: Vec<String> = want["faces"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(names.len(), 5, "{names:?}");
    let imgs: Vec<_> = names
        .iter()
        .map(|n| png(&format!("mtcnn/{n}.png")))
        .collect();
    let rgb: Vec<Rgb<'_>> = imgs
        .iter()
        .map(|(d, w, h)| Rgb {
            data: d,
            width: *w,
            height: *h,
        })
        .collect();
    // Four sizes in one call: each size's pyramid runs separately, R-Net and O-Net batch the
    // candidates of all images.
    let got = det.detect(&rgb, &DetectParams::default());
    for (name, faces) in names.iter().zip(&got) {
        assert_matches(name, faces, &want["faces"][name]);
    }
    let found: usize = got.iter().map(Vec::len).sum();
    assert_eq!(found, 3, "one face in each astronaut image, none elsewhere");
    // One image alone gives the same as in the batch (to rounding: the batch size changes
    // how the matrix products are blocked).
    let k = names.iter().position(|n| n == "astronaut_256").unwrap();
    let alone = det.detect(&rgb[k..k + 1], &DetectParams::default());
    assert_eq!(alone[0].len(), 1);
    let (a, b) = (&alone[0][0], &got[k][0]);
    let d = a
        .box_xyxy
        .iter()
        .chain(a.landmarks.iter().flatten())
        .zip(b.box_xyxy.iter().chain(b.landmarks.iter().flatten()))
        .map(|(x, y)| (x - y).abs())
        .fold((a.prob - b.prob).abs(), f32::max);
    assert!(d < 1e-3, "alone vs in a batch: {a:?} vs {b:?}");
}

#[test]
fn mtcnn_matches_facenet_pytorch_on_cpu() {
    parity(&Device::flex());
}

#[test]
fn a_checkpoint_that_is_not_mtcnn_is_named() {
    let ck = vidflow_nodes::weights::load(&fixture("realesr-animevideov3-x4.pth")).unwrap();
    let e = Detector::load(&ck, &ck, &ck, &Device::flex()).unwrap_err();
    assert!(
        e.contains("not MTCNN's P-Net") && e.contains("realesr-animevideov3-x4.pth"),
        "{e}"
    );
}

// ---- the node in graphs (decode needs the `media` feature) ----

/// A stand-in for a talking-head clip, made at test time: 12 frames of 320x240 panning over
/// the astronaut photograph (6 px right and 3 px down per frame), then 3 flat gray frames
/// without a face, as a PNG sequence (lossless, so the decoded frames are exact).
///
/// No registry package ships a real talking-head video: the video clips of Debian's
/// `opencv-doc` are a film trailer (Megamind.avi, animated, under the film's copyright), a
/// mall's surveillance view with small pedestrians (vtest.avi) and a tree (tree.avi), and
/// scikit-image ships photographs only. So the clip is this pan over a real photograph.
#[cfg(feature = "media")]
fn astronaut_clip(dir: &std::path::Path) -> String {
    use crate::common::ffmpeg;
    let src = fixture("mtcnn/astronaut_512.png");
    let pattern = dir.join("%05d.png");
    ffmpeg(&[
        "-loop",
        "1",
        "-i",
        src.to_str().unwrap(),
        "-vf",
        "crop=320:240:'60+6*n':'10+3*n'",
        "-frames:v",
        "12",
        "-start_number",
        "0",
        pattern.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:s=320x240",
        "-frames:v",
        "3",
        "-start_number",
        "12",
        pattern.to_str().unwrap(),
    ]);
    pattern.display().to_string()
}

/// Runs `yaml` on the CPU with the `collect` sink (and `tag`: sets `meta.tag` to the frame
/// index); returns what each collecting node kept, frames by index order of arrival.
#[cfg(feature = "media")]
fn run_graph(
    yaml: &str,
) -> (
    vidflow_engine::exec::RunReport,
    Vec<(String, vidflow_engine::Payload)>,
) {
    use crate::common::{load, run_on_cpu};
    use crate::media::{Kept, register_collect};
    use std::sync::Arc;
    use vidflow_engine::{
        Emitter, Input, NodeError, NodeKind, Payload, PortType, Process, Runtime,
    };
    struct Tag;
    impl Process for Tag {
        fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
            for item in input.items {
                let Payload::Frame(mut f) = item else {
                    continue;
                };
                f.meta = Some(Arc::new(serde_json::json!({ "tag": f.index })));
                out.emit(0, Payload::Frame(f))?;
            }
            Ok(())
        }
    }
    let kept: Kept = Arc::default();
    let mut reg = vidflow_nodes::registry();
    register_collect(&mut reg, &kept);
    reg.register(
        NodeKind::new("tag", "Sets meta.tag (tests only).", |_| {
            Ok(Runtime::Process(Box::new(Tag)))
        })
        .input("frames", PortType::FRAMES, "frames")
        .output("frames", PortType::FRAMES, "tagged frames"),
    );
    let g = load("face-detect.yaml", yaml, &[], &reg);
    let report = run_on_cpu(&g);
    let items = std::mem::take(&mut *kept.lock().unwrap());
    (report, items)
}

#[cfg(feature = "media")]
fn frames_of<'a>(
    items: &'a [(String, vidflow_engine::Payload)],
    node: &str,
) -> Vec<&'a vidflow_engine::Frame> {
    let mut v: Vec<_> = items
        .iter()
        .filter(|(n, _)| n == node)
        .filter_map(|(_, p)| p.as_frame())
        .collect();
    v.sort_by_key(|f| f.index);
    v
}

#[cfg(feature = "media")]
#[test]
fn face_detect_graph_writes_the_face_into_each_frame() {
    use crate::common::{assert_ok, tmp};
    let dir = tmp("face-detect-graph");
    let clip = astronaut_clip(&dir);
    let yaml = format!(
        "name: t\nnodes:\n  - {{ id: dec, kind: decode, params: {{ path: \"{clip}\" }} }}\n  - {{ id: tag, kind: tag, inputs: {{ frames: dec.frames }} }}\n  - {{ id: faces, kind: face-detect, inputs: {{ frames: tag.frames }} }}\n  - {{ id: every3, kind: face-detect, params: {{ every: 3 }}, inputs: {{ frames: dec.frames }} }}\n  - {{ id: f, kind: collect, inputs: {{ items: faces.frames }} }}\n  - {{ id: r, kind: collect, inputs: {{ items: faces.records }} }}\n  - {{ id: e, kind: collect, inputs: {{ items: every3.frames }} }}\n"
    );
    let (report, items) = run_graph(&yaml);
    assert_ok(&report);
    let frames = frames_of(&items, "f");
    assert_eq!(frames.len(), 15);
    let mut x0 = None;
    for f in &frames {
        let meta = f.meta.as_deref().unwrap();
        assert_eq!(meta["tag"], f.index, "existing metadata is kept: {meta}");
        let face = &meta["face"];
        if f.index >= 12 {
            assert!(face.is_null(), "gray frame {}: {meta}", f.index);
            continue;
        }
        assert!(
            face["prob"].as_f64().unwrap() > 0.99,
            "frame {}: {meta}",
            f.index
        );
        assert_eq!(face["landmarks"].as_array().unwrap().len(), 5);
        assert_eq!(face["detected_at"], f.index);
        let b = floats(&face["box"]);
        let xyxy = floats(&face["box_xyxy"]);
        assert!((b[0] + b[2] - xyxy[2]).abs() < 1e-3, "{meta}");
        // The face moves 6 px left per frame as the crop pans right.
        let x = b[0] + 6.0 * f.index as f32;
        let x0 = *x0.get_or_insert(x);
        assert!((x - x0).abs() < 3.0, "frame {}: box {b:?}", f.index);
    }
    let records: Vec<_> = items
        .iter()
        .filter(|(n, _)| n == "r")
        .filter_map(|(_, p)| p.as_record())
        .collect();
    assert_eq!(records.len(), 15);
    for r in &records {
        let want = if r["index"].as_u64().unwrap() < 12 {
            1
        } else {
            0
        };
        assert_eq!(r["faces"].as_array().unwrap().len(), want, "{r}");
    }
    // every: 3 detects on frames 0, 3, 6, … and carries the box in between: exactly its own
    // detection, which is the every-frame node's to rounding (the frames are batched
    // differently, which changes how the matrix products are blocked).
    let every3 = frames_of(&items, "e");
    assert_eq!(every3.len(), 15);
    for f in &every3 {
        let face = &f.meta.as_deref().unwrap()["face"];
        let at = f.index - f.index % 3;
        if at >= 12 {
            assert!(face.is_null(), "frame {}: {face}", f.index);
        } else {
            assert_eq!(face["detected_at"], at, "frame {}: {face}", f.index);
            let detected = &every3[at as usize].meta.as_deref().unwrap()["face"]["box"];
            assert_eq!(&face["box"], detected, "frame {}", f.index);
            let same = floats(&frames[at as usize].meta.as_deref().unwrap()["face"]["box"]);
            let d = floats(detected)
                .iter()
                .zip(&same)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d < 1e-3, "frame {}: {detected} vs {same:?}", f.index);
        }
    }
}

/// `lipsync` after `face-detect` with no box given: on the panning clip, every pixel outside
/// the detected boxes (padded by the default `[0, 10, 0, 0]`, and anywhere the 5-frame
/// smoothing could move them: the union of the padded boxes of the frames around) is
/// unchanged, the face is redrawn, and the gray frames without a face pass through unchanged.
#[cfg(feature = "media")]
#[test]
fn lipsync_after_face_detect_changes_only_the_padded_detected_boxes() {
    use crate::common::{assert_ok, tmp};
    let dir = tmp("face-detect-lipsync");
    let clip = astronaut_clip(&dir);
    let speech = fixture("speech_16k_mono_2s.wav");
    let weights = fixture("wav2lip-random-seed0.fp16.pth");
    let yaml = format!(
        "name: t\nnodes:\n  - {{ id: dec, kind: decode, params: {{ path: \"{clip}\" }} }}\n  - {{ id: speech, kind: decode, params: {{ path: \"{}\", audio_rate: 16000, audio_channels: 1 }} }}\n  - {{ id: win, kind: audio-window, params: {{ mode: mel, span: 8 }}, inputs: {{ audio: speech.audio, frames: dec.frames }} }}\n  - {{ id: faces, kind: face-detect, inputs: {{ frames: dec.frames }} }}\n  - {{ id: sync, kind: lipsync, params: {{ weights: \"{}\" }}, inputs: {{ frames: faces.frames, windows: win.windows }} }}\n  - {{ id: a, kind: collect, inputs: {{ items: faces.frames }} }}\n  - {{ id: b, kind: collect, inputs: {{ items: sync.frames }} }}\n",
        speech.display(),
        weights.display()
    );
    let (report, items) = run_graph(&yaml);
    assert_ok(&report);
    let (before, after) = (frames_of(&items, "a"), frames_of(&items, "b"));
    assert_eq!((before.len(), after.len()), (15, 15));
    // Each frame's padded box as Wav2Lip's inference makes it: whole pixels, 10 below.
    let padded: Vec<Option<[usize; 4]>> = before
        .iter()
        .map(|f| {
            let face = &f.meta.as_deref().unwrap()["face"];
            (!face.is_null()).then(|| {
                let b = floats(&face["box"]);
                let x1 = b[0].max(0.0) as usize;
                let y1 = b[1].max(0.0) as usize;
                let x2 = ((b[0] + b[2]).max(0.0) as usize).min(320);
                let y2 = ((b[1] + b[3]).max(0.0) as usize + 10).min(240);
                [x1, y1, x2, y2]
            })
        })
        .collect();
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        assert_eq!(a.index, b.index);
        let Some(own) = padded[i] else {
            assert_eq!(a.data, b.data, "frame {} has no face: unchanged", a.index);
            continue;
        };
        let near = padded[i.saturating_sub(4)..(i + 5).min(padded.len())]
            .iter()
            .flatten();
        let union = near.fold(own, |u, r| {
            [
                u[0].min(r[0]),
                u[1].min(r[1]),
                u[2].max(r[2]),
                u[3].max(r[3]),
            ]
        });
        let mut changed_inside = 0;
        for y in 0..240 {
            for x in 0..320 {
                let o = (y * 320 + x) * 3;
                let inside = (union[0]..union[2]).contains(&x) && (union[1]..union[3]).contains(&y);
                if inside {
                    changed_inside += (a.data[o..o + 3] != b.data[o..o + 3]) as usize;
                } else {
                    assert_eq!(
                        a.data[o..o + 3],
                        b.data[o..o + 3],
                        "frame {}: pixel ({x}, {y}) outside {union:?} changed",
                        a.index
                    );
                }
            }
        }
        let area = (own[2] - own[0]) * (own[3] - own[1]);
        assert!(
            changed_inside > area / 4,
            "frame {}: only {changed_inside} pixels of the face were redrawn",
            a.index
        );
    }
}

/// Without `face`, `faces` or face metadata, lipsync fails at the first frame, naming the node
/// and what to do.
#[cfg(feature = "media")]
#[test]
fn lipsync_without_a_box_or_face_detect_is_a_clear_error() {
    let dir = crate::common::tmp("face-detect-missing");
    let clip = astronaut_clip(&dir);
    let speech = fixture("speech_16k_mono_2s.wav");
    let weights = fixture("wav2lip-random-seed0.fp16.pth");
    let yaml = format!(
        "name: t\nnodes:\n  - {{ id: dec, kind: decode, params: {{ path: \"{clip}\" }} }}\n  - {{ id: speech, kind: decode, params: {{ path: \"{}\", audio_rate: 16000, audio_channels: 1 }} }}\n  - {{ id: win, kind: audio-window, params: {{ mode: mel, span: 8 }}, inputs: {{ audio: speech.audio, frames: dec.frames }} }}\n  - {{ id: sync, kind: lipsync, params: {{ weights: \"{}\" }}, inputs: {{ frames: dec.frames, windows: win.windows }} }}\n  - {{ id: b, kind: collect, inputs: {{ items: sync.frames }} }}\n",
        speech.display(),
        weights.display()
    );
    let (report, _) = run_graph(&yaml);
    let e = report.failure.expect("the run fails").to_string();
    assert!(
        e.contains("`sync`") && e.contains("face-detect") && e.contains("frame 0"),
        "{e}"
    );
}
