//! `graphs/travel.yaml` end to end with the real `encode` (FFmpeg): keyframe images made here,
//! the video encoded to H.264, decoded again with `decode`, and checked: the expected frame
//! count, and each keyframe's frame matching its image (PSNR above 35 dB after encoding).
//! Needs the `media` feature (`cargo test -p vidflow-nodes --features media`).

use crate::common::{assert_ok, load, psnr, temp_dir};
use image::RgbImage;
use std::path::Path;
use std::sync::{Arc, Mutex};
use vidflow_engine::Emitter;
use vidflow_engine::exec;
use vidflow_engine::{
    Frame, Input, NodeError, NodeKind, ParamSpec, ParamType, PortType, Process, Registry, Runtime,
};
use vidflow_nodes::travel::guides::{Fit, load_keyframe};

type Kept = Arc<Mutex<Vec<Frame>>>;

struct Collect(Kept);

impl Process for Collect {
    fn process(&mut self, input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let mut k = self.0.lock().unwrap();
        k.extend(input.items.iter().filter_map(|p| p.as_frame().cloned()));
        Ok(())
    }
}

fn registry(kept: Kept) -> Registry {
    let mut r = vidflow_nodes::registry();
    r.register(
        NodeKind::new("collect", "test sink", move |_| {
            Ok(Runtime::Process(Box::new(Collect(kept.clone()))))
        })
        .input("items", PortType::ANY, "frames")
        .param(ParamSpec::optional("path", ParamType::Path, "unused")),
    );
    r
}

#[test]
fn travel_graph_encodes_a_video_with_its_keyframes() {
    let dir = temp_dir("e2e");
    // Smooth keyframes (gradients and a soft disc), as photos would be, in JPEG and PNG.
    let keys: Vec<String> = (0..4)
        .map(|k| {
            let img = RgbImage::from_fn(160, 120, |x, y| {
                let (cx, cy) = (30.0 + 30.0 * k as f32, 60.0);
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                let disc = (1.0 - (d - 18.0) / 6.0).clamp(0.0, 1.0);
                let base = [
                    (x * 200 / 160) as f32 + 20.0 * k as f32,
                    (y * 200 / 120) as f32,
                    60.0 * k as f32 + 30.0,
                ];
                image::Rgb(base.map(|c| (c * (1.0 - disc) + 240.0 * disc).min(255.0) as u8))
            });
            let path = dir.join(format!("k{k}.{}", if k % 2 == 0 { "png" } else { "jpg" }));
            img.save(&path).unwrap();
            path.to_string_lossy().into_owned()
        })
        .collect();
    let output = dir.join("travel.mp4").to_string_lossy().into_owned();
    let list = keys
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // Smaller than the graph's 832x480 so RIFE (the graph's generator) stays quick in tests.
    let sets = vec![
        format!("keyframes=[{list}]"),
        format!("output={output}"),
        "width=256".to_string(),
        "height=160".to_string(),
    ];
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs/travel.yaml"),
    )
    .unwrap();
    let kept: Kept = Arc::default();
    let registry = registry(kept.clone());
    let graph = load("graphs/travel.yaml", &text, &sets, &registry);
    let report = exec::run(&graph, exec::RunOptions::default());
    assert_ok(&report);

    let decode = format!(
        "name: read\nnodes:\n  - id: src\n    kind: decode\n    params: {{ path: \"{output}\" }}\n  - id: keep\n    kind: collect\n    inputs: {{ items: src.frames }}\n"
    );
    let graph = load("read.yaml", &decode, &[], &registry);
    let report = exec::run(&graph, exec::RunOptions::default());
    assert_ok(&report);
    let video = kept.lock().unwrap().clone();
    // segment_frames [25, 29, 25], overlaps [4, 4]: 79 - 8 frames.
    assert_eq!(video.len(), 71);
    assert_eq!((video[0].width, video[0].height), (256, 160));
    for (k, at) in [(0, 0), (1, 21), (2, 46), (3, 70)] {
        let want = load_keyframe(&keys[k], 256, 160, Fit::Cover).unwrap();
        let p = psnr(&video[at].data, &want);
        assert!(p > 35.0, "keyframe {k} at frame {at}: PSNR {p:.1} dB");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
