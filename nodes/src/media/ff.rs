//! Small helpers over ffmpeg-the-third and its raw bindings: one-time setup, error text,
//! opening inputs (files, image patterns, globs), pixel conversion into and out of the frame
//! layouts of the engine (packed RGB24, planar YUV 4:2:0), and audio conversion to
//! interleaved f32.

pub use ffmpeg_the_third as ffmpeg;

use ffmpeg::ffi;
use std::ffi::{CStr, CString};
use std::os::raw::c_int;
use std::ptr;
use std::sync::{Arc, Once};
use vidflow_engine::PixelFormat;

/// Library setup, once per process: FFmpeg's own log is silenced (every failure is reported
/// once, by the node, with the path) unless `VIDFLOW_FFMPEG_LOG` names a level
/// (`error`, `warning`, `info`, `debug`).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ffmpeg::init();
        let level = match std::env::var("VIDFLOW_FFMPEG_LOG").as_deref() {
            Ok("error") => ffi::AV_LOG_ERROR,
            Ok("warning") => ffi::AV_LOG_WARNING,
            Ok("info") => ffi::AV_LOG_INFO,
            Ok("debug") => ffi::AV_LOG_DEBUG,
            _ => ffi::AV_LOG_QUIET,
        };
        unsafe { ffi::av_log_set_level(level) };
    });
}

/// `EAGAIN`, as FFmpeg wraps it in `AVERROR(EAGAIN)`.
#[cfg(target_os = "macos")]
pub const EAGAIN: c_int = 35;
#[cfg(not(target_os = "macos"))]
pub const EAGAIN: c_int = 11;

/// The text of an FFmpeg error code.
pub fn av_err(code: c_int) -> String {
    ffmpeg::Error::from(code).to_string()
}

/// Writes an output's trailer and closes its file (for muxers that have one): the end of
/// every file `encode` writes or a job's assembly joins.
///
/// # Safety
/// `oc` is an open output context whose header was written.
pub unsafe fn finish_output(oc: *mut ffi::AVFormatContext) -> Result<(), String> {
    unsafe {
        let r = ffi::av_write_trailer(oc);
        if r < 0 {
            return Err(av_err(r));
        }
        if !(*oc).pb.is_null() && (*(*oc).oformat).flags & ffi::AVFMT_NOFILE == 0 {
            let r = ffi::avio_closep(&mut (*oc).pb);
            if r < 0 {
                return Err(av_err(r));
            }
        }
    }
    Ok(())
}

pub fn c_string(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("`{s}` contains a NUL byte"))
}

/// True when `path` names several files: a printf pattern (`%05d`) or a glob (`*`, `?`, `[`).
pub fn is_pattern(path: &str) -> bool {
    is_glob(path) || is_printf_pattern(path)
}

pub fn is_glob(path: &str) -> bool {
    path.contains('*') || path.contains('?') || path.contains('[')
}

// Also needed without FFmpeg (a job asks `encode` whether it writes a sequence).
pub use super::is_printf_pattern;

/// Opens an input for demuxing. Image patterns and globs go to the `image2` demuxer with
/// `framerate`; everything else is probed.
pub fn open_input(
    path: &str,
    image_rate: Option<f64>,
) -> Result<ffmpeg::format::context::Input, String> {
    init();
    let c_path = c_string(path)?;
    let mut opts: *mut ffi::AVDictionary = ptr::null_mut();
    let mut fmt: *const ffi::AVInputFormat = ptr::null();
    unsafe {
        if is_pattern(path) {
            fmt = ffi::av_find_input_format(c"image2".as_ptr());
            if is_glob(path) {
                ffi::av_dict_set(&mut opts, c"pattern_type".as_ptr(), c"glob".as_ptr(), 0);
            }
        }
        if let Some(r) = image_rate {
            let r = c_string(&format!("{r}"))?;
            ffi::av_dict_set(&mut opts, c"framerate".as_ptr(), r.as_ptr(), 0);
        }
        let mut ctx: *mut ffi::AVFormatContext = ptr::null_mut();
        let r = ffi::avformat_open_input(&mut ctx, c_path.as_ptr(), fmt as _, &mut opts);
        ffi::av_dict_free(&mut opts);
        if r < 0 {
            return Err(av_err(r));
        }
        let r = ffi::avformat_find_stream_info(ctx, ptr::null_mut());
        if r < 0 {
            ffi::avformat_close_input(&mut ctx);
            return Err(av_err(r));
        }
        Ok(ffmpeg::format::context::Input::wrap(ctx))
    }
}

/// The name of the muxer FFmpeg would pick for `path` (by its extension), if any.
pub fn guess_muxer(path: &str) -> Option<String> {
    init();
    let c = CString::new(path).ok()?;
    unsafe {
        let f = ffi::av_guess_format(ptr::null(), c.as_ptr(), ptr::null());
        if f.is_null() {
            None
        } else {
            Some(CStr::from_ptr((*f).name).to_string_lossy().into_owned())
        }
    }
}

pub fn pixel_by_name(name: &str) -> Option<ffi::AVPixelFormat> {
    let c = CString::new(name).ok()?;
    let f = unsafe { ffi::av_get_pix_fmt(c.as_ptr()) };
    (f != ffi::AVPixelFormat::NONE).then_some(f)
}

pub fn pixel_name(f: ffi::AVPixelFormat) -> String {
    unsafe {
        let n = ffi::av_get_pix_fmt_name(f);
        if n.is_null() {
            "unknown".into()
        } else {
            CStr::from_ptr(n).to_string_lossy().into_owned()
        }
    }
}

pub fn codec_name(id: ffi::AVCodecID) -> String {
    unsafe {
        CStr::from_ptr(ffi::avcodec_get_name(id))
            .to_string_lossy()
            .into_owned()
    }
}

/// swscale contexts converting frames of one geometry and format to another.
pub struct Scaler {
    /// One context per band of rows, each converted on its own thread (see [`bands`]).
    bands: Vec<Band>,
    key: (ffi::AVPixelFormat, u32, u32, ffi::AVPixelFormat, u32, u32),
    /// RGB24 → YUV420P goes through swscale's fast BGR24 path: the red and blue bytes are
    /// swapped into this buffer first (swscale has no fast path from RGB24, and its generic
    /// path costs about three times as much).
    bgr: Option<Vec<u8>>,
}

/// A context converting rows `y0 .. y0 + rows` of the frame as a picture of its own.
struct Band {
    ptr: *mut ffi::SwsContext,
    y0: u32,
    rows: u32,
}

/// Pixels a frame needs before its conversion is split across threads: below it a thread
/// costs more than it saves.
const BAND_MIN_PIXELS: u32 = 320 * 240;

/// How many bands of rows to convert in parallel. Only where the result is the same bytes as
/// one whole-frame conversion: same size (no scaling filter reaches across a band's edge), an
/// even height split at even rows, and YUV 4:2:0 → RGB24 (the decoder's conversion), which
/// swscale makes two rows at a time with nothing shared between pairs (the test
/// `bands_convert_exactly_as_one_context` checks it).
///
/// Not split: BGR24 → YUV 4:2:0 (the encoder's). swscale's x86 code converts the last two
/// rows of a picture with its C fallback, which rounds differently, so every band's last two
/// rows would differ from the whole-frame conversion (the test found 2351 bytes at 720p).
/// Nor a width that is not a multiple of 32: swscale's SIMD YUV → RGB stores whole blocks of
/// pixels and writes past the end of such a row (see [`Scaler::to_buffer`]), into rows
/// another thread would be writing.
fn bands(src: (ffi::AVPixelFormat, u32, u32), dst: (ffi::AVPixelFormat, u32, u32)) -> u32 {
    use ffi::AVPixelFormat as F;
    let row_pairs = (src.0, dst.0) == (F::YUV420P, F::RGB24) && src.1.is_multiple_of(32);
    if !row_pairs || (src.1, src.2) != (dst.1, dst.2) || src.2 % 2 == 1 {
        return 1;
    }
    if src.1 * src.2 < BAND_MIN_PIXELS {
        return 1;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    threads.clamp(1, 4).min(src.2 / 16).max(1)
}

/// Row ranges of `n` bands over `h` rows, each starting on an even row.
fn band_rows(h: u32, n: u32) -> Vec<(u32, u32)> {
    let step = (h / n).next_multiple_of(2);
    (0..n)
        .map(|i| (i * step, if i + 1 == n { h - i * step } else { step }))
        .filter(|&(_, rows)| rows > 0)
        .collect()
}

/// Plane pointers of one band, moved to the thread that converts it.
struct BandJob {
    ctx: *mut ffi::SwsContext,
    src: [*const u8; 4],
    src_stride: [c_int; 4],
    dst: [*mut u8; 4],
    dst_stride: [c_int; 4],
    rows: u32,
}

// Each job touches only its own context and its own rows of the source and destination, and
// lives until its thread is joined.
unsafe impl Send for BandJob {}
unsafe impl Sync for BandJob {}

impl BandJob {
    fn run(&self) {
        unsafe {
            ffi::sws_scale(
                self.ctx,
                self.src.as_ptr(),
                self.src_stride.as_ptr(),
                0,
                self.rows as c_int,
                self.dst.as_ptr(),
                self.dst_stride.as_ptr(),
            );
        }
    }
}

/// Moves plane pointers down `rows` rows: chroma planes (1 and 2) of a vertically
/// subsampled YUV format by half as many.
fn offset_rows<T>(
    planes: [*const T; 4],
    strides: [c_int; 4],
    format: ffi::AVPixelFormat,
    rows: u32,
) -> [*const T; 4] {
    let half = format == ffi::AVPixelFormat::YUV420P;
    let mut out = planes;
    for i in 0..4 {
        if planes[i].is_null() {
            continue;
        }
        let r = if half && (i == 1 || i == 2) {
            rows / 2
        } else {
            rows
        };
        out[i] = planes[i].wrapping_byte_offset(r as isize * strides[i] as isize);
    }
    out
}

/// The four plane pointers and strides swscale reads of a frame's eight.
fn first4(data: &[*mut u8; 8], linesize: &[c_int; 8]) -> ([*mut u8; 4], [c_int; 4]) {
    (
        [data[0], data[1], data[2], data[3]],
        [linesize[0], linesize[1], linesize[2], linesize[3]],
    )
}

/// Runs the jobs, all but the first on threads of their own.
fn run_bands(jobs: &[BandJob]) {
    match jobs {
        [] => {}
        [only] => only.run(),
        [first, rest @ ..] => std::thread::scope(|s| {
            for job in rest {
                s.spawn(move || job.run());
            }
            first.run();
        }),
    }
}

/// Swaps the red and blue bytes of packed 24-bit pixels (RGB24 ↔ BGR24), four pixels at a time.
pub fn swap_rb(src: &[u8], dst: &mut [u8]) {
    let n = src.len().min(dst.len()) / 12 * 12;
    for (s, d) in src[..n].chunks_exact(12).zip(dst[..n].chunks_exact_mut(12)) {
        let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        // In: r0 g0 b0 r1 | g1 b1 r2 g2 | b2 r3 g3 b3 → out: b0 g0 r0 b1 | g1 r1 b2 g2 | r2 b3 g3 r3
        let (a, b, c) = (w(0), w(4), w(8));
        let o0 = ((a >> 16) & 0xff) | (a & 0xff00) | ((a & 0xff) << 16) | (((b >> 8) & 0xff) << 24);
        let o1 = (b & 0xff) | ((a >> 24) << 8) | ((c & 0xff) << 16) | (b & 0xff00_0000);
        let o2 =
            ((b >> 16) & 0xff) | ((c >> 24) << 8) | (c & 0x00ff_0000) | (((c >> 8) & 0xff) << 24);
        d[0..4].copy_from_slice(&o0.to_le_bytes());
        d[4..8].copy_from_slice(&o1.to_le_bytes());
        d[8..12].copy_from_slice(&o2.to_le_bytes());
    }
    for (s, d) in src[n..].chunks_exact(3).zip(dst[n..].chunks_exact_mut(3)) {
        d[0] = s[2];
        d[1] = s[1];
        d[2] = s[0];
    }
}

// The context is used by one thread at a time (it moves with its node).
unsafe impl Send for Scaler {}

impl Scaler {
    pub fn new(
        src: (ffi::AVPixelFormat, u32, u32),
        dst: (ffi::AVPixelFormat, u32, u32),
    ) -> Result<Scaler, String> {
        let resize = (src.1, src.2) != (dst.1, dst.2);
        let via_bgr =
            !resize && src.0 == ffi::AVPixelFormat::RGB24 && dst.0 == ffi::AVPixelFormat::YUV420P;
        let sws_src = if via_bgr {
            ffi::AVPixelFormat::BGR24
        } else {
            src.0
        };
        let flags = if resize {
            ffi::SWS_BICUBIC
        } else {
            ffi::SWS_BILINEAR
        } as c_int;
        let n = bands((sws_src, src.1, src.2), dst);
        let mut made: Vec<Band> = vec![];
        for (y0, rows) in band_rows(src.2, n) {
            // A band is a picture of its own: same size in and out when split.
            let (src_h, dst_h) = if n > 1 { (rows, rows) } else { (src.2, dst.2) };
            let ptr = unsafe {
                ffi::sws_getContext(
                    src.1 as c_int,
                    src_h as c_int,
                    sws_src,
                    dst.1 as c_int,
                    dst_h as c_int,
                    dst.0,
                    flags,
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null(),
                )
            };
            if ptr.is_null() {
                for b in made {
                    unsafe { ffi::sws_freeContext(b.ptr) };
                }
                return Err(format!(
                    "cannot convert {}x{} {} to {}x{} {}",
                    src.1,
                    src.2,
                    pixel_name(src.0),
                    dst.1,
                    dst.2,
                    pixel_name(dst.0)
                ));
            }
            made.push(Band { ptr, y0, rows });
        }
        let bgr = via_bgr.then(|| vec![0u8; src.1 as usize * src.2 as usize * 3]);
        Ok(Scaler {
            bands: made,
            key: (src.0, src.1, src.2, dst.0, dst.1, dst.2),
            bgr,
        })
    }

    /// Reuses `cached` when it converts the same geometry, else builds a new one.
    pub fn reuse(
        cached: &mut Option<Scaler>,
        src: (ffi::AVPixelFormat, u32, u32),
        dst: (ffi::AVPixelFormat, u32, u32),
    ) -> Result<&mut Scaler, String> {
        let key = (src.0, src.1, src.2, dst.0, dst.1, dst.2);
        if cached.as_ref().is_none_or(|s| s.key != key) {
            *cached = Some(Scaler::new(src, dst)?);
        }
        Ok(cached.as_mut().expect("just set"))
    }

    /// Converts a decoded frame into `out`, a frame buffer of the destination format (RGB24 or
    /// YUV420P) and size, laid out as the engine's [`PixelFormat`] says.
    ///
    /// # Safety
    /// `frame` must be a valid video frame matching the source geometry.
    pub unsafe fn to_buffer(&mut self, frame: *const ffi::AVFrame, out: &mut Vec<u8>) {
        let (w, h) = (self.key.4, self.key.5);
        let format = engine_format(self.key.3).expect("a destination the engine knows");
        // swscale's SIMD paths store whole blocks of pixels, so a row whose width is not a
        // multiple of the block (e.g. 40 or 24 pixels) is written past its end. Rows are
        // written in order, so that spill lands in the next row before it is written, except
        // after the last row: the padding takes it, and is cut off below.
        const SPILL: usize = 1024;
        let len = format.byte_len(w, h);
        // A reused buffer is not cleared: every byte is written below.
        out.resize(len + SPILL, 0);
        let (dst, dst_stride) = planes_mut(format, w, h, out);
        let (src, src_stride) = unsafe { first4(&(*frame).data, &(*frame).linesize) };
        let src = src.map(|p| p as *const u8);
        self.convert(src, src_stride, dst, dst_stride);
        out.truncate(len);
    }

    /// Converts a frame buffer of the source format (RGB24 or YUV420P, laid out as the
    /// engine's [`PixelFormat`] says) into a writable frame of the destination format.
    ///
    /// # Safety
    /// `frame` must be allocated with the destination geometry and writable.
    pub unsafe fn from_buffer(&mut self, data: &[u8], frame: *mut ffi::AVFrame) {
        let format = engine_format(self.key.0).expect("a source the engine knows");
        let pixels = match self.bgr.as_mut() {
            Some(bgr) => {
                swap_rb(data, bgr);
                bgr.as_slice()
            }
            None => data,
        };
        let (src, src_stride) = planes(format, self.key.1, self.key.2, pixels);
        let (dst, dst_stride) = unsafe { first4(&(*frame).data, &(*frame).linesize) };
        self.convert(src, src_stride, dst, dst_stride);
    }

    /// Converts a whole picture, band by band in parallel.
    fn convert(
        &self,
        src: [*const u8; 4],
        src_stride: [c_int; 4],
        dst: [*mut u8; 4],
        dst_stride: [c_int; 4],
    ) {
        let src_fmt = if self.bgr.is_some() {
            ffi::AVPixelFormat::BGR24
        } else {
            self.key.0
        };
        let jobs: Vec<BandJob> = self
            .bands
            .iter()
            .map(|b| BandJob {
                ctx: b.ptr,
                src: offset_rows(src, src_stride, src_fmt, b.y0),
                src_stride,
                dst: offset_rows(dst.map(|p| p as *const u8), dst_stride, self.key.3, b.y0)
                    .map(|p| p as *mut u8),
                dst_stride,
                rows: b.rows,
            })
            .collect();
        run_bands(&jobs);
    }
}

/// FFmpeg's name for an engine pixel format.
pub fn av_format(f: PixelFormat) -> ffi::AVPixelFormat {
    match f {
        PixelFormat::Rgb24 => ffi::AVPixelFormat::RGB24,
        PixelFormat::Yuv420p => ffi::AVPixelFormat::YUV420P,
    }
}

/// The engine's pixel format that is exactly `f`, if any.
pub fn engine_format(f: ffi::AVPixelFormat) -> Option<PixelFormat> {
    match f {
        ffi::AVPixelFormat::RGB24 => Some(PixelFormat::Rgb24),
        ffi::AVPixelFormat::YUV420P => Some(PixelFormat::Yuv420p),
        _ => None,
    }
}

/// swscale's plane pointers and strides over a frame buffer.
fn planes(format: PixelFormat, w: u32, h: u32, data: &[u8]) -> ([*const u8; 4], [c_int; 4]) {
    let mut ptrs = [ptr::null(); 4];
    let mut strides = [0; 4];
    for (i, p) in format.planes(w, h).into_iter().enumerate() {
        assert!(
            p.offset + p.row * p.rows <= data.len(),
            "frame buffer too short"
        );
        ptrs[i] = data[p.offset..].as_ptr();
        strides[i] = p.row as c_int;
    }
    (ptrs, strides)
}

fn planes_mut(format: PixelFormat, w: u32, h: u32, data: &mut [u8]) -> ([*mut u8; 4], [c_int; 4]) {
    let (p, s) = planes(format, w, h, data);
    (p.map(|p| p as *mut u8), s)
}

/// Copies a frame's planes into a frame buffer of `format` (the frame's own format, same
/// size): no conversion, only the rows without their padding.
///
/// # Safety
/// `frame` must be a valid video frame of `w` × `h` in `format`.
pub unsafe fn copy_to_buffer(
    frame: *const ffi::AVFrame,
    format: PixelFormat,
    w: u32,
    h: u32,
    out: &mut Vec<u8>,
) {
    // A reused buffer is not cleared: every byte is written below.
    out.resize(format.byte_len(w, h), 0);
    for (i, p) in format.planes(w, h).into_iter().enumerate() {
        let (src, stride) = unsafe { ((*frame).data[i], (*frame).linesize[i] as isize) };
        for r in 0..p.rows {
            let line =
                unsafe { std::slice::from_raw_parts(src.offset(r as isize * stride), p.row) };
            out[p.offset + r * p.row..][..p.row].copy_from_slice(line);
        }
    }
}

/// Frame buffers a decoder reuses: a buffer goes back to work once every frame made from it
/// has been dropped downstream, so a long run allocates (and the kernel zeroes) a handful of
/// buffers instead of one per frame (3 % of a transcode's time was the kernel clearing fresh
/// pages).
#[derive(Default)]
pub struct BufferPool {
    bufs: Vec<Arc<Vec<u8>>>,
}

/// Buffers a pool keeps; more frames alive at once get buffers of their own.
const POOL_MAX: usize = 16;

impl BufferPool {
    /// A buffer filled by `fill`: one no frame holds any more, else a new one.
    pub fn fill<E>(
        &mut self,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Arc<Vec<u8>>, E> {
        // A count of 1 is the pool's own reference: nothing else can clone it meanwhile.
        if let Some(buf) = self.bufs.iter_mut().find(|b| Arc::strong_count(b) == 1)
            && let Some(data) = Arc::get_mut(buf)
        {
            fill(data)?;
            return Ok(buf.clone());
        }
        let mut data = Vec::new();
        fill(&mut data)?;
        let buf = Arc::new(data);
        if self.bufs.len() < POOL_MAX {
            self.bufs.push(buf.clone());
        }
        Ok(buf)
    }
}

/// Points `frame` (an empty frame: fresh or unreferenced) at the planes of a frame buffer of
/// `format` without copying them, as `ffmpeg` hands a decoded frame to an encoder: the frame
/// holds a reference to the buffer (an `Arc` clone, dropped when libav releases its last
/// reference to the frame), marked read-only, so an encoder that keeps frames for its
/// lookahead reads the pixels as they are while the engine's other consumers share them.
///
/// # Safety
/// `frame` must be a valid frame with no buffers; `data` must hold a `w` × `h` buffer of
/// `format`.
pub unsafe fn wrap_buffer(
    data: &Arc<Vec<u8>>,
    format: PixelFormat,
    w: u32,
    h: u32,
    frame: *mut ffi::AVFrame,
) -> Result<(), String> {
    unsafe extern "C" fn release(opaque: *mut std::ffi::c_void, _data: *mut u8) {
        drop(unsafe { Arc::from_raw(opaque as *const Vec<u8>) });
    }
    debug_assert!(data.len() >= format.byte_len(w, h));
    let base = data.as_ptr() as *mut u8;
    let opaque = Arc::into_raw(data.clone()) as *mut std::ffi::c_void;
    let buf = unsafe {
        ffi::av_buffer_create(
            base,
            data.len() as _,
            Some(release),
            opaque,
            ffi::AV_BUFFER_FLAG_READONLY as c_int,
        )
    };
    if buf.is_null() {
        drop(unsafe { Arc::from_raw(opaque as *const Vec<u8>) });
        return Err("out of memory wrapping a frame for the encoder".into());
    }
    unsafe {
        (*frame).buf[0] = buf;
        (*frame).width = w as c_int;
        (*frame).height = h as c_int;
        (*frame).format = av_format(format).0;
        for (i, p) in format.planes(w, h).into_iter().enumerate() {
            (*frame).data[i] = base.add(p.offset);
            (*frame).linesize[i] = p.row as c_int;
        }
    }
    Ok(())
}

impl Drop for Scaler {
    fn drop(&mut self) {
        for b in &self.bands {
            unsafe { ffi::sws_freeContext(b.ptr) };
        }
    }
}

/// An owned channel layout.
pub struct Layout(pub ffi::AVChannelLayout);

impl Layout {
    pub fn default_for(channels: u16) -> Layout {
        unsafe {
            let mut l: ffi::AVChannelLayout = std::mem::zeroed();
            ffi::av_channel_layout_default(&mut l, channels as c_int);
            Layout(l)
        }
    }
    /// A copy of `src`, or the default layout for its channel count when it is unspecified.
    ///
    /// # Safety
    /// `src` must point to a valid channel layout.
    pub unsafe fn copy_of(src: *const ffi::AVChannelLayout) -> Layout {
        unsafe {
            if (*src).order == ffi::AVChannelOrder::UNSPEC {
                return Layout::default_for((*src).nb_channels.max(1) as u16);
            }
            let mut l: ffi::AVChannelLayout = std::mem::zeroed();
            ffi::av_channel_layout_copy(&mut l, src);
            Layout(l)
        }
    }
    pub fn channels(&self) -> u16 {
        self.0.nb_channels as u16
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        unsafe { ffi::av_channel_layout_uninit(&mut self.0) };
    }
}

/// A libswresample context converting decoded audio to interleaved f32.
pub struct Resampler {
    ptr: *mut ffi::SwrContext,
    pub out_rate: u32,
    pub out_channels: u16,
    in_rate: u32,
}

unsafe impl Send for Resampler {}

impl Resampler {
    /// # Safety
    /// `in_layout` must point to a valid channel layout.
    pub unsafe fn new(
        in_fmt: ffi::AVSampleFormat,
        in_layout: *const ffi::AVChannelLayout,
        in_rate: u32,
        out_rate: u32,
        out_channels: u16,
    ) -> Result<Resampler, String> {
        let in_layout = unsafe { Layout::copy_of(in_layout) };
        let out_layout = if out_channels == in_layout.channels() {
            unsafe { Layout::copy_of(&in_layout.0) }
        } else {
            Layout::default_for(out_channels)
        };
        let mut ptr: *mut ffi::SwrContext = ptr::null_mut();
        unsafe {
            let r = ffi::swr_alloc_set_opts2(
                &mut ptr,
                &out_layout.0 as *const _ as *mut _,
                ffi::AVSampleFormat::FLT,
                out_rate as c_int,
                &in_layout.0 as *const _ as *mut _,
                in_fmt,
                in_rate as c_int,
                0,
                ptr::null_mut(),
            );
            if r < 0 || ptr.is_null() {
                return Err(format!("cannot set up audio conversion: {}", av_err(r)));
            }
            let r = ffi::swr_init(ptr);
            if r < 0 {
                ffi::swr_free(&mut ptr);
                return Err(format!("cannot set up audio conversion: {}", av_err(r)));
            }
        }
        Ok(Resampler {
            ptr,
            out_rate,
            out_channels,
            in_rate,
        })
    }

    /// Puts `count` samples of silence before the next input (to start the input on a
    /// sample of a chosen grid).
    pub fn inject_silence(&mut self, count: u32) -> Result<(), String> {
        let r = unsafe { ffi::swr_inject_silence(self.ptr, count.min(c_int::MAX as u32) as c_int) };
        if r < 0 {
            return Err(format!("audio conversion failed: {}", av_err(r)));
        }
        Ok(())
    }

    /// Converts one decoded frame (or flushes with a null frame) to interleaved f32.
    ///
    /// # Safety
    /// `frame` must be null or a valid audio frame in the input format.
    pub unsafe fn convert(&mut self, frame: *const ffi::AVFrame) -> Result<Vec<f32>, String> {
        unsafe {
            let in_samples = if frame.is_null() {
                0
            } else {
                (*frame).nb_samples
            };
            let delay = ffi::swr_get_delay(self.ptr, self.in_rate as i64);
            let cap = ((delay + in_samples as i64) * self.out_rate as i64
                / self.in_rate.max(1) as i64
                + 32) as usize;
            let ch = self.out_channels as usize;
            let mut out = vec![0f32; cap * ch];
            let mut dst = out.as_mut_ptr() as *mut u8;
            let (src, n) = if frame.is_null() {
                (ptr::null_mut(), 0)
            } else {
                ((*frame).extended_data as *mut *const u8, in_samples)
            };
            let got = ffi::swr_convert(self.ptr, &mut dst, cap as c_int, src, n);
            if got < 0 {
                return Err(format!("audio conversion failed: {}", av_err(got)));
            }
            out.truncate(got as usize * ch);
            Ok(out)
        }
    }
}

impl Drop for Resampler {
    fn drop(&mut self) {
        unsafe { ffi::swr_free(&mut self.ptr) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of `format` filled with a pattern that varies across rows and columns.
    fn pattern_frame(format: ffi::AVPixelFormat, w: u32, h: u32) -> *mut ffi::AVFrame {
        unsafe {
            let f = ffi::av_frame_alloc();
            (*f).width = w as c_int;
            (*f).height = h as c_int;
            (*f).format = format.0;
            assert!(ffi::av_frame_get_buffer(f, 0) >= 0);
            for i in 0..4 {
                if (*f).data[i].is_null() || (*f).linesize[i] == 0 {
                    continue;
                }
                let rows = if i == 0 { h } else { h.div_ceil(2) } as usize;
                let n = rows * (*f).linesize[i] as usize;
                for (k, b) in std::slice::from_raw_parts_mut((*f).data[i], n)
                    .iter_mut()
                    .enumerate()
                {
                    *b = ((k * 7 + k / 97 * 13 + i * 31) % 251) as u8;
                }
            }
            f
        }
    }

    #[test]
    fn bands_convert_exactly_as_one_context() {
        const RGB24: ffi::AVPixelFormat = ffi::AVPixelFormat::RGB24;
        const YUV420P: ffi::AVPixelFormat = ffi::AVPixelFormat::YUV420P;
        ffmpeg::init().unwrap();
        // 640x362: the middle band starts on row 182, an even row that is not a multiple of 4.
        for (w, h) in [(1280, 720), (640, 362), (1920, 1080)] {
            assert!(
                bands((YUV420P, w, h), (RGB24, w, h)) > 1 || available() < 2,
                "{w}x{h}"
            );
            // Decoder side: YUV 4:2:0 → RGB24.
            let src = pattern_frame(YUV420P, w, h);
            let mut whole = Scaler::new((YUV420P, w, h), (RGB24, w, h)).unwrap();
            let split = whole.bands.len();
            whole.bands = single(&whole, (YUV420P, w, h), (RGB24, w, h));
            let mut banded = Scaler::new((YUV420P, w, h), (RGB24, w, h)).unwrap();
            assert_eq!(banded.bands.len(), split);
            let (mut a, mut b) = (vec![], vec![]);
            unsafe {
                whole.to_buffer(src, &mut a);
                banded.to_buffer(src, &mut b);
            }
            assert!(a == b, "YUV → RGB {w}x{h}: bands differ from one context");

            // Encoder side: RGB24 (through BGR24) → YUV 4:2:0 stays one context.
            let enc = Scaler::new((RGB24, w, h), (YUV420P, w, h)).unwrap();
            assert_eq!(enc.bands.len(), 1);
            let mut src = src;
            unsafe { ffi::av_frame_free(&mut src) };
        }
    }

    fn available() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// One whole-frame context in place of `s`'s bands.
    fn single(
        s: &Scaler,
        src: (ffi::AVPixelFormat, u32, u32),
        dst: (ffi::AVPixelFormat, u32, u32),
    ) -> Vec<Band> {
        for b in &s.bands {
            unsafe { ffi::sws_freeContext(b.ptr) };
        }
        let ptr = unsafe {
            ffi::sws_getContext(
                src.1 as c_int,
                src.2 as c_int,
                src.0,
                dst.1 as c_int,
                dst.2 as c_int,
                dst.0,
                ffi::SWS_BILINEAR as c_int,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null(),
            )
        };
        vec![Band {
            ptr,
            y0: 0,
            rows: src.2,
        }]
    }

    #[test]
    fn swap_rb_swaps_red_and_blue_of_every_pixel() {
        for pixels in [0usize, 1, 3, 4, 5, 17, 1280] {
            let src: Vec<u8> = (0..pixels * 3).map(|i| (i * 37 % 251) as u8).collect();
            let mut dst = vec![0u8; src.len()];
            swap_rb(&src, &mut dst);
            for (s, d) in src.chunks(3).zip(dst.chunks(3)) {
                assert_eq!([s[2], s[1], s[0]], [d[0], d[1], d[2]], "{pixels} pixels");
            }
        }
    }

    /// An encoder reads a shared frame's own planes, and holds the buffer exactly as long as
    /// some reference to the frame lives: the buffer's count is back to one when the last goes.
    #[test]
    fn a_wrapped_buffer_is_read_in_place_and_released_with_the_last_reference() {
        let (w, h) = (6u32, 4u32);
        let data: Arc<Vec<u8>> = Arc::new((0..PixelFormat::Yuv420p.byte_len(w, h) as u8).collect());
        unsafe {
            let frame = ffi::av_frame_alloc();
            wrap_buffer(&data, PixelFormat::Yuv420p, w, h, frame).unwrap();
            assert_eq!(Arc::strong_count(&data), 2);
            assert_eq!(((*frame).width, (*frame).height), (6, 4));
            assert_eq!((*frame).format, ffi::AVPixelFormat::YUV420P.0);
            // Y, then U and V (3x2 each), straight after one another in the buffer.
            let base = data.as_ptr();
            for (i, (off, stride)) in [(0, 6), (24, 3), (30, 3)].into_iter().enumerate() {
                assert_eq!((*frame).data[i] as *const u8, base.add(off), "plane {i}");
                assert_eq!((*frame).linesize[i], stride, "plane {i}");
            }
            assert_eq!(
                ffi::av_frame_is_writable(frame),
                0,
                "shared pixels are read-only"
            );
            // An encoder that keeps the frame takes a reference of its own.
            let kept = ffi::av_frame_alloc();
            assert!(ffi::av_frame_ref(kept, frame) >= 0);
            ffi::av_frame_unref(frame);
            assert_eq!(
                Arc::strong_count(&data),
                2,
                "the kept reference holds the buffer"
            );
            assert_eq!(*(*kept).data[1], 24);
            let mut kept = kept;
            ffi::av_frame_free(&mut kept);
            assert_eq!(
                Arc::strong_count(&data),
                1,
                "released with the last reference"
            );
            let mut frame = frame;
            ffi::av_frame_free(&mut frame);
        }
    }
}
