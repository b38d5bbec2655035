//! The guides the `mask` kind makes and generators (`blend`, `interpolate`, or a plugin) fill
//! in: one [`GuideBatch`] per planned batch (guide frames and a mask value per frame, built by
//! [`build_guides`]) on the [`GUIDES`] port, and keyframe loading ([`load_keyframe`]), which
//! `vidflow plan --png` uses too. Shared by the kinds `mask`, `blend` and `interpolate`.
//!
//! For every frame of a call: a keyframe's frame shows that image and is anchored (0.0); the
//! frames that continue the previous call (its last output frames) are anchored too; the
//! `transition` frames on each side of an anchor get `transition_value` and show the nearest
//! anchor; the rest are free (1.0) and neutral grey. Keyframe images (PNG or JPEG) are loaded
//! here, and only here, and fitted to the output size.

use super::plan::{BatchRecord, Call, Role, Segment};
use image::RgbImage;
use image::imageops::FilterType;
use serde_json::json;
use std::sync::Arc;
use vidflow_engine::payload::CustomPayload;
use vidflow_engine::{Frame, PixelFormat, PortType, Rate};

/// The type of the mask node's `guides` port: one [`GuideBatch`] per batch.
pub const GUIDES: PortType = PortType("guides");
/// Neutral grey of free frames in the guide.
pub const GREY: u8 = 128;

/// How keyframe images are fitted to the output size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Scaled to fill the frame, the overflow cropped evenly (no distortion).
    Cover,
    /// Scaled to the frame's size exactly.
    Stretch,
}

/// Loads a keyframe image (PNG or JPEG, recognised by its content) and fits it to
/// `width`x`height`, as packed RGB24.
pub fn load_keyframe(path: &str, width: u32, height: u32, fit: Fit) -> Result<Vec<u8>, String> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| format!("cannot open `{path}`: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let img = reader
        .decode()
        .map_err(|e| format!("cannot decode `{path}` (keyframes must be PNG or JPEG): {e}"))?;
    Ok(fit_image(img.to_rgb8(), width, height, fit))
}

/// Fits an image to `width`x`height`.
pub fn fit_image(img: RgbImage, width: u32, height: u32, fit: Fit) -> Vec<u8> {
    if img.width() == width && img.height() == height {
        return img.into_raw();
    }
    let img = match fit {
        Fit::Stretch => img,
        Fit::Cover => {
            // Crop to the target's aspect ratio, evenly on both sides.
            let (w, h) = (img.width() as u64, img.height() as u64);
            let (tw, th) = (width as u64, height as u64);
            let (cw, ch) = if w * th > h * tw {
                ((h * tw).div_ceil(th).min(w), h)
            } else {
                (w, (w * th).div_ceil(tw).min(h))
            };
            let (x, y) = ((w - cw) / 2, (h - ch) / 2);
            image::imageops::crop_imm(&img, x as u32, y as u32, cw as u32, ch as u32).to_image()
        }
    };
    image::imageops::resize(&img, width, height, FilterType::Triangle).into_raw()
}

/// Everything about a call that its guide frames need besides the call itself.
pub struct GuideCtx<'a> {
    pub batch: usize,
    pub width: u32,
    pub height: u32,
    pub rate: Rate,
    pub transition: u64,
    pub transition_value: f64,
    /// Keyframe images at the output size, by keyframe index.
    pub images: &'a [(usize, Arc<Vec<u8>>)],
    /// The segments of the batch (to tag frames with the segments that contain them).
    pub segments: &'a [Segment],
    /// Whether the call is a segment generated alone after its batch failed.
    pub fallback: bool,
    /// One shared grey frame.
    pub grey: Arc<Vec<u8>>,
}

impl GuideCtx<'_> {
    pub fn image(&self, k: usize) -> Option<&Arc<Vec<u8>>> {
        self.images
            .iter()
            .find(|(i, _)| *i == k)
            .map(|(_, img)| img)
    }
}

/// A grey frame of the given size.
pub fn grey_frame(width: u32, height: u32) -> Arc<Vec<u8>> {
    Arc::new(vec![GREY; Frame::byte_len(width, height)])
}

/// The guides of one call.
#[derive(Clone, Debug)]
pub struct Guides {
    pub frames: Vec<Frame>,
    pub roles: Vec<Role>,
    pub mask: Vec<f32>,
}

/// Builds the guide frame, role and mask value of each of a call's model frames.
/// `continuation(t)` gives the already-made output of video frame `t` (the frames this call
/// continues); where it gives `None` the guide shows grey, and the generator must replace it.
pub fn build_guides(
    call: &Call,
    ctx: &GuideCtx<'_>,
    continuation: &dyn Fn(u64) -> Option<Arc<Vec<u8>>>,
) -> Guides {
    let roles = call.roles(ctx.transition);
    let mask: Vec<f32> = roles
        .iter()
        .map(|r| r.value(ctx.transition_value))
        .collect();
    let anchor_pixels = |i: usize| -> Arc<Vec<u8>> {
        match roles[i] {
            Role::Keyframe(k) => ctx.image(k).cloned().unwrap_or_else(|| ctx.grey.clone()),
            Role::Continuation => {
                continuation(call.start + i as u64).unwrap_or_else(|| ctx.grey.clone())
            }
            _ => ctx.grey.clone(),
        }
    };
    let anchors: Vec<usize> = (0..roles.len()).filter(|&i| roles[i].anchored()).collect();
    let fps = ctx.rate.fps();
    let frames = roles
        .iter()
        .enumerate()
        .map(|(i, role)| {
            let t = call.start + i as u64;
            let data = match role {
                Role::Keyframe(_) | Role::Continuation => anchor_pixels(i),
                Role::Transition => {
                    // The nearest anchor (the earlier one on a tie).
                    let nearest = anchors.iter().copied().min_by_key(|&a| (a.abs_diff(i), a));
                    nearest
                        .map(anchor_pixels)
                        .unwrap_or_else(|| ctx.grey.clone())
                }
                Role::Free | Role::Padding => ctx.grey.clone(),
            };
            let segments: Vec<usize> = ctx
                .segments
                .iter()
                .filter(|s| s.start <= t && t < s.end() && *role != Role::Padding)
                .map(|s| s.index)
                .collect();
            let mut meta = json!({
                "batch": ctx.batch,
                "frame": i,
                "t": t,
                "mask": mask[i],
                "role": role.name(),
                "segments": segments,
                "fallback": ctx.fallback,
            });
            if let Role::Keyframe(k) = role {
                meta["keyframe"] = json!(k);
            }
            Frame {
                index: t,
                pts: t as f64 / fps,
                rate: ctx.rate,
                width: ctx.width,
                height: ctx.height,
                data,
                format: PixelFormat::Rgb24,
                meta: Some(Arc::new(meta)),
            }
        })
        .collect();
    Guides {
        frames,
        roles,
        mask,
    }
}

/// What the mask node emits for one batch: the plan record, the keyframe images at the output
/// size, and the guides of the batch's call (its continuation frames grey: the generator
/// replaces them with the previous call's output).
#[derive(Debug)]
pub struct GuideBatch {
    pub record: BatchRecord,
    pub width: u32,
    pub height: u32,
    pub rate: Rate,
    pub images: Vec<(usize, Arc<Vec<u8>>)>,
    pub guides: Guides,
}

impl GuideBatch {
    /// Builds the guides of a batch from its record and its keyframe images (packed RGB24 at
    /// `width`x`height`, for every keyframe the record lists).
    pub fn new(
        record: BatchRecord,
        width: u32,
        height: u32,
        rate: Rate,
        images: Vec<(usize, Arc<Vec<u8>>)>,
    ) -> GuideBatch {
        let grey = grey_frame(width, height);
        let guides = {
            let ctx = GuideCtx {
                batch: record.batch,
                width,
                height,
                rate,
                transition: record.transition,
                transition_value: record.transition_value,
                images: &images,
                segments: &record.segments,
                fallback: false,
                grey,
            };
            build_guides(&record.call, &ctx, &|_| None)
        };
        GuideBatch {
            record,
            width,
            height,
            rate,
            images,
            guides,
        }
    }
    /// The context to build guides of this batch's calls (the batch, or its segments).
    pub fn ctx(&self, fallback: bool) -> GuideCtx<'_> {
        GuideCtx {
            batch: self.record.batch,
            width: self.width,
            height: self.height,
            rate: self.rate,
            transition: self.record.transition,
            transition_value: self.record.transition_value,
            images: &self.images,
            segments: &self.record.segments,
            fallback,
            grey: grey_frame(self.width, self.height),
        }
    }
}

impl CustomPayload for GuideBatch {
    fn describe(&self) -> String {
        format!(
            "guides of {} ({} frames)",
            self.record.label(),
            self.record.call.model_frames
        )
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
