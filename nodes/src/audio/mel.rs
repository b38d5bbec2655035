//! Wav2Lip's mel spectrogram, computed incrementally over a stream of samples.
//!
//! The definition (Wav2Lip `audio.py` with its `hparams.py`, on librosa 0.11):
//! - pre-emphasis `y[n] = x[n] - 0.97 x[n-1]` (with `x[-1] = 0`);
//! - STFT: n_fft 800, hop 200, periodic Hann window of 800, centred: the signal is padded with
//!   400 zeros on each side, so column `t` covers samples `200 t - 400 .. 200 t + 400` and a
//!   signal of `n` samples has `1 + n / 200` columns;
//! - magnitude, then an 80-band mel filterbank over 55-7600 Hz, Slaney mel scale and Slaney
//!   area normalisation (`librosa.filters.mel` defaults; weights rounded to f32 as librosa does);
//! - `dB = 20 log10(max(1e-5, x)) - 20`, normalised as `clip(8 (dB + 100) / 100 - 4, -4, 4)`.
//!
//! At 16 kHz that is 80 columns per second. [`MelStream`] computes each column once, as soon as
//! the samples it covers have arrived; nothing is recomputed per video frame.

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use std::f64::consts::PI;
use std::sync::Arc;

/// Sample rate the features are defined at.
pub const SAMPLE_RATE: u32 = 16_000;
pub const N_FFT: usize = 800;
pub const HOP: usize = 200;
pub const N_MELS: usize = 80;
pub const FMIN: f64 = 55.0;
pub const FMAX: f64 = 7600.0;
const PREEMPHASIS: f64 = 0.97;
const N_BINS: usize = N_FFT / 2 + 1;

/// The one-sided spectrum (`N_FFT / 2 + 1` bins) of a real frame, by `realfft` (f64).
struct Spectrum {
    fft: Arc<dyn RealToComplex<f64>>,
    out: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl Spectrum {
    fn new(n: usize) -> Spectrum {
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(n);
        Spectrum {
            out: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
        }
    }

    /// Transforms `input` (its contents are used as scratch space and left undefined).
    fn run(&mut self, input: &mut [f64]) -> &[Complex<f64>] {
        self.fft
            .process_with_scratch(input, &mut self.out, &mut self.scratch)
            .expect("buffers sized by the plan");
        &self.out
    }
}

fn hz_to_mel(f: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= min_log_hz {
        min_log_mel + (f / min_log_hz).ln() / logstep
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        min_log_hz * (logstep * (m - min_log_mel)).exp()
    } else {
        f_sp * m
    }
}

/// `librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)`: 80 rows of 401
/// FFT-bin weights, rounded to f32 like librosa's default dtype.
pub fn mel_filterbank() -> Vec<[f64; N_BINS]> {
    let sr = SAMPLE_RATE as f64;
    let fftfreqs: Vec<f64> = (0..N_BINS)
        .map(|i| i as f64 * (sr / 2.0) / (N_BINS - 1) as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(FMIN), hz_to_mel(FMAX));
    let mel_f: Vec<f64> = (0..N_MELS + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (N_MELS + 1) as f64))
        .collect();
    (0..N_MELS)
        .map(|i| {
            let mut row = [0.0; N_BINS];
            let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
            for (b, w) in row.iter_mut().enumerate() {
                let lower = -(mel_f[i] - fftfreqs[b]) / (mel_f[i + 1] - mel_f[i]);
                let upper = (mel_f[i + 2] - fftfreqs[b]) / (mel_f[i + 2] - mel_f[i + 1]);
                *w = ((lower.min(upper).max(0.0)) * enorm) as f32 as f64;
            }
            row
        })
        .collect()
}

/// Streaming mel spectrogram: push samples (16 kHz mono, in [-1, 1]) as they arrive, take the
/// finished columns; `finish` adds the columns of the zero-padded end.
pub struct MelStream {
    spectrum: Spectrum,
    window: Vec<f64>,
    bank: Vec<[f64; N_BINS]>,
    /// Bank rows as (first non-zero bin, last+1), to skip the zeros.
    bank_range: Vec<(usize, usize)>,
    /// Last raw sample (pre-emphasis state).
    prev: f64,
    /// Pre-emphasised samples from absolute index `buf_start`.
    buf: Vec<f64>,
    buf_start: usize,
    /// Samples pushed so far.
    n_samples: usize,
    /// Next column to compute.
    next_col: usize,
    finished: bool,
    /// The windowed frame of the column being computed.
    frame: Vec<f64>,
}

impl Default for MelStream {
    fn default() -> Self {
        MelStream::new()
    }
}

impl MelStream {
    pub fn new() -> MelStream {
        let bank = mel_filterbank();
        let bank_range = bank
            .iter()
            .map(|row| {
                let first = row.iter().position(|w| *w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|w| *w != 0.0).map_or(0, |l| l + 1);
                (first, last.max(first))
            })
            .collect();
        MelStream {
            spectrum: Spectrum::new(N_FFT),
            window: (0..N_FFT)
                .map(|n| 0.5 - 0.5 * (2.0 * PI * n as f64 / N_FFT as f64).cos())
                .collect(),
            bank,
            bank_range,
            prev: 0.0,
            buf: vec![],
            buf_start: 0,
            n_samples: 0,
            next_col: 0,
            finished: false,
            frame: vec![0.0; N_FFT],
        }
    }

    /// Columns computed so far.
    pub fn columns_done(&self) -> usize {
        self.next_col
    }
    /// Samples pushed so far.
    pub fn samples(&self) -> usize {
        self.n_samples
    }
    /// Total columns of the stream: known once it is finished.
    pub fn total_columns(&self) -> Option<usize> {
        self.finished.then(|| 1 + self.n_samples / HOP)
    }

    /// Adds samples; appends each newly finished column (80 values) to `out`.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<[f32; N_MELS]>) {
        for &s in samples {
            let x = s as f64;
            self.buf.push(x - PREEMPHASIS * self.prev);
            self.prev = x;
        }
        self.n_samples += samples.len();
        while self.next_col * HOP + N_FFT / 2 <= self.n_samples {
            let col = self.column(self.next_col);
            out.push(col);
            self.next_col += 1;
        }
        self.trim();
    }

    /// Ends the stream: appends the remaining columns (their right side zero-padded).
    pub fn finish(&mut self, out: &mut Vec<[f32; N_MELS]>) {
        let total = 1 + self.n_samples / HOP;
        while self.next_col < total {
            let col = self.column(self.next_col);
            out.push(col);
            self.next_col += 1;
        }
        self.finished = true;
        self.trim();
    }

    fn trim(&mut self) {
        let keep_from = (self.next_col * HOP).saturating_sub(N_FFT / 2);
        if keep_from > self.buf_start + 4096 {
            self.buf.drain(..keep_from - self.buf_start);
            self.buf_start = keep_from;
        }
    }

    fn column(&mut self, t: usize) -> [f32; N_MELS] {
        let start = t as i64 * HOP as i64 - (N_FFT / 2) as i64;
        for i in 0..N_FFT {
            let abs = start + i as i64;
            let x = if abs < self.buf_start as i64 {
                0.0 // only before the stream (trim keeps what later columns need)
            } else {
                self.buf
                    .get((abs - self.buf_start as i64) as usize)
                    .copied()
                    .unwrap_or(0.0)
            };
            self.frame[i] = x * self.window[i];
        }
        let spectrum = self.spectrum.run(&mut self.frame);
        let mut mag = [0.0f64; N_BINS];
        for (m, c) in mag.iter_mut().zip(spectrum) {
            *m = (c.re * c.re + c.im * c.im).sqrt();
        }
        let mut col = [0.0f32; N_MELS];
        for (i, v) in col.iter_mut().enumerate() {
            let (a, b) = self.bank_range[i];
            let s: f64 = (a..b).map(|k| self.bank[i][k] * mag[k]).sum();
            let db = 20.0 * s.max(1e-5).log10() - 20.0;
            *v = (8.0 * (db + 100.0) / 100.0 - 4.0).clamp(-4.0, 4.0) as f32;
        }
        col
    }
}

/// The whole mel spectrogram of a signal, as columns of 80 values.
pub fn mel_columns(samples: &[f32]) -> Vec<[f32; N_MELS]> {
    let mut s = MelStream::new();
    let mut out = vec![];
    s.push(samples, &mut out);
    s.finish(&mut out);
    out
}

/// First mel column of video frame `i`'s 16-column window: `floor(i * 80 / fps)`.
pub fn window_start(frame: u64, fps: f64) -> usize {
    // A small epsilon so that exact products (i * 80 / 25) do not fall just below an integer.
    ((frame as f64 * 80.0 / fps) + 1e-9).floor() as usize
}

/// Reads a PCM WAV file (8/16/24/32-bit integer or 32-bit float) as f32 samples, mixed down to
/// mono (int16 read as `x / 32767` like Wav2Lip's fixtures). Returns (sample rate, samples).
pub fn read_wav(bytes: &[u8]) -> Result<(u32, Vec<f32>), String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let mut pos = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32_at(pos + 4) as usize;
        let body = pos + 8;
        let end = (body + size).min(bytes.len());
        if id == b"fmt " && size >= 16 {
            fmt = Some((
                u16_at(body),
                u16_at(body + 2),
                u32_at(body + 4),
                u16_at(body + 14),
            ));
        } else if id == b"data" {
            let (format, channels, rate, bits) = fmt.ok_or("data chunk before fmt chunk")?;
            let ch = channels.max(1) as usize;
            let data = &bytes[body..end];
            let bps = (bits as usize).div_ceil(8);
            let frames = data.len() / (bps * ch);
            let mut out = Vec::with_capacity(frames);
            for f in 0..frames {
                let mut acc = 0.0f32;
                for c in 0..ch {
                    let o = (f * ch + c) * bps;
                    let s = &data[o..o + bps];
                    acc += match (format, bits) {
                        (3, 32) => f32::from_le_bytes([s[0], s[1], s[2], s[3]]),
                        (_, 8) => (s[0] as f32 - 128.0) / 127.0,
                        (_, 16) => i16::from_le_bytes([s[0], s[1]]) as f32 / 32767.0,
                        (_, 24) => {
                            (i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8) as f32 / 8_388_607.0
                        }
                        (_, 32) => {
                            i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f32 / 2_147_483_647.0
                        }
                        _ => {
                            return Err(format!(
                                "unsupported WAV format {format} with {bits} bits"
                            ));
                        }
                    };
                }
                out.push(acc / ch as f32);
            }
            return Ok((rate, out));
        }
        pos = body + size + (size & 1);
    }
    Err("no data chunk".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_matches_naive_dft() {
        let n = 800;
        let x: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 50.0)
            .collect();
        let mut spectrum = Spectrum::new(n);
        let out = spectrum.run(&mut x.clone()).to_vec();
        assert_eq!(out.len(), n / 2 + 1);
        for k in [0, 1, 7, 100, 399, 400] {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, v) in x.iter().enumerate() {
                let a = -2.0 * PI * (i * k % n) as f64 / n as f64;
                re += v * a.cos();
                im += v * a.sin();
            }
            assert!((re - out[k].re).abs() < 1e-9, "bin {k}");
            assert!((im - out[k].im).abs() < 1e-9, "bin {k}");
        }
    }

    #[test]
    fn streaming_equals_one_shot() {
        let x: Vec<f32> = (0..5000).map(|i| ((i as f32) * 0.05).sin() * 0.3).collect();
        let whole = mel_columns(&x);
        let mut s = MelStream::new();
        let mut parts = vec![];
        for chunk in x.chunks(333) {
            s.push(chunk, &mut parts);
        }
        s.finish(&mut parts);
        assert_eq!(whole.len(), 1 + 5000 / HOP);
        assert_eq!(whole, parts);
    }
}
