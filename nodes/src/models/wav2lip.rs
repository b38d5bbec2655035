//! Wav2Lip (Rudrabha/Wav2Lip `models/wav2lip.py`, `models/conv.py`) in Burn.
//!
//! Every `Conv2d` of the reference is convolution + BatchNorm + (optional residual) + ReLU;
//! `Conv2dTranspose` is transposed convolution + BatchNorm + ReLU. BatchNorm runs in inference
//! mode, so it is folded into the convolution at load time (`w · γ/√(σ²+ε)`,
//! `(b − μ) · γ/√(σ²+ε) + β`, in f64). The face encoder keeps each block's output; the decoder
//! starts from the audio embedding and concatenates the matching encoder output after each
//! block; the output block ends with a 1x1 convolution and a sigmoid.
//!
//! Checkpoint keys (after `module.` is stripped): `face_encoder_blocks.{b}.{l}.conv_block.{0,1}.*`,
//! `audio_encoder.{l}.conv_block.{0,1}.*`, `face_decoder_blocks.{b}.{l}.conv_block.{0,1}.*`,
//! `output_block.0.conv_block.{0,1}.*`, `output_block.1.{weight,bias}`.
//!
//! # Shapes
//! mel `[N, 1, 80, 16]` + face `[N, 6, 96, 96]` (masked face, reference face) → `[N, 3, 96, 96]`
//! in [0, 1].

use crate::models::{cpu_kernel, run_cpu_kernel};
use crate::weights::{Checkpoint, RawTensor};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{DType, Device, Tensor, TensorData};
use std::sync::Arc;
use vidflow_kernels::{Activation, Conv3x3};

/// One layer of the table below: stride (h, w), padding, residual, transposed with this
/// output padding.
#[derive(Clone, Copy)]
struct L {
    stride: [usize; 2],
    pad: usize,
    residual: bool,
    transpose: Option<usize>,
}

const fn c(s: usize, pad: usize) -> L {
    L {
        stride: [s, s],
        pad,
        residual: false,
        transpose: None,
    }
}
const fn cs(sh: usize, sw: usize, pad: usize) -> L {
    L {
        stride: [sh, sw],
        pad,
        residual: false,
        transpose: None,
    }
}
/// A residual 3x3 conv, stride 1, padding 1.
const R: L = L {
    stride: [1, 1],
    pad: 1,
    residual: true,
    transpose: None,
};
const fn t(s: usize, pad: usize, out_pad: usize) -> L {
    L {
        stride: [s, s],
        pad,
        residual: false,
        transpose: Some(out_pad),
    }
}

fn face_encoder() -> Vec<Vec<L>> {
    vec![
        vec![c(1, 3)],
        vec![c(2, 1), R, R],
        vec![c(2, 1), R, R, R],
        vec![c(2, 1), R, R],
        vec![c(2, 1), R, R],
        vec![c(2, 1), R],
        vec![c(1, 0), c(1, 0)],
    ]
}

fn audio_encoder() -> Vec<L> {
    vec![
        c(1, 1),
        R,
        R,
        cs(3, 1, 1),
        R,
        R,
        c(3, 1),
        R,
        R,
        cs(3, 2, 1),
        R,
        c(1, 0),
        c(1, 0),
    ]
}

fn face_decoder() -> Vec<Vec<L>> {
    let up = || vec![t(2, 1, 1), R, R];
    vec![
        vec![c(1, 0)],
        vec![t(1, 0, 0), R],
        up(),
        up(),
        up(),
        up(),
        up(),
    ]
}

/// The CPU kernel pays for its copies in and out of a Burn tensor only on the larger feature
/// maps: from 24x24 up it measured 22–30 % more faces/s than Burn alone, on every map 5–10 %
/// fewer at batch 4 and 8 (`scripts/bench-lipsync.sh`).
const MIN_KERNEL_PIXELS: usize = 24 * 24;

/// A convolution with BatchNorm folded in, then residual and ReLU.
#[derive(Clone, Debug)]
struct ConvBn {
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: [usize; 2],
    pad: usize,
    residual: bool,
    transpose: Option<usize>,
    /// The CPU Winograd kernel, for the 3x3 stride-1 convolutions on the CPU device.
    cpu: Option<Arc<Conv3x3>>,
}

impl ConvBn {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if let Some(k) = self.cpu.as_ref().filter(|_| {
            let [_, _, h, w] = x.dims();
            h * w >= MIN_KERNEL_PIXELS
        }) {
            // ReLU is fused into the kernel when no residual comes between.
            return if self.residual {
                relu(run_cpu_kernel(k, x.clone(), Activation::None) + x)
            } else {
                run_cpu_kernel(k, x, Activation::Leaky(0.0))
            };
        }
        let y = match self.transpose {
            None => conv2d(
                x.clone(),
                self.weight.clone(),
                Some(self.bias.clone()),
                ConvOptions::new(self.stride, [self.pad; 2], [1, 1], 1),
            ),
            Some(op) => conv_transpose2d(
                x.clone(),
                self.weight.clone(),
                Some(self.bias.clone()),
                ConvTransposeOptions::new(self.stride, [self.pad; 2], [op; 2], [1, 1], 1),
            ),
        };
        let y = if self.residual { y + x } else { y };
        relu(y)
    }
}

/// The Wav2Lip generator.
#[derive(Clone, Debug)]
pub struct Wav2Lip {
    face_encoder: Vec<Vec<ConvBn>>,
    audio_encoder: Vec<ConvBn>,
    face_decoder: Vec<Vec<ConvBn>>,
    out_conv: ConvBn,
    out_weight: Tensor<4>,
    out_bias: Tensor<1>,
    device: Device,
}

fn get<'a>(ck: &'a Checkpoint, key: &str) -> Result<&'a RawTensor, String> {
    ck.tensors.get(key).ok_or_else(|| {
        format!(
            "weights file `{}` is not a Wav2Lip checkpoint: it has no tensor `{key}` ({} tensors, e.g. `{}`)",
            ck.path.display(),
            ck.tensors.len(),
            ck.tensors.keys().next().map_or("", |k| k.as_str())
        )
    })
}

fn upload<const D: usize>(data: Vec<f32>, shape: Vec<usize>, device: &Device) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(data, shape), (device, DType::F32))
}

fn load_conv(ck: &Checkpoint, prefix: &str, l: L, device: &Device) -> Result<ConvBn, String> {
    let w = get(ck, &format!("{prefix}.conv_block.0.weight"))?;
    let b = get(ck, &format!("{prefix}.conv_block.0.bias"))?;
    let gamma = get(ck, &format!("{prefix}.conv_block.1.weight"))?;
    let beta = get(ck, &format!("{prefix}.conv_block.1.bias"))?;
    let mean = get(ck, &format!("{prefix}.conv_block.1.running_mean"))?;
    let var = get(ck, &format!("{prefix}.conv_block.1.running_var"))?;
    if w.shape.len() != 4 {
        return Err(format!(
            "weights file `{}`: `{prefix}.conv_block.0.weight` has shape {:?}, expected 4 dimensions",
            ck.path.display(),
            w.shape
        ));
    }
    // Output channels: dim 0 of a convolution's weight, dim 1 of a transposed one's.
    let out_dim = if l.transpose.is_some() { 1 } else { 0 };
    let cout = w.shape[out_dim];
    for (name, t) in [
        ("bias", b),
        ("bn", gamma),
        ("bn", beta),
        ("bn", mean),
        ("bn", var),
    ] {
        if t.data.len() != cout {
            return Err(format!(
                "weights file `{}`: `{prefix}` {name} has {} values for {cout} channels",
                ck.path.display(),
                t.data.len()
            ));
        }
    }
    let scale: Vec<f64> = (0..cout)
        .map(|o| gamma.data[o] as f64 / (var.data[o] as f64 + 1e-5).sqrt())
        .collect();
    let [d0, d1, kh, kw] = [w.shape[0], w.shape[1], w.shape[2], w.shape[3]];
    let mut wf = w.data.clone();
    for i in 0..d0 {
        for j in 0..d1 {
            let o = if out_dim == 0 { i } else { j };
            let base = (i * d1 + j) * kh * kw;
            for v in &mut wf[base..base + kh * kw] {
                *v = (*v as f64 * scale[o]) as f32;
            }
        }
    }
    let bf: Vec<f32> = (0..cout)
        .map(|o| ((b.data[o] as f64 - mean.data[o] as f64) * scale[o] + beta.data[o] as f64) as f32)
        .collect();
    let direct = l.transpose.is_none() && l.stride == [1, 1] && l.pad == 1;
    let cpu = direct
        .then(|| cpu_kernel(&wf, &bf, &w.shape, device, DType::F32))
        .flatten();
    Ok(ConvBn {
        cpu,
        weight: upload(wf, w.shape.clone(), device),
        bias: upload(bf, vec![cout], device),
        stride: l.stride,
        pad: l.pad,
        residual: l.residual,
        transpose: l.transpose,
    })
}

impl Wav2Lip {
    /// Builds the network from a checkpoint (`.pth` or `.safetensors`, `module.` stripped).
    pub fn load(ck: &Checkpoint, device: &Device) -> Result<Wav2Lip, String> {
        let blocks = |name: &str, table: Vec<Vec<L>>| -> Result<Vec<Vec<ConvBn>>, String> {
            table
                .into_iter()
                .enumerate()
                .map(|(b, layers)| {
                    layers
                        .into_iter()
                        .enumerate()
                        .map(|(i, l)| load_conv(ck, &format!("{name}.{b}.{i}"), l, device))
                        .collect()
                })
                .collect()
        };
        let face_encoder = blocks("face_encoder_blocks", face_encoder())?;
        let face_decoder = blocks("face_decoder_blocks", face_decoder())?;
        let audio_encoder = audio_encoder()
            .into_iter()
            .enumerate()
            .map(|(i, l)| load_conv(ck, &format!("audio_encoder.{i}"), l, device))
            .collect::<Result<Vec<_>, _>>()?;
        let out_conv = load_conv(ck, "output_block.0", c(1, 1), device)?;
        let w = get(ck, "output_block.1.weight")?;
        let b = get(ck, "output_block.1.bias")?;
        Ok(Wav2Lip {
            face_encoder,
            audio_encoder,
            face_decoder,
            out_conv,
            out_weight: upload(w.data.clone(), w.shape.clone(), device),
            out_bias: upload(b.data.clone(), b.shape.clone(), device),
            device: device.clone(),
        })
    }

    /// # Shapes
    /// mel `[N, 1, 80, 16]`, face `[N, 6, 96, 96]` → `[N, 3, 96, 96]`
    pub fn forward(&self, mel: Tensor<4>, face: Tensor<4>) -> Tensor<4> {
        let mut a = mel;
        for l in &self.audio_encoder {
            a = l.forward(a);
        }
        let mut feats = Vec::with_capacity(self.face_encoder.len());
        let mut x = face;
        for block in &self.face_encoder {
            for l in block {
                x = l.forward(x);
            }
            feats.push(x.clone());
        }
        let mut x = a;
        for block in &self.face_decoder {
            for l in block {
                x = l.forward(x);
            }
            let skip = feats.pop().expect("one encoder output per decoder block");
            x = Tensor::cat(vec![x, skip], 1);
        }
        let x = self.out_conv.forward(x);
        let x = conv2d(
            x,
            self.out_weight.clone(),
            Some(self.out_bias.clone()),
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        );
        sigmoid(x)
    }

    /// Runs a batch of `n` from host arrays: `mel` n·80·16 values, `face` n·6·96·96 values
    /// (NCHW); returns n·3·96·96 values.
    pub fn run(&self, n: usize, mel: &[f32], face: &[f32]) -> Result<Vec<f32>, String> {
        let mel = upload::<4>(mel.to_vec(), vec![n, 1, 80, 16], &self.device);
        let face = upload::<4>(face.to_vec(), vec![n, 6, 96, 96], &self.device);
        self.forward(mel, face)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| format!("reading Wav2Lip's output back: {e:?}"))
    }
}
