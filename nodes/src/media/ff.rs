//! Small helpers over ffmpeg-the-third and its raw bindings: one-time setup, error text,
//! opening inputs (files, image patterns, globs), pixel conversion into and out of packed RGB24,
//! and audio conversion to interleaved f32.

pub use ffmpeg_the_third as ffmpeg;

use ffmpeg::ffi;
use std::ffi::{CStr, CString};
use std::os::raw::c_int;
use std::ptr;
use std::sync::Once;

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

/// A swscale context converting frames of one geometry and format to another.
pub struct Scaler {
    ptr: *mut ffi::SwsContext,
    key: (ffi::AVPixelFormat, u32, u32, ffi::AVPixelFormat, u32, u32),
    /// RGB24 → YUV420P goes through swscale's fast BGR24 path: the red and blue bytes are
    /// swapped into this buffer first (swscale has no fast path from RGB24, and its generic
    /// path costs about three times as much).
    bgr: Option<Vec<u8>>,
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
        let ptr = unsafe {
            ffi::sws_getContext(
                src.1 as c_int,
                src.2 as c_int,
                sws_src,
                dst.1 as c_int,
                dst.2 as c_int,
                dst.0,
                flags,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null(),
            )
        };
        if ptr.is_null() {
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
        let bgr = via_bgr.then(|| vec![0u8; src.1 as usize * src.2 as usize * 3]);
        Ok(Scaler {
            ptr,
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

    /// Converts a decoded frame into packed RGB24 of the destination size.
    ///
    /// # Safety
    /// `frame` must be a valid video frame matching the source geometry.
    pub unsafe fn to_rgb(&mut self, frame: *const ffi::AVFrame) -> Vec<u8> {
        let (w, h) = (self.key.4 as usize, self.key.5 as usize);
        // swscale's SIMD YUV → RGB paths store whole blocks of pixels, so a row whose width
        // is not a multiple of the block (e.g. 40 or 24 pixels) is written past its end. Rows
        // are written in order, so that spill lands in the next row before it is written,
        // except after the last row: the padding takes it, and is cut off below.
        const SPILL: usize = 1024;
        let mut out = vec![0u8; w * h * 3 + SPILL];
        let dst = [
            out.as_mut_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
        ];
        let stride = [(w * 3) as c_int, 0, 0, 0];
        unsafe {
            ffi::sws_scale(
                self.ptr,
                (*frame).data.as_ptr() as *const *const u8,
                (*frame).linesize.as_ptr(),
                0,
                self.key.2 as c_int,
                dst.as_ptr(),
                stride.as_ptr(),
            );
        }
        out.truncate(w * h * 3);
        out
    }

    /// Converts packed RGB24 pixels into a writable frame of the destination format.
    ///
    /// # Safety
    /// `frame` must be allocated with the destination geometry and writable.
    pub unsafe fn from_rgb(&mut self, rgb: &[u8], frame: *mut ffi::AVFrame) {
        let pixels = match self.bgr.as_mut() {
            Some(bgr) => {
                swap_rb(rgb, bgr);
                bgr.as_slice()
            }
            None => rgb,
        };
        let src = [pixels.as_ptr(), ptr::null(), ptr::null(), ptr::null()];
        let stride = [(self.key.1 * 3) as c_int, 0, 0, 0];
        unsafe {
            ffi::sws_scale(
                self.ptr,
                src.as_ptr(),
                stride.as_ptr(),
                0,
                self.key.2 as c_int,
                (*frame).data.as_ptr(),
                (*frame).linesize.as_ptr(),
            );
        }
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        unsafe { ffi::sws_freeContext(self.ptr) };
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
    #[test]
    fn swap_rb_swaps_red_and_blue_of_every_pixel() {
        for pixels in [0usize, 1, 3, 4, 5, 17, 1280] {
            let src: Vec<u8> = (0..pixels * 3).map(|i| (i * 37 % 251) as u8).collect();
            let mut dst = vec![0u8; src.len()];
            super::swap_rb(&src, &mut dst);
            for (s, d) in src.chunks(3).zip(dst.chunks(3)) {
                assert_eq!([s[2], s[1], s[0]], [d[0], d[1], d[2]], "{pixels} pixels");
            }
        }
    }
}
