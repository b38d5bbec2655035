//! `decode`: a video file, an image file or an image sequence (`frames/%05d.png`, or a glob
//! `frames/*.png`) → frames with index, timestamp and the stream's rate (RGB24, or planar YUV
//! 4:2:0 copied from the decoder without conversion when the source is 4:2:0 and every consumer
//! takes it, e.g. a transcode's `encode`); decoded audio as
//! interleaved f32 chunks at a requested rate and channel count; the source audio stream as
//! compressed packets for muxing untouched; and one `info` record describing the input.
//!
//! Time window: `start`/`end` in seconds (the input is sought to `start`), or
//! `start_frame`/`end_frame` as frame indices. Sampling: `every: N` keeps every Nth frame of the
//! window, `fps: x` keeps the first frame at or after each multiple of 1/x seconds (`fps:
//! 0.0333` ≈ one frame every 30 s). Frame `pts` is in seconds from the start of the input, taken
//! from the stream's own timestamps, so variable-frame-rate input keeps its timing; `index` is
//! the frame's position in the input (after sampling too).
//!
//! Everything streams: one packet is read, decoded and emitted at a time, and a full
//! downstream queue blocks the reading.
//!
//! Decoded audio is the same sample for sample wherever the window starts (so a job's chunks
//! get the samples of the unchunked run): its samples sit on the output rate's grid counted
//! from the input's time 0, and a window with a `start` is decoded from [`AUDIO_PREROLL`]
//! before it, so the decoder and the resampler have settled by `start`. Exact for PCM at any
//! rate, and for codecs whose decoding after a seek settles within the pre-roll; not for
//! AAC's noise substitution (PNS), whose noise follows a generator that a seek restarts.

use vidflow_engine::{
    ChunkSource, NodeError, NodeKind, NodeParams, ParamType, Params, PixelFormat, PortType,
    Problem, Temporal, Timeline, params,
};

pub const FRAMES: usize = 0;
pub const AUDIO: usize = 1;
pub const AUDIO_PACKETS: usize = 2;
pub const INFO: usize = 3;

/// Seconds of audio decoded before a window's `start` and dropped: enough for a decoder to
/// settle after a seek (an AAC or MP3 frame needs the one before it; a frame lasts up to
/// 128 ms at 8 kHz) and for the resampler's filter (a few ms).
pub const AUDIO_PREROLL: f64 = 0.5;

params! {
    /// The params of `decode`.
    pub struct DecodeParams {
        /// video file, image file, image pattern (`frames/%05d.png`) or glob (`frames/*.png`)
        path: String = required(ParamType::Path),
        /// first second to decode (seeks)
        start: Option<f64> = optional(ParamType::float_from(0.0)),
        /// stop before this second
        end: Option<f64> = optional(ParamType::float_from(0.0)),
        /// first frame index to decode
        start_frame: Option<u64> = optional(ParamType::int_from(0)),
        /// stop before this frame index
        end_frame: Option<u64> = optional(ParamType::int_from(0)),
        /// keep every Nth frame of the window
        every: Option<u64> = optional(ParamType::int_from(1)),
        /// keep frames at this rate (e.g. 0.0333: one every 30 s)
        fps: Option<f64> = optional(ParamType::float_in(1e-6, 1000.0)),
        /// keep one frame every this many seconds (e.g. 30; the same as `fps: 1/30`)
        interval: Option<f64> = optional(ParamType::float_from(1e-3)),
        /// resize to this width (with only `height` given: keeps the aspect ratio)
        width: Option<u32> = optional(ParamType::int_in(2, 16384)),
        /// resize to this height (with only `width` given: keeps the aspect ratio)
        height: Option<u32> = optional(ParamType::int_in(2, 16384)),
        /// frame rate of an image sequence (default 25)
        rate: Option<f64> = optional(ParamType::float_in(0.001, 1000.0)),
        /// sample rate of the `audio` output (default: the source's)
        audio_rate: Option<u32> = optional(ParamType::int_in(1000, 384000)),
        /// channels of the `audio` output (default: the source's)
        audio_channels: Option<u16> = optional(ParamType::int_in(1, 8)),
    }
}

pub fn kind() -> NodeKind {
    NodeKind::gated(
        "decode",
        "Decodes a video file, image file or image sequence into frames (RGB, or a 4:2:0 source's YUV 4:2:0 when every consumer takes it), decoded audio (f32) and the source audio as packets for muxing.",
        "media",
        crate::gated_factory!("media", imp::build),
    )
    .output("frames", PortType::FRAMES, "frames (index, pts in seconds, the stream's rate): RGB24, or YUV420P from a 4:2:0 source where all consumers take it")
    .output("audio", PortType::AUDIO, "decoded audio: interleaved f32 chunks at `audio_rate` Hz, `audio_channels` channels")
    .output("audio_packets", crate::media::AUDIO_PACKETS, "the source audio stream, compressed, for `encode` to mux untouched (first item: the stream header)")
    .output("info", PortType::RECORDS, "one record: size, rate, frame count, duration, codecs, audio stream")
    .offers("frames", &[PixelFormat::Yuv420p, PixelFormat::Rgb24])
    .params::<DecodeParams>()
    .example("- id: dec\n  kind: decode\n  params: { path: input.mp4, fps: 1 }\n")
    .check(|cx| match cx.params::<DecodeParams>() {
        Some(p) => validate(&p),
        None => vec![],
    })
    // Sampling keeps frames by their place since the window's first frame, which a chunk
    // would move: a sampled source cannot be cut (yet), and `vidflow check --job` says so.
    .temporal_with(|cx| match cx.params::<DecodeParams>() {
        Some(p) if p.sampler().is_some() => Temporal::Whole(
            "it samples frames (`every`, `fps` or `interval`) counting from the window's first frame, which each chunk would move; sample after decoding, or run without `--job`".into(),
        ),
        _ => Temporal::PerItem,
    })
    .chunk_source(DecodeChunks)
}

/// How a job cuts a `decode`: its timeline is read from the packets (`media::probe`), and a
/// chunk is a time window in seconds.
pub struct DecodeChunks;

impl ChunkSource for DecodeChunks {
    fn timeline(&self, node_id: &str, params: &Params) -> Result<Timeline, NodeError> {
        let p = DecodeParams::from_params(params)?;
        if let Some(sampler) = p.sampler() {
            return Err(NodeError::input(format!(
                "node `{node_id}`: a job cannot cut a sampled source yet; `{sampler}` keeps frames by their position since the window's first frame, so every chunk would sample differently. Run it without `--job`, or sample after decoding"
            )));
        }
        #[cfg(feature = "media")]
        return crate::media::probe::timeline(node_id, &p.source());
        #[cfg(not(feature = "media"))]
        let _ = p;
        #[cfg(not(feature = "media"))]
        return Err(crate::media::not_built(node_id, "decode"));
    }

    /// `start`/`end` are timeline `pts` values, which `decode` compares with a tolerance
    /// (`probe::EPS`), so the frame at `start` is in and the one at `end` is out. Without
    /// `end` the window's own end stays: an `end` in seconds as it is, an `end_frame` as the
    /// `pts` of that frame (frame indices and seconds cannot be mixed in one window).
    fn restrict(&self, params: &mut Params, start: f64, end: Option<f64>) {
        #[cfg(feature = "media")]
        let window_end = match DecodeParams::from_params(params) {
            Ok(p) if p.end_frame.is_some() => crate::media::probe::end_of_frame_window(&p.source()),
            Ok(p) => p.end,
            Err(_) => None,
        };
        // Without `media` no job can run a `decode` (its timeline fails), so this is moot.
        #[cfg(not(feature = "media"))]
        let window_end = params.get("end").and_then(|e| e.as_f64());
        let v = &mut params.values;
        v.remove("start_frame");
        v.remove("end_frame");
        v.insert("start".into(), start.into());
        match end.or(window_end) {
            Some(e) => v.insert("end".into(), e.into()),
            None => v.remove("end"),
        };
    }

    /// The audio of `start..end` within the node's own window (a frame window timed at
    /// `Span::NOMINAL_FPS`, as a `decode` whose frames are not taken times it). A `start` at
    /// or before the beginning, with no window start of its own, leaves `start` out: the node
    /// then decodes from the very first sample, as the unrestricted run does (some streams
    /// start before 0).
    fn restrict_audio(&self, params: &mut Params, start: f64, end: Option<f64>) {
        #[cfg(feature = "media")]
        let (own_start, own_end) = match DecodeParams::from_params(params) {
            Ok(p) => p.span().secs(crate::media::probe::Span::NOMINAL_FPS),
            Err(_) => return,
        };
        // Without `media` no job can run a `decode`, so this is moot.
        #[cfg(not(feature = "media"))]
        let (own_start, own_end) = (f64::NEG_INFINITY, f64::INFINITY);
        let start = start.max(own_start);
        let end = end.unwrap_or(f64::INFINITY).min(own_end);
        let v = &mut params.values;
        v.remove("start_frame");
        v.remove("end_frame");
        if start > 0.0 || own_start.is_finite() {
            v.insert("start".into(), start.into());
        } else {
            v.remove("start");
        }
        if end.is_finite() {
            v.insert("end".into(), end.into());
        } else {
            v.remove("end");
        }
    }

    fn audio_end(&self, node_id: &str, params: &Params) -> Result<Option<f64>, NodeError> {
        let p = DecodeParams::from_params(params)?;
        #[cfg(feature = "media")]
        return Ok(crate::media::probe::audio_end(node_id, &p.path, p.rate)?
            .map(|e| e.min(p.span().secs(crate::media::probe::Span::NOMINAL_FPS).1)));
        #[cfg(not(feature = "media"))]
        let _ = (node_id, p);
        #[cfg(not(feature = "media"))]
        return Ok(None);
    }
}

impl DecodeParams {
    /// The sampling param given (`every`, `fps` or `interval`), if any.
    fn sampler(&self) -> Option<&'static str> {
        [
            ("every", self.every.is_some()),
            ("fps", self.fps.is_some()),
            ("interval", self.interval.is_some()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }
    /// The time window, as `decode` applies it.
    #[cfg(feature = "media")]
    pub fn span(&self) -> crate::media::probe::Span {
        crate::media::probe::Span {
            start: self.start,
            end: self.end,
            start_frame: self.start_frame,
            end_frame: self.end_frame,
        }
    }
    /// What the probe reads for a job's timeline.
    #[cfg(feature = "media")]
    fn source(&self) -> crate::media::probe::Source<'_> {
        crate::media::probe::Source {
            path: &self.path,
            rate: self.rate,
            span: self.span(),
        }
    }
}

fn validate(p: &DecodeParams) -> Vec<Problem> {
    let mut out = vec![];
    let problem =
        |param: &str, message: String, help: &str| Problem::param(param, message).help(help);
    if let (Some(s), Some(e)) = (p.start, p.end)
        && e <= s
    {
        out.push(problem(
            "end",
            format!("`end` ({e}) must be after `start` ({s})"),
            "make `end` larger than `start`, or leave it out to decode to the end",
        ));
    }
    if let (Some(s), Some(e)) = (p.start_frame, p.end_frame)
        && e <= s
    {
        out.push(problem(
            "end_frame",
            format!("`end_frame` ({e}) must be after `start_frame` ({s})"),
            "make `end_frame` larger than `start_frame`",
        ));
    }
    let secs = p.start.is_some() || p.end.is_some();
    let frames = p.start_frame.is_some() || p.end_frame.is_some();
    if secs && frames {
        let which = if p.start_frame.is_some() {
            "start_frame"
        } else {
            "end_frame"
        };
        out.push(problem(which, "give the window in seconds (`start`/`end`) or in frames (`start_frame`/`end_frame`), not both".into(), "remove one pair"));
    }
    let samplers: Vec<&str> = [
        ("every", p.every.is_some()),
        ("fps", p.fps.is_some()),
        ("interval", p.interval.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    if samplers.len() > 1 {
        out.push(problem(
            samplers[1],
            format!(
                "`{}` and `{}` both sample frames; give one",
                samplers[0], samplers[1]
            ),
            "keep one of `every` (frames), `fps` (rate) and `interval` (seconds)",
        ));
    }
    out
}

#[cfg(feature = "media")]
mod imp {
    use super::{AUDIO, AUDIO_PACKETS, DecodeParams, FRAMES, INFO};
    use crate::media::ff::{self, ffmpeg, ffmpeg::ffi};
    use crate::media::packets::{AudioPacket, AudioStreamInfo};
    use crate::media::probe::{self, AudioCut, AudioPlace, EPS, Span};
    use serde_json::json;
    use std::sync::Arc;
    use vidflow_engine::Emitter;
    use vidflow_engine::{
        AudioChunk, BuildCtx, Frame, NodeError, Payload, PixelFormat, Rate, Runtime, Source,
    };

    struct Window {
        /// `start`/`end`/`start_frame`/`end_frame`; its rules are shared with the job timeline
        /// (`media::probe`), which must predict exactly the frames kept here.
        span: Span,
        every: Option<u64>,
        fps: Option<f64>,
    }

    struct VideoIn {
        index: usize,
        /// Seconds per tick of the stream's time base.
        tb: f64,
        dec: ffmpeg::decoder::Video,
        size: Option<(u32, u32)>,
        /// The format the plan negotiated for `frames` (YUV 4:2:0 when every consumer takes it).
        format: PixelFormat,
        scaler: Option<ff::Scaler>,
        /// The frames' buffers, reused once downstream has dropped them.
        pool: ff::BufferPool,
        rate: Rate,
        /// The frames the stream holds, when known exactly (see [`probe::packets`]).
        expected: Option<u64>,
        decoded: u64,
        emitted: u64,
        first_kept: Option<u64>,
        next_t: Option<f64>,
        done: bool,
    }

    struct AudioIn {
        index: usize,
        tb: f64,
        origin_ticks: i64,
        dec: Option<(ffmpeg::decoder::Audio, Option<ff::Resampler>, u32, u16)>,
        /// Time of the next decoded sample, in seconds from the input's start.
        t_next: Option<f64>,
        pass: Option<Arc<AudioStreamInfo>>,
        /// The packets the stream holds, when known exactly (see [`probe::packets`]).
        packets: Option<u64>,
        samples: u64,
        done: bool,
    }

    struct Decode {
        node: String,
        path: String,
        input: ffmpeg::format::context::Input,
        origin: f64,
        window: Window,
        seeked: bool,
        video: Option<VideoIn>,
        audio: Option<AudioIn>,
        info: Option<serde_json::Value>,
        passthrough_wanted: bool,
        duration: Option<f64>,
    }

    fn even(x: f64) -> u32 {
        ((x / 2.0).round() as u32 * 2).max(2)
    }

    pub fn build(ctx: &BuildCtx<'_>) -> Result<Runtime, NodeError> {
        let node = ctx.node_id.to_string();
        let p: DecodeParams = ctx.params()?;
        let path = p.path.clone();
        let wants = |port: usize| ctx.output_consumers.get(port).copied().unwrap_or(0) > 0;
        if !ff::is_pattern(&path) && !std::path::Path::new(&path).exists() {
            return Err(NodeError::input(format!(
                "node `{node}`: input `{path}` does not exist; check the path (relative paths are from the working folder)"
            )));
        }
        let input = ff::open_input(&path, p.rate).map_err(|e| {
            NodeError::input(format!("node `{node}`: cannot open `{path}`: {e} (is it a video or image file FFmpeg can read?)"))
        })?;
        let window = Window {
            span: p.span(),
            every: p.every,
            // `interval` is the reciprocal spelling of `fps` (seconds between kept frames).
            fps: p.fps.or_else(|| p.interval.map(|s| 1.0 / s)),
        };
        let origin = probe::origin(&input);
        let duration = match input.duration() {
            d if d == ffi::AV_NOPTS_VALUE || d <= 0 => None,
            d => Some(d as f64 / ffi::AV_TIME_BASE as f64),
        };

        let best = |kind| input.streams().best(kind).map(|s| s.index());
        let v_index = best(ffmpeg::media::Type::Video);
        let a_index = best(ffmpeg::media::Type::Audio);
        let frames_wanted = wants(FRAMES);
        let audio_wanted = wants(AUDIO);
        let passthrough_wanted = wants(AUDIO_PACKETS);

        let mut info = json!({"type": "info", "path": path, "format": input.format().name(), "duration": duration});
        let mut video = None;
        if let Some(vi) = v_index {
            let st = input.stream(vi).expect("stream exists");
            let params = st.parameters();
            let (pw, ph) = (params.width(), params.height());
            let size = match (p.width, p.height) {
                (Some(w), Some(h)) => Some((w, h)),
                (Some(w), None) if pw > 0 => Some((w, even(w as f64 * ph as f64 / pw as f64))),
                (None, Some(h)) if ph > 0 => Some((even(h as f64 * pw as f64 / ph as f64), h)),
                _ => None,
            };
            let rate = probe::video_rate(&st);
            let tb = st.time_base();
            let expected = probe::packets(&input, vi, true);
            info["width"] = json!(pw);
            info["height"] = json!(ph);
            info["rate"] = json!(rate.to_string());
            info["fps"] = json!(rate.fps());
            info["frames"] = json!(expected);
            info["video_codec"] = json!(ff::codec_name(unsafe { (*params.as_ptr()).codec_id }));
            if frames_wanted {
                let mut cctx = ffmpeg::codec::Context::from_parameters(params).map_err(|e| {
                    NodeError::input(format!(
                        "node `{node}`: cannot read the video stream of `{path}`: {e}"
                    ))
                })?;
                unsafe {
                    let c = cctx.as_mut_ptr();
                    (*c).thread_count = 0;
                    (*c).thread_type = ffi::FF_THREAD_FRAME | ffi::FF_THREAD_SLICE;
                    (*c).pkt_timebase = tb.into();
                }
                let dec = cctx.decoder().video().map_err(|e| {
                    NodeError::input(format!(
                        "node `{node}`: cannot decode the video of `{path}` ({}): {e}",
                        info["video_codec"].as_str().unwrap_or("?")
                    ))
                })?;
                video = Some(VideoIn {
                    index: vi,
                    tb: f64::from(tb),
                    dec,
                    size,
                    format: ctx.output_format(FRAMES),
                    scaler: None,
                    pool: ff::BufferPool::default(),
                    rate,
                    expected,
                    decoded: 0,
                    emitted: 0,
                    first_kept: None,
                    next_t: None,
                    done: false,
                });
            }
        } else if frames_wanted {
            return Err(NodeError::input(format!(
                "node `{node}`: `{path}` has no video stream, but output `frames` is connected"
            )));
        }

        let mut audio = None;
        match a_index {
            Some(ai) => {
                let st = input.stream(ai).expect("stream exists");
                let tb = st.time_base();
                let audio_packets = probe::packets(&input, ai, false);
                let params = st.parameters();
                let stream_info = unsafe {
                    AudioStreamInfo::copy_from(params.as_ptr(), (tb.numerator(), tb.denominator()))?
                };
                info["audio"] = json!({"codec": stream_info.codec, "sample_rate": stream_info.sample_rate, "channels": stream_info.channels});
                let dec = if audio_wanted {
                    let mut cctx =
                        ffmpeg::codec::Context::from_parameters(params).map_err(|e| {
                            NodeError::input(format!(
                                "node `{node}`: cannot read the audio stream of `{path}`: {e}"
                            ))
                        })?;
                    unsafe { (*cctx.as_mut_ptr()).pkt_timebase = tb.into() };
                    let dec = cctx.decoder().audio().map_err(|e| {
                        NodeError::input(format!(
                            "node `{node}`: cannot decode the audio of `{path}` ({}): {e}",
                            stream_info.codec
                        ))
                    })?;
                    let rate = p.audio_rate.unwrap_or(stream_info.sample_rate.max(1));
                    let channels = p.audio_channels.unwrap_or(stream_info.channels.max(1));
                    Some((dec, None, rate, channels))
                } else {
                    None
                };
                if dec.is_some() || passthrough_wanted {
                    let tbf = f64::from(tb);
                    audio = Some(AudioIn {
                        index: ai,
                        tb: tbf,
                        origin_ticks: (origin / tbf).round() as i64,
                        dec,
                        t_next: None,
                        pass: passthrough_wanted.then(|| Arc::new(stream_info)),
                        packets: audio_packets,
                        samples: 0,
                        done: false,
                    });
                }
            }
            None => {
                info["audio"] = json!(null);
                if audio_wanted {
                    return Err(NodeError::input(format!(
                        "node `{node}`: `{path}` has no audio stream, but output `audio` is connected; disconnect it or use a file with sound"
                    )));
                }
            }
        }

        Ok(Runtime::Source(Box::new(Decode {
            node,
            path,
            input,
            origin,
            window,
            seeked: false,
            video,
            audio,
            info: wants(INFO).then_some(info),
            passthrough_wanted,
            duration,
        })))
    }

    fn is_again(e: &ffmpeg::Error) -> bool {
        matches!(e, ffmpeg::Error::Other { errno } if *errno == ff::EAGAIN)
    }

    impl Decode {
        fn damaged(&self, what: String) -> NodeError {
            NodeError::input(format!(
                "node `{}`: {what} in `{}`; the file may be truncated or damaged",
                self.node, self.path
            ))
        }

        /// The window's start and end in seconds (frame windows converted with the nominal rate).
        fn window_secs(&self) -> (f64, f64) {
            let fps = self
                .video
                .as_ref()
                .map(|v| v.rate.fps())
                .unwrap_or(Span::NOMINAL_FPS);
            self.window.span.secs(fps)
        }

        /// Items per output port (frames, audio packets with their leading stream header, the
        /// info record) where they are known exactly, for progress and ETA; and whether every
        /// connected port's is. A guess would end as "200/199": totals are exact or absent.
        fn expected_per_port(&self) -> (Vec<(usize, u64)>, bool) {
            let mut ports = vec![];
            let mut all = true;
            match self.expected_frames() {
                Some(n) => ports.push((FRAMES, n)),
                None => all = false,
            }
            if let Some(a) = &self.audio {
                // Decoded audio comes in as many chunks as the decoder and resampler make.
                if a.dec.is_some() {
                    all = false;
                }
                let (s, e) = self.window_secs();
                let whole = !s.is_finite() && !e.is_finite();
                match a.packets.filter(|_| whole) {
                    Some(n) if a.pass.is_some() => ports.push((AUDIO_PACKETS, n + 1)),
                    None if a.pass.is_some() => all = false,
                    _ => {}
                }
            } else if self.passthrough_wanted {
                // Only the header that says there is no audio.
                ports.push((AUDIO_PACKETS, 1));
            }
            if self.info.is_some() {
                ports.push((INFO, 1));
            }
            (ports, all)
        }

        fn expected_frames(&self) -> Option<u64> {
            let Some(v) = self.video.as_ref() else {
                return Some(0);
            };
            let fps = v.rate.fps();
            let n = v.expected? as f64;
            let (s, e) = self.window_secs();
            let first = if s.is_finite() {
                (s * fps).ceil().max(0.0)
            } else {
                0.0
            };
            let last = if e.is_finite() {
                (e * fps).ceil().min(n)
            } else {
                n
            };
            let count = (last - first).max(0.0);
            let count = match (self.window.every, self.window.fps) {
                (Some(k), _) => (count / k as f64).ceil(),
                (_, Some(r)) => ((count / fps) * r).ceil(),
                _ => count,
            };
            Some(count as u64)
        }

        fn run_inner(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
            let (ports, all) = self.expected_per_port();
            if all {
                out.set_total(ports.iter().map(|&(_, n)| n).sum());
            }
            for (port, n) in ports {
                out.set_port_total(port, n);
            }
            if let Some(info) = self.info.take() {
                out.emit(INFO, Payload::record(info))?;
            }
            if self.passthrough_wanted {
                let header = self.audio.as_ref().and_then(|a| a.pass.clone());
                out.emit(
                    AUDIO_PACKETS,
                    Payload::Custom(Arc::new(AudioPacket::Stream(header))),
                )?;
            }
            // Seek to the keyframe at or before `start`; frames before it are decoded and dropped.
            // Decoded audio is sought earlier still, by the pre-roll its decoder and resampler
            // need to give the samples from `start` exactly.
            let audio_decoded = self.audio.as_ref().is_some_and(|a| a.dec.is_some());
            let seek = match self.window.span.start {
                Some(s) if audio_decoded => Some(s - super::AUDIO_PREROLL),
                s => s,
            };
            self.seeked = probe::seek_to_start(&mut self.input, seek, self.origin);
            loop {
                // A fresh packet per read: `av_read_frame` does not release what the packet
                // held before, so reusing one would leak every packet's data.
                let mut packet = ffmpeg::Packet::empty();
                if out.stopping() {
                    return Err(NodeError::Stopped);
                }
                let video_done = self.video.as_ref().is_none_or(|v| v.done);
                let audio_done = self.audio.as_ref().is_none_or(|a| a.done);
                if video_done && audio_done {
                    break;
                }
                match packet.read(&mut self.input) {
                    Ok(()) => {}
                    Err(ffmpeg::Error::Eof) => break,
                    Err(e) if is_again(&e) => continue,
                    Err(e) => {
                        let at = self.video.as_ref().map(|v| v.decoded).unwrap_or(0);
                        return Err(self.damaged(format!("read error after frame {at}: {e}")));
                    }
                }
                let si = packet.stream();
                if self
                    .video
                    .as_ref()
                    .is_some_and(|v| v.index == si && !v.done)
                {
                    let v = self.video.as_mut().expect("checked");
                    let r = v.dec.send_packet(&packet);
                    if let Err(e) = r {
                        let at = self.video.as_ref().map(|v| v.decoded).unwrap_or(0);
                        return Err(
                            self.damaged(format!("cannot decode the video after frame {at}: {e}"))
                        );
                    }
                    self.drain_video(out)?;
                } else if self
                    .audio
                    .as_ref()
                    .is_some_and(|a| a.index == si && !a.done)
                {
                    self.audio_packet(&packet, out)?;
                }
            }
            // Flush the decoders.
            if let Some(v) = self.video.as_mut().filter(|v| !v.done) {
                let _ = v.dec.send_eof();
                self.drain_video(out)?;
            }
            if let Some(a) = self.audio.as_mut().filter(|a| !a.done)
                && let Some((dec, ..)) = a.dec.as_mut()
            {
                let _ = dec.send_eof();
                self.drain_audio(out)?;
                self.flush_resampler(out)?;
            }
            self.check_end()
        }

        fn check_end(&self) -> Result<(), NodeError> {
            let Some(v) = &self.video else { return Ok(()) };
            if v.decoded == 0 {
                return Err(NodeError::input(format!(
                    "node `{}`: `{}` contains no video frames",
                    self.node, self.path
                )));
            }
            if v.emitted == 0 {
                let (s, e) = self.window_secs();
                return Err(NodeError::input(format!(
                    "node `{}`: no frames of `{}` fall in the requested window ({}..{}); the input has {} frames{}",
                    self.node,
                    self.path,
                    if s.is_finite() {
                        format!("{s}s")
                    } else {
                        String::new()
                    },
                    if e.is_finite() {
                        format!("{e}s")
                    } else {
                        String::new()
                    },
                    v.decoded,
                    self.duration
                        .map(|d| format!(" over {d:.3}s"))
                        .unwrap_or_default()
                )));
            }
            // Damage is what the demuxer or the decoder reports (above, as it happens), never a
            // container's announced count: a variable-rate AVI announces its dropped frames.
            Ok(())
        }

        fn drain_video(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
            let mut frame = ffmpeg::frame::Video::empty();
            loop {
                let v = self.video.as_mut().expect("video decoding");
                match v.dec.receive_frame(&mut frame) {
                    Ok(()) => {}
                    Err(ffmpeg::Error::Eof) => return Ok(()),
                    Err(e) if is_again(&e) => return Ok(()),
                    Err(e) => {
                        let at = v.decoded;
                        return Err(
                            self.damaged(format!("cannot decode the video after frame {at}: {e}"))
                        );
                    }
                }
                if v.done {
                    continue;
                }
                let fps = v.rate.fps();
                let pts = match frame.timestamp().or(frame.pts()) {
                    Some(t) => probe::seconds(t, v.tb, self.origin),
                    None => v.decoded as f64 / fps,
                };
                let index = if self.seeked {
                    (pts * fps).round().max(0.0) as u64
                } else {
                    v.decoded
                };
                v.decoded += 1;
                let w = &self.window;
                if w.span.before(index, pts) {
                    continue;
                }
                if w.span.after(index, pts) {
                    v.done = true;
                    continue;
                }
                let first = *v.first_kept.get_or_insert(index);
                if let Some(k) = w.every
                    && !(index - first).is_multiple_of(k)
                {
                    continue;
                }
                if let Some(r) = w.fps {
                    let next = v.next_t.get_or_insert(pts);
                    if pts + EPS < *next {
                        continue;
                    }
                    let step = 1.0 / r;
                    while *next <= pts + EPS {
                        *next += step;
                    }
                }
                let (fw, fh) = (frame.width(), frame.height());
                if fw == 0 || fh == 0 {
                    return Err(self.damaged(format!("frame {index} has no picture")));
                }
                let (ow, oh) = v.size.unwrap_or((fw, fh));
                let src_fmt: ffi::AVPixelFormat =
                    unsafe { ffi::AVPixelFormat((*frame.as_ptr()).format) };
                // YUV 4:2:0 only from a 4:2:0 source: any other (4:4:4, 4:2:2, full-range
                // `yuvj`, 10-bit) would lose chroma or precision squeezed into it, so it goes
                // to RGB24, which every input takes, as it did before formats were negotiated.
                let format = match v.format {
                    PixelFormat::Yuv420p if ff::engine_format(src_fmt) != Some(v.format) => {
                        PixelFormat::Rgb24
                    }
                    f => f,
                };
                let (node, path) = (&self.node, &self.path);
                let data = v.pool.fill(|buf| {
                    if ff::engine_format(src_fmt) == Some(format) && (ow, oh) == (fw, fh) {
                        // Already in the negotiated format (a transcode's YUV 4:2:0): the
                        // planes are copied as they are, never converted.
                        unsafe { ff::copy_to_buffer(frame.as_ptr(), format, fw, fh, buf) };
                        return Ok(());
                    }
                    let scaler = ff::Scaler::reuse(
                        &mut v.scaler,
                        (src_fmt, fw, fh),
                        (ff::av_format(format), ow, oh),
                    )
                    .map_err(|e| NodeError::runtime(format!("node `{node}`: `{path}`: {e}")))?;
                    unsafe { scaler.to_buffer(frame.as_ptr(), buf) };
                    Ok(())
                })?;
                v.emitted += 1;
                let rate = v.rate;
                out.emit(
                    FRAMES,
                    Payload::Frame(Frame::shared(index, pts, rate, ow, oh, format, data)),
                )?;
            }
        }

        fn audio_packet(
            &mut self,
            packet: &ffmpeg::Packet,
            out: &mut Emitter<'_>,
        ) -> Result<(), NodeError> {
            let window = self.window_secs();
            let a = self.audio.as_mut().expect("audio");
            if let Some(stream) = a.pass.clone() {
                let pts = packet.pts().map(|p| p - a.origin_ticks);
                let dts = packet.dts().map(|d| d - a.origin_ticks);
                // The same cut as a job's assembly copies the source audio with (`media::concat`).
                let place =
                    AudioCut::new(a.tb, self.origin, window).place(pts, dts, packet.duration());
                if place == AudioPlace::Past && a.dec.is_none() {
                    a.done = true;
                }
                if place == AudioPlace::Keep
                    && let Some(data) = packet.data()
                {
                    let item = AudioPacket::Packet {
                        stream,
                        data: data.to_vec(),
                        pts,
                        dts,
                        duration: packet.duration(),
                        flags: packet.flags().bits(),
                    };
                    out.emit(AUDIO_PACKETS, Payload::Custom(Arc::new(item)))?;
                }
            }
            if let Some((dec, ..)) = a.dec.as_mut() {
                if let Err(e) = dec.send_packet(packet) {
                    let at = a.samples;
                    return Err(
                        self.damaged(format!("cannot decode the audio after sample {at}: {e}"))
                    );
                }
                self.drain_audio(out)?;
            }
            Ok(())
        }

        fn drain_audio(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
            let mut frame = ffmpeg::frame::Audio::empty();
            loop {
                let a = self.audio.as_mut().expect("audio");
                let (dec, res, rate, channels) = a.dec.as_mut().expect("audio decoding");
                match dec.receive_frame(&mut frame) {
                    Ok(()) => {}
                    Err(ffmpeg::Error::Eof) => return Ok(()),
                    Err(e) if is_again(&e) => return Ok(()),
                    Err(e) => {
                        let at = a.samples;
                        return Err(
                            self.damaged(format!("cannot decode the audio after sample {at}: {e}"))
                        );
                    }
                }
                // Silence put before the first input sample, down to the grid (see below).
                let mut lead = 0;
                if a.t_next.is_none() {
                    let mut t = frame
                        .timestamp()
                        .or(frame.pts())
                        .map(|t| t as f64 * a.tb - self.origin)
                        .unwrap_or(0.0);
                    // Resampled samples sit on the output rate's grid from time 0 wherever
                    // decoding starts, so the resampler's input starts on a sample of that grid:
                    // the input sample `j` nearest `t`, less `j mod step` samples of silence
                    // (`step` = in / gcd(in, out): 441 at 44.1 to 16 kHz, 3 at 48 to 16 kHz).
                    let in_rate = unsafe { (*frame.as_ptr()).sample_rate }.max(1) as u32;
                    if in_rate != *rate {
                        let step = (in_rate / gcd(in_rate, *rate)) as i64;
                        let j = (t * in_rate as f64).round() as i64;
                        lead = j.rem_euclid(step) as u32;
                        t = (j - lead as i64) as f64 / in_rate as f64;
                    }
                    a.t_next = Some(t);
                }
                if res.is_none() {
                    let r = unsafe {
                        let f = frame.as_ptr();
                        let fmt: ffi::AVSampleFormat = ffi::AVSampleFormat((*f).format);
                        ff::Resampler::new(
                            fmt,
                            &(*f).ch_layout,
                            (*f).sample_rate as u32,
                            *rate,
                            *channels,
                        )
                    };
                    *res = Some(r.map_err(|e| {
                        NodeError::runtime(format!("node `{}`: `{}`: {e}", self.node, self.path))
                    })?);
                }
                if lead > 0 {
                    res.as_mut()
                        .expect("set")
                        .inject_silence(lead)
                        .map_err(|e| {
                            NodeError::runtime(format!(
                                "node `{}`: `{}`: {e}",
                                self.node, self.path
                            ))
                        })?;
                }
                let samples = unsafe { res.as_mut().expect("set").convert(frame.as_ptr()) }
                    .map_err(|e| {
                        NodeError::runtime(format!("node `{}`: `{}`: {e}", self.node, self.path))
                    })?;
                self.emit_samples(samples, out)?;
            }
        }

        fn flush_resampler(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
            let a = self.audio.as_mut().expect("audio");
            let Some((_, Some(res), ..)) = a.dec.as_mut() else {
                return Ok(());
            };
            let samples = unsafe { res.convert(std::ptr::null()) }.map_err(|e| {
                NodeError::runtime(format!("node `{}`: `{}`: {e}", self.node, self.path))
            })?;
            self.emit_samples(samples, out)
        }

        /// Emits converted samples, cut to the window; timestamps follow the sample count, so
        /// consecutive chunks are contiguous.
        fn emit_samples(
            &mut self,
            samples: Vec<f32>,
            out: &mut Emitter<'_>,
        ) -> Result<(), NodeError> {
            let (start, end) = self.window_secs();
            let a = self.audio.as_mut().expect("audio");
            let (_, _, rate, channels) = a.dec.as_ref().expect("audio decoding");
            let (rate, ch) = (*rate, *channels as usize);
            let n = samples.len() / ch;
            let t0 = a.t_next.unwrap_or(0.0);
            a.t_next = Some(t0 + n as f64 / rate as f64);
            let skip = if t0 < start {
                (((start - t0) * rate as f64).round() as usize).min(n)
            } else {
                0
            };
            let keep_to = if end.is_finite() {
                (((end - t0) * rate as f64).round().max(0.0) as usize).min(n)
            } else {
                n
            };
            if t0 + n as f64 / rate as f64 >= end - EPS {
                a.done = true;
            }
            if keep_to <= skip {
                return Ok(());
            }
            let chunk: Vec<f32> = if skip == 0 && keep_to == n {
                samples
            } else {
                samples[skip * ch..keep_to * ch].to_vec()
            };
            a.samples += (keep_to - skip) as u64;
            let chunk = AudioChunk {
                pts: t0 + skip as f64 / rate as f64,
                sample_rate: rate,
                channels: ch as u16,
                samples: Arc::new(chunk),
            };
            out.emit(AUDIO, Payload::Audio(chunk))
        }
    }

    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 { a.max(1) } else { gcd(b, a % b) }
    }

    impl Source for Decode {
        fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
            self.run_inner(out)
        }
    }
}
