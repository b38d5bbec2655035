//! Compressed audio passed through untouched from `decode` to `encode` (port type
//! `audio_packets`). The first item on the port always describes the stream (or says there is
//! none), so the encoder can set up its output before any frame waits on it; every packet then
//! carries its stream description too.

use super::ff::ffmpeg::ffi;
use std::any::Any;
use std::sync::Arc;
use vidflow_engine::node::NodeError;
use vidflow_engine::payload::CustomPayload;

/// Codec parameters and time base of a source audio stream.
#[derive(Debug)]
pub struct AudioStreamInfo {
    params: *mut ffi::AVCodecParameters,
    /// The stream's time base (packet timestamps count in it).
    pub time_base: (i32, i32),
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u16,
}

// The parameters are written once when created and only read afterwards.
unsafe impl Send for AudioStreamInfo {}
unsafe impl Sync for AudioStreamInfo {}

impl AudioStreamInfo {
    /// Copies a stream's parameters.
    ///
    /// # Safety
    /// `src` must point to valid codec parameters.
    pub unsafe fn copy_from(
        src: *const ffi::AVCodecParameters,
        time_base: (i32, i32),
    ) -> Result<AudioStreamInfo, NodeError> {
        unsafe {
            let params = ffi::avcodec_parameters_alloc();
            if params.is_null() || ffi::avcodec_parameters_copy(params, src) < 0 {
                return Err(NodeError::runtime(
                    "out of memory copying audio stream parameters",
                ));
            }
            Ok(AudioStreamInfo {
                params,
                time_base,
                codec: super::ff::codec_name((*src).codec_id),
                sample_rate: (*src).sample_rate as u32,
                channels: (*src).ch_layout.nb_channels as u16,
            })
        }
    }
    pub fn params(&self) -> *const ffi::AVCodecParameters {
        self.params
    }
}

impl Drop for AudioStreamInfo {
    fn drop(&mut self) {
        unsafe { ffi::avcodec_parameters_free(&mut self.params) };
    }
}

/// One item on an `audio_packets` port.
#[derive(Debug)]
pub enum AudioPacket {
    /// First item: the stream the packets come from, or `None` when the source has no audio.
    Stream(Option<Arc<AudioStreamInfo>>),
    /// A compressed packet; timestamps in the stream's time base, counted from the start of
    /// the source (the same origin as the frames' `pts`).
    Packet {
        stream: Arc<AudioStreamInfo>,
        data: Vec<u8>,
        pts: Option<i64>,
        dts: Option<i64>,
        duration: i64,
        flags: i32,
    },
}

impl AudioPacket {
    pub fn stream(&self) -> Option<&Arc<AudioStreamInfo>> {
        match self {
            AudioPacket::Stream(s) => s.as_ref(),
            AudioPacket::Packet { stream, .. } => Some(stream),
        }
    }
}

impl CustomPayload for AudioPacket {
    fn describe(&self) -> String {
        match self {
            AudioPacket::Stream(Some(s)) => format!(
                "audio stream header ({}, {} Hz, {} ch)",
                s.codec, s.sample_rate, s.channels
            ),
            AudioPacket::Stream(None) => "audio stream header (no audio)".into(),
            AudioPacket::Packet { stream, pts, .. } => {
                let t = pts.map(|p| {
                    p as f64 * stream.time_base.0 as f64 / stream.time_base.1.max(1) as f64
                });
                match t {
                    Some(t) => format!("{} audio packet at {t:.3}s", stream.codec),
                    None => format!("{} audio packet", stream.codec),
                }
            }
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
