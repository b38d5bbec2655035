//! A source's timeline for jobs, read from its packets without decoding: every frame `decode`
//! would emit, with the `pts` it would give it, and the frames a decoder can start at.
//!
//! This module also owns the timing rules `decode` follows, so that the two cannot drift
//! apart: where a frame's `pts` comes from ([`origin`], [`seconds`]), the stream's rate
//! ([`video_rate`]), the time window with its tolerance ([`Span`], [`EPS`]), the seek to
//! `start` ([`seek_to_start`]) and which source audio packets a window passes
//! ([`AudioCut`]). A job hands the timeline's `pts` values back to `decode` as `start`/`end`,
//! so they must be the very numbers `decode` computes, not an estimate.

use super::ff::{self, ffmpeg, ffmpeg::ffi};
use ffmpeg::codec::packet::Ref;
use std::path::{Path, PathBuf};
use vidflow_engine::{NodeError, Rate, Timeline};

/// Tolerance of window comparisons, in seconds: a frame at `start` is in the window even when
/// its `pts` is a rounding step below it, and one at `end` is out.
pub const EPS: f64 = 1e-6;

/// The input's start time in seconds (its `start_time`): `pts` values count from it.
pub fn origin(input: &ffmpeg::format::context::Input) -> f64 {
    match unsafe { (*input.as_ptr()).start_time } {
        t if t == ffi::AV_NOPTS_VALUE => 0.0,
        t => t as f64 / ffi::AV_TIME_BASE as f64,
    }
}

/// A timestamp of a stream whose time base is `tb` seconds per tick, as `decode`'s `pts`.
pub fn seconds(ticks: i64, tb: f64, origin: f64) -> f64 {
    ticks as f64 * tb - origin
}

/// How many packets the demuxer will return for stream `index` (for video: the frames a
/// decoder makes of them), when that is known exactly; `None` when not.
///
/// Counted in the container's index when it lists every packet (AVI, and the MP4/MOV family
/// read their whole index when they open): entries with data, less the video packets an edit
/// list drops.
/// Not the AVI's announced count (`nb_frames`), which counts its zero-size "dropped frame"
/// entries and, for audio, samples. Other containers: the announced count of a video stream
/// (Matroska's statistics tags), none for audio (their cues list keyframes only).
pub fn packets(input: &ffmpeg::format::context::Input, index: usize, video: bool) -> Option<u64> {
    let format = input.format().name().to_string();
    let indexed = format == "avi" || format.split(',').any(|f| f == "mov" || f == "mp4");
    let stream = unsafe { *(*input.as_ptr()).streams.add(index) };
    if !indexed {
        let announced = unsafe { (*stream).nb_frames };
        return (video && announced > 0).then_some(announced as u64);
    }
    let n = unsafe { ffi::avformat_index_get_entries_count(stream) };
    if n <= 0 {
        return None;
    }
    let count = (0..n)
        .filter_map(|i| unsafe { ffi::avformat_index_get_entry(stream, i).as_ref() })
        // An edit list's dropped video packets decode into no frame; audio ones still pass.
        .filter(|e| e.size() > 0 && !(video && e.flags() & ffi::AVINDEX_DISCARD_FRAME != 0))
        .count();
    Some(count as u64)
}

/// The frame rate `decode` gives a video stream's frames.
pub fn video_rate(st: &ffmpeg::format::stream::Stream<'_>) -> Rate {
    let avg = st.avg_frame_rate();
    let real = st.rate();
    let valid = |r: ffmpeg::Rational| r.numerator() > 0 && r.denominator() > 0;
    // Variable frame rate: the base rate (`r_frame_rate`, every timestamp lies on its grid)
    // when it is plausible, else the average.
    let pick = match (valid(avg), valid(real)) {
        (true, true)
            if f64::from(real) >= f64::from(avg) - 1e-9
                && f64::from(real) <= 3.0 * f64::from(avg) =>
        {
            real
        }
        (true, _) => avg,
        _ => real,
    };
    if valid(pick) {
        Rate::new(pick.numerator() as u32, pick.denominator() as u32)
    } else {
        Rate::new(25, 1)
    }
}

/// `decode`'s time window: seconds (`start`/`end`) or frame indices (`start_frame`/`end_frame`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub start_frame: Option<u64>,
    pub end_frame: Option<u64>,
}

/// What the probe reads: `decode`'s input (path, image-sequence rate) and window.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub path: &'a str,
    pub rate: Option<f64>,
    pub span: Span,
}

impl Span {
    /// The frame comes before the window (it is skipped).
    pub fn before(&self, index: u64, pts: f64) -> bool {
        self.start_frame.is_some_and(|s| index < s) || self.start.is_some_and(|s| pts + EPS < s)
    }
    /// The frame is at or past the window's end (it and everything after it are dropped).
    pub fn after(&self, index: u64, pts: f64) -> bool {
        self.end_frame.is_some_and(|e| index >= e) || self.end.is_some_and(|e| pts + EPS >= e)
    }
    /// The rate a frame window is timed at when there is no video stream to take it from.
    pub const NOMINAL_FPS: f64 = 25.0;

    /// The window in seconds, frame windows converted at `fps` (the audio is cut by it).
    pub fn secs(&self, fps: f64) -> (f64, f64) {
        let start = self
            .start
            .or(self.start_frame.map(|f| f as f64 / fps))
            .unwrap_or(f64::NEG_INFINITY);
        let end = self
            .end
            .or(self.end_frame.map(|f| f as f64 / fps))
            .unwrap_or(f64::INFINITY);
        (start, end)
    }
}

/// Seeks to the keyframe at or before `start` (when it is after the input's first second 0);
/// the frames between it and `start` are then decoded and dropped. True when it sought.
pub fn seek_to_start(
    input: &mut ffmpeg::format::context::Input,
    start: Option<f64>,
    origin: f64,
) -> bool {
    match start.filter(|s| *s > 0.0) {
        Some(s) => {
            let ts = ((s + origin) * ffi::AV_TIME_BASE as f64) as i64;
            input.seek(ts, ..=ts).is_ok()
        }
        None => false,
    }
}

/// Where the audio of `path` ends, in seconds as `decode` times its samples (from the input's
/// start), from the stream's (or else the container's) duration; `None` without audio or when
/// the file does not say.
pub fn audio_end(node: &str, path: &str, rate: Option<f64>) -> Result<Option<f64>, NodeError> {
    let input = super::ff::open_input(path, rate)
        .map_err(|e| NodeError::input(format!("node `{node}`: cannot open `{path}`: {e}")))?;
    let origin = origin(&input);
    let Some(st) = input.streams().best(ffmpeg::media::Type::Audio) else {
        return Ok(None);
    };
    let tb = f64::from(st.time_base());
    let start = match st.start_time() {
        t if t == ffi::AV_NOPTS_VALUE => origin,
        t => t as f64 * tb,
    };
    let end = match (st.duration(), input.duration()) {
        (d, _) if d != ffi::AV_NOPTS_VALUE && d > 0 => Some(start + d as f64 * tb - origin),
        (_, d) if d != ffi::AV_NOPTS_VALUE && d > 0 => Some(d as f64 / ffi::AV_TIME_BASE as f64),
        _ => None,
    };
    Ok(end)
}

/// Which packets of the source audio stream `decode` passes on `audio_packets` for a window
/// `start..end` (seconds, from [`Span::secs`]): those that overlap it.
pub struct AudioCut {
    /// Seconds per tick of the audio stream.
    pub tb: f64,
    /// The input's start in the audio stream's ticks (packet timestamps count from it).
    pub origin_ticks: i64,
    pub start: f64,
    pub end: f64,
}

/// What [`AudioCut::place`] says of one packet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AudioPlace {
    Skip,
    Keep,
    /// It starts at or after the end: it and every later packet are left out.
    Past,
}

impl AudioCut {
    pub fn new(tb: f64, origin: f64, (start, end): (f64, f64)) -> AudioCut {
        AudioCut {
            tb,
            origin_ticks: (origin / tb).round() as i64,
            start,
            end,
        }
    }
    /// Decides on a packet from its timestamps (already counted from the origin, see
    /// [`AudioCut::origin_ticks`]) and duration, all in ticks.
    pub fn place(&self, pts: Option<i64>, dts: Option<i64>, duration: i64) -> AudioPlace {
        let t = pts.or(dts).map(|p| p as f64 * self.tb);
        let dur = duration as f64 * self.tb;
        if t.is_some_and(|t| t + EPS >= self.end) {
            return AudioPlace::Past;
        }
        if t.is_none_or(|t| t + dur > self.start + EPS && t + EPS < self.end) {
            AudioPlace::Keep
        } else {
            AudioPlace::Skip
        }
    }
}

/// The frames `decode` reading `p` would emit: their `pts` ascending, and which of them a
/// decoder can start at. Reads packets only.
///
/// A frame's `pts` is its packet's timestamp (pts, else dts) as [`seconds`] from the input's
/// [`origin`]; `decode` takes the decoded frame's best-effort timestamp, which is the same
/// number whenever packets carry timestamps. Packets the demuxer marks to be discarded (before
/// an edit list's start) give no frame. The window's first frame is always a place to start:
/// `decode` seeks to the keyframe before it and drops the frames in between.
pub fn timeline(node: &str, p: &Source<'_>) -> Result<Timeline, NodeError> {
    let (frames, files) = read_frames(node, p)?;
    // The window, as `decode` applies it: without a seek (no `start`) a frame's index is its
    // position in the input, and `start_frame`/`end_frame` never come with `start`.
    let span = p.span;
    let mut timeline = Timeline {
        files,
        ..Timeline::default()
    };
    for (i, &(pts, key)) in frames.iter().enumerate() {
        if span.before(i as u64, pts) {
            continue;
        }
        if span.after(i as u64, pts) {
            break;
        }
        if key || timeline.pts.is_empty() {
            timeline.keyframes.push(timeline.pts.len());
        }
        timeline.pts.push(pts);
    }
    if timeline.pts.is_empty() {
        return Err(NodeError::input(format!(
            "node `{node}`: no frames of `{}` fall in the requested window; the input has {} frames",
            p.path,
            frames.len()
        )));
    }
    Ok(timeline)
}

/// The `end` in seconds that stops `decode` where `end_frame` does: the `pts` of the frame at
/// that position (`None`: the input ends first). `None` also when the input cannot be read;
/// the run then reports that.
pub fn end_of_frame_window(p: &Source<'_>) -> Option<f64> {
    let end_frame = p.span.end_frame? as usize;
    let (frames, _) = read_frames("", p).ok()?;
    frames.get(end_frame).map(|f| f.0)
}

/// Every frame of an input as (`pts`, keyframe), in presentation order.
type Frames = Vec<(f64, bool)>;

/// The input's frames, and its files.
fn read_frames(node: &str, p: &Source<'_>) -> Result<(Frames, Vec<PathBuf>), NodeError> {
    let path = p.path;
    let files = input_files(path);
    if files.is_empty() {
        return Err(NodeError::input(format!(
            "node `{node}`: input `{path}` does not exist; check the path (relative paths are from the working folder)"
        )));
    }
    let mut input = ff::open_input(path, p.rate).map_err(|e| {
        NodeError::input(format!("node `{node}`: cannot open `{path}`: {e} (is it a video or image file FFmpeg can read?)"))
    })?;
    let origin = origin(&input);
    let (vi, tb, fps, intra_only) = {
        let st = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| {
                NodeError::input(format!("node `{node}`: `{path}` has no video stream"))
            })?;
        let codec = unsafe { (*st.parameters().as_ptr()).codec_id };
        // Image codecs (PNG, JPEG…) and other intra-only ones: every frame is a keyframe,
        // whatever flags the demuxer sets.
        let intra_only = unsafe {
            let d = ffi::avcodec_descriptor_get(codec);
            !d.is_null() && (*d).props & ffi::AV_CODEC_PROP_INTRA_ONLY != 0
        };
        (
            st.index(),
            f64::from(st.time_base()),
            video_rate(&st).fps(),
            intra_only,
        )
    };

    // (timestamp in ticks, keyframe) per frame, in decode order.
    let mut packets: Vec<(Option<i64>, bool)> = vec![];
    loop {
        let mut packet = ffmpeg::Packet::empty();
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(ffmpeg::Error::Other { errno }) if errno == ff::EAGAIN => continue,
            Err(e) => {
                return Err(NodeError::input(format!(
                    "node `{node}`: read error in `{path}` after {} frames: {e}; the file may be truncated or damaged",
                    packets.len()
                )));
            }
        }
        // Raw flags: the wrapper's `flags()` keeps only KEY and CORRUPT.
        let flags = unsafe { (*packet.as_ptr()).flags };
        if packet.stream() != vi || flags & ffi::AV_PKT_FLAG_DISCARD != 0 {
            continue;
        }
        let key = intra_only || flags & ffi::AV_PKT_FLAG_KEY != 0;
        packets.push((packet.pts().or(packet.dts()), key));
    }

    let stamped = packets.iter().filter(|(t, _)| t.is_some()).count();
    let mut frames: Frames = if stamped == packets.len() {
        packets
            .iter()
            .map(|&(t, key)| (seconds(t.expect("stamped"), tb, origin), key))
            .collect()
    } else if stamped == 0 {
        // No timestamps at all (raw image pipes): `decode` counts frames at the nominal rate.
        packets
            .iter()
            .enumerate()
            .map(|(i, &(_, key))| (i as f64 / fps, key))
            .collect()
    } else {
        return Err(NodeError::input(format!(
            "node `{node}`: {} of the {} frames of `{path}` carry no timestamp, so a job cannot tell where they fall; remux the file (e.g. `ffmpeg -i {path} -c copy out.mkv`) or run without `--job`",
            packets.len() - stamped,
            packets.len()
        )));
    };
    // Packets come in decode order; frames leave the decoder in presentation order.
    frames.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok((frames, files))
}

/// The files an input path names: itself, or the files an image pattern or glob matches
/// (sorted). Only the file name may hold the pattern.
fn input_files(path: &str) -> Vec<PathBuf> {
    if !ff::is_pattern(path) {
        let p = PathBuf::from(path);
        return if p.exists() { vec![p] } else { vec![] };
    }
    let p = Path::new(path);
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(pattern) = p.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return vec![];
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let matches = |name: &str| {
        if ff::is_glob(path) {
            glob_match(pattern.as_bytes(), name.as_bytes())
        } else {
            printf_match(&pattern, name)
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| matches(&e.file_name().to_string_lossy()))
        .map(|e| dir.join(e.file_name()))
        .collect();
    files.sort();
    files
}

/// Whether `name` is a file of printf pattern `pattern` (`frame%05d.png`: `frame` + at least
/// five digits + `.png`).
fn printf_match(pattern: &str, name: &str) -> bool {
    let Some(at) = pattern.find('%') else {
        return pattern == name;
    };
    let rest = &pattern[at + 1..];
    let width_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    let width: usize = rest[..width_len].parse().unwrap_or(1).max(1);
    let Some(suffix) = rest[width_len..].strip_prefix('d') else {
        return false;
    };
    let prefix = &pattern[..at];
    let Some(middle) = name
        .strip_prefix(prefix)
        .and_then(|n| n.strip_suffix(suffix))
    else {
        return false;
    };
    middle.len() >= width && middle.bytes().all(|b| b.is_ascii_digit())
}

/// Shell-style matching of one file name: `*`, `?` and `[abc]`/`[a-z]`/`[!a]`.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| glob_match(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && glob_match(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(close) = p.iter().skip(2).position(|&c| c == b']').map(|i| i + 2) else {
                return !s.is_empty() && s[0] == b'[' && glob_match(&p[1..], &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let (negate, set) = match p[1] {
                b'!' | b'^' => (true, &p[2..close]),
                _ => (false, &p[1..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob_match(&p[close + 1..], &s[1..])
        }
        Some(&c) => s.first() == Some(&c) && glob_match(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::{glob_match, printf_match};

    #[test]
    fn patterns_match_the_files_image2_reads() {
        assert!(printf_match("f%05d.png", "f00001.png"));
        assert!(printf_match("f%05d.png", "f123456.png"));
        assert!(!printf_match("f%05d.png", "f0001.png"));
        assert!(!printf_match("f%05d.png", "f0000a.png"));
        assert!(printf_match("%d.jpg", "7.jpg"));
        assert!(glob_match(b"*.png", b"a.png"));
        assert!(!glob_match(b"*.png", b"a.jpg"));
        assert!(glob_match(b"f?[0-9].png", b"fx3.png"));
        assert!(!glob_match(b"f?[!0-9].png", b"fx3.png"));
    }
}
