//! `encode`: RGB frames (+ optional audio) → a video file (H.264 via libx264 by default) or an
//! image sequence (`out/%05d.png`, lossless PNG by default).
//!
//! Audio: `audio_packets` (from `decode`) are copied into the container untouched when it can
//! hold their codec, and re-encoded with `audio_codec` (AAC; Opus for WebM) otherwise; `audio`
//! (f32 chunks) is encoded with `audio_codec`. Connect one of the two.
//!
//! The encoder settings (container, codecs, preset, crf, pixel format) are checked against
//! this FFmpeg when the graph is checked (`media::settings`), each problem at its param.
//!
//! The output is written under a temporary name (`.out.mp4.partial`) and renamed when the
//! stream completes; a failed or interrupted run removes it, so no file that looks finished is
//! left behind. See `writer.rs` for timing details.
//!
//! In a job (`vidflow run --job`) each chunk is encoded into its own file, and the files are
//! joined without re-encoding (`media::concat`); the source audio (`audio_packets`) is not
//! fed per chunk but copied once over the whole job when joining.

use std::path::{Path, PathBuf};
use vidflow_engine::{
    ChunkPiece, ChunkSink, NodeError, NodeKind, ParamType, Params, PixelFormat, PortType, Problem,
    Temporal, WholeInput, params,
};

pub const FRAMES: usize = 0;
pub const AUDIO_PACKETS: usize = 1;
pub const AUDIO: usize = 2;

params! {
    /// The params of `encode`.
    pub struct EncodeParams {
        /// output video file (.mp4, .mkv, .mov, …) or image pattern (`out/%05d.png`)
        path: String = required(ParamType::Path),
        /// video encoder (default libx264; libvpx-vp9 for .webm; png for .png sequences,
        /// mjpeg for .jpg)
        codec: Option<String> = optional(ParamType::Str),
        /// constant rate factor (libx264 default 23; lower is better quality)
        crf: Option<f64> = optional(ParamType::float_in(0.0, 63.0)),
        /// encoder preset (libx264: ultrafast … medium … veryslow)
        preset: Option<String> = optional(ParamType::Str),
        /// output pixel format (default yuv420p; rgb24 for PNG)
        pix_fmt: Option<String> = optional(ParamType::Str),
        /// constant output frame rate; frames are re-timed (default: keep the input frames'
        /// timestamps)
        rate: Option<f64> = optional(ParamType::float_in(0.001, 1000.0)),
        /// audio encoder for `audio` and for packets the container cannot hold (default aac;
        /// libopus for .webm)
        audio_codec: Option<String> = optional(ParamType::Str),
        /// audio bit rate in bit/s when encoding audio (0: the encoder's default)
        audio_bitrate: u64 = default(ParamType::int_in(0, 2_000_000), 128_000),
        /// keyframe interval: at most this many frames from one keyframe to the next (the
        /// encoder's GOP size; libx264 `keyint`, default 250). Smaller: seeking and `--job`
        /// chunks can start closer to any frame, at some cost in size
        gop: Option<u32> = optional(ParamType::int_in(1, 100_000)),
    }
}

pub fn kind() -> NodeKind {
    NodeKind::gated(
        "encode",
        "Encodes RGB frames (and audio) into a video file (libx264 by default) or an image sequence (`out/%05d.png`); written under a temporary name and renamed when complete.",
        "media",
        crate::gated_factory!("media", imp::build),
    )
    .input("frames", PortType::FRAMES, "frames, all of one size (RGB24, or YUV420P, which a YUV 4:2:0 encoder takes as it is)")
    .accepts("frames", &[PixelFormat::Rgb24, PixelFormat::Yuv420p])
    .optional_input("audio_packets", crate::media::AUDIO_PACKETS, "source audio from `decode`, copied when the container allows it, else re-encoded")
    .optional_input("audio", PortType::AUDIO, "f32 audio chunks, encoded with `audio_codec`")
    .params::<EncodeParams>()
    .writes("path")
    .example("- id: enc\n  kind: encode\n  params: { path: out.mp4, crf: 20, preset: medium }\n  inputs: { frames: dec.frames, audio_packets: dec.audio_packets }\n")
    .check(|cx| match cx.params::<EncodeParams>() {
        Some(p) => {
            let audio = cx.connected_inputs.get(AUDIO).copied().unwrap_or(false)
                || cx.connected_inputs.get(AUDIO_PACKETS).copied().unwrap_or(false);
            validate(&p, audio)
        }
        None => vec![],
    })
    .temporal_with(|cx| {
        if cx.connected_inputs.get(AUDIO).copied().unwrap_or(false) {
            Temporal::Whole("it encodes decoded audio (`audio`), which chunk seams would cut into pieces; connect the source audio to `audio_packets` instead, which a job copies once over the whole run".into())
        } else {
            Temporal::PerItem
        }
    })
    .chunk_sink(EncodeChunks)
}

/// How a job cuts an `encode`: each chunk writes its own file (same container as the output),
/// joined at the end without re-encoding, with the source audio copied once.
pub struct EncodeChunks;

impl ChunkSink for EncodeChunks {
    fn output(&self, params: &Params) -> Result<Option<PathBuf>, String> {
        let path: String = params.parse("path").map_err(|e| e.to_string())?;
        if crate::media::is_printf_pattern(&path) {
            return Err(format!(
                "it writes an image sequence (`{path}`), which jobs cannot assemble yet"
            ));
        }
        Ok(Some(PathBuf::from(path)))
    }

    fn redirect(&self, params: &mut Params, path: &Path) {
        params
            .values
            .insert("path".into(), path.to_string_lossy().into_owned().into());
    }

    fn whole_inputs(&self) -> &'static [usize] {
        &[AUDIO_PACKETS]
    }

    /// The source audio is copied as it is, so the output's container must hold its codec (an
    /// unchunked run would re-encode it instead).
    fn prepare(
        &self,
        node_id: &str,
        params: &Params,
        whole: &[WholeInput],
    ) -> Result<(), NodeError> {
        let path: String = params.parse("path")?;
        let Some(audio) = whole.iter().find(|w| w.port == AUDIO_PACKETS) else {
            return Ok(());
        };
        #[cfg(feature = "media")]
        return crate::media::concat::check_audio(node_id, Path::new(&path), audio);
        #[cfg(not(feature = "media"))]
        let _ = (path, audio);
        #[cfg(not(feature = "media"))]
        return Err(crate::media::not_built(node_id, "encode"));
    }

    fn assemble(
        &self,
        node_id: &str,
        params: &Params,
        pieces: &[ChunkPiece],
        whole: &[WholeInput],
        output: &Path,
    ) -> Result<(), NodeError> {
        let audio = whole.iter().find(|w| w.port == AUDIO_PACKETS);
        // With a fixed `rate` frames are counted, not timed by the source: chunks follow on.
        let contiguous = params.parse::<Option<f64>>("rate")?.is_some();
        #[cfg(feature = "media")]
        return crate::media::concat::concat(node_id, pieces, audio, output, contiguous);
        #[cfg(not(feature = "media"))]
        let _ = (pieces, audio, output, contiguous);
        #[cfg(not(feature = "media"))]
        return Err(crate::media::not_built(node_id, "encode"));
    }
}

fn validate(p: &EncodeParams, audio: bool) -> Vec<Problem> {
    let mut out = vec![];
    let path = &p.path;
    if !path.contains("${") && path != "-" {
        let ext = std::path::Path::new(path)
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase());
        if ext.is_none() {
            out.push(
                Problem::param(
                    "path",
                    format!("`{path}` has no extension, so the container format is unknown"),
                )
                .help("end it with .mp4, .mkv, .mov, .webm, or use an image pattern like out/%05d.png"),
            );
        } else {
            #[cfg(feature = "media")]
            out.extend(crate::media::settings::check(
                &crate::media::settings::Settings {
                    path,
                    codec: p.codec.as_deref(),
                    preset: p.preset.as_deref(),
                    crf: p.crf,
                    pix_fmt: p.pix_fmt.as_deref(),
                    audio_codec: p.audio_codec.as_deref(),
                    audio,
                },
            ));
        }
    }
    #[cfg(not(feature = "media"))]
    let _ = audio;
    out
}

#[cfg(feature = "media")]
mod imp {
    use super::{AUDIO, AUDIO_PACKETS, EncodeParams, FRAMES};
    use crate::media::packets::AudioPacket;
    use crate::media::writer::{EncodeOptions, Writer};
    use vidflow_engine::Emitter;
    use vidflow_engine::{BuildCtx, End, Input, NodeError, Payload, Process, Rate, Runtime};

    struct Encode {
        node: String,
        writer: Writer,
        /// Writing an image sequence with an audio input connected: audio items are dropped.
        drop_audio: bool,
    }

    pub fn build(ctx: &BuildCtx<'_>) -> Result<Runtime, NodeError> {
        let node = ctx.node_id.to_string();
        let connected = |i: usize| ctx.connected_inputs.get(i).copied().unwrap_or(false);
        if connected(AUDIO_PACKETS) && connected(AUDIO) {
            return Err(NodeError::input(format!(
                "node `{node}`: connect `audio_packets` or `audio`, not both (one audio stream is written)"
            )));
        }
        let p: EncodeParams = ctx.params()?;
        let path = p.path.as_str();
        let audio_in = connected(AUDIO_PACKETS) || connected(AUDIO);
        // An image sequence has no audio track. The audio is read and left out, and the run
        // says so, so that one graph can write either a video or frames.
        let drop_audio = audio_in && crate::media::ff::is_printf_pattern(path);
        if drop_audio {
            vidflow_engine::progress::say(format!(
                "node `{node}`: `{path}` is an image sequence, which carries no audio: the audio input is not written"
            ));
        }
        let opts = EncodeOptions {
            codec: p.codec.clone(),
            crf: p.crf,
            preset: p.preset.clone(),
            pix_fmt: p.pix_fmt.clone(),
            rate: p.rate.map(Rate::from_fps),
            audio_codec: p
                .audio_codec
                .clone()
                .unwrap_or_else(|| crate::media::settings::default_audio_codec(&p.path).into()),
            audio_bitrate: p.audio_bitrate,
        };
        let mut writer = Writer::create(&node, path, opts, audio_in && !drop_audio)?;
        writer.set_gop(p.gop);
        Ok(Runtime::Process(Box::new(Encode {
            node,
            writer,
            drop_audio,
        })))
    }

    impl Process for Encode {
        fn process(&mut self, input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
            if self.drop_audio && input.port != FRAMES {
                return Ok(());
            }
            for item in &input.items {
                match (input.port, item) {
                    (FRAMES, Payload::Frame(f)) => self.writer.push_frame(f)?,
                    (AUDIO, Payload::Audio(a)) => self.writer.push_audio_chunk(a)?,
                    (AUDIO_PACKETS, p) => match p.downcast::<AudioPacket>() {
                        Some(pkt) => self.writer.push_audio_packet(pkt)?,
                        None => {
                            return Err(NodeError::input(format!(
                                "node `{}`: `audio_packets` takes audio packets from `decode`, got {}",
                                self.node,
                                p.describe()
                            )));
                        }
                    },
                    (_, other) => {
                        return Err(NodeError::input(format!(
                            "node `{}`: unexpected {} on input #{}",
                            self.node,
                            other.describe(),
                            input.port
                        )));
                    }
                }
            }
            Ok(())
        }

        fn finish(&mut self, _out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
            self.writer.finish(end)
        }
    }
}
