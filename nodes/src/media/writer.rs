//! The muxing side shared by `encode` and `split`: frames (RGB24, or YUV 4:2:0 handed to a YUV
//! 4:2:0 encoder without conversion) → a video encoder (libx264 by default) → a container,
//! plus audio either copied from the source (`audio_packets`) or encoded from f32 chunks (AAC
//! by default). Files are written under a temporary name and
//! renamed when complete; image sequences are written into a temporary folder and moved into
//! place when complete.
//!
//! Timing: output timestamps are the frames' `pts` counted from the first frame (so a clip
//! decoded from `start: 12` begins at 0, its audio shifted by the same amount), in a time base
//! of 1/100 of a frame, so variable-frame-rate input keeps its timing. With `rate` set, frames
//! are re-timed to that constant rate instead. Every packet gets a duration (libx264 leaves it
//! 0, and the mp4 muxer then drops the last frame's duration).
//!
//! The container header needs every stream, so video packets are held (compressed) until the
//! audio input has said what it carries; `decode` sends its audio stream header before any
//! frame, so in practice nothing waits.

use super::ff::{self, ffmpeg::ffi};
use super::packets::{AudioPacket, AudioStreamInfo};
use crate::output::AtomicPath;
use std::collections::{BTreeMap, VecDeque};
use std::ffi::CStr;
use std::os::raw::c_int;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::Arc;
use vidflow_engine::{AudioChunk, End, Frame, NodeError, Rate};

/// Encoder settings, from the params of `encode` (and of `split` writing files, which takes
/// its video ones).
#[derive(Clone, Debug, Default)]
pub struct EncodeOptions {
    pub codec: Option<String>,
    pub crf: Option<f64>,
    pub preset: Option<String>,
    pub pix_fmt: Option<String>,
    pub rate: Option<Rate>,
    pub audio_codec: String,
    pub audio_bitrate: u64,
}

enum Dest {
    File(AtomicPath),
    Sequence { dir: PathBuf, temp: PathBuf },
}

struct CodecCtx(*mut ffi::AVCodecContext);
impl Drop for CodecCtx {
    fn drop(&mut self) {
        unsafe { ffi::avcodec_free_context(&mut self.0) };
    }
}

struct AvFrame(*mut ffi::AVFrame);
impl Drop for AvFrame {
    fn drop(&mut self) {
        unsafe { ffi::av_frame_free(&mut self.0) };
    }
}

struct AvPacket(*mut ffi::AVPacket);
impl AvPacket {
    fn new() -> AvPacket {
        AvPacket(unsafe { ffi::av_packet_alloc() })
    }
}
impl Drop for AvPacket {
    fn drop(&mut self) {
        unsafe { ffi::av_packet_free(&mut self.0) };
    }
}

struct VideoEnc {
    ctx: CodecCtx,
    /// The frame converted pixels are written into (frames not in the encoder's format).
    frame: AvFrame,
    /// Frames in the encoder's format are sent as this one, pointing at their own buffer.
    shared: AvFrame,
    /// The encoder's pixel format.
    fmt: ffi::AVPixelFormat,
    /// Converts frames whose format is not the encoder's (made on the first such frame).
    scaler: Option<ff::Scaler>,
    stream: usize,
    tb: ffi::AVRational,
    width: u32,
    height: u32,
    /// Ticks per frame at the nominal rate.
    nominal: i64,
    count: i64,
    last_pts: Option<i64>,
    /// pts → duration, filled when the next frame arrives.
    durations: BTreeMap<i64, i64>,
}

/// Audio encoding from interleaved f32.
struct AudioEnc {
    ctx: CodecCtx,
    frame: AvFrame,
    stream: usize,
    rate: u32,
    channels: usize,
    frame_size: usize,
    fmt: ffi::AVSampleFormat,
    fifo: VecDeque<f32>,
    /// Sample position (from the source's start) of the first sample in `fifo`.
    next_pts: Option<i64>,
    /// Decoder and converter when the audio comes as packets that cannot be copied.
    decode: Option<(CodecCtx, Option<ff::Resampler>, f64)>,
}

enum AudioState {
    /// Nothing connected, or the source has no audio.
    Off,
    /// Connected, nothing known yet.
    Waiting,
    Copy {
        stream: usize,
        tb: ffi::AVRational,
    },
    Encode(Box<AudioEnc>),
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Video,
    Audio,
}

pub struct Writer {
    node: String,
    shown: String,
    dest: Dest,
    oc: *mut ffi::AVFormatContext,
    opts: EncodeOptions,
    video: Option<VideoEnc>,
    audio: AudioState,
    started: bool,
    pending: Vec<(Kind, AvPacket)>,
    /// f32 audio that arrived before the first frame (so before `t0` is known).
    early_audio: Vec<AudioChunk>,
    t0: Option<f64>,
    /// Keyframe interval in frames (`None`: the encoder's default); see [`Writer::set_gop`].
    gop: Option<u32>,
    done: bool,
}

// The contexts are owned by the writer and used by one thread at a time.
unsafe impl Send for Writer {}

fn rational(num: i32, den: i32) -> ffi::AVRational {
    ffi::AVRational { num, den }
}

impl Writer {
    /// Prepares the output: checks the folder, creates the temporary file (or folder), so an
    /// unwritable destination fails before any work is done.
    pub fn create(
        node: &str,
        path: &str,
        opts: EncodeOptions,
        with_audio: bool,
    ) -> Result<Writer, NodeError> {
        ff::init();
        let sequence = ff::is_printf_pattern(path);
        let target = Path::new(path);
        let (dest, muxer, filename) = if sequence {
            let dir = match target.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !dir.is_dir() {
                return Err(NodeError::input(format!(
                    "node `{node}`: cannot write `{path}`: folder `{}` does not exist; create it or choose another output path",
                    dir.display()
                )));
            }
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let clean: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let temp = crate::output::unique_temp(&dir, &clean, |p| std::fs::create_dir(p))
                .map_err(|e| {
                    NodeError::input(format!(
                        "node `{node}`: cannot write into `{}` for `{path}`: {e}",
                        dir.display()
                    ))
                })?;
            let filename = temp.join(&name).to_string_lossy().into_owned();
            (Dest::Sequence { dir, temp }, "image2".to_string(), filename)
        } else {
            let muxer = ff::guess_muxer(path).ok_or_else(|| {
                NodeError::input(format!("node `{node}`: cannot tell the container format of `{path}` from its extension; use .mp4, .mkv, .mov, .webm or an image pattern like out/%05d.png"))
            })?;
            let file = AtomicPath::new(node, target)?;
            let filename = file.temp.to_string_lossy().into_owned();
            (Dest::File(file), muxer, filename)
        };
        if sequence && with_audio {
            cleanup(&dest);
            return Err(NodeError::input(format!(
                "node `{node}`: `{path}` is an image sequence, which cannot carry audio; disconnect the audio input or write a video file"
            )));
        }
        let c_fmt = ff::c_string(&muxer).map_err(NodeError::input)?;
        let c_name = ff::c_string(&filename).map_err(NodeError::input)?;
        let mut oc: *mut ffi::AVFormatContext = ptr::null_mut();
        let r = unsafe {
            ffi::avformat_alloc_output_context2(
                &mut oc,
                ptr::null(),
                c_fmt.as_ptr(),
                c_name.as_ptr(),
            )
        };
        if r < 0 || oc.is_null() {
            cleanup(&dest);
            return Err(NodeError::input(format!(
                "node `{node}`: cannot write `{path}`: {}",
                ff::av_err(r)
            )));
        }
        let mut w = Writer {
            node: node.to_string(),
            shown: path.to_string(),
            dest,
            oc,
            opts,
            video: None,
            audio: if with_audio {
                AudioState::Waiting
            } else {
                AudioState::Off
            },
            started: false,
            pending: vec![],
            early_audio: vec![],
            t0: None,
            gop: None,
            done: false,
        };
        unsafe {
            if (*(*oc).oformat).flags & ffi::AVFMT_NOFILE == 0 {
                let r = ffi::avio_open(&mut (*oc).pb, c_name.as_ptr(), ffi::AVIO_FLAG_WRITE);
                if r < 0 {
                    let msg = format!("node `{node}`: cannot write `{path}`: {}", ff::av_err(r));
                    w.abandon();
                    return Err(NodeError::input(msg));
                }
            }
        }
        // The video stream comes first; its parameters are set when the first frame arrives.
        if unsafe { ffi::avformat_new_stream(w.oc, ptr::null()) }.is_null() {
            let msg = format!("node `{node}`: cannot write `{path}`: cannot add the video stream");
            w.abandon();
            return Err(NodeError::runtime(msg));
        }
        // Fail now, not at the first frame, on a codec or pixel format that does not exist.
        w.pick_codec().map(|_| ())?;
        Ok(w)
    }

    /// Sets the largest number of frames between keyframes (the codec's `gop_size`; libx264's
    /// `keyint`), before the first frame. Kept out of [`EncodeOptions`], whose other users
    /// spell out every field.
    pub fn set_gop(&mut self, gop: Option<u32>) {
        self.gop = gop;
    }

    fn err(&self, what: impl std::fmt::Display) -> NodeError {
        NodeError::runtime(format!(
            "node `{}`: cannot write `{}`: {what}",
            self.node, self.shown
        ))
    }

    fn input_err(&self, what: impl std::fmt::Display) -> NodeError {
        NodeError::input(format!("node `{}`: `{}`: {what}", self.node, self.shown))
    }

    /// The video codec and pixel format to use.
    fn pick_codec(&self) -> Result<(*const ffi::AVCodec, ffi::AVPixelFormat), NodeError> {
        let name = match &self.opts.codec {
            Some(c) => c.clone(),
            None => super::settings::default_video_codec(&self.shown).to_string(),
        };
        let c = ff::c_string(&name).map_err(NodeError::input)?;
        let codec = unsafe { ffi::avcodec_find_encoder_by_name(c.as_ptr()) };
        if codec.is_null() || unsafe { (*codec).type_ } != ffi::AVMediaType::VIDEO {
            return Err(NodeError::input(format!(
                "node `{}`: no video encoder named `{name}` in this FFmpeg build (try libx264, libx265, mpeg4, png)",
                self.node
            )));
        }
        // SAFETY: `codec` is an encoder FFmpeg returned, checked non-null above.
        let supported = unsafe { super::settings::supported_pixels(codec) };
        let fmt = match &self.opts.pix_fmt {
            Some(n) => {
                let f = ff::pixel_by_name(n).ok_or_else(|| {
                    NodeError::input(format!(
                        "node `{}`: unknown pixel format `{n}` (e.g. yuv420p, yuv444p, rgb24)",
                        self.node
                    ))
                })?;
                if !supported.is_empty() && !supported.contains(&f) {
                    let list: Vec<String> = supported.iter().map(|f| ff::pixel_name(*f)).collect();
                    return Err(NodeError::input(format!(
                        "node `{}`: codec `{name}` cannot encode pixel format `{n}`; it takes {}",
                        self.node,
                        list.join(", ")
                    )));
                }
                f
            }
            None => {
                let prefer = [ffi::AVPixelFormat::YUV420P, ffi::AVPixelFormat::RGB24];
                prefer
                    .into_iter()
                    .find(|p| supported.is_empty() || supported.contains(p))
                    .unwrap_or(supported[0])
            }
        };
        Ok((codec, fmt))
    }

    fn open_video(&mut self, f: &Frame) -> Result<(), NodeError> {
        let (codec, fmt) = self.pick_codec()?;
        let rate = self.opts.rate.unwrap_or(f.rate);
        let rate = if rate.num == 0 {
            Rate::new(25, 1)
        } else {
            rate
        };
        // With a fixed output rate frames are counted; otherwise their pts keep 1/100 frame
        // precision.
        let tb = if self.opts.rate.is_some() {
            rational(rate.den as i32, rate.num as i32)
        } else {
            let mut tb = rational(
                rate.den as i32,
                (rate.num as i64 * 100).min(i32::MAX as i64) as i32,
            );
            unsafe {
                ffi::av_reduce(
                    &mut tb.num,
                    &mut tb.den,
                    tb.num as i64,
                    tb.den as i64,
                    i32::MAX as i64,
                )
            };
            tb
        };
        // Ticks of one frame at the nominal rate.
        let nominal = ((tb.den as f64 / tb.num as f64) / rate.fps())
            .round()
            .max(1.0) as i64;
        let subsampled = matches!(
            fmt,
            ffi::AVPixelFormat::YUV420P | ffi::AVPixelFormat::YUVJ420P | ffi::AVPixelFormat::NV12
        );
        if subsampled && (f.width % 2 == 1 || f.height % 2 == 1) {
            return Err(self.input_err(format!(
                "frames are {}x{}, but {} needs an even width and height; resize them (decode `width`/`height`) or set `pix_fmt: yuv444p`",
                f.width,
                f.height,
                ff::pixel_name(fmt)
            )));
        }
        unsafe {
            let ctx = CodecCtx(ffi::avcodec_alloc_context3(codec));
            if ctx.0.is_null() {
                return Err(self.err("out of memory"));
            }
            let c = ctx.0;
            (*c).width = f.width as c_int;
            (*c).height = f.height as c_int;
            (*c).pix_fmt = fmt;
            (*c).time_base = tb;
            (*c).framerate = rational(rate.num as i32, rate.den as i32);
            (*c).sample_aspect_ratio = rational(1, 1);
            (*c).thread_count = 0;
            if let Some(g) = self.gop {
                (*c).gop_size = g.min(c_int::MAX as u32) as c_int;
            }
            if (*(*self.oc).oformat).flags & ffi::AVFMT_GLOBALHEADER != 0 {
                (*c).flags |= ffi::AV_CODEC_FLAG_GLOBAL_HEADER as c_int;
            }
            let mut dict: *mut ffi::AVDictionary = ptr::null_mut();
            if let Some(crf) = self.opts.crf {
                let v = ff::c_string(&crf.to_string()).map_err(NodeError::input)?;
                ffi::av_dict_set(&mut dict, c"crf".as_ptr(), v.as_ptr(), 0);
            }
            if let Some(p) = &self.opts.preset {
                let v = ff::c_string(p).map_err(NodeError::input)?;
                ffi::av_dict_set(&mut dict, c"preset".as_ptr(), v.as_ptr(), 0);
            }
            let name = CStr::from_ptr((*codec).name).to_string_lossy().into_owned();
            if name == "libx264" {
                // Rate control and the stream's timing info from the nominal rate (as with a
                // 1/rate time base); the finer timestamps still pass through.
                ffi::av_dict_set(
                    &mut dict,
                    c"x264-params".as_ptr(),
                    c"force-cfr=1".as_ptr(),
                    0,
                );
            }
            let r = ffi::avcodec_open2(c, codec, &mut dict);
            let leftover = dict_keys(dict);
            ffi::av_dict_free(&mut dict);
            if r < 0 {
                let mut settings = vec![];
                if let Some(crf) = self.opts.crf {
                    settings.push(format!("crf {crf}"));
                }
                if let Some(p) = &self.opts.preset {
                    settings.push(format!("preset `{p}`"));
                }
                let settings = if settings.is_empty() {
                    String::new()
                } else {
                    format!(" with {}", settings.join(", "))
                };
                return Err(self.input_err(format!(
                    "cannot open encoder `{name}` for {}x{} {}{settings}: {}",
                    f.width,
                    f.height,
                    ff::pixel_name(fmt),
                    ff::av_err(r)
                )));
            }
            if !leftover.is_empty() {
                return Err(NodeError::input(format!(
                    "node `{}`: codec `{name}` does not take {}; remove it",
                    self.node,
                    leftover
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            // The video stream was added first when the output was created (so it is stream 0).
            let st = *(*self.oc).streams;
            (*st).time_base = tb;
            (*st).avg_frame_rate = (*c).framerate;
            let r = ffi::avcodec_parameters_from_context((*st).codecpar, c);
            if r < 0 {
                return Err(self.err(ff::av_err(r)));
            }
            let frame = AvFrame(ffi::av_frame_alloc());
            (*frame.0).width = f.width as c_int;
            (*frame.0).height = f.height as c_int;
            (*frame.0).format = fmt.0;
            let r = ffi::av_frame_get_buffer(frame.0, 0);
            if r < 0 {
                return Err(self.err(ff::av_err(r)));
            }
            self.video = Some(VideoEnc {
                ctx,
                frame,
                shared: AvFrame(ffi::av_frame_alloc()),
                fmt,
                scaler: None,
                stream: (*st).index as usize,
                tb,
                width: f.width,
                height: f.height,
                nominal,
                count: 0,
                last_pts: None,
                durations: BTreeMap::new(),
            });
        }
        Ok(())
    }

    /// Encodes one frame.
    pub fn push_frame(&mut self, f: &Frame) -> Result<(), NodeError> {
        if f.data.len() != f.format.byte_len(f.width, f.height) {
            return Err(self.input_err(format!(
                "frame {} has {} bytes, not {}x{} {}",
                f.index,
                f.data.len(),
                f.width,
                f.height,
                f.format.name()
            )));
        }
        if self.video.is_none() {
            self.open_video(f)?;
            self.t0 = Some(f.pts);
            for chunk in std::mem::take(&mut self.early_audio) {
                self.push_audio_chunk(&chunk)?;
            }
            self.try_start()?;
        }
        let t0 = self.t0.unwrap_or(0.0);
        let fixed = self.opts.rate.is_some();
        let v = self.video.as_mut().expect("opened");
        if (f.width, f.height) != (v.width, v.height) {
            let msg = format!(
                "frame {} is {}x{}, but the stream started at {}x{}; resize frames to one size before `encode`",
                f.index, f.width, f.height, v.width, v.height
            );
            return Err(self.input_err(msg));
        }
        let mut pts = if fixed {
            v.count
        } else {
            ((f.pts - t0) * v.tb.den as f64 / v.tb.num as f64).round() as i64
        };
        if let Some(last) = v.last_pts {
            if pts <= last {
                pts = last + 1;
            }
            v.durations.insert(last, pts - last);
        }
        v.last_pts = Some(pts);
        v.count += 1;
        unsafe {
            let frame = if ff::engine_format(v.fmt) == Some(f.format) {
                // The encoder takes the frame's own format (a transcode's YUV 4:2:0): it reads
                // the frame's own buffer, no copy.
                if let Err(e) = ff::wrap_buffer(&f.data, f.format, f.width, f.height, v.shared.0) {
                    return Err(self.err(e));
                }
                v.shared.0
            } else {
                let r = ffi::av_frame_make_writable(v.frame.0);
                if r < 0 {
                    let e = ff::av_err(r);
                    return Err(self.err(e));
                }
                let (w, h) = (f.width, f.height);
                let scaler = ff::Scaler::reuse(
                    &mut v.scaler,
                    (ff::av_format(f.format), w, h),
                    (v.fmt, w, h),
                )
                .map_err(|e| NodeError::runtime(format!("node `{}`: {e}", self.node)))?;
                scaler.from_buffer(&f.data, v.frame.0);
                v.frame.0
            };
            (*frame).pts = pts;
            let r = ffi::avcodec_send_frame(v.ctx.0, frame);
            // The encoder took its own reference to a shared frame if it keeps it.
            ffi::av_frame_unref(v.shared.0);
            if r < 0 {
                let e = ff::av_err(r);
                return Err(self.err(format!("the encoder refused frame {}: {e}", f.index)));
            }
        }
        self.drain_video()
    }

    fn drain_video(&mut self) -> Result<(), NodeError> {
        loop {
            let v = self.video.as_mut().expect("opened");
            let pkt = AvPacket::new();
            let r = unsafe { ffi::avcodec_receive_packet(v.ctx.0, pkt.0) };
            if r == ffi::AVERROR(ff::EAGAIN) || r == ffi::AVERROR_EOF {
                return Ok(());
            }
            if r < 0 {
                return Err(self.err(format!("encoding failed: {}", ff::av_err(r))));
            }
            unsafe {
                let p = pkt.0;
                if (*p).duration <= 0 {
                    (*p).duration = v.durations.remove(&(*p).pts).unwrap_or(v.nominal);
                } else {
                    v.durations.remove(&(*p).pts);
                }
                // Keep the map small: entries older than the encoder's delay are stale.
                while v.durations.len() > 512 {
                    v.durations.pop_first();
                }
            }
            self.write(Kind::Video, pkt)?;
        }
    }

    /// Handles an item from an `audio_packets` input.
    pub fn push_audio_packet(&mut self, p: &AudioPacket) -> Result<(), NodeError> {
        if matches!(self.audio, AudioState::Waiting) {
            match p.stream() {
                None => self.audio = AudioState::Off,
                Some(info) => self.setup_audio_from(info)?,
            }
            self.try_start()?;
        }
        let AudioPacket::Packet {
            stream,
            data,
            pts,
            dts,
            duration,
            flags,
        } = p
        else {
            return Ok(());
        };
        match &mut self.audio {
            AudioState::Off | AudioState::Waiting => Ok(()),
            AudioState::Copy { .. } => {
                let pkt = AvPacket::new();
                unsafe {
                    let r = ffi::av_new_packet(pkt.0, data.len() as c_int);
                    if r < 0 {
                        return Err(self.err("out of memory"));
                    }
                    ptr::copy_nonoverlapping(data.as_ptr(), (*pkt.0).data, data.len());
                    (*pkt.0).pts = pts.unwrap_or(ffi::AV_NOPTS_VALUE);
                    (*pkt.0).dts = dts.unwrap_or(ffi::AV_NOPTS_VALUE);
                    (*pkt.0).duration = *duration;
                    (*pkt.0).flags = *flags;
                }
                self.write(Kind::Audio, pkt)
            }
            AudioState::Encode(enc) => {
                let Some((dec, res, _)) = enc.decode.as_mut() else {
                    return Ok(());
                };
                let pkt = AvPacket::new();
                let samples = unsafe {
                    let r = ffi::av_new_packet(pkt.0, data.len() as c_int);
                    if r < 0 {
                        return Err(self.err("out of memory"));
                    }
                    ptr::copy_nonoverlapping(data.as_ptr(), (*pkt.0).data, data.len());
                    (*pkt.0).pts = pts.unwrap_or(ffi::AV_NOPTS_VALUE);
                    (*pkt.0).dts = dts.unwrap_or(ffi::AV_NOPTS_VALUE);
                    (*pkt.0).duration = *duration;
                    let r = ffi::avcodec_send_packet(dec.0, pkt.0);
                    if r < 0 {
                        return Err(NodeError::input(format!(
                            "node `{}`: cannot decode the {} audio to re-encode it: {}",
                            self.node,
                            stream.codec,
                            ff::av_err(r)
                        )));
                    }
                    receive_audio(dec, res, enc.rate, enc.channels as u16)
                        .map_err(|e| NodeError::runtime(format!("node `{}`: {e}", self.node)))?
                };
                for (t, s) in samples {
                    self.push_samples(t, &s)?;
                }
                Ok(())
            }
        }
    }

    /// Handles an item from an `audio` (f32 chunks) input.
    pub fn push_audio_chunk(&mut self, c: &AudioChunk) -> Result<(), NodeError> {
        if matches!(self.audio, AudioState::Waiting) {
            let enc = self.open_audio_encoder(c.sample_rate, c.channels, false)?;
            self.audio = AudioState::Encode(Box::new(enc));
            self.try_start()?;
        }
        if self.t0.is_none() {
            self.early_audio.push(c.clone());
            return Ok(());
        }
        if let AudioState::Encode(enc) = &self.audio
            && (enc.rate, enc.channels) != (c.sample_rate, c.channels as usize)
        {
            let msg = format!(
                "audio changed from {} Hz {} ch to {} Hz {} ch at {:.3}s; resample it to one format first",
                enc.rate, enc.channels, c.sample_rate, c.channels, c.pts
            );
            return Err(self.input_err(msg));
        }
        self.push_samples(c.pts, &c.samples)
    }

    /// Queues interleaved f32 samples starting at `t` seconds (source time) for encoding,
    /// dropping any before the first frame.
    fn push_samples(&mut self, t: f64, samples: &[f32]) -> Result<(), NodeError> {
        let t0 = self.t0.unwrap_or(0.0);
        let AudioState::Encode(enc) = &mut self.audio else {
            return Ok(());
        };
        let ch = enc.channels;
        let queued_end = enc.next_pts.map(|p| p + (enc.fifo.len() / ch) as i64);
        let mut start = if t.is_nan() {
            queued_end.unwrap_or(0)
        } else {
            ((t - t0) * enc.rate as f64).round() as i64
        };
        let mut samples = samples;
        if start < 0 {
            let skip = ((-start) as usize).min(samples.len() / ch);
            samples = &samples[skip * ch..];
            start += skip as i64;
        }
        if samples.is_empty() {
            return Ok(());
        }
        match enc.next_pts {
            None => enc.next_pts = Some(start),
            Some(p) => {
                // Keep the stream contiguous: fill a gap with silence, trim an overlap.
                let queued_end = p + (enc.fifo.len() / ch) as i64;
                if start > queued_end {
                    let gap = (start - queued_end) as usize;
                    if gap > enc.rate as usize * 3600 {
                        return Err(self.err(format!("audio jumps ahead by {gap} samples")));
                    }
                    enc.fifo.extend(std::iter::repeat_n(0.0, gap * ch));
                } else if start < queued_end {
                    let overlap = ((queued_end - start) as usize).min(samples.len() / ch);
                    samples = &samples[overlap * ch..];
                }
            }
        }
        enc.fifo.extend(samples.iter().copied());
        self.encode_audio(false)
    }

    fn encode_audio(&mut self, flush: bool) -> Result<(), NodeError> {
        loop {
            let AudioState::Encode(enc) = &mut self.audio else {
                return Ok(());
            };
            let ch = enc.channels;
            let have = enc.fifo.len() / ch;
            if have == 0 || (have < enc.frame_size && !flush) {
                break;
            }
            let n = have.min(enc.frame_size);
            unsafe {
                let f = enc.frame.0;
                let r = ffi::av_frame_make_writable(f);
                if r < 0 {
                    return Err(self.err(ff::av_err(r)));
                }
                (*f).nb_samples = n as c_int;
                fill_samples(f, enc.fmt, ch, enc.fifo.drain(..n * ch));
                (*f).pts = enc.next_pts.unwrap_or(0);
                enc.next_pts = Some((*f).pts + n as i64);
                let r = ffi::avcodec_send_frame(enc.ctx.0, f);
                if r < 0 {
                    return Err(self.err(format!(
                        "the audio encoder refused samples: {}",
                        ff::av_err(r)
                    )));
                }
            }
            self.drain_audio()?;
        }
        Ok(())
    }

    fn drain_audio(&mut self) -> Result<(), NodeError> {
        loop {
            let AudioState::Encode(enc) = &mut self.audio else {
                return Ok(());
            };
            let pkt = AvPacket::new();
            let r = unsafe { ffi::avcodec_receive_packet(enc.ctx.0, pkt.0) };
            if r == ffi::AVERROR(ff::EAGAIN) || r == ffi::AVERROR_EOF {
                return Ok(());
            }
            if r < 0 {
                return Err(self.err(format!("audio encoding failed: {}", ff::av_err(r))));
            }
            self.write(Kind::Audio, pkt)?;
        }
    }

    fn setup_audio_from(&mut self, info: &Arc<AudioStreamInfo>) -> Result<(), NodeError> {
        let params = info.params();
        let copyable = unsafe {
            ffi::avformat_query_codec(
                (*self.oc).oformat,
                (*params).codec_id,
                ffi::FF_COMPLIANCE_NORMAL,
            )
        } == 1;
        if copyable {
            unsafe {
                let st = ffi::avformat_new_stream(self.oc, ptr::null());
                if st.is_null() {
                    return Err(self.err("cannot add the audio stream"));
                }
                let r = ffi::avcodec_parameters_copy((*st).codecpar, params);
                if r < 0 {
                    return Err(self.err(ff::av_err(r)));
                }
                (*(*st).codecpar).codec_tag = 0;
                let tb = rational(info.time_base.0, info.time_base.1);
                (*st).time_base = tb;
                self.audio = AudioState::Copy {
                    stream: (*st).index as usize,
                    tb,
                };
            }
            return Ok(());
        }
        // Re-encode: decode the packets, convert to f32, encode with the audio codec.
        let mut enc =
            self.open_audio_encoder(info.sample_rate.max(1), info.channels.max(1), true)?;
        unsafe {
            let dec_codec = ffi::avcodec_find_decoder((*params).codec_id);
            if dec_codec.is_null() {
                return Err(NodeError::input(format!(
                    "node `{}`: no decoder for the source audio ({}) to re-encode it for `{}`",
                    self.node, info.codec, self.shown
                )));
            }
            let dec = CodecCtx(ffi::avcodec_alloc_context3(dec_codec));
            ffi::avcodec_parameters_to_context(dec.0, params);
            (*dec.0).pkt_timebase = rational(info.time_base.0, info.time_base.1);
            let r = ffi::avcodec_open2(dec.0, dec_codec, ptr::null_mut());
            if r < 0 {
                return Err(NodeError::input(format!(
                    "node `{}`: cannot decode the source audio ({}): {}",
                    self.node,
                    info.codec,
                    ff::av_err(r)
                )));
            }
            let tb = info.time_base.0 as f64 / info.time_base.1.max(1) as f64;
            enc.decode = Some((dec, None, tb));
        }
        self.audio = AudioState::Encode(Box::new(enc));
        Ok(())
    }

    /// Opens the audio encoder for `rate` Hz, `channels`; when `resample` (source packets
    /// decoded here), at the nearest rate the encoder takes if it does not take `rate` (Opus:
    /// 48 kHz for 44.1 kHz), which the decoding side converts to.
    fn open_audio_encoder(
        &mut self,
        rate: u32,
        channels: u16,
        resample: bool,
    ) -> Result<AudioEnc, NodeError> {
        let name = self.opts.audio_codec.clone();
        let c = ff::c_string(&name).map_err(NodeError::input)?;
        unsafe {
            let codec = ffi::avcodec_find_encoder_by_name(c.as_ptr());
            if codec.is_null() || (*codec).type_ != ffi::AVMediaType::AUDIO {
                return Err(NodeError::input(format!(
                    "node `{}`: no audio encoder named `{name}` in this FFmpeg build (try aac)",
                    self.node
                )));
            }
            if ffi::avformat_query_codec((*self.oc).oformat, (*codec).id, ffi::FF_COMPLIANCE_NORMAL)
                != 1
            {
                return Err(NodeError::input(format!(
                    "node `{}`: the container of `{}` cannot hold `{name}` audio; choose another `audio_codec`",
                    self.node, self.shown
                )));
            }
            let mut fmts = vec![];
            let mut p = (*codec).sample_fmts;
            while !p.is_null() && *p != ffi::AVSampleFormat::NONE {
                fmts.push(*p);
                p = p.add(1);
            }
            let fmt = [
                ffi::AVSampleFormat::FLTP,
                ffi::AVSampleFormat::FLT,
                ffi::AVSampleFormat::S16,
                ffi::AVSampleFormat::S16P,
                ffi::AVSampleFormat::S32,
                ffi::AVSampleFormat::S32P,
            ]
            .into_iter()
            .find(|f| fmts.is_empty() || fmts.contains(f))
            .ok_or_else(|| {
                NodeError::input(format!(
                    "node `{}`: audio encoder `{name}` takes no sample format vidflow can feed it",
                    self.node
                ))
            })?;
            let mut rates = vec![];
            let mut r = (*codec).supported_samplerates;
            while !r.is_null() && *r != 0 {
                rates.push(*r as u32);
                r = r.add(1);
            }
            let rate = match rates.iter().filter(|&&r| r >= rate).min() {
                _ if rates.is_empty() || rates.contains(&rate) => rate,
                Some(&up) if resample => up,
                None if resample => rates.iter().copied().max().unwrap_or(rate),
                _ => rate,
            };
            if !rates.is_empty() && !rates.contains(&rate) {
                return Err(self.input_err(format!("audio encoder `{name}` cannot take {rate} Hz; resample the audio (decode `audio_rate`) to one of {rates:?}")));
            }
            let ctx = CodecCtx(ffi::avcodec_alloc_context3(codec));
            let cc = ctx.0;
            (*cc).sample_fmt = fmt;
            (*cc).sample_rate = rate as c_int;
            ffi::av_channel_layout_default(&mut (*cc).ch_layout, channels as c_int);
            (*cc).time_base = rational(1, rate as i32);
            if self.opts.audio_bitrate > 0 {
                (*cc).bit_rate = self.opts.audio_bitrate as i64;
            }
            if (*(*self.oc).oformat).flags & ffi::AVFMT_GLOBALHEADER != 0 {
                (*cc).flags |= ffi::AV_CODEC_FLAG_GLOBAL_HEADER as c_int;
            }
            let r = ffi::avcodec_open2(cc, codec, ptr::null_mut());
            if r < 0 {
                return Err(self.input_err(format!(
                    "cannot open audio encoder `{name}` for {rate} Hz, {channels} channels: {}",
                    ff::av_err(r)
                )));
            }
            let st = ffi::avformat_new_stream(self.oc, ptr::null());
            if st.is_null() {
                return Err(self.err("cannot add the audio stream"));
            }
            (*st).time_base = (*cc).time_base;
            ffi::avcodec_parameters_from_context((*st).codecpar, cc);
            let frame_size = if (*cc).frame_size > 0 {
                (*cc).frame_size as usize
            } else {
                1024
            };
            let frame = AvFrame(ffi::av_frame_alloc());
            (*frame.0).format = fmt.0;
            (*frame.0).nb_samples = frame_size as c_int;
            (*frame.0).sample_rate = rate as c_int;
            ffi::av_channel_layout_copy(&mut (*frame.0).ch_layout, &(*cc).ch_layout);
            let r = ffi::av_frame_get_buffer(frame.0, 0);
            if r < 0 {
                return Err(self.err(ff::av_err(r)));
            }
            Ok(AudioEnc {
                ctx,
                frame,
                stream: (*st).index as usize,
                rate,
                channels: channels as usize,
                frame_size,
                fmt,
                fifo: VecDeque::new(),
                next_pts: None,
                decode: None,
            })
        }
    }

    /// Writes the header once the video is open and the audio input has said what it carries.
    fn try_start(&mut self) -> Result<(), NodeError> {
        if self.started || self.video.is_none() || matches!(self.audio, AudioState::Waiting) {
            return Ok(());
        }
        let r = unsafe { ffi::avformat_write_header(self.oc, ptr::null_mut()) };
        if r < 0 {
            return Err(self.err(ff::av_err(r)));
        }
        self.started = true;
        for (kind, pkt) in std::mem::take(&mut self.pending) {
            self.mux(kind, pkt)?;
        }
        Ok(())
    }

    fn write(&mut self, kind: Kind, pkt: AvPacket) -> Result<(), NodeError> {
        if self.started {
            self.mux(kind, pkt)
        } else {
            self.pending.push((kind, pkt));
            Ok(())
        }
    }

    fn mux(&mut self, kind: Kind, pkt: AvPacket) -> Result<(), NodeError> {
        let t0 = self.t0.unwrap_or(0.0);
        unsafe {
            let p = pkt.0;
            let (index, tb) = match (kind, &self.audio) {
                (Kind::Video, _) => {
                    let v = self.video.as_ref().expect("opened");
                    ((v.stream), (*v.ctx.0).time_base)
                }
                (Kind::Audio, AudioState::Copy { stream, tb }) => {
                    // Copied packets count from the source's start; shift them like the frames.
                    let shift = (t0 * tb.den as f64 / tb.num as f64).round() as i64;
                    if (*p).pts != ffi::AV_NOPTS_VALUE {
                        if (*p).pts + (*p).duration <= shift && shift > 0 {
                            return Ok(());
                        }
                        (*p).pts -= shift;
                    }
                    if (*p).dts != ffi::AV_NOPTS_VALUE {
                        (*p).dts -= shift;
                    }
                    (*stream, *tb)
                }
                (Kind::Audio, AudioState::Encode(enc)) => (enc.stream, (*enc.ctx.0).time_base),
                (Kind::Audio, _) => return Ok(()),
            };
            let st = *(*self.oc).streams.add(index);
            (*p).stream_index = index as c_int;
            ffi::av_packet_rescale_ts(p, tb, (*st).time_base);
            let r = ffi::av_interleaved_write_frame(self.oc, p);
            if r < 0 {
                return Err(self.err(ff::av_err(r)));
            }
        }
        Ok(())
    }

    /// Flushes and closes the output. `Complete`: the file is finalised and moved into place;
    /// `Stopped`: the temporary output is removed.
    pub fn finish(&mut self, end: End) -> Result<(), NodeError> {
        if self.done {
            return Ok(());
        }
        if end == End::Stopped {
            self.abandon();
            return Ok(());
        }
        let r = self.finish_inner();
        if r.is_err() {
            self.abandon();
        }
        r
    }

    fn finish_inner(&mut self) -> Result<(), NodeError> {
        if self.video.is_none() {
            return Err(NodeError::input(format!(
                "node `{}`: received no frames, so `{}` was not written",
                self.node, self.shown
            )));
        }
        // Video: drain the encoder.
        unsafe { ffi::avcodec_send_frame(self.video.as_ref().expect("opened").ctx.0, ptr::null()) };
        {
            let v = self.video.as_mut().expect("opened");
            if let Some(last) = v.last_pts {
                let d = v
                    .durations
                    .values()
                    .next_back()
                    .copied()
                    .unwrap_or(v.nominal);
                v.durations.insert(last, d.max(1));
            }
        }
        self.drain_video()?;
        if matches!(self.audio, AudioState::Waiting) {
            self.audio = AudioState::Off;
        }
        if let AudioState::Encode(enc) = &mut self.audio {
            let mut rest = vec![];
            if let Some((dec, res, _)) = enc.decode.as_mut() {
                unsafe {
                    ffi::avcodec_send_packet(dec.0, ptr::null());
                    rest = receive_audio(dec, res, enc.rate, enc.channels as u16)
                        .map_err(|e| NodeError::runtime(format!("node `{}`: {e}", self.node)))?;
                    if let Some(r) = res.as_mut() {
                        let tail = r.convert(ptr::null()).map_err(|e| {
                            NodeError::runtime(format!("node `{}`: {e}", self.node))
                        })?;
                        rest.push((f64::NAN, tail));
                    }
                }
            }
            for (t, s) in rest {
                if t.is_nan() {
                    // The converter's tail continues where the queue ends.
                    if let AudioState::Encode(enc) = &mut self.audio {
                        enc.fifo.extend(s);
                    }
                } else {
                    self.push_samples(t, &s)?;
                }
            }
            self.encode_audio(true)?;
            if let AudioState::Encode(enc) = &self.audio {
                unsafe { ffi::avcodec_send_frame(enc.ctx.0, ptr::null()) };
            }
            self.drain_audio()?;
        }
        self.try_start()?;
        unsafe { ff::finish_output(self.oc) }.map_err(|e| self.err(e))?;
        self.close();
        match &self.dest {
            Dest::File(f) => f.commit(&self.node)?,
            Dest::Sequence { dir, temp } => {
                let entries = std::fs::read_dir(temp).map_err(|e| self.err(e))?;
                for e in entries {
                    let e = e.map_err(|e| self.err(e))?;
                    std::fs::rename(e.path(), dir.join(e.file_name())).map_err(|e| self.err(e))?;
                }
                let _ = std::fs::remove_dir(temp);
            }
        }
        self.done = true;
        Ok(())
    }

    fn close(&mut self) {
        unsafe {
            if !self.oc.is_null() {
                if !(*self.oc).pb.is_null() && (*(*self.oc).oformat).flags & ffi::AVFMT_NOFILE == 0
                {
                    ffi::avio_closep(&mut (*self.oc).pb);
                }
                ffi::avformat_free_context(self.oc);
                self.oc = ptr::null_mut();
            }
        }
    }

    /// Closes and removes the temporary output.
    pub fn abandon(&mut self) {
        self.close();
        cleanup(&self.dest);
        self.done = true;
    }

    /// Frames encoded so far.
    pub fn frames(&self) -> i64 {
        self.video.as_ref().map(|v| v.count).unwrap_or(0)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            self.abandon();
        }
    }
}

fn cleanup(dest: &Dest) {
    match dest {
        Dest::File(f) => f.abandon(),
        Dest::Sequence { temp, .. } => {
            let _ = std::fs::remove_dir_all(temp);
        }
    }
}

unsafe fn dict_keys(dict: *mut ffi::AVDictionary) -> Vec<String> {
    let mut out = vec![];
    let mut e: *const ffi::AVDictionaryEntry = ptr::null();
    unsafe {
        loop {
            e = ffi::av_dict_get(dict, c"".as_ptr(), e, ffi::AV_DICT_IGNORE_SUFFIX);
            if e.is_null() {
                break;
            }
            out.push(CStr::from_ptr((*e).key).to_string_lossy().into_owned());
        }
    }
    out
}

/// Receives every decoded audio frame available and converts it to interleaved f32 at
/// `rate`/`channels`; returns (time in seconds, samples) per frame.
unsafe fn receive_audio(
    dec: &mut CodecCtx,
    res: &mut Option<ff::Resampler>,
    rate: u32,
    channels: u16,
) -> Result<Vec<(f64, Vec<f32>)>, String> {
    let mut out = vec![];
    unsafe {
        let frame = AvFrame(ffi::av_frame_alloc());
        loop {
            let r = ffi::avcodec_receive_frame(dec.0, frame.0);
            if r == ffi::AVERROR(ff::EAGAIN) || r == ffi::AVERROR_EOF {
                return Ok(out);
            }
            if r < 0 {
                return Err(format!("cannot decode the source audio: {}", ff::av_err(r)));
            }
            let f = frame.0;
            if res.is_none() {
                let fmt: ffi::AVSampleFormat = ffi::AVSampleFormat((*f).format);
                *res = Some(ff::Resampler::new(
                    fmt,
                    &(*f).ch_layout,
                    (*f).sample_rate as u32,
                    rate,
                    channels,
                )?);
            }
            let tb = (*dec.0).pkt_timebase;
            let ts = if (*f).best_effort_timestamp != ffi::AV_NOPTS_VALUE {
                (*f).best_effort_timestamp
            } else {
                (*f).pts
            };
            let t = if ts == ffi::AV_NOPTS_VALUE {
                f64::NAN
            } else {
                ts as f64 * tb.num as f64 / tb.den.max(1) as f64
            };
            let s = res.as_mut().expect("set").convert(f)?;
            out.push((t, s));
        }
    }
}

/// Writes interleaved f32 samples into an audio frame of format `fmt`.
unsafe fn fill_samples(
    f: *mut ffi::AVFrame,
    fmt: ffi::AVSampleFormat,
    ch: usize,
    samples: impl Iterator<Item = f32>,
) {
    let planar = matches!(
        fmt,
        ffi::AVSampleFormat::FLTP | ffi::AVSampleFormat::S16P | ffi::AVSampleFormat::S32P
    );
    unsafe {
        for (i, s) in samples.enumerate() {
            let (plane, pos) = if planar { (i % ch, i / ch) } else { (0, i) };
            let base = *(*f).extended_data.add(plane);
            let s = s.clamp(-1.0, 1.0);
            match fmt {
                ffi::AVSampleFormat::FLTP | ffi::AVSampleFormat::FLT => {
                    *(base as *mut f32).add(pos) = s
                }
                ffi::AVSampleFormat::S16 | ffi::AVSampleFormat::S16P => {
                    *(base as *mut i16).add(pos) = (s * 32767.0).round() as i16
                }
                _ => *(base as *mut i32).add(pos) = (s as f64 * 2147483647.0).round() as i32,
            }
        }
    }
}
