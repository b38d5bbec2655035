//! The pixel work around the networks: packed u8 RGB frames ↔ f32 NCHW tensors in [0, 1].
//!
//! Two implementations of the same arithmetic (`v / 255` in, `round(clamp(v, 0, 1) · 255)`
//! out):
//!
//! - on the host ([`to_planar`], [`from_planar`]), for Burn's CPU device, where the tensor
//!   already lives in host memory and one loop is the cheapest conversion;
//! - on the device with Burn tensor operations ([`upload_rgb8`], [`download_rgb8`]), for the
//!   GPU: what crosses the bus is one 32-bit word per pixel (`r | g << 8 | b << 16`) instead
//!   of three f32 planes, and the unpacking, scaling and clamping run as GPU kernels. These
//!   are the computations of `shaders/rgb_to_planar.wgsl` and `shaders/planar_to_rgb.wgsl`,
//!   expressed as Burn operations because Burn 0.22 offers no way to hand its wgpu buffers to
//!   a pipeline of our own.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

/// Packed RGB frames of one size → `[N, 3, H, W]` f32 in [0, 1], on the host.
pub fn to_planar(frames: &[&[u8]], h: usize, w: usize) -> Vec<f32> {
    let plane = h * w;
    let mut out = vec![0f32; frames.len() * 3 * plane];
    for (f, dst) in frames.iter().zip(out.chunks_exact_mut(3 * plane)) {
        let (r, rest) = dst.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (p, px) in f.chunks_exact(3).enumerate() {
            r[p] = px[0] as f32 / 255.0;
            g[p] = px[1] as f32 / 255.0;
            b[p] = px[2] as f32 / 255.0;
        }
    }
    out
}

/// `[N, 3, H, W]` f32 → one packed RGB frame per batch item, clamped to [0, 1] and rounded.
pub fn from_planar(y: &[f32], n: usize, h: usize, w: usize) -> Vec<Vec<u8>> {
    let plane = h * w;
    let to_u8 = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    y.chunks_exact(3 * plane)
        .take(n)
        .map(|src| {
            let mut rgb = vec![0u8; plane * 3];
            for (p, px) in rgb.chunks_exact_mut(3).enumerate() {
                px[0] = to_u8(src[p]);
                px[1] = to_u8(src[plane + p]);
                px[2] = to_u8(src[2 * plane + p]);
            }
            rgb
        })
        .collect()
}

/// Packed RGB frames of one size → `[N, 3, H, W]` f32 in [0, 1] on `device`, unpacked there.
pub fn upload_rgb8(frames: &[&[u8]], h: usize, w: usize, device: &Device) -> Tensor<4> {
    let n = frames.len();
    let words: Vec<i32> = frames
        .iter()
        .flat_map(|f| f.chunks_exact(3))
        .map(|px| px[0] as i32 | (px[1] as i32) << 8 | (px[2] as i32) << 16)
        .collect();
    let words =
        Tensor::<3, Int>::from_data(TensorData::new(words, [n, h, w]), (device, DType::I32));
    let channel = |k: i32| {
        words
            .clone()
            .bitwise_right_shift_scalar(8 * k)
            .bitwise_and_scalar(255)
    };
    let rgb: Tensor<4, Int> = Tensor::stack(vec![channel(0), channel(1), channel(2)], 1);
    rgb.float().cast(DType::F32) / 255.0
}

/// `[N, 3, H, W]` f32 on the device → one packed RGB frame per batch item, clamped to [0, 1]
/// and rounded there (half away from zero, as the host path: `floor(v·255 + 0.5)`).
pub fn download_rgb8(y: Tensor<4>) -> Vec<Vec<u8>> {
    let [n, _, h, w] = y.dims();
    let q = (y.clamp(0.0, 1.0) * 255.0 + 0.5)
        .floor()
        .int()
        .cast(DType::I32);
    let c = |k: usize| q.clone().narrow(1, k, 1);
    let words = c(0)
        .bitwise_or(c(1).bitwise_left_shift_scalar(8))
        .bitwise_or(c(2).bitwise_left_shift_scalar(16));
    let words = words
        .into_data()
        .convert::<i32>()
        .try_into_vec::<i32>()
        .expect("packed pixels are i32");
    words
        .chunks_exact(h * w)
        .take(n)
        .map(|f| {
            f.iter()
                .flat_map(|&v| [v as u8, (v >> 8) as u8, (v >> 16) as u8])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize, h: usize, w: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|b| {
                (0..h * w * 3)
                    .map(|i| ((i * 37 + b * 101) % 256) as u8)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn host_and_device_unpacking_agree_on_the_cpu_device() {
        let (n, h, w) = (2, 5, 7);
        let f = frames(n, h, w);
        let refs: Vec<&[u8]> = f.iter().map(|v| v.as_slice()).collect();
        let host = to_planar(&refs, h, w);
        let dev = upload_rgb8(&refs, h, w, &Device::flex())
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert_eq!(host, dev);
    }

    #[test]
    fn a_round_trip_gives_the_frames_back_both_ways() {
        let (n, h, w) = (3, 4, 6);
        let f = frames(n, h, w);
        let refs: Vec<&[u8]> = f.iter().map(|v| v.as_slice()).collect();
        assert_eq!(from_planar(&to_planar(&refs, h, w), n, h, w), f);
        let t = upload_rgb8(&refs, h, w, &Device::flex());
        assert_eq!(download_rgb8(t), f);
    }

    #[test]
    fn download_clamps_and_rounds_like_the_host() {
        // Values outside [0, 1], on and next to rounding boundaries.
        let vals: Vec<f32> = (0..3 * 4 * 5)
            .map(|i| (i as f32 - 10.0) / 40.0 + (i % 3) as f32 * 0.0019)
            .collect();
        let t = Tensor::<4>::from_data(
            TensorData::new(vals.clone(), [1, 3, 4, 5]),
            (&Device::flex(), DType::F32),
        );
        assert_eq!(download_rgb8(t), from_planar(&vals, 1, 4, 5));
    }
}
