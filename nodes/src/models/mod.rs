//! The Burn networks, all of them: Real-ESRGAN's SRVGGNetCompact and RRDBNet
//! ([`realesrgan`], with the architecture detection that recognises them in a checkpoint),
//! RIFE's IFNet ([`ifnet`]), Wav2Lip ([`wav2lip`]) and MTCNN's face detector ([`mtcnn`]),
//! plus the layers they share (below).
//! Plain structs of weight tensors with a `forward`; weights come from a
//! [`Checkpoint`](crate::weights::Checkpoint) whose keys were checked before construction
//! (e.g. by [`realesrgan::detect`]), so construction cannot miss a key.
//!
//! Compiled with the `neural` feature only.

pub mod ifnet;
pub mod mtcnn;
pub mod realesrgan;
pub mod wav2lip;

use crate::weights::{Checkpoint, RawTensor};
use burn::tensor::activation::{leaky_relu, prelu};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor, TensorData};
use std::sync::Arc;
use vidflow_kernels::{Activation, Conv3x3};

/// Uploads a checkpoint array as a tensor of rank `D` in `dtype`.
pub(crate) fn upload<const D: usize>(t: &RawTensor, device: &Device, dtype: DType) -> Tensor<D> {
    let data = TensorData::new(t.data.clone(), t.shape.clone());
    let x = Tensor::<D>::from_data(data, (device, DType::F32));
    if dtype == DType::F32 {
        x
    } else {
        x.cast(dtype)
    }
}

/// What follows a convolution; on the CPU it is fused into the convolution's output.
#[derive(Clone, Copy)]
pub(crate) enum Act<'a> {
    None,
    PRelu(&'a PRelu),
    /// `nn.LeakyReLU(slope)`.
    Leaky(f32),
}

impl<'a> Act<'a> {
    /// The same activation for the CPU kernel.
    pub(crate) fn cpu(self) -> Activation<'a> {
        match self {
            Act::None => Activation::None,
            Act::PRelu(p) => Activation::PRelu(&p.slopes),
            Act::Leaky(a) => Activation::Leaky(a),
        }
    }
}

/// The Winograd kernel for a 3x3 convolution of weights `[cout, cin, 3, 3]`, when it runs on
/// Burn's CPU device in f32 (the only place it is faster).
pub(crate) fn cpu_kernel(
    weight: &[f32],
    bias: &[f32],
    shape: &[usize],
    device: &Device,
    dtype: DType,
) -> Option<Arc<Conv3x3>> {
    let cpu = dtype == DType::F32 && *device == Device::flex();
    (cpu && shape.len() == 4 && shape[2..] == [3, 3])
        .then(|| Arc::new(Conv3x3::new(weight, bias, shape[0], shape[1])))
}

/// Runs `k` (stride 1, padding 1) and `act` on an f32 tensor of the CPU device.
///
/// # Shapes
/// `[N, Cin, H, W]` → `[N, Cout, H, W]`
pub(crate) fn run_cpu_kernel(k: &Conv3x3, x: Tensor<4>, act: Activation) -> Tensor<4> {
    let [n, _, h, w] = x.dims();
    let device = x.device();
    let y = k.forward(&cpu_floats(x), n, h, w, act);
    cpu_tensor(y, [n, k.out_channels(), h, w], &device)
}

/// The values of an f32 tensor on the CPU device, row-major.
pub(crate) fn cpu_floats<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data()
        .try_into_vec::<f32>()
        .expect("an f32 tensor holds f32 data")
}

/// An f32 tensor from row-major values.
pub(crate) fn cpu_tensor<const D: usize>(
    v: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), (device, DType::F32))
}

/// `nn.PReLU(num_parameters)`: the slopes as a tensor (for Burn) and as floats (for the CPU
/// kernel).
#[derive(Clone, Debug)]
pub(crate) struct PRelu {
    alpha: Tensor<1>,
    slopes: Vec<f32>,
}

impl PRelu {
    pub(crate) fn load(ck: &Checkpoint, name: &str, device: &Device, dtype: DType) -> PRelu {
        let t = &ck.tensors[name];
        PRelu {
            alpha: upload(t, device, dtype),
            slopes: t.data.clone(),
        }
    }
}

/// A 3x3 convolution, stride 1, padding 1, with bias (`nn.Conv2d(cin, cout, 3, 1, 1)`).
///
/// On Burn's CPU device in f32 it runs [`Conv3x3`], the Winograd kernel of `vidflow-kernels`
/// (2.9 times faster than Burn's im2col convolution there on a 64-channel 320x180 layer,
/// `VIDFLOW_BENCH=1 cargo bench -p vidflow-nodes --features neural --bench conv3x3`);
/// everywhere else Burn's `conv2d`.
#[derive(Clone, Debug)]
pub(crate) struct Conv3 {
    weight: Tensor<4>,
    bias: Tensor<1>,
    cpu: Option<Arc<Conv3x3>>,
}

impl Conv3 {
    pub(crate) fn load(ck: &Checkpoint, name: &str, device: &Device, dtype: DType) -> Conv3 {
        let w = &ck.tensors[&format!("{name}.weight")];
        let b = &ck.tensors[&format!("{name}.bias")];
        Conv3 {
            weight: upload(w, device, dtype),
            bias: upload(b, device, dtype),
            cpu: cpu_kernel(&w.data, &b.data, &w.shape, device, dtype),
        }
    }

    /// # Shapes
    /// `[N, Cin, H, W]` → `[N, Cout, H, W]`
    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_act(x, Act::None)
    }

    /// The Winograd kernel, when this convolution runs on the CPU device in f32.
    pub(crate) fn cpu_kernel(&self) -> Option<&Conv3x3> {
        self.cpu.as_deref()
    }

    /// The convolution followed by `act`.
    ///
    /// # Shapes
    /// `[N, Cin, H, W]` → `[N, Cout, H, W]`
    pub(crate) fn forward_act(&self, x: Tensor<4>, act: Act) -> Tensor<4> {
        if let Some(k) = &self.cpu
            && x.dtype() == DType::F32
        {
            return run_cpu_kernel(k, x, act.cpu());
        }
        let y = conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        match act {
            Act::None => y,
            Act::PRelu(p) => prelu(y, p.alpha.clone()),
            Act::Leaky(a) => leaky_relu(y, a as f64),
        }
    }
}

/// `F.pixel_shuffle`.
///
/// # Shapes
/// `[N, C·r², H, W]` → `[N, C, H·r, W·r]`
pub(crate) fn pixel_shuffle(x: Tensor<4>, r: usize) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let c = c / (r * r);
    x.reshape([n, c, r, r, h, w])
        .permute([0, 1, 4, 2, 5, 3])
        .reshape([n, c, h * r, w * r])
}

/// `F.pixel_unshuffle` (the inverse of [`pixel_shuffle`]).
///
/// # Shapes
/// `[N, C, H·r, W·r]` → `[N, C·r², H, W]`
pub(crate) fn pixel_unshuffle(x: Tensor<4>, r: usize) -> Tensor<4> {
    let [n, c, hh, ww] = x.dims();
    let (h, w) = (hh / r, ww / r);
    x.reshape([n, c, h, r, w, r])
        .permute([0, 1, 3, 5, 2, 4])
        .reshape([n, c * r * r, h, w])
}

/// `F.interpolate(x, scale_factor=s, mode='nearest')` for an integer `s`: each pixel repeated.
///
/// # Shapes
/// `[N, C, H, W]` → `[N, C, H·s, W·s]`
pub(crate) fn upsample_nearest(x: Tensor<4>, s: usize) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1])
        .expand([n, c, h, s, w, s])
        .reshape([n, c, h * s, w * s])
}
