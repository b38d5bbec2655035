//! `face-detect`: finds the faces in each frame with MTCNN (facenet-pytorch's published P-Net,
//! R-Net and O-Net weights, built in) and writes them into the frame's metadata, so
//! `lipsync` (or anything downstream) knows where the face is without a hand-measured box.
//!
//! This kind owns the node: its params, the choice of face (`select`), detecting on every
//! `every`-th frame and carrying the last detection in between, the metadata and records it
//! writes, and its summary line. The networks and the cascade are [`crate::models::mtcnn`].
//!
//! Each frame leaves with `meta.face` set, merged into the metadata it came with (other keys
//! kept): `{"box": [x, y, w, h], "box_xyxy": [x1, y1, x2, y2], "prob": p, "landmarks":
//! [[x, y] × 5], "detected_at": frame index}` (pixels, floats; landmarks: left eye, right eye,
//! nose, left and right mouth corner), or `null` when no face was found: a frame without a
//! face is said so, never guessed. With `select: all`, `meta.faces` lists every face too.
//! The optional `records` output gets one record per frame: `{"index", "pts", "faces": [..]}`.
//!
//! `every: N` detects on the frames whose index is a multiple of N (and on any frame more
//! than N − 1 frames past the last detection, so sampled streams are covered); the frames in
//! between carry the last detection unchanged (`detected_at` says which frame it came from).
//! A stream cannot interpolate between detections without waiting for the next one, so the
//! box stays where it was last seen.
//!
//! Frames of a batch that share a size run through P-Net together (one call per pyramid
//! scale), and R-Net and O-Net each take the candidates of the whole batch in one call.

use vidflow_engine::{BatchConfig, NodeKind, ParamType, PortType, Problem, Temporal, params};

params! {
    /// The params of `face-detect`.
    pub struct FaceDetectParams {
        /// smallest face searched for, in pixels (smaller is slower: the image pyramid starts
        /// at 12 / min_face of the frame's size)
        min_face: f64 = default(ParamType::float_in(12.0, 10000.0), 20.0),
        /// face-probability thresholds of the three stages (P-Net, R-Net, O-Net)
        thresholds: Vec<f64> = default(ParamType::list(ParamType::float_in(0.0, 1.0)), serde_json::json!([0.6, 0.7, 0.7])),
        /// ratio between consecutive scales of the image pyramid
        factor: f64 = default(ParamType::float_in(0.1, 0.95), 0.709),
        /// which face when there are several: the `largest`, the most `confident`, or `all`
        /// (`meta.face` is then the largest and `meta.faces` lists them all)
        select: String = default(ParamType::one_of(&["largest", "confident", "all"]), "largest"),
        /// detect on every Nth frame; the frames in between carry the last detection
        every: u64 = default(ParamType::int_in(1, 100000), 1),
    }
}

pub fn kind() -> NodeKind {
    NodeKind::gated(
        "face-detect",
        "Finds faces with MTCNN (facenet-pytorch's weights, built in): box, probability and five landmarks in each frame's metadata (`meta.face`, null without a face), batched on the compute device.",
        "neural",
        crate::gated_factory!("neural", imp::build),
    )
    .input("frames", PortType::FRAMES, "RGB frames")
    .output("frames", PortType::FRAMES, "the same frames, with `meta.face` set")
    .output("records", PortType::RECORDS, "one record per frame: index, pts and the faces found")
    .params::<FaceDetectParams>()
    // With `every: N`, a frame's face can come from up to N − 1 frames before it.
    .temporal_with(|cx| match cx.params::<FaceDetectParams>() {
        Some(p) if p.every > 1 => Temporal::Frames {
            before: (p.every - 1).min(u32::MAX as u64) as u32,
            after: 0,
        },
        _ => Temporal::PerItem,
    })
    .batched("frames", Some(BatchConfig { max: 8, wait_ms: 20 }))
    .check(|cx| {
        let Some(p) = cx.params::<FaceDetectParams>() else {
            return vec![];
        };
        if p.thresholds.len() != 3 {
            return vec![
                Problem::param(
                    "thresholds",
                    format!(
                        "`thresholds` needs three numbers (P-Net, R-Net, O-Net), got {}",
                        p.thresholds.len()
                    ),
                )
                .help("the reference's are [0.6, 0.7, 0.7]"),
            ];
        }
        vec![]
    })
    .example("- id: faces\n  kind: face-detect\n  params: { min_face: 40, every: 2 }\n  inputs: { frames: src.frames }\n")
}

#[cfg(feature = "neural")]
pub use imp::*;

#[cfg(feature = "neural")]
mod imp {
    use super::FaceDetectParams;
    use crate::gpu::device::Compute;
    use crate::models::mtcnn::{DetectParams, Detector, Face, Rgb};
    use crate::weights;
    use burn::tensor::Device;
    use serde_json::{Value, json};
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Instant;
    use vidflow_engine::{
        BuildCtx, Emitter, End, Frame, Input, NodeError, Payload, Process, Runtime,
    };

    /// facenet-pytorch 2.6.0's `data/{pnet,rnet,onet}.pt` (MIT; see `models/README.md`),
    /// legacy `torch.save` files, unchanged.
    pub static PNET: &[u8] = include_bytes!("../../../../models/mtcnn/pnet.pt");
    pub static RNET: &[u8] = include_bytes!("../../../../models/mtcnn/rnet.pt");
    pub static ONET: &[u8] = include_bytes!("../../../../models/mtcnn/onet.pt");

    /// The built-in MTCNN on `device`.
    pub fn builtin_detector(device: &Device) -> Result<Detector, String> {
        let load = |name: &str, bytes: &[u8]| {
            weights::from_bytes(Path::new(&format!("built-in mtcnn/{name}")), bytes)
                .map_err(|e| e.to_string())
        };
        Detector::load(
            &load("pnet.pt", PNET)?,
            &load("rnet.pt", RNET)?,
            &load("onet.pt", ONET)?,
            device,
        )
    }

    /// Which faces a frame reports.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub enum Select {
        Largest,
        Confident,
        All,
    }

    impl Select {
        /// The faces kept, from the detector's largest-first list.
        pub fn apply(self, mut faces: Vec<Face>) -> Vec<Face> {
            match self {
                Select::All => faces,
                Select::Largest => {
                    faces.truncate(1);
                    faces
                }
                Select::Confident => {
                    // The first of equally confident faces is the larger.
                    let best = faces.iter().enumerate().fold(
                        None,
                        |best: Option<(usize, f32)>, (i, f)| match best {
                            Some((_, p)) if p >= f.prob => best,
                            _ => Some((i, f.prob)),
                        },
                    );
                    best.map(|(i, _)| vec![faces.swap_remove(i)])
                        .unwrap_or_default()
                }
            }
        }
    }

    /// One face as JSON: the box both ways, probability, landmarks, and the frame it was
    /// detected on.
    pub fn face_json(f: &Face, detected_at: u64) -> Value {
        let [x1, y1, x2, y2] = f.box_xyxy;
        json!({
            "box": [x1, y1, x2 - x1, y2 - y1],
            "box_xyxy": f.box_xyxy,
            "prob": f.prob,
            "landmarks": f.landmarks,
            "detected_at": detected_at,
        })
    }

    pub(super) fn build(ctx: &BuildCtx<'_>) -> Result<Runtime, NodeError> {
        let p: FaceDetectParams = ctx.params()?;
        let node = ctx.node_id.to_string();
        let [t1, t2, t3] = p.thresholds[..] else {
            return Err(NodeError::input(format!(
                "node `{node}`: `thresholds` needs three numbers, got {:?}",
                p.thresholds
            )));
        };
        let select = match p.select.as_str() {
            "confident" => Select::Confident,
            "all" => Select::All,
            _ => Select::Largest,
        };
        let compute = Compute::for_run(ctx.shared)?;
        // Loaded once per run, job or worker: later chunks share the networks.
        let (detector, _) = ctx
            .shared
            .keyed("face-detect built-in MTCNN", "", || {
                builtin_detector(&compute.device)
            })
            .map_err(|e| NodeError::input(format!("node `{node}`: {e}")))?;
        Ok(Runtime::Process(Box::new(FaceDetect {
            node,
            detector,
            params: DetectParams {
                min_face: p.min_face,
                thresholds: [t1 as f32, t2 as f32, t3 as f32],
                factor: p.factor,
            },
            select,
            every: p.every,
            records: ctx.output_consumers.get(1).copied().unwrap_or(0) > 0,
            last: None,
            frames: 0,
            with_face: 0,
            detections: 0,
            busy: 0.0,
        })))
    }

    struct FaceDetect {
        node: String,
        detector: Arc<Detector>,
        params: DetectParams,
        select: Select,
        every: u64,
        /// Whether `records` is connected.
        records: bool,
        /// The last detection: the frame it ran on and the faces kept.
        last: Option<(u64, Arc<Vec<Face>>)>,
        frames: u64,
        with_face: u64,
        detections: u64,
        /// Seconds spent detecting.
        busy: f64,
    }

    impl FaceDetect {
        /// Whether frame `index` is detected on, given the last detection.
        fn due(&self, index: u64, last: Option<u64>) -> bool {
            match last {
                None => true,
                Some(at) => {
                    index.is_multiple_of(self.every) || index < at || index - at >= self.every
                }
            }
        }

        /// Runs the detector on frames of one size, turning a backend panic into an error.
        fn detect(&self, frames: &[&Frame]) -> Result<Vec<Vec<Face>>, NodeError> {
            let images: Vec<Rgb<'_>> = frames
                .iter()
                .map(|f| Rgb {
                    data: &f.data,
                    width: f.width as usize,
                    height: f.height as usize,
                })
                .collect();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.detector.detect(&images, &self.params)
            }))
            .map_err(|e| {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                NodeError::runtime(format!(
                    "node `{}`: the compute backend failed on frame {}: {msg}",
                    self.node, frames[0].index
                ))
            })
        }

        /// The frame with `meta.face` (and `meta.faces` for `select: all`) merged in.
        fn annotate(&self, f: &Frame, faces: &[Face], at: u64) -> Result<Frame, NodeError> {
            let mut meta = match f.meta.as_deref() {
                None => serde_json::Map::new(),
                Some(Value::Object(m)) => m.clone(),
                Some(other) => {
                    return Err(NodeError::input(format!(
                        "node `{}`: frame {} carries metadata that is not a JSON object ({}), so `face` cannot be added to it",
                        self.node,
                        f.index,
                        short(other)
                    )));
                }
            };
            let list: Vec<Value> = faces.iter().map(|x| face_json(x, at)).collect();
            meta.insert("face".into(), list.first().cloned().unwrap_or(Value::Null));
            if self.select == Select::All {
                meta.insert("faces".into(), Value::Array(list));
            }
            Ok(Frame {
                meta: Some(Arc::new(Value::Object(meta))),
                ..f.clone()
            })
        }
    }

    fn short(v: &Value) -> String {
        let s = v.to_string();
        match s.char_indices().nth(40) {
            Some((i, _)) => format!("{}…", &s[..i]),
            None => s,
        }
    }

    impl Process for FaceDetect {
        fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
            let frames = input
                .items
                .iter()
                .map(|i| i.frame_for(&self.node))
                .collect::<Result<Vec<_>, _>>()?;
            // Which frames are detected on, deciding in stream order as if one by one.
            let mut last = self.last.as_ref().map(|l| l.0);
            let due: Vec<bool> = frames
                .iter()
                .map(|f| {
                    let d = self.due(f.index, last);
                    if d {
                        last = Some(f.index);
                    }
                    d
                })
                .collect();
            // Detect on the due frames, consecutive frames of one size in one call.
            let todo: Vec<&Frame> = frames
                .iter()
                .zip(&due)
                .filter(|(_, d)| **d)
                .map(|(f, _)| *f)
                .collect();
            let t = Instant::now();
            let mut found = Vec::with_capacity(todo.len());
            let mut start = 0;
            while start < todo.len() {
                let size = (todo[start].width, todo[start].height);
                let end = todo[start..]
                    .iter()
                    .position(|f| (f.width, f.height) != size)
                    .map_or(todo.len(), |k| start + k);
                found.extend(self.detect(&todo[start..end])?);
                start = end;
            }
            self.busy += t.elapsed().as_secs_f64();
            self.detections += todo.len() as u64;
            let mut found = found.into_iter();
            for (f, d) in frames.into_iter().zip(due) {
                if d {
                    let faces = self.select.apply(found.next().unwrap_or_default());
                    self.last = Some((f.index, Arc::new(faces)));
                }
                let (at, faces) = match &self.last {
                    Some((at, faces)) => (*at, faces.clone()),
                    None => (f.index, Arc::new(vec![])),
                };
                self.frames += 1;
                self.with_face += !faces.is_empty() as u64;
                let annotated = self.annotate(f, &faces, at)?;
                out.emit(0, Payload::Frame(annotated))?;
                if self.records {
                    let list: Vec<Value> = faces.iter().map(|x| face_json(x, at)).collect();
                    out.emit(
                        1,
                        Payload::record(json!({"index": f.index, "pts": f.pts, "faces": list})),
                    )?;
                }
            }
            Ok(())
        }

        fn finish(&mut self, _out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
            if end == End::Stopped || self.frames == 0 {
                return Ok(());
            }
            vidflow_engine::progress::say(format!(
                "{}: {} frames, {} with a face, {} without; {} detections, {:.1} ms each",
                self.node,
                self.frames,
                self.with_face,
                self.frames - self.with_face,
                self.detections,
                1000.0 * self.busy / self.detections.max(1) as f64
            ));
            Ok(())
        }
    }
}
