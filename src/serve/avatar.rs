//! A lip-sync session's inputs, made from what its client sends: the face image and box of
//! the session's `config` and its audio chunks. Audio goes into the graph as it arrives; the
//! face goes in once per frame's duration of audio received (at the session's fps), as a frame
//! whose metadata carries the box the way `face-detect` writes it (`meta.face.box`), so a
//! serve graph runs the same nodes (`audio-window`, `lipsync`) as a file graph.

use super::frames::{MAX_SIDE, decode};
use super::pb::{self, AudioEncoding};
use std::sync::Arc;
use vidflow_engine::{AudioChunk, Frame, Payload, Rate};

/// The largest audio rate and channel count accepted.
const MAX_RATE: u32 = 192_000;
const MAX_CHANNELS: u32 = 8;

pub struct Avatar {
    /// The face image, or the frames of the face clip, output frame i showing i mod N.
    faces: Vec<Arc<Vec<u8>>>,
    width: u32,
    height: u32,
    meta: Arc<serde_json::Value>,
    rate: Rate,
    fps: f64,
    sample_rate: u32,
    channels: u16,
    f32le: bool,
    /// Samples per channel received so far.
    samples: u64,
    /// Frames made so far.
    frames: u64,
    /// Frames, from the first, whose mel window has all its audio (only grows).
    complete: u64,
}

impl Avatar {
    /// The session's avatar, or why its config cannot make one (the message names the field).
    pub fn new(config: &pb::SessionConfig, rate: Rate) -> Result<Avatar, String> {
        let face = config
            .face
            .as_ref()
            .ok_or("config.face is missing: this graph takes audio, so a session's config needs `face` (the image to animate), `face_box` and `audio`")?;
        let image = decode(face, rate).map_err(|e| format!("config.face: {e}"))?;
        let mut faces = vec![image.data.clone()];
        for (k, f) in config.face_clip.iter().enumerate() {
            let f = decode(f, rate).map_err(|e| format!("config.face_clip[{k}]: {e}"))?;
            if (f.width, f.height) != (image.width, image.height) {
                return Err(format!(
                    "config.face_clip[{k}] is {}x{}, the face {}x{}: the clip's frames must all be the face's size",
                    f.width, f.height, image.width, image.height
                ));
            }
            faces.push(f.data);
        }
        let b = config
            .face_box
            .as_ref()
            .ok_or("config.face_box is missing: give the face's box in the face image (x, y, width, height in pixels)")?;
        let inside = b.width > 0
            && b.height > 0
            && b.x as u64 + b.width as u64 <= image.width as u64
            && b.y as u64 + b.height as u64 <= image.height as u64;
        if !inside {
            return Err(format!(
                "config.face_box [{}, {}, {}, {}] is not inside the {}x{} face image (x + width <= {}, y + height <= {}, width and height above 0)",
                b.x, b.y, b.width, b.height, image.width, image.height, image.width, image.height
            ));
        }
        let a = config.audio.as_ref().ok_or(
            "config.audio is missing: give the audio's sample_rate, channels and encoding",
        )?;
        if a.sample_rate == 0 || a.sample_rate > MAX_RATE {
            return Err(format!(
                "config.audio.sample_rate {} is not from 1 to {MAX_RATE}",
                a.sample_rate
            ));
        }
        let channels = if a.channels == 0 { 1 } else { a.channels };
        if channels > MAX_CHANNELS {
            return Err(format!(
                "config.audio.channels {channels} is more than {MAX_CHANNELS}"
            ));
        }
        let f32le = match AudioEncoding::try_from(a.encoding) {
            Ok(AudioEncoding::Unspecified) | Ok(AudioEncoding::PcmS16le) => false,
            Ok(AudioEncoding::PcmF32le) => true,
            Err(_) => return Err(format!("config.audio.encoding {} is unknown", a.encoding)),
        };
        debug_assert!(image.width <= MAX_SIDE && image.height <= MAX_SIDE);
        let meta = serde_json::json!({
            "face": {"box": [b.x, b.y, b.width, b.height]}
        });
        Ok(Avatar {
            faces,
            width: image.width,
            height: image.height,
            meta: Arc::new(meta),
            rate,
            fps: rate.fps(),
            sample_rate: a.sample_rate,
            channels: channels as u16,
            f32le,
            samples: 0,
            frames: 0,
            complete: 0,
        })
    }

    /// Bytes of one frame's duration of audio (a unary call's chunk), when that is a whole
    /// number of samples.
    pub fn chunk_bytes(&self) -> Option<usize> {
        let n = self.sample_rate as f64 / self.fps;
        let width = if self.f32le { 4 } else { 2 };
        (n.fract() == 0.0).then_some(n as usize * self.channels as usize * width)
    }

    /// Decodes a piece of audio into the graph's payload.
    pub fn audio(&mut self, data: &[u8]) -> Result<Payload, String> {
        let width = if self.f32le { 4 } else { 2 };
        let frame = width * self.channels as usize;
        if data.is_empty() || !data.len().is_multiple_of(frame) {
            return Err(format!(
                "an audio chunk of {} bytes is not a whole number of samples ({} bytes each: {} channel(s) of {})",
                data.len(),
                frame,
                self.channels,
                if self.f32le { "f32" } else { "s16" }
            ));
        }
        let samples: Vec<f32> = if self.f32le {
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            data.chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32767.0)
                .collect()
        };
        if samples.iter().any(|v| !v.is_finite()) {
            return Err("an audio chunk holds a sample that is not a finite number".into());
        }
        let pts = self.samples as f64 / self.sample_rate as f64;
        self.samples += (samples.len() / self.channels as usize) as u64;
        Ok(Payload::Audio(AudioChunk {
            pts,
            sample_rate: self.sample_rate,
            channels: self.channels,
            samples: Arc::new(samples),
        }))
    }

    /// The frames whose start lies inside the audio received so far (at the end: every frame
    /// the audio reaches into), not made before.
    pub fn due(&mut self, end: bool) -> Vec<Frame> {
        let secs = self.samples as f64 / self.sample_rate as f64;
        let upto = if end {
            (secs * self.fps - 1e-9).ceil().max(0.0) as u64
        } else {
            (secs * self.fps).floor() as u64
        };
        let frames = (self.frames..upto).map(|i| self.frame(i)).collect();
        self.frames = self.frames.max(upto);
        frames
    }

    /// Frames made so far.
    pub fn made(&self) -> u64 {
        self.frames
    }

    /// How many frames, from the first, have all the audio their mel window reads: 16 columns
    /// of 12.5 ms from the frame's start, the last one centred half an FFT (25 ms) before the
    /// audio it needs ends. (The unary call and the load generator use the same rule.)
    pub fn complete(&mut self) -> u64 {
        let secs = self.samples as f64 / self.sample_rate as f64;
        while mel_window_end(self.complete, self.fps) <= secs + 1e-9 {
            self.complete += 1;
        }
        self.complete
    }

    /// The face as frame `index`.
    pub fn frame(&self, index: u64) -> Frame {
        Frame {
            index,
            pts: index as f64 / self.fps,
            rate: self.rate,
            width: self.width,
            height: self.height,
            data: self.faces[(index % self.faces.len() as u64) as usize].clone(),
            format: vidflow_engine::PixelFormat::Rgb24,
            meta: Some(self.meta.clone()),
        }
    }
}

/// The second of audio that completes frame `i`'s Wav2Lip mel window at `fps`: 16 columns of
/// 12.5 ms from the frame's start column, plus half an FFT window (25 ms) of the last one.
pub fn mel_window_end(i: u64, fps: f64) -> f64 {
    let start_col = (i as f64 * 80.0 / fps + 1e-9).floor();
    (start_col + 16.0) * 0.0125 + 0.025
}
