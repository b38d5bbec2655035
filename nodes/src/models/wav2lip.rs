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

use crate::models::{cpu_floats, cpu_tensor};
use crate::weights::{Checkpoint, RawTensor};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;
use vidflow_kernels::{Activation, Conv2d, Conv3x3, ConvTranspose2d};

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

fn face_encoder_table() -> Vec<Vec<L>> {
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

fn audio_encoder_table() -> Vec<L> {
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

fn face_decoder_table() -> Vec<Vec<L>> {
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

/// On the CPU the 3x3 stride-1 convolutions of the larger feature maps run Winograd; on the
/// smaller ones (fewer than 2 · 64 tiles a map) its per-tile-row products are too narrow, and
/// the batched im2col product is faster.
const MIN_WINOGRAD_PIXELS: usize = 24 * 24;

/// The layers of the network, on either path.
#[derive(Clone, Debug)]
struct Layers<C> {
    face_encoder: Vec<Vec<C>>,
    audio_encoder: Vec<C>,
    face_decoder: Vec<Vec<C>>,
    out_conv: C,
}

/// The Wav2Lip generator.
#[derive(Clone, Debug)]
pub struct Wav2Lip {
    net: Net,
    device: Device,
}

/// Burn on any device but the CPU; on Burn's CPU device the kernels of `vidflow-kernels` on
/// plain arrays, where every convolution is one product over the whole batch (Burn's CPU
/// convolution runs one product per image, and re-lays out the weights on every call).
#[derive(Clone, Debug)]
enum Net {
    Burn(Box<BurnNet>),
    Cpu(Box<CpuNet>),
}

#[derive(Clone, Debug)]
struct CpuNet {
    layers: Layers<CpuConv>,
    /// `output_block.1`: a 1x1 convolution, then the sigmoid.
    out: Conv2d,
}

#[derive(Clone, Debug)]
struct BurnNet {
    layers: Layers<ConvBn>,
    /// `output_block.1`: a 1x1 convolution, then the sigmoid.
    out_weight: Tensor<4>,
    out_bias: Tensor<1>,
}

/// A convolution with BatchNorm folded in, then residual and ReLU, in Burn.
#[derive(Clone, Debug)]
struct ConvBn {
    weight: Tensor<4>,
    bias: Tensor<1>,
    stride: [usize; 2],
    pad: usize,
    residual: bool,
    transpose: Option<usize>,
}

impl ConvBn {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
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

/// Feature maps on the CPU: `[n, c, h, w]` row-major.
struct Maps {
    v: Vec<f32>,
    c: usize,
    h: usize,
    w: usize,
}

impl Maps {
    /// Concatenates the channels of `self` and `skip` (the decoder's `torch.cat(dim=1)`).
    fn cat(self, skip: &Maps, n: usize) -> Maps {
        let (a, b) = (self.c * self.h * self.w, skip.c * skip.h * skip.w);
        let mut v = vec![0f32; n * (a + b)];
        v.par_chunks_mut(a + b).enumerate().for_each(|(i, img)| {
            img[..a].copy_from_slice(&self.v[i * a..][..a]);
            img[a..].copy_from_slice(&skip.v[i * b..][..b]);
        });
        Maps {
            v,
            c: self.c + skip.c,
            ..self
        }
    }
}

/// A layer of [`ConvBn`]'s kind on the CPU, ReLU fused into its output.
#[derive(Clone, Debug)]
enum CpuConv {
    /// 3x3, stride 1, padding 1 on a large map; `ones` is the residual's scale.
    Winograd {
        conv: Conv3x3,
        residual: bool,
        ones: Vec<f32>,
    },
    Conv {
        conv: Conv2d,
        residual: bool,
    },
    Transposed(ConvTranspose2d),
}

const RELU: Activation = Activation::Leaky(0.0);

impl CpuConv {
    fn forward(&self, x: &Maps, n: usize) -> Maps {
        let dims = [n, x.h, x.w];
        let (v, c, [h, w]) = match self {
            CpuConv::Winograd {
                conv,
                residual,
                ones,
            } => {
                let v = if *residual {
                    conv.forward_scaled_residual(&x.v, n, x.h, x.w, ones, RELU)
                } else {
                    conv.forward(&x.v, n, x.h, x.w, RELU)
                };
                (v, conv.out_channels(), [x.h, x.w])
            }
            CpuConv::Conv { conv, residual } => (
                conv.forward(&x.v, dims, *residual, RELU),
                conv.out_channels(),
                conv.output_size(x.h, x.w),
            ),
            CpuConv::Transposed(conv) => (
                conv.forward(&x.v, dims, RELU),
                conv.out_channels(),
                conv.output_size(x.h, x.w),
            ),
        };
        Maps { v, c, h, w }
    }
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

/// A layer's weights and bias with BatchNorm folded in.
struct Folded {
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// The weight's shape.
    shape: [usize; 4],
}

fn load_folded(ck: &Checkpoint, prefix: &str, l: L) -> Result<Folded, String> {
    let w = get(ck, &format!("{prefix}.conv_block.0.weight"))?;
    let b = get(ck, &format!("{prefix}.conv_block.0.bias"))?;
    let gamma = get(ck, &format!("{prefix}.conv_block.1.weight"))?;
    let beta = get(ck, &format!("{prefix}.conv_block.1.bias"))?;
    let mean = get(ck, &format!("{prefix}.conv_block.1.running_mean"))?;
    let var = get(ck, &format!("{prefix}.conv_block.1.running_var"))?;
    let Ok(shape) = <[usize; 4]>::try_from(w.shape.as_slice()) else {
        return Err(format!(
            "weights file `{}`: `{prefix}.conv_block.0.weight` has shape {:?}, expected 4 dimensions",
            ck.path.display(),
            w.shape
        ));
    };
    // Output channels: dim 0 of a convolution's weight, dim 1 of a transposed one's.
    let out_dim = if l.transpose.is_some() { 1 } else { 0 };
    let cout = shape[out_dim];
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
    let [d0, d1, kh, kw] = shape;
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
    Ok(Folded {
        weight: wf,
        bias: bf,
        shape,
    })
}

/// Builds the layers of the three tables, each by `make(prefix, layer, input size)`, which
/// returns the layer and its output size (Wav2Lip's sizes are fixed: 96x96 faces, 80x16 mels).
fn layers<C>(
    mut make: impl FnMut(&str, L, [usize; 2]) -> Result<(C, [usize; 2]), String>,
) -> Result<Layers<C>, String> {
    let mut size = [96, 96];
    let mut sizes = vec![];
    let mut face_encoder = vec![];
    for (b, table) in face_encoder_table().into_iter().enumerate() {
        let mut block = vec![];
        for (i, l) in table.into_iter().enumerate() {
            let (c, s) = make(&format!("face_encoder_blocks.{b}.{i}"), l, size)?;
            block.push(c);
            size = s;
        }
        sizes.push(size);
        face_encoder.push(block);
    }
    let mut size = [80, 16];
    let mut audio_encoder = vec![];
    for (i, l) in audio_encoder_table().into_iter().enumerate() {
        let (c, s) = make(&format!("audio_encoder.{i}"), l, size)?;
        audio_encoder.push(c);
        size = s;
    }
    let mut face_decoder = vec![];
    for (b, table) in face_decoder_table().into_iter().enumerate() {
        let mut block = vec![];
        for (i, l) in table.into_iter().enumerate() {
            let (c, s) = make(&format!("face_decoder_blocks.{b}.{i}"), l, size)?;
            block.push(c);
            size = s;
        }
        // The concatenated encoder output has the decoder's size (checked by the forward).
        size = sizes.pop().unwrap_or(size);
        face_decoder.push(block);
    }
    let (out_conv, _) = make("output_block.0", c(1, 1), size)?;
    Ok(Layers {
        face_encoder,
        audio_encoder,
        face_decoder,
        out_conv,
    })
}

fn load_burn(ck: &Checkpoint, prefix: &str, l: L, device: &Device) -> Result<ConvBn, String> {
    let Folded {
        weight: wf,
        bias: bf,
        shape,
    } = load_folded(ck, prefix, l)?;
    let cout = bf.len();
    Ok(ConvBn {
        weight: upload(wf, shape.to_vec(), device),
        bias: upload(bf, vec![cout], device),
        stride: l.stride,
        pad: l.pad,
        residual: l.residual,
        transpose: l.transpose,
    })
}

fn load_cpu(
    ck: &Checkpoint,
    prefix: &str,
    l: L,
    [h, w]: [usize; 2],
) -> Result<(CpuConv, [usize; 2]), String> {
    let Folded {
        weight: wf,
        bias: bf,
        shape,
    } = load_folded(ck, prefix, l)?;
    let [_, _, kh, kw] = shape;
    if let Some(op) = l.transpose {
        let conv = ConvTranspose2d::new(&wf, &bf, shape, l.stride, [l.pad; 2], [op; 2]);
        let size = conv.output_size(h, w);
        return Ok((CpuConv::Transposed(conv), size));
    }
    if h + 2 * l.pad < kh || w + 2 * l.pad < kw {
        return Err(format!(
            "weights file `{}`: `{prefix}` has a {kh}x{kw} kernel, larger than its {h}x{w} input",
            ck.path.display()
        ));
    }
    let winograd = [kh, kw] == [3, 3] && l.stride == [1, 1] && l.pad == 1;
    if winograd && h * w >= MIN_WINOGRAD_PIXELS {
        let [cout, cin, ..] = shape;
        let conv = CpuConv::Winograd {
            conv: Conv3x3::new(&wf, &bf, cout, cin),
            residual: l.residual,
            ones: vec![1.0; cout],
        };
        return Ok((conv, [h, w]));
    }
    let conv = Conv2d::new(&wf, &bf, shape, l.stride, [l.pad; 2]);
    let size = conv.output_size(h, w);
    let residual = l.residual;
    Ok((CpuConv::Conv { conv, residual }, size))
}

impl Wav2Lip {
    /// Builds the network from a checkpoint (`.pth` or `.safetensors`, `module.` stripped).
    pub fn load(ck: &Checkpoint, device: &Device) -> Result<Wav2Lip, String> {
        let w = get(ck, "output_block.1.weight")?;
        let b = get(ck, "output_block.1.bias")?;
        let net = if *device == Device::flex() {
            let layers = layers(|prefix, l, size| load_cpu(ck, prefix, l, size))?;
            let shape = <[usize; 4]>::try_from(w.shape.as_slice())
                .ok()
                .filter(|s| s[2..] == [1, 1] && b.data.len() == s[0])
                .ok_or_else(|| {
                    format!(
                        "weights file `{}`: `output_block.1.weight` has shape {:?}, expected a 1x1 convolution",
                        ck.path.display(),
                        w.shape
                    )
                })?;
            let out = Conv2d::new(&w.data, &b.data, shape, [1, 1], [0, 0]);
            Net::Cpu(Box::new(CpuNet { layers, out }))
        } else {
            let layers = layers(|prefix, l, size| Ok((load_burn(ck, prefix, l, device)?, size)))?;
            Net::Burn(Box::new(BurnNet {
                layers,
                out_weight: upload(w.data.clone(), w.shape.clone(), device),
                out_bias: upload(b.data.clone(), b.shape.clone(), device),
            }))
        };
        Ok(Wav2Lip {
            net,
            device: device.clone(),
        })
    }

    /// # Shapes
    /// mel `[N, 1, 80, 16]`, face `[N, 6, 96, 96]` → `[N, 3, 96, 96]`
    pub fn forward(&self, mel: Tensor<4>, face: Tensor<4>) -> Tensor<4> {
        let Net::Burn(net) = &self.net else {
            let [n, ..] = face.dims();
            let y = self.forward_cpu(n, &cpu_floats(mel), &cpu_floats(face));
            return cpu_tensor(y, [n, 3, 96, 96], &self.device);
        };
        let BurnNet {
            layers,
            out_weight,
            out_bias,
        } = net.as_ref();
        let mut a = mel;
        for l in &layers.audio_encoder {
            a = l.forward(a);
        }
        let mut feats = Vec::with_capacity(layers.face_encoder.len());
        let mut x = face;
        for block in &layers.face_encoder {
            for l in block {
                x = l.forward(x);
            }
            feats.push(x.clone());
        }
        let mut x = a;
        for block in &layers.face_decoder {
            for l in block {
                x = l.forward(x);
            }
            let skip = feats.pop().expect("one encoder output per decoder block");
            x = Tensor::cat(vec![x, skip], 1);
        }
        let x = layers.out_conv.forward(x);
        let x = conv2d(
            x,
            out_weight.clone(),
            Some(out_bias.clone()),
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        );
        sigmoid(x)
    }

    /// [`forward`](Self::forward) on the CPU path, from and to host arrays.
    fn forward_cpu(&self, n: usize, mel: &[f32], face: &[f32]) -> Vec<f32> {
        let Net::Cpu(net) = &self.net else {
            unreachable!("the CPU path of a Burn network");
        };
        let CpuNet { layers, out } = net.as_ref();
        let maps = |v: &[f32], c, h, w| Maps {
            v: v.to_vec(),
            c,
            h,
            w,
        };
        let mut a = maps(mel, 1, 80, 16);
        for l in &layers.audio_encoder {
            a = l.forward(&a, n);
        }
        // Each block's output is the next block's input and, later, a decoder block's skip.
        let face = maps(face, 6, 96, 96);
        let mut feats: Vec<Maps> = Vec::with_capacity(layers.face_encoder.len());
        for block in &layers.face_encoder {
            let (first, rest) = block.split_first().expect("no empty block");
            let mut x = first.forward(feats.last().unwrap_or(&face), n);
            for l in rest {
                x = l.forward(&x, n);
            }
            feats.push(x);
        }
        let mut x = a;
        for block in &layers.face_decoder {
            for l in block {
                x = l.forward(&x, n);
            }
            let skip = feats.pop().expect("one encoder output per decoder block");
            assert_eq!(
                [x.h, x.w],
                [skip.h, skip.w],
                "decoder and encoder maps differ"
            );
            x = x.cat(&skip, n);
        }
        let x = layers.out_conv.forward(&x, n);
        let mut y = out.forward(&x.v, [n, x.h, x.w], false, Activation::None);
        for v in &mut y {
            *v = 1.0 / (1.0 + (-*v).exp());
        }
        y
    }

    /// Runs a batch of `n` from host arrays: `mel` n·80·16 values, `face` n·6·96·96 values
    /// (NCHW); returns n·3·96·96 values.
    pub fn run(&self, n: usize, mel: &[f32], face: &[f32]) -> Result<Vec<f32>, String> {
        if mel.len() != n * 80 * 16 || face.len() != n * 6 * 96 * 96 {
            return Err(format!(
                "Wav2Lip takes n·80·16 mel and n·6·96·96 face values, got {} and {} for n = {n}",
                mel.len(),
                face.len()
            ));
        }
        if matches!(self.net, Net::Cpu(_)) {
            return Ok(self.forward_cpu(n, mel, face));
        }
        let mel = upload::<4>(mel.to_vec(), vec![n, 1, 80, 16], &self.device);
        let face = upload::<4>(face.to_vec(), vec![n, 6, 96, 96], &self.device);
        self.forward(mel, face)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| format!("reading Wav2Lip's output back: {e:?}"))
    }
}
