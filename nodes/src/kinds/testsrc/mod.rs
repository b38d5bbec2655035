//! `testsrc`: a synthetic frame source (moving colour bars and a gradient), so graphs, tests
//! and benchmarks can run without media files. Deterministic: frame `i` is always the same.

use vidflow_engine::{
    Emitter, Frame, NodeError, NodeKind, ParamType, Payload, PortType, Rate, Runtime, Source,
    Temporal, params,
};

params! {
    /// The params of `testsrc`.
    pub struct TestSrcParams {
        /// frame width in pixels
        width: u32 = default(ParamType::int_in(2, 16384), 320),
        /// frame height in pixels
        height: u32 = default(ParamType::int_in(2, 16384), 180),
        /// number of frames
        count: u64 = default(ParamType::int_from(0), 100),
        /// frames per second
        rate: f64 = default(ParamType::float_in(0.001, 1000.0), 25.0),
    }
}

pub fn kind() -> NodeKind {
    NodeKind::new(
        "testsrc",
        "Synthetic frames: moving colour bars over a gradient, `count` frames of `width`x`height` at `rate` fps.",
        |ctx| {
            let p: TestSrcParams = ctx.params()?;
            Ok(Runtime::Source(Box::new(TestSrc {
                width: p.width,
                height: p.height,
                count: p.count,
                rate: Rate::from_fps(p.rate),
            })))
        },
    )
    .output("frames", PortType::FRAMES, "RGB frames")
    .params::<TestSrcParams>()
    .temporal(Temporal::PerItem)
    .example("- id: src\n  kind: testsrc\n  params: { width: 320, height: 180, count: 100, rate: 25 }\n")
}

struct TestSrc {
    width: u32,
    height: u32,
    count: u64,
    rate: Rate,
}

/// Draws frame `index`: eight vertical bars that scroll one bar width per second, with a
/// brightness ramp from top to bottom.
pub fn pattern(width: u32, height: u32, index: u64, fps: f64) -> Vec<u8> {
    const BARS: [[u8; 3]; 8] = [
        [235, 235, 235],
        [235, 235, 16],
        [16, 235, 235],
        [16, 235, 16],
        [235, 16, 235],
        [235, 16, 16],
        [16, 16, 235],
        [16, 16, 16],
    ];
    let (w, h) = (width as usize, height as usize);
    let shift = ((index as f64 / fps) * w as f64 / 8.0) as usize;
    let mut data = vec![0u8; w * h * 3];
    for y in 0..h {
        let ramp = 128 + (127 * y / h.max(1)) as u32;
        for x in 0..w {
            let bar = BARS[((x + shift) * 8 / w.max(1)) % 8];
            let o = (y * w + x) * 3;
            for c in 0..3 {
                data[o + c] = (bar[c] as u32 * ramp / 255) as u8;
            }
        }
    }
    data
}

impl Source for TestSrc {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        out.set_total(self.count);
        let fps = self.rate.fps();
        for i in 0..self.count {
            let data = pattern(self.width, self.height, i, fps);
            out.emit(
                0,
                Payload::Frame(Frame::new(
                    i,
                    i as f64 / fps,
                    self.rate,
                    self.width,
                    self.height,
                    data,
                )),
            )?;
        }
        Ok(())
    }
}
