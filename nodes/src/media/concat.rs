//! Joining a job's chunk files into the real output of `encode`, without re-encoding: the
//! video packets of each chunk in order, moved to where the chunk starts, and the source audio
//! copied once over the whole job, interleaved with them. The result is meant to be the file
//! the same graph writes without a job: the same frames at the same times (chunks start at
//! keyframes, so each chunk decodes on its own), and the same audio packets with the same
//! timing the writer (`writer.rs`) gives `audio_packets`.
//!
//! The output is written under a temporary name beside it and renamed when complete; a failure
//! removes it.

use super::ff::{self, ffmpeg, ffmpeg::ffi};
use super::probe::{self, AudioCut, AudioPlace};
use crate::kinds::decode::DecodeParams;
use crate::output::AtomicPath;
use ffmpeg::codec::packet::Mut;
use std::path::Path;
use std::ptr;
use vidflow_engine::{ChunkPiece, NodeError, NodeParams, WholeInput};

/// Joins `pieces` (chunk files of one `encode`, in order) into `output`, with the source audio
/// of `audio` when given. `contiguous`: each piece starts where the previous one ends, not at
/// its `start` (frames re-timed to a fixed `rate` are counted, not timed by the source).
pub fn concat(
    node: &str,
    pieces: &[ChunkPiece],
    audio: Option<&WholeInput>,
    output: &Path,
    contiguous: bool,
) -> Result<(), NodeError> {
    let shown = output.display().to_string();
    let Some(first) = pieces.first() else {
        return Err(NodeError::runtime(format!(
            "node `{node}`: no chunks to join into `{shown}`"
        )));
    };
    let mut out = Output::create(node, output)?;

    // The video stream: the parameters of the first chunk (the chunks come from one encoder
    // configuration, so they are the same; checked as each one is opened).
    let (video_par, video_tb, avg_rate, real_rate) = {
        let piece = Piece::open(node, first)?;
        let st = piece.input.stream(piece.stream).expect("stream exists");
        (
            ParamsCopy::of(st.parameters().as_ptr())?,
            ffi::AVRational::from(st.time_base()),
            ffi::AVRational::from(st.avg_frame_rate()),
            ffi::AVRational::from(st.rate()),
        )
    };
    let v_stream = out.add_stream(video_par.0, video_tb)?;
    unsafe {
        let st = out.stream(v_stream);
        (*st).avg_frame_rate = avg_rate;
        (*st).r_frame_rate = real_rate;
    }
    let mut audio = match audio {
        Some(w) => SourceAudio::open(node, w)?,
        None => None,
    };
    if let Some(a) = audio.as_mut() {
        a.out_stream = out.add_stream(a.params.0, a.in_tb)?;
    }
    out.start()?;

    let mut video = Video {
        node,
        pieces,
        next: 0,
        current: None,
        params: video_par,
        out_tb: unsafe { (*out.stream(v_stream)).time_base },
        contiguous,
        end: 0,
        last_dts: None,
    };
    if let Some(a) = audio.as_mut() {
        a.out_tb = unsafe { (*out.stream(a.out_stream)).time_base };
    }

    // Merge the two streams by decode time, so the file is interleaved as the writer's is.
    let mut next_video = video.next()?;
    let mut next_audio = match audio.as_mut() {
        Some(a) => a.next()?,
        None => None,
    };
    loop {
        let video_first = match (&next_video, &next_audio) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(v), Some(a)) => {
                let a_tb = audio.as_ref().expect("audio packets").out_tb;
                unsafe {
                    ffi::av_compare_ts(decode_time(v), video.out_tb, decode_time(a), a_tb) <= 0
                }
            }
        };
        if video_first {
            let mut p = next_video.take().expect("chosen");
            out.write(&mut p, v_stream)?;
            next_video = video.next()?;
        } else {
            let a = audio.as_mut().expect("audio packets");
            let mut p = next_audio.take().expect("chosen");
            out.write(&mut p, a.out_stream)?;
            next_audio = a.next()?;
        }
    }
    out.finish()
}

/// Checks, before any chunk runs, that `output` can hold the source audio of `audio` as it is
/// (a job copies it; it does not re-encode it as an unchunked run would).
pub fn check_audio(node: &str, output: &Path, audio: &WholeInput) -> Result<(), NodeError> {
    let shown = output.display().to_string();
    let muxer = muxer_for(node, &shown)?;
    let p = source_params(node, audio)?;
    let input = ff::open_input(&p.path, p.rate).map_err(|e| {
        NodeError::input(format!(
            "node `{node}`: cannot open the audio source `{}`: {e}",
            p.path
        ))
    })?;
    let Some(st) = input.streams().best(ffmpeg::media::Type::Audio) else {
        return Ok(());
    };
    let codec = unsafe { (*st.parameters().as_ptr()).codec_id };
    let holds = unsafe { ffi::avformat_query_codec(muxer, codec, ffi::FF_COMPLIANCE_NORMAL) } == 1;
    if holds {
        return Ok(());
    }
    let format = unsafe { std::ffi::CStr::from_ptr((*muxer).name) }.to_string_lossy();
    Err(NodeError::input(format!(
        "node `{node}`: `{shown}` ({format}) cannot hold the source audio of `{}` ({}) as it is, and a job copies the source audio once instead of re-encoding it; write a container that holds it (e.g. .mkv), or run without `--job`",
        p.path,
        ff::codec_name(codec)
    )))
}

/// The muxer FFmpeg picks for a path by its extension, as the writer does.
fn muxer_for(node: &str, shown: &str) -> Result<*const ffi::AVOutputFormat, NodeError> {
    ff::init();
    let c = ff::c_string(shown).map_err(NodeError::input)?;
    let f = unsafe { ffi::av_guess_format(ptr::null(), c.as_ptr(), ptr::null()) };
    if f.is_null() {
        return Err(NodeError::input(format!(
            "node `{node}`: cannot tell the container format of `{shown}` from its extension; use .mp4, .mkv, .mov or .webm"
        )));
    }
    Ok(f)
}

fn source_params(node: &str, audio: &WholeInput) -> Result<DecodeParams, NodeError> {
    if audio.source_kind != "decode" {
        return Err(NodeError::input(format!(
            "node `{node}`: a job copies source audio only from a `decode`, not from a `{}`",
            audio.source_kind
        )));
    }
    DecodeParams::from_params(&audio.source_params)
}

/// The time a packet is decoded at (its pts when it has no dts), for interleaving.
fn decode_time(p: &ffmpeg::Packet) -> i64 {
    p.dts().or(p.pts()).unwrap_or(i64::MIN)
}

/// An owned copy of a stream's codec parameters.
struct ParamsCopy(*mut ffi::AVCodecParameters);

impl ParamsCopy {
    fn of(src: *const ffi::AVCodecParameters) -> Result<ParamsCopy, NodeError> {
        unsafe {
            let p = ffi::avcodec_parameters_alloc();
            if p.is_null() || ffi::avcodec_parameters_copy(p, src) < 0 {
                let mut p = p;
                ffi::avcodec_parameters_free(&mut p);
                return Err(NodeError::runtime(
                    "out of memory copying stream parameters",
                ));
            }
            Ok(ParamsCopy(p))
        }
    }
}

impl Drop for ParamsCopy {
    fn drop(&mut self) {
        unsafe { ffi::avcodec_parameters_free(&mut self.0) };
    }
}

/// The output file being written.
struct Output {
    node: String,
    shown: String,
    file: AtomicPath,
    oc: *mut ffi::AVFormatContext,
    committed: bool,
}

impl Output {
    fn create(node: &str, output: &Path) -> Result<Output, NodeError> {
        let shown = output.display().to_string();
        let muxer = muxer_for(node, &shown)?;
        let file = AtomicPath::new(node, output)?;
        let c_name = ff::c_string(&file.temp.to_string_lossy()).map_err(NodeError::input)?;
        let mut oc: *mut ffi::AVFormatContext = ptr::null_mut();
        let r = unsafe {
            ffi::avformat_alloc_output_context2(&mut oc, muxer, ptr::null(), c_name.as_ptr())
        };
        if r < 0 || oc.is_null() {
            return Err(NodeError::input(format!(
                "node `{node}`: cannot write `{shown}`: {}",
                ff::av_err(r)
            )));
        }
        let out = Output {
            node: node.to_string(),
            shown,
            file,
            oc,
            committed: false,
        };
        unsafe {
            if (*(*oc).oformat).flags & ffi::AVFMT_NOFILE == 0 {
                let r = ffi::avio_open(&mut (*oc).pb, c_name.as_ptr(), ffi::AVIO_FLAG_WRITE);
                if r < 0 {
                    return Err(out.err(ff::av_err(r)));
                }
            }
        }
        Ok(out)
    }

    fn err(&self, what: impl std::fmt::Display) -> NodeError {
        NodeError::runtime(format!(
            "node `{}`: cannot write `{}`: {what}",
            self.node, self.shown
        ))
    }

    fn stream(&self, index: usize) -> *mut ffi::AVStream {
        unsafe { *(*self.oc).streams.add(index) }
    }

    /// Adds a stream copying `par` (the muxer picks its own codec tag) in time base `tb`.
    fn add_stream(
        &mut self,
        par: *const ffi::AVCodecParameters,
        tb: ffi::AVRational,
    ) -> Result<usize, NodeError> {
        unsafe {
            let st = ffi::avformat_new_stream(self.oc, ptr::null());
            if st.is_null() {
                return Err(self.err("cannot add a stream"));
            }
            let r = ffi::avcodec_parameters_copy((*st).codecpar, par);
            if r < 0 {
                return Err(self.err(ff::av_err(r)));
            }
            (*(*st).codecpar).codec_tag = 0;
            (*st).time_base = tb;
            Ok((*st).index as usize)
        }
    }

    fn start(&mut self) -> Result<(), NodeError> {
        let r = unsafe { ffi::avformat_write_header(self.oc, ptr::null_mut()) };
        if r < 0 {
            return Err(self.err(ff::av_err(r)));
        }
        Ok(())
    }

    /// Writes a packet whose timestamps are in the time base of stream `index`.
    fn write(&mut self, p: &mut ffmpeg::Packet, index: usize) -> Result<(), NodeError> {
        p.set_stream(index);
        let r = unsafe { ffi::av_interleaved_write_frame(self.oc, p.as_mut_ptr()) };
        if r < 0 {
            return Err(self.err(ff::av_err(r)));
        }
        Ok(())
    }

    /// Finishes the file and moves it into place.
    fn finish(mut self) -> Result<(), NodeError> {
        unsafe { ff::finish_output(self.oc) }.map_err(|e| self.err(e))?;
        self.close();
        self.file.commit(&self.node)?;
        self.committed = true;
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
}

impl Drop for Output {
    /// An output not finished (an error on the way) leaves no file behind.
    fn drop(&mut self) {
        self.close();
        if !self.committed {
            self.file.abandon();
        }
    }
}

/// One chunk file being read.
struct Piece {
    input: ffmpeg::format::context::Input,
    stream: usize,
    tb: ffi::AVRational,
    /// Added to its timestamps, in the output's ticks.
    offset: i64,
}

impl Piece {
    fn open(node: &str, piece: &ChunkPiece) -> Result<Piece, NodeError> {
        let path = piece.path.to_string_lossy();
        let input = ff::open_input(&path, None).map_err(|e| {
            NodeError::runtime(format!("node `{node}`: cannot read chunk `{path}`: {e}"))
        })?;
        let (stream, tb) = {
            let st = input
                .streams()
                .best(ffmpeg::media::Type::Video)
                .ok_or_else(|| {
                    NodeError::runtime(format!("node `{node}`: chunk `{path}` has no video stream"))
                })?;
            (st.index(), ffi::AVRational::from(st.time_base()))
        };
        Ok(Piece {
            input,
            stream,
            tb,
            offset: 0,
        })
    }
}

/// The video packets of the chunks, in order, in the output's time base.
struct Video<'a> {
    node: &'a str,
    pieces: &'a [ChunkPiece],
    next: usize,
    current: Option<Piece>,
    /// The first chunk's codec parameters, which every chunk must share.
    params: ParamsCopy,
    out_tb: ffi::AVRational,
    contiguous: bool,
    /// The end of the chunks so far (the latest pts + duration), in output ticks.
    end: i64,
    last_dts: Option<i64>,
}

impl Video<'_> {
    fn next(&mut self) -> Result<Option<ffmpeg::Packet>, NodeError> {
        loop {
            if self.current.is_none() {
                let Some(piece) = self.pieces.get(self.next) else {
                    return Ok(None);
                };
                self.next += 1;
                let mut p = Piece::open(self.node, piece)?;
                self.check_same(&p, piece)?;
                // Each chunk file counts from its first frame (the writer starts at 0).
                p.offset = if self.contiguous {
                    self.end
                } else {
                    (piece.start * self.out_tb.den as f64 / self.out_tb.num as f64).round() as i64
                };
                self.current = Some(p);
            }
            let piece = self.current.as_mut().expect("opened");
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut piece.input) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => {
                    self.current = None;
                    continue;
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ff::EAGAIN => continue,
                Err(e) => {
                    return Err(NodeError::runtime(format!(
                        "node `{}`: cannot read chunk `{}`: {e}",
                        self.node,
                        self.pieces[self.next - 1].path.display()
                    )));
                }
            }
            if packet.stream() != piece.stream {
                continue;
            }
            unsafe { ffi::av_packet_rescale_ts(packet.as_mut_ptr(), piece.tb, self.out_tb) };
            let pts = packet.pts().map(|t| t + piece.offset);
            let mut dts = packet.dts().map(|t| t + piece.offset);
            // A chunk's encoder starts its decode times anew (B-frame delay), which may not
            // clear the previous chunk's last one: nudge it up, never past the frame's pts.
            if let (Some(d), Some(last)) = (dts, self.last_dts)
                && d <= last
            {
                let nudged = pts.map_or(last + 1, |p| (last + 1).min(p));
                if nudged <= last {
                    return Err(NodeError::runtime(format!(
                        "node `{}`: chunk `{}` has a frame shown at tick {} that would be decoded before the previous chunk ends (tick {last}); the chunks overlap",
                        self.node,
                        self.pieces[self.next - 1].path.display(),
                        pts.unwrap_or(d)
                    )));
                }
                dts = Some(nudged);
            }
            if dts.is_some() {
                self.last_dts = dts;
            }
            if let Some(p) = pts {
                self.end = self.end.max(p + packet.duration().max(0));
            }
            packet.set_pts(pts);
            packet.set_dts(dts);
            return Ok(Some(packet));
        }
    }

    /// Chunks with another codec or size cannot share one stream.
    fn check_same(&self, p: &Piece, piece: &ChunkPiece) -> Result<(), NodeError> {
        let st = p.input.stream(p.stream).expect("stream exists");
        let (a, b) = unsafe { (&*self.params.0, &*st.parameters().as_ptr()) };
        if (a.codec_id, a.width, a.height, a.format) != (b.codec_id, b.width, b.height, b.format) {
            return Err(NodeError::runtime(format!(
                "node `{}`: chunk `{}` is {}x{} {}, but the first chunk is {}x{} {}; the chunks of one output must share codec, size and pixel format",
                self.node,
                piece.path.display(),
                b.width,
                b.height,
                ff::codec_name(b.codec_id),
                a.width,
                a.height,
                ff::codec_name(a.codec_id)
            )));
        }
        Ok(())
    }
}

/// The source audio, cut and timed as `decode` passes it on `audio_packets` and the writer
/// copies it in an unchunked run.
struct SourceAudio {
    node: String,
    path: String,
    input: ffmpeg::format::context::Input,
    stream: usize,
    params: ParamsCopy,
    in_tb: ffi::AVRational,
    cut: AudioCut,
    /// The job's first frame, in the audio's ticks: the writer counts audio from there.
    shift: i64,
    out_stream: usize,
    out_tb: ffi::AVRational,
    done: bool,
}

impl SourceAudio {
    /// `None`: the source has no audio (the writer then writes none either).
    fn open(node: &str, w: &WholeInput) -> Result<Option<SourceAudio>, NodeError> {
        let p = source_params(node, w)?;
        let mut input = ff::open_input(&p.path, p.rate).map_err(|e| {
            NodeError::input(format!(
                "node `{node}`: cannot open the audio source `{}`: {e}",
                p.path
            ))
        })?;
        let origin = probe::origin(&input);
        // The window the source's `decode` cuts its audio by: its own, in seconds (frame
        // windows at its video rate), ending where the job ends.
        let fps = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .map(|st| probe::video_rate(&st).fps())
            .unwrap_or(probe::Span::NOMINAL_FPS);
        let (start, end) = p.span().secs(fps);
        let end = end.min(w.end.unwrap_or(f64::INFINITY));
        let (stream, params, in_tb, tb) = {
            let Some(st) = input.streams().best(ffmpeg::media::Type::Audio) else {
                return Ok(None);
            };
            (
                st.index(),
                ParamsCopy::of(st.parameters().as_ptr())?,
                ffi::AVRational::from(st.time_base()),
                f64::from(st.time_base()),
            )
        };
        // As `decode` does with its own `start`, so the same packets are read.
        probe::seek_to_start(&mut input, p.start, origin);
        Ok(Some(SourceAudio {
            node: node.to_string(),
            path: p.path.clone(),
            input,
            stream,
            params,
            in_tb,
            cut: AudioCut::new(tb, origin, (start, end)),
            // As the writer's `mux` computes it.
            shift: (w.start * in_tb.den as f64 / in_tb.num as f64).round() as i64,
            out_stream: 0,
            out_tb: in_tb,
            done: false,
        }))
    }

    fn next(&mut self) -> Result<Option<ffmpeg::Packet>, NodeError> {
        while !self.done {
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut self.input) {
                Ok(()) => {}
                Err(ffmpeg::Error::Eof) => break,
                Err(ffmpeg::Error::Other { errno }) if errno == ff::EAGAIN => continue,
                Err(e) => {
                    return Err(NodeError::input(format!(
                        "node `{}`: cannot read the audio of `{}`: {e}; the file may be truncated or damaged",
                        self.node, self.path
                    )));
                }
            }
            if packet.stream() != self.stream {
                continue;
            }
            // `decode`: timestamps counted from the input's start, cut to its window.
            let origin = self.cut.origin_ticks;
            let pts = packet.pts().map(|p| p - origin);
            let dts = packet.dts().map(|d| d - origin);
            let data = match self.cut.place(pts, dts, packet.duration()) {
                AudioPlace::Past => {
                    self.done = true;
                    break;
                }
                AudioPlace::Skip => continue,
                AudioPlace::Keep => match packet.data() {
                    Some(d) => d,
                    None => continue,
                },
            };
            // The writer (`mux`): packets that end before the first frame are dropped, the
            // rest shifted so the first frame is at 0. Only data, timing and flags travel on
            // `audio_packets`, so the packet is rebuilt from those.
            let mut pts = pts;
            if let Some(p) = pts {
                if p + packet.duration() <= self.shift && self.shift > 0 {
                    continue;
                }
                pts = Some(p - self.shift);
            }
            let mut out = ffmpeg::Packet::copy(data);
            out.set_pts(pts);
            out.set_dts(dts.map(|d| d - self.shift));
            out.set_duration(packet.duration());
            out.set_flags(packet.flags());
            unsafe { ffi::av_packet_rescale_ts(out.as_mut_ptr(), self.in_tb, self.out_tb) };
            return Ok(Some(out));
        }
        Ok(None)
    }
}
