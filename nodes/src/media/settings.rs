//! Encoder settings checked before anything runs, against the encoders and muxers of the
//! FFmpeg vidflow is linked with: the container the output path names, the video encoder
//! (exists, is a video encoder, fits the container), its `preset` and `crf`, the pixel format,
//! and the audio encoder (exists, fits the container). Each problem points at its param with a
//! did-you-mean. Also the defaults per container, which the writer uses too: VP9 and Opus for
//! WebM, H.264 and AAC elsewhere, an image codec for image sequences.

use super::ff::{self, ffmpeg::ffi};
use std::ffi::{CStr, CString, c_void};
use std::path::Path;
use std::ptr;
use vidflow_engine::Problem;
use vidflow_engine::diag::suggest;

/// What `encode` (and `split` writing files) was asked to write.
pub struct Settings<'a> {
    pub path: &'a str,
    pub codec: Option<&'a str>,
    pub preset: Option<&'a str>,
    pub crf: Option<f64>,
    pub pix_fmt: Option<&'a str>,
    /// `None`: the container's default.
    pub audio_codec: Option<&'a str>,
    /// Audio is connected (decoded audio, or source packets re-encoded when the container
    /// cannot hold their codec).
    pub audio: bool,
}

/// libx264's and libx265's presets (their `preset` is a free string checked only when the
/// encoder opens).
const X26X_PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

fn extension(path: &str) -> String {
    Path::new(path)
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// The video encoder used when `codec` is not given.
pub fn default_video_codec(path: &str) -> &'static str {
    let ext = extension(path);
    if super::is_printf_pattern(path) {
        return match ext.as_str() {
            "jpg" | "jpeg" => "mjpeg",
            "bmp" => "bmp",
            "tif" | "tiff" => "tiff",
            "webp" => "libwebp",
            _ => "png",
        };
    }
    match ext.as_str() {
        "webm" => "libvpx-vp9",
        _ => "libx264",
    }
}

/// The audio encoder used when `audio_codec` is not given.
pub fn default_audio_codec(path: &str) -> &'static str {
    match extension(path).as_str() {
        "webm" | "ogg" | "opus" => "libopus",
        _ => "aac",
    }
}

fn encoder(name: &str) -> Option<*const ffi::AVCodec> {
    let c = CString::new(name).ok()?;
    let codec = unsafe { ffi::avcodec_find_encoder_by_name(c.as_ptr()) };
    (!codec.is_null()).then_some(codec)
}

/// The names of this FFmpeg's encoders of one media type.
fn encoders(kind: ffi::AVMediaType) -> Vec<String> {
    let mut out = vec![];
    let mut opaque: *mut c_void = ptr::null_mut();
    loop {
        let c = unsafe { ffi::av_codec_iterate(&mut opaque) };
        if c.is_null() {
            return out;
        }
        unsafe {
            if ffi::av_codec_is_encoder(c) != 0 && (*c).type_ == kind {
                out.push(CStr::from_ptr((*c).name).to_string_lossy().into_owned());
            }
        }
    }
}

/// An encoder's private option `name`, if it has one.
fn option(codec: *const ffi::AVCodec, name: &CStr) -> Option<*const ffi::AVOption> {
    unsafe {
        if (*codec).priv_class.is_null() {
            return None;
        }
        let class = &(*codec).priv_class as *const *const ffi::AVClass as *mut c_void;
        let o = ffi::av_opt_find(
            class,
            name.as_ptr(),
            ptr::null(),
            0,
            ffi::AV_OPT_SEARCH_FAKE_OBJ,
        );
        (!o.is_null()).then_some(o)
    }
}

/// The named values an encoder's option takes (its constants), e.g. NVENC's presets.
fn constants(codec: *const ffi::AVCodec, opt: *const ffi::AVOption) -> Vec<String> {
    let mut out = vec![];
    unsafe {
        let unit = (*opt).unit;
        if unit.is_null() {
            return out;
        }
        let class = (*codec).priv_class;
        let mut o: *const ffi::AVOption = ptr::null();
        loop {
            o = ffi::av_opt_next(&class as *const *const ffi::AVClass as *const c_void, o);
            if o.is_null() {
                return out;
            }
            if (*o).type_ == ffi::AVOptionType::CONST
                && !(*o).unit.is_null()
                && CStr::from_ptr((*o).unit) == CStr::from_ptr(unit)
            {
                out.push(CStr::from_ptr((*o).name).to_string_lossy().into_owned());
            }
        }
    }
}

/// Whether the muxer for `path` can hold codec `codec`.
fn container_holds(path: &str, codec: *const ffi::AVCodec) -> bool {
    let Ok(c) = CString::new(path) else {
        return true;
    };
    unsafe {
        let f = ffi::av_guess_format(ptr::null(), c.as_ptr(), ptr::null());
        f.is_null() || ffi::avformat_query_codec(f, (*codec).id, ffi::FF_COMPLIANCE_NORMAL) == 1
    }
}

fn long_name(codec: *const ffi::AVCodec) -> String {
    unsafe {
        let n = CStr::from_ptr((*codec).name).to_string_lossy();
        let id = CStr::from_ptr(ffi::avcodec_get_name((*codec).id)).to_string_lossy();
        if n == id {
            n.into_owned()
        } else {
            format!("{n} ({id})")
        }
    }
}

/// Every problem with the settings, each at its param.
pub fn check(s: &Settings) -> Vec<Problem> {
    ff::init();
    let mut out = vec![];
    let sequence = super::is_printf_pattern(s.path);
    if !sequence && !s.path.contains("${") && ff::guess_muxer(s.path).is_none() {
        out.push(
            Problem::param(
                "path",
                format!("FFmpeg knows no container for `{}`", s.path),
            )
            .help("end it with .mp4, .mkv, .mov, .webm, or use an image pattern like out/%05d.png"),
        );
        return out;
    }
    let named = s.codec.is_some();
    let name = s.codec.unwrap_or_else(|| default_video_codec(s.path));
    let video = encoder(name).filter(|&c| unsafe { (*c).type_ } == ffi::AVMediaType::VIDEO);
    let Some(codec) = video else {
        let all = encoders(ffi::AVMediaType::VIDEO);
        out.push(
            Problem::param(
                if named { "codec" } else { "path" },
                format!("this FFmpeg has no video encoder `{name}`"),
            )
            .help(suggest(
                name,
                all.iter().map(String::as_str),
                "video encoders",
            )),
        );
        return out;
    };
    if !sequence && !container_holds(s.path, codec) {
        let ext = extension(s.path);
        out.push(
            Problem::param(
                if named { "codec" } else { "path" },
                format!("a .{ext} file cannot hold {} video", long_name(codec)),
            )
            .help(format!(
                "for .{ext} use `codec: {}`, or write .mp4 or .mkv",
                default_video_codec(s.path)
            )),
        );
    }
    if let Some(preset) = s.preset {
        match option(codec, c"preset") {
            None => out.push(
                Problem::param("preset", format!("encoder `{name}` has no presets"))
                    .help("remove `preset`"),
            ),
            Some(opt) => {
                let valid: Vec<String> = if name == "libx264" || name == "libx265" {
                    X26X_PRESETS.iter().map(|p| p.to_string()).collect()
                } else {
                    constants(codec, opt)
                };
                if !valid.is_empty() && !valid.iter().any(|v| v == preset) {
                    out.push(
                        Problem::param(
                            "preset",
                            format!("encoder `{name}` has no preset `{preset}`"),
                        )
                        .help(suggest(
                            preset,
                            valid.iter().map(String::as_str),
                            "its presets",
                        )),
                    );
                }
            }
        }
    }
    if s.crf.is_some() && option(codec, c"crf").is_none() {
        out.push(
            Problem::param("crf", format!("encoder `{name}` takes no `crf`"))
                .help("remove `crf`, or choose an encoder with constant quality (libx264, libx265, libvpx-vp9)"),
        );
    }
    if let Some(pix) = s.pix_fmt {
        match ff::pixel_by_name(pix) {
            None => out.push(
                Problem::param("pix_fmt", format!("FFmpeg knows no pixel format `{pix}`"))
                    .help("e.g. yuv420p, yuv444p, rgb24"),
            ),
            Some(f) => {
                // SAFETY: `codec` is an encoder FFmpeg returned.
                let supported = unsafe { supported_pixels(codec) };
                if !supported.is_empty() && !supported.contains(&f) {
                    let names: Vec<String> = supported.iter().map(|f| ff::pixel_name(*f)).collect();
                    out.push(
                        Problem::param(
                            "pix_fmt",
                            format!("encoder `{name}` cannot encode pixel format `{pix}`"),
                        )
                        .help(suggest(
                            pix,
                            names.iter().map(String::as_str),
                            "it takes",
                        )),
                    );
                }
            }
        }
    }
    if s.audio && !sequence {
        let named = s.audio_codec.is_some();
        let aname = s.audio_codec.unwrap_or_else(|| default_audio_codec(s.path));
        let audio = encoder(aname).filter(|&c| unsafe { (*c).type_ } == ffi::AVMediaType::AUDIO);
        match audio {
            None => {
                let all = encoders(ffi::AVMediaType::AUDIO);
                out.push(
                    Problem::param(
                        if named { "audio_codec" } else { "path" },
                        format!("this FFmpeg has no audio encoder `{aname}`"),
                    )
                    .help(suggest(
                        aname,
                        all.iter().map(String::as_str),
                        "audio encoders",
                    )),
                );
            }
            Some(codec) if !container_holds(s.path, codec) => {
                let ext = extension(s.path);
                out.push(
                    Problem::param(
                        if named { "audio_codec" } else { "path" },
                        format!("a .{ext} file cannot hold {} audio", long_name(codec)),
                    )
                    .help(format!(
                        "for .{ext} use `audio_codec: {}`",
                        default_audio_codec(s.path)
                    )),
                );
            }
            Some(_) => {}
        }
    }
    out
}

/// The pixel formats an encoder takes (empty: any).
///
/// # Safety
/// `codec` must be an encoder FFmpeg returned (they live as long as the process).
pub(super) unsafe fn supported_pixels(codec: *const ffi::AVCodec) -> Vec<ffi::AVPixelFormat> {
    let mut v = vec![];
    unsafe {
        let mut p = (*codec).pix_fmts;
        while !p.is_null() && *p != ffi::AVPixelFormat::NONE {
            v.push(*p);
            p = p.add(1);
        }
    }
    v
}
