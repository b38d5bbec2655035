//! MTCNN face detection (Zhang et al., "Joint Face Detection and Alignment using Multi-task
//! Cascaded Convolutional Networks", 2016) as facenet-pytorch 2.6.0 implements it
//! (`facenet_pytorch/models/mtcnn.py` for the three networks,
//! `facenet_pytorch/models/utils/detect_face.py` for the cascade), on the published weights
//! (`pnet.pt`, `rnet.pt`, `onet.pt`, legacy `torch.save` files).
//!
//! This module owns the three networks ([`PNet`], [`RNet`], [`ONet`]: plain structs of weight
//! tensors with a `forward`, run on the run's device) and the cascade around them
//! ([`Detector::detect`]), which runs on the host because it is bookkeeping on a few hundred
//! boxes:
//!
//! 1. An image pyramid: scales `12 / min_face · factor^k` while the shorter side stays at
//!    least 12 pixels, each image resized with `F.interpolate(mode='area')` (adaptive average
//!    pooling) to `(int(h·s + 1), int(w·s + 1))` and normalised `(x − 127.5) · 0.0078125`.
//!    P-Net runs once per scale on all images of that size; every output cell with a face
//!    probability ≥ `thresholds[0]` is a 12x12 candidate, kept through NMS (IoU 0.5) per scale,
//!    then NMS (IoU 0.7) over all scales, moved by its regression and squared (`rerec`).
//! 2. R-Net on every candidate cropped (clipped to the image, as facenet-pytorch does: no zero
//!    padding) and area-resized to 24x24, all candidates of all images in one batch; those
//!    with probability > `thresholds[1]` go through NMS 0.7, regression and squaring.
//! 3. O-Net the same on 48x48 crops, `> thresholds[2]`; it also gives five landmarks
//!    (eyes, nose, mouth corners); the boxes are regressed and a last NMS 0.7 measures overlap
//!    by the smaller box ("Min").
//!
//! Every step follows the reference's arithmetic (f32 boxes, the same `+1`s, truncation and
//! clipping), so boxes agree to rounding. The networks' dense layers read features in the
//! reference's `permute(0, 3, 2, 1)` order (width, height, channel).
//!
//! On the CPU in f32 the 3x3 convolutions run on vidflow's Winograd kernel
//! ([`vidflow_kernels::Conv3x3`], PReLU fused) instead of Burn's: 1.3 to 1.7 times
//! facenet-pytorch's speed instead of 0.9 (`scripts/bench-face-detect.sh`). The kernel only
//! pads, and an unpadded convolution's output is the padded one's interior, so the layers
//! after read the interior; R-Net's and O-Net's crops are convolved side by side as one wide
//! image ([`conv_pool_cpu`]). Elsewhere (wgpu) the networks run on Burn's layers.
//!
//! # Shapes
//! P-Net `[N, 3, H, W]` → regression `[N, 4, H', W']`, probabilities `[N, 2, H', W']`
//! (H' = ⌈(H − 2) / 2⌉ − 4); R-Net `[N, 3, 24, 24]` → `[N, 4]`, `[N, 2]`; O-Net
//! `[N, 3, 48, 48]` → `[N, 4]`, landmarks `[N, 10]` (five x, then five y, relative to the
//! box), `[N, 2]`.

use crate::models::{PRelu, cpu_floats as floats, cpu_kernel, cpu_tensor, upload};
use crate::weights::{Checkpoint, RawTensor};
use burn::tensor::activation::{prelu, softmax};
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{DType, Device, Tensor};
use rayon::prelude::*;
use std::sync::Arc;
use vidflow_kernels::{Activation, Conv3x3};

/// The cascade's settings (facenet-pytorch's `MTCNN(min_face_size, thresholds, factor)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectParams {
    /// Smallest face searched for, in pixels.
    pub min_face: f64,
    /// Face-probability thresholds of P-Net, R-Net and O-Net.
    pub thresholds: [f32; 3],
    /// Ratio between consecutive pyramid scales.
    pub factor: f64,
}

impl Default for DetectParams {
    fn default() -> Self {
        DetectParams {
            min_face: 20.0,
            thresholds: [0.6, 0.7, 0.7],
            factor: 0.709,
        }
    }
}

/// One detected face, in pixels of the image.
#[derive(Clone, Debug, PartialEq)]
pub struct Face {
    /// `[x1, y1, x2, y2]`.
    pub box_xyxy: [f32; 4],
    /// O-Net's face probability.
    pub prob: f32,
    /// Left eye, right eye, nose, left and right mouth corner, `[x, y]` each.
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    pub fn area(&self) -> f32 {
        let [x1, y1, x2, y2] = self.box_xyxy;
        (x2 - x1) * (y2 - y1)
    }
}

/// A packed RGB u8 image (rows top to bottom, no padding).
#[derive(Clone, Copy, Debug)]
pub struct Rgb<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
}

// ---- layers ----

/// A stride-1, unpadded convolution with bias (`nn.Conv2d(cin, cout, k)`).
#[derive(Clone, Debug)]
struct Conv {
    weight: Tensor<4>,
    bias: Tensor<1>,
    /// A 3x3 one as the CPU Winograd kernel (padded: see [`PNet::forward_cpu`]), when the
    /// networks run on the CPU in f32.
    cpu: Option<Arc<Conv3x3>>,
}

impl Conv {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        )
    }
}

/// `nn.Linear(cin, cout)`, its weight kept transposed for `x · Wᵀ`.
#[derive(Clone, Debug)]
struct Dense {
    weight_t: Tensor<2>,
    bias: Tensor<1>,
}

impl Dense {
    /// # Shapes
    /// `[N, cin]` → `[N, cout]`
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.weight_t.clone()) + self.bias.clone().unsqueeze::<2>()
    }
}

/// `nn.MaxPool2d(k, stride, ceil_mode=True)`.
fn pool(x: Tensor<4>, k: usize, stride: usize) -> Tensor<4> {
    max_pool2d(
        x,
        MaxPoolOptions::new([k, k])
            .with_stride([stride, stride])
            .with_ceil_mode(true),
    )
}

/// `x.permute(0, 3, 2, 1).contiguous().view(n, -1)`: the reference flattens features as
/// (width, height, channel), and its dense weights expect that order.
fn flatten_whc(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    x.permute([0, 3, 2, 1]).reshape([n, w * h * c])
}

/// Reads the layers of one network from its checkpoint, checking every shape, so a wrong
/// file is an error naming it, never a panic later.
struct Loader<'a> {
    ck: &'a Checkpoint,
    net: &'static str,
    device: &'a Device,
}

impl Loader<'_> {
    fn get(&self, key: &str, shape: &[usize]) -> Result<&RawTensor, String> {
        let t = self.ck.tensors.get(key).ok_or_else(|| {
            format!(
                "weights file `{}` is not MTCNN's {}: it has no tensor `{key}` ({} tensors, e.g. `{}`)",
                self.ck.path.display(),
                self.net,
                self.ck.tensors.len(),
                self.ck.tensors.keys().next().map_or("", |k| k.as_str())
            )
        })?;
        if t.shape != shape {
            return Err(format!(
                "weights file `{}` is not MTCNN's {}: `{key}` has shape {:?}, expected {shape:?}",
                self.ck.path.display(),
                self.net,
                t.shape
            ));
        }
        Ok(t)
    }
    fn conv(&self, name: &str, cout: usize, cin: usize, k: usize) -> Result<Conv, String> {
        let w = self.get(&format!("{name}.weight"), &[cout, cin, k, k])?;
        let b = self.get(&format!("{name}.bias"), &[cout])?;
        Ok(Conv {
            weight: upload(w, self.device, DType::F32),
            bias: upload(b, self.device, DType::F32),
            cpu: cpu_kernel(&w.data, &b.data, &w.shape, self.device, DType::F32),
        })
    }
    fn dense(&self, name: &str, cout: usize, cin: usize) -> Result<Dense, String> {
        let w = self.get(&format!("{name}.weight"), &[cout, cin])?;
        let b = self.get(&format!("{name}.bias"), &[cout])?;
        let weight: Tensor<2> = upload(w, self.device, DType::F32);
        Ok(Dense {
            weight_t: weight.transpose(),
            bias: upload(b, self.device, DType::F32),
        })
    }
    fn prelu(&self, name: &str, c: usize) -> Result<PRelu, String> {
        let t = self.get(&format!("{name}.weight"), &[c])?;
        Ok(PRelu {
            alpha: upload(t, self.device, DType::F32),
            slopes: t.data.clone(),
        })
    }
}

// ---- the networks ----

/// The proposal network: fully convolutional, one 12x12 window per output cell (stride 2).
#[derive(Clone, Debug)]
pub struct PNet {
    conv1: Conv,
    prelu1: PRelu,
    conv2: Conv,
    prelu2: PRelu,
    conv3: Conv,
    prelu3: PRelu,
    conv4_1: Conv,
    conv4_2: Conv,
    cpu: PNetCpu,
}

/// P-Net's layers for the CPU path ([`PNet::forward_cpu`]).
#[derive(Clone, Debug)]
struct PNetCpu {
    /// `conv4_1` (2 rows) then `conv4_2` (4 rows), `[6, 32]`, and their biases.
    heads: Vec<f32>,
    head_bias: Vec<f32>,
}

impl PNet {
    pub fn load(ck: &Checkpoint, device: &Device) -> Result<PNet, String> {
        let l = Loader {
            ck,
            net: "P-Net",
            device,
        };
        let raw = |k: &str| ck.tensors[k].data.as_slice();
        Ok(PNet {
            conv1: l.conv("conv1", 10, 3, 3)?,
            prelu1: l.prelu("prelu1", 10)?,
            conv2: l.conv("conv2", 16, 10, 3)?,
            prelu2: l.prelu("prelu2", 16)?,
            conv3: l.conv("conv3", 32, 16, 3)?,
            prelu3: l.prelu("prelu3", 32)?,
            conv4_1: l.conv("conv4_1", 2, 32, 1)?,
            conv4_2: l.conv("conv4_2", 4, 32, 1)?,
            // The shapes were checked by the lines above.
            cpu: PNetCpu {
                heads: [raw("conv4_1.weight"), raw("conv4_2.weight")].concat(),
                head_bias: [raw("conv4_1.bias"), raw("conv4_2.bias")].concat(),
            },
        })
    }

    /// [`forward`](Self::forward) on the CPU kernels, when the network runs on the CPU in
    /// f32 (`None` otherwise), on host floats: faster than Burn's convolutions there,
    /// because the three 3x3 layers run as Winograd with PReLU fused and nothing else
    /// makes a pass over the feature maps.
    ///
    /// Each unpadded convolution is computed padded (the kernel's only mode) and the valid
    /// part kept: an unpadded output is the interior of the padded one, one pixel in from
    /// each side. The max pool reads conv1's interior directly; conv2 and conv3 run back to
    /// back padded, since conv3's outputs two pixels in from the border read only conv2's
    /// interior, and the heads read conv3's outputs two pixels in.
    ///
    /// # Shapes
    /// `x`: `[n, 3, h, w]` → (regression `[n, 4, h', w']`, probabilities `[n, 2, h', w']`,
    /// h', w'), h, w ≥ 12
    pub fn forward_cpu(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
    ) -> Option<(Vec<f32>, Vec<f32>, usize, usize)> {
        let cpu = &self.cpu;
        let (c1, c2, c3) = (
            self.conv1.cpu.as_deref()?,
            self.conv2.cpu.as_deref()?,
            self.conv3.cpu.as_deref()?,
        );
        fn act(p: &PRelu) -> Activation<'_> {
            Activation::PRelu(&p.slopes)
        }
        let y1 = c1.forward(x, n, h, w, act(&self.prelu1));
        let (ph, pw) = ((h - 2).div_ceil(2), (w - 2).div_ceil(2));
        let pooled = pool2_interior(&y1, n * 10, [h, w], [ph, pw]);
        let y2 = c2.forward(&pooled, n, ph, pw, act(&self.prelu2));
        let y3 = c3.forward(&y2, n, ph, pw, act(&self.prelu3));
        let (oh, ow) = (ph - 4, pw - 4);
        let plane = oh * ow;
        let mut reg = vec![0f32; n * 4 * plane];
        let mut prob = vec![0f32; n * 2 * plane];
        let mut acc = vec![0f32; 6 * plane];
        for b in 0..n {
            let src = &y3[b * 32 * ph * pw..][..32 * ph * pw];
            // The six 1x1 outputs, a row of one channel at a time (vectorised axpy).
            for (k, a) in acc.chunks_exact_mut(plane).enumerate() {
                a.fill(cpu.head_bias[k]);
                for (c, ch) in src.chunks_exact(ph * pw).enumerate() {
                    let wk = cpu.heads[k * 32 + c];
                    for (y, out) in a.chunks_exact_mut(ow).enumerate() {
                        let row = &ch[(y + 2) * pw + 2..][..ow];
                        for (o, v) in out.iter_mut().zip(row) {
                            *o += wk * v;
                        }
                    }
                }
            }
            let (logits, regs) = acc.split_at(2 * plane);
            let p = &mut prob[b * 2 * plane..][..2 * plane];
            let (p0, p1) = p.split_at_mut(plane);
            for i in 0..plane {
                let (a0, a1) = (logits[i], logits[plane + i]);
                let m = a0.max(a1);
                let (e0, e1) = ((a0 - m).exp(), (a1 - m).exp());
                p0[i] = e0 / (e0 + e1);
                p1[i] = e1 / (e0 + e1);
            }
            reg[b * 4 * plane..][..4 * plane].copy_from_slice(regs);
        }
        Some((reg, prob, oh, ow))
    }

    /// # Shapes
    /// `[N, 3, H, W]` → (regression `[N, 4, H', W']`, probabilities `[N, 2, H', W']`)
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let x = prelu(self.conv1.forward(x), self.prelu1.alpha.clone());
        let x = pool(x, 2, 2);
        let x = prelu(self.conv2.forward(x), self.prelu2.alpha.clone());
        let x = prelu(self.conv3.forward(x), self.prelu3.alpha.clone());
        let a = softmax(self.conv4_1.forward(x.clone()), 1);
        (self.conv4_2.forward(x), a)
    }
}

/// The refinement network, on 24x24 crops.
#[derive(Clone, Debug)]
pub struct RNet {
    conv1: Conv,
    prelu1: PRelu,
    conv2: Conv,
    prelu2: PRelu,
    conv3: Conv,
    prelu3: PRelu,
    dense4: Dense,
    prelu4: PRelu,
    dense5_1: Dense,
    dense5_2: Dense,
}

impl RNet {
    pub fn load(ck: &Checkpoint, device: &Device) -> Result<RNet, String> {
        let l = Loader {
            ck,
            net: "R-Net",
            device,
        };
        Ok(RNet {
            conv1: l.conv("conv1", 28, 3, 3)?,
            prelu1: l.prelu("prelu1", 28)?,
            conv2: l.conv("conv2", 48, 28, 3)?,
            prelu2: l.prelu("prelu2", 48)?,
            conv3: l.conv("conv3", 64, 48, 2)?,
            prelu3: l.prelu("prelu3", 64)?,
            dense4: l.dense("dense4", 128, 576)?,
            prelu4: l.prelu("prelu4", 128)?,
            dense5_1: l.dense("dense5_1", 2, 128)?,
            dense5_2: l.dense("dense5_2", 4, 128)?,
        })
    }

    /// # Shapes
    /// `[N, 3, 24, 24]` → (regression `[N, 4]`, probabilities `[N, 2]`)
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let x = prelu(self.conv1.forward(x), self.prelu1.alpha.clone());
        let x = pool(x, 3, 2);
        let x = prelu(self.conv2.forward(x), self.prelu2.alpha.clone());
        self.tail(pool(x, 3, 2))
    }

    /// [`forward`](Self::forward) on host crops, its 3x3 layers on the CPU kernels when the
    /// network runs on the CPU in f32 (see [`conv_pool_cpu`]).
    ///
    /// # Shapes
    /// `crops`: `[n, 3, 24, 24]` → (regression `[n, 4]`, probabilities `[n, 2]`)
    fn forward_host(&self, crops: &[f32], n: usize, device: &Device) -> (Vec<f32>, Vec<f32>) {
        let x = match (&self.conv1.cpu, &self.conv2.cpu) {
            (Some(c1), Some(c2)) => {
                let stages = [(&**c1, &self.prelu1, 3), (&**c2, &self.prelu2, 3)];
                let (x, c, o) = conv_pool_cpu(crops, n, 24, &stages);
                cpu_tensor(x, [n, c, o, o], device)
            }
            _ => {
                return floats2(self.forward(cpu_tensor(crops.to_vec(), [n, 3, 24, 24], device)));
            }
        };
        floats2(self.tail(x))
    }

    /// conv3 onwards.
    fn tail(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let x = prelu(self.conv3.forward(x), self.prelu3.alpha.clone());
        let x = prelu(
            self.dense4.forward(flatten_whc(x)),
            self.prelu4.alpha.clone(),
        );
        let a = softmax(self.dense5_1.forward(x.clone()), 1);
        (self.dense5_2.forward(x), a)
    }
}

/// The output network, on 48x48 crops: box, landmarks and probability.
#[derive(Clone, Debug)]
pub struct ONet {
    conv1: Conv,
    prelu1: PRelu,
    conv2: Conv,
    prelu2: PRelu,
    conv3: Conv,
    prelu3: PRelu,
    conv4: Conv,
    prelu4: PRelu,
    dense5: Dense,
    prelu5: PRelu,
    dense6_1: Dense,
    dense6_2: Dense,
    dense6_3: Dense,
}

impl ONet {
    pub fn load(ck: &Checkpoint, device: &Device) -> Result<ONet, String> {
        let l = Loader {
            ck,
            net: "O-Net",
            device,
        };
        Ok(ONet {
            conv1: l.conv("conv1", 32, 3, 3)?,
            prelu1: l.prelu("prelu1", 32)?,
            conv2: l.conv("conv2", 64, 32, 3)?,
            prelu2: l.prelu("prelu2", 64)?,
            conv3: l.conv("conv3", 64, 64, 3)?,
            prelu3: l.prelu("prelu3", 64)?,
            conv4: l.conv("conv4", 128, 64, 2)?,
            prelu4: l.prelu("prelu4", 128)?,
            dense5: l.dense("dense5", 256, 1152)?,
            prelu5: l.prelu("prelu5", 256)?,
            dense6_1: l.dense("dense6_1", 2, 256)?,
            dense6_2: l.dense("dense6_2", 4, 256)?,
            dense6_3: l.dense("dense6_3", 10, 256)?,
        })
    }

    /// # Shapes
    /// `[N, 3, 48, 48]` → (regression `[N, 4]`, landmarks `[N, 10]`, probabilities `[N, 2]`)
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        let x = prelu(self.conv1.forward(x), self.prelu1.alpha.clone());
        let x = pool(x, 3, 2);
        let x = prelu(self.conv2.forward(x), self.prelu2.alpha.clone());
        let x = pool(x, 3, 2);
        let x = prelu(self.conv3.forward(x), self.prelu3.alpha.clone());
        self.tail(pool(x, 2, 2))
    }

    /// [`forward`](Self::forward) on host crops, its 3x3 layers on the CPU kernels when the
    /// network runs on the CPU in f32 (see [`conv_pool_cpu`]).
    ///
    /// # Shapes
    /// `crops`: `[n, 3, 48, 48]` → (regression `[n, 4]`, landmarks `[n, 10]`, probabilities
    /// `[n, 2]`)
    fn forward_host(
        &self,
        crops: &[f32],
        n: usize,
        device: &Device,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (reg, marks, prob) = match (&self.conv1.cpu, &self.conv2.cpu, &self.conv3.cpu) {
            (Some(c1), Some(c2), Some(c3)) => {
                let stages = [
                    (&**c1, &self.prelu1, 3),
                    (&**c2, &self.prelu2, 3),
                    (&**c3, &self.prelu3, 2),
                ];
                let (x, c, o) = conv_pool_cpu(crops, n, 48, &stages);
                self.tail(cpu_tensor(x, [n, c, o, o], device))
            }
            _ => self.forward(cpu_tensor(crops.to_vec(), [n, 3, 48, 48], device)),
        };
        (floats(reg), floats(marks), floats(prob))
    }

    /// conv4 onwards.
    fn tail(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        let x = prelu(self.conv4.forward(x), self.prelu4.alpha.clone());
        let x = prelu(
            self.dense5.forward(flatten_whc(x)),
            self.prelu5.alpha.clone(),
        );
        let a = softmax(self.dense6_1.forward(x.clone()), 1);
        (
            self.dense6_2.forward(x.clone()),
            self.dense6_3.forward(x),
            a,
        )
    }
}

// ---- the cascade ----

/// A candidate face between the stages: box `[x1, y1, x2, y2]`, score, and the regression
/// the last network gave it (relative to its size).
#[derive(Clone, Copy, Debug)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

/// The three networks on one device.
#[derive(Clone, Debug)]
pub struct Detector {
    pub pnet: PNet,
    pub rnet: RNet,
    pub onet: ONet,
    device: Device,
}

/// Crops per R-Net / O-Net call (facenet-pytorch's `fixed_batch_process` uses 512 too):
/// bounds the memory one call takes on a GPU.
const MAX_CROPS: usize = 512;

impl Detector {
    /// Builds the networks from the three checkpoints (facenet-pytorch's `pnet.pt`,
    /// `rnet.pt`, `onet.pt`).
    pub fn load(
        pnet: &Checkpoint,
        rnet: &Checkpoint,
        onet: &Checkpoint,
        device: &Device,
    ) -> Result<Detector, String> {
        Ok(Detector {
            pnet: PNet::load(pnet, device)?,
            rnet: RNet::load(rnet, device)?,
            onet: ONet::load(onet, device)?,
            device: device.clone(),
        })
    }

    /// The faces of each image, largest first (facenet-pytorch's `select_largest=True`
    /// order). P-Net runs once per scale on all images of one size; R-Net and O-Net each
    /// run on the candidates of all images together.
    pub fn detect(&self, images: &[Rgb<'_>], p: &DetectParams) -> Vec<Vec<Face>> {
        let mut cands: Vec<Vec<Cand>> = vec![vec![]; images.len()];
        // Stage 1, per group of images of one size.
        let mut done = vec![false; images.len()];
        for i in 0..images.len() {
            if done[i] {
                continue;
            }
            let size = (images[i].width, images[i].height);
            let group: Vec<usize> = (i..images.len())
                .filter(|&j| (images[j].width, images[j].height) == size)
                .collect();
            for &j in &group {
                done[j] = true;
            }
            let found = self.proposals(&group.iter().map(|&j| images[j]).collect::<Vec<_>>(), p);
            for (j, c) in group.into_iter().zip(found) {
                cands[j] = c;
            }
        }
        // Stage 2: R-Net on 24x24 crops of every candidate.
        let (crops, owners) = crops_of(images, &cands, 24);
        let mut next: Vec<Vec<Cand>> = vec![vec![]; images.len()];
        for (chunk, own) in crops
            .chunks(MAX_CROPS * 3 * 24 * 24)
            .zip(owners.chunks(MAX_CROPS))
        {
            let n = own.len();
            let (reg, prob) = self.rnet.forward_host(chunk, n, &self.device);
            for (j, &(img, c)) in own.iter().enumerate() {
                let score = prob[j * 2 + 1];
                if score > p.thresholds[1] {
                    next[img].push(Cand {
                        b: cands[img][c].b,
                        score,
                        reg: reg[j * 4..j * 4 + 4].try_into().expect("4 values"),
                    });
                }
            }
        }
        let cands: Vec<Vec<Cand>> = next
            .into_iter()
            .map(|c| {
                nms_iou(&c, 0.7)
                    .into_iter()
                    .map(|i| {
                        let c = c[i];
                        Cand {
                            b: rerec(bbreg(c.b, c.reg)),
                            ..c
                        }
                    })
                    .collect()
            })
            .collect();
        // Stage 3: O-Net on 48x48 crops; landmarks.
        let (crops, owners) = crops_of(images, &cands, 48);
        let mut faces: Vec<Vec<Face>> = vec![vec![]; images.len()];
        for (chunk, own) in crops
            .chunks(MAX_CROPS * 3 * 48 * 48)
            .zip(owners.chunks(MAX_CROPS))
        {
            let n = own.len();
            let (reg, marks, prob) = self.onet.forward_host(chunk, n, &self.device);
            for (j, &(img, c)) in own.iter().enumerate() {
                let score = prob[j * 2 + 1];
                if score <= p.thresholds[2] {
                    continue;
                }
                let b = cands[img][c].b;
                // Landmarks are relative to the box O-Net saw (before its regression).
                let (w, h) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
                let m = &marks[j * 10..j * 10 + 10];
                let landmarks =
                    std::array::from_fn(|i| [w * m[i] + b[0] - 1.0, h * m[5 + i] + b[1] - 1.0]);
                faces[img].push(Face {
                    box_xyxy: bbreg(b, reg[j * 4..j * 4 + 4].try_into().expect("4 values")),
                    prob: score,
                    landmarks,
                });
            }
        }
        faces
            .into_iter()
            .map(|f| {
                let boxes: Vec<[f32; 4]> = f.iter().map(|f| f.box_xyxy).collect();
                let scores: Vec<f32> = f.iter().map(|f| f.prob).collect();
                let mut kept: Vec<Face> = nms_min(&boxes, &scores, 0.7)
                    .into_iter()
                    .map(|i| f[i].clone())
                    .collect();
                // Largest first, as `np.argsort(area)[::-1]` orders them (ties: later first).
                kept.reverse();
                kept.sort_by(|a, b| b.area().total_cmp(&a.area()));
                kept
            })
            .collect()
    }

    /// Stage 1 for images of one size: the candidates of each, after NMS within each scale
    /// and across scales, regressed and squared.
    fn proposals(&self, images: &[Rgb<'_>], p: &DetectParams) -> Vec<Vec<Cand>> {
        let (w, h) = (images[0].width, images[0].height);
        let mut per_image: Vec<Vec<Cand>> = vec![vec![]; images.len()];
        for scale in pyramid(w, h, p) {
            // Python's `int(h * scale + 1)`.
            let (sh, sw) = (
                (h as f64 * scale + 1.0) as usize,
                (w as f64 * scale + 1.0) as usize,
            );
            let mut data = vec![0f32; images.len() * 3 * sh * sw];
            for (img, out) in images.iter().zip(data.chunks_exact_mut(3 * sh * sw)) {
                area_resize(img, [0, 0, w, h], sh, sw, out);
            }
            let (reg, prob, oh, ow) = match self.pnet.forward_cpu(&data, images.len(), sh, sw) {
                Some(out) => out,
                None => {
                    let x = cpu_tensor(data, [images.len(), 3, sh, sw], &self.device);
                    let (reg, prob) = self.pnet.forward(x);
                    let [_, _, oh, ow] = prob.dims();
                    (floats(reg), floats(prob), oh, ow)
                }
            };
            let plane = oh * ow;
            for (n, out) in per_image.iter_mut().enumerate() {
                let probs = &prob[(n * 2 + 1) * plane..(n * 2 + 2) * plane];
                let regs = &reg[n * 4 * plane..(n + 1) * 4 * plane];
                let boxes = cells_to_boxes(probs, regs, oh, ow, scale as f32, p.thresholds[0]);
                out.extend(nms_iou(&boxes, 0.5).into_iter().map(|i| boxes[i]));
            }
        }
        per_image
            .into_iter()
            .map(|c| {
                nms_iou(&c, 0.7)
                    .into_iter()
                    .map(|i| {
                        let c = c[i];
                        // Regression by the box size without the `+1` of `bbreg`, as the
                        // reference's first stage does.
                        let [x1, y1, x2, y2] = c.b;
                        let (rw, rh) = (x2 - x1, y2 - y1);
                        let b = [
                            x1 + c.reg[0] * rw,
                            y1 + c.reg[1] * rh,
                            x2 + c.reg[2] * rw,
                            y2 + c.reg[3] * rh,
                        ];
                        Cand { b: rerec(b), ..c }
                    })
                    .collect()
            })
            .collect()
    }
}

/// The pyramid's scales: `12 / min_face · factor^k` while `min(w, h)` at that scale is at
/// least 12 pixels (computed in f64 like the reference's Python floats).
/// The 3x3 convolutions of R-Net or O-Net, each followed by its PReLU and
/// `nn.MaxPool2d(k, 2, ceil_mode=True)`, on the CPU kernels.
///
/// The kernel only pads, and an unpadded output is the padded one less its border; one crop
/// of 24x24 or 48x48 gives it too little to do per call (a block is one tile row). So the
/// crops are laid side by side in one wide image (a *mosaic*, `[c, size, n · size]`) and
/// convolved together: each crop's interior reads only its own pixels, and the pool after
/// reads only the interior. Between stages the pooled crops form the next mosaic.
///
/// # Shapes
/// `crops`: `[n, 3, size, size]` → (`[n, c, o, o]`, c, o) after the last stage
fn conv_pool_cpu(
    crops: &[f32],
    n: usize,
    size: usize,
    stages: &[(&Conv3x3, &PRelu, usize)],
) -> (Vec<f32>, usize, usize) {
    // NCHW crops → mosaic: row y of channel c is row y of every crop, one after another.
    let mut x = vec![0f32; crops.len()];
    let plane = size * size;
    for (j, crop) in crops.chunks_exact(3 * plane).enumerate() {
        for (c, ch) in crop.chunks_exact(plane).enumerate() {
            for (y, row) in ch.chunks_exact(size).enumerate() {
                x[(c * size + y) * n * size + j * size..][..size].copy_from_slice(row);
            }
        }
    }
    let (mut size, mut c) = (size, 3);
    for &(conv, prelu, k) in stages {
        let y = conv.forward(&x, 1, size, n * size, Activation::PRelu(&prelu.slopes));
        c = conv.out_channels();
        // The valid part is rows and columns 1 ..= size − 2 of each crop.
        let valid = size - 2;
        let o = (valid - k).div_ceil(2) + 1;
        x = vec![0f32; c * o * n * o];
        let span = |i: usize| (1 + 2 * i)..(1 + 2 * i + k).min(1 + valid);
        let planes = x
            .par_chunks_mut(o * n * o)
            .zip(y.par_chunks(size * n * size));
        planes.for_each(|(dst, src)| {
            for (oy, out) in dst.chunks_exact_mut(n * o).enumerate() {
                for (j, cell) in out.chunks_exact_mut(o).enumerate() {
                    for (ox, v) in cell.iter_mut().enumerate() {
                        let mut m = f32::NEG_INFINITY;
                        for r in span(oy) {
                            let row = &src[r * n * size + j * size..][..size];
                            for &p in &row[span(ox)] {
                                m = m.max(p);
                            }
                        }
                        *v = m;
                    }
                }
            }
        });
        size = o;
    }
    // Mosaic → NCHW.
    let mut out = vec![0f32; x.len()];
    let plane = size * size;
    for ch in 0..c {
        for y in 0..size {
            let row = &x[(ch * size + y) * n * size..][..n * size];
            for (j, cell) in row.chunks_exact(size).enumerate() {
                out[(j * c + ch) * plane + y * size..][..size].copy_from_slice(cell);
            }
        }
    }
    (out, c, size)
}

fn floats2((a, b): (Tensor<2>, Tensor<2>)) -> (Vec<f32>, Vec<f32>) {
    (floats(a), floats(b))
}

/// `nn.MaxPool2d(2, 2, ceil_mode=True)` of the interior of each `[h, w]` plane (rows and
/// columns 1 ..= h − 2, w − 2: an unpadded 3x3 convolution's output inside its padded one),
/// into `[ph, pw]` planes.
fn pool2_interior(y: &[f32], planes: usize, [h, w]: [usize; 2], [ph, pw]: [usize; 2]) -> Vec<f32> {
    let mut out = vec![0f32; planes * ph * pw];
    let cols: Vec<(usize, usize)> = (0..pw)
        .map(|px| (1 + 2 * px, (2 + 2 * px).min(w - 2)))
        .collect();
    let planes = y
        .par_chunks_exact(h * w)
        .zip(out.par_chunks_exact_mut(ph * pw));
    planes.for_each(|(src, dst)| {
        for (py, row) in dst.chunks_exact_mut(pw).enumerate() {
            let r0 = &src[(1 + 2 * py) * w..][..w];
            let r1 = &src[(2 + 2 * py).min(h - 2) * w..][..w];
            for (o, &(c0, c1)) in row.iter_mut().zip(&cols) {
                *o = r0[c0].max(r0[c1]).max(r1[c0]).max(r1[c1]);
            }
        }
    });
    out
}

pub fn pyramid(w: usize, h: usize, p: &DetectParams) -> Vec<f64> {
    let m = 12.0 / p.min_face;
    let mut minl = w.min(h) as f64 * m;
    let mut scale = m;
    let mut out = vec![];
    while minl >= 12.0 {
        out.push(scale);
        scale *= p.factor;
        minl *= p.factor;
    }
    out
}

/// `generateBoundingBox`: each P-Net cell with probability ≥ `thresh` as a box in image
/// pixels (the 12x12 window at stride 2, divided by the scale and floored, in f32 as the
/// reference computes it), in row-major cell order.
fn cells_to_boxes(
    prob: &[f32],
    reg: &[f32],
    oh: usize,
    ow: usize,
    scale: f32,
    thresh: f32,
) -> Vec<Cand> {
    let plane = oh * ow;
    let mut out = vec![];
    for y in 0..oh {
        for x in 0..ow {
            let i = y * ow + x;
            if prob[i] < thresh {
                continue;
            }
            let (fx, fy) = (x as f32, y as f32);
            out.push(Cand {
                b: [
                    ((2.0 * fx + 1.0) / scale).floor(),
                    ((2.0 * fy + 1.0) / scale).floor(),
                    ((2.0 * fx + 12.0) / scale).floor(),
                    ((2.0 * fy + 12.0) / scale).floor(),
                ],
                score: prob[i],
                reg: std::array::from_fn(|k| reg[k * plane + i]),
            });
        }
    }
    out
}

/// `bbreg`: moves a box by a regression relative to its size (with the reference's `+1`).
fn bbreg(b: [f32; 4], reg: [f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
    [
        b[0] + reg[0] * w,
        b[1] + reg[1] * h,
        b[2] + reg[2] * w,
        b[3] + reg[3] * h,
    ]
}

/// `rerec`: the square around a box's centre with its longer side.
fn rerec(b: [f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let l = w.max(h);
    let x1 = b[0] + w * 0.5 - l * 0.5;
    let y1 = b[1] + h * 0.5 - l * 0.5;
    [x1, y1, x1 + l, y1 + l]
}

/// `pad`: the pixel rows and columns a box covers, clipped to the image, as the half-open
/// ranges `(y0, y1, x0, x1)` the reference slices (`[y − 1, ey)` after truncating the box
/// and clipping `x, y ≥ 1`, `ex ≤ w`, `ey ≤ h`); `None` when nothing is left.
fn crop_region(b: [f32; 4], w: usize, h: usize) -> Option<[usize; 4]> {
    // `trunc().int()`: towards zero; the `as` cast saturates far outside the image.
    let [x, y, ex, ey] = b.map(|v| v.trunc() as i64);
    let (x, y) = (x.max(1), y.max(1));
    let (ex, ey) = (ex.min(w as i64), ey.min(h as i64));
    // The reference skips the crop (and, unlike here, misaligns the rest of the batch).
    if ey < y || ex < x {
        return None;
    }
    Some([(y - 1) as usize, ey as usize, (x - 1) as usize, ex as usize])
}

/// The crops of every candidate, area-resized to `size`² and normalised, as one NCHW
/// batch, with (image, candidate) for each crop.
fn crops_of(
    images: &[Rgb<'_>],
    cands: &[Vec<Cand>],
    size: usize,
) -> (Vec<f32>, Vec<(usize, usize)>) {
    let mut regions = vec![];
    let mut owners = vec![];
    for (i, (img, cs)) in images.iter().zip(cands).enumerate() {
        for (c, cand) in cs.iter().enumerate() {
            let Some([y0, y1, x0, x1]) = crop_region(cand.b, img.width, img.height) else {
                continue;
            };
            regions.push((i, [x0, y0, x1 - x0, y1 - y0]));
            owners.push((i, c));
        }
    }
    let mut data = vec![0f32; regions.len() * 3 * size * size];
    data.par_chunks_mut(3 * size * size)
        .zip(&regions)
        .for_each(|(out, &(i, region))| area_resize(&images[i], region, size, size, out));
    (data, owners)
}

/// `F.interpolate(x, (oh, ow), mode='area')` (adaptive average pooling: output cell `o`
/// averages input `⌊o·n/out⌋ .. ⌈(o+1)·n/out⌉`) of the region `[x0, y0, w, h]` of an image,
/// normalised `(v − 127.5) · 0.0078125`, into `out` as planar RGB (`3 · oh · ow` floats).
/// The sums are of integers, so exact in any order (here the rows of a cell first, then its
/// columns, rows of output in parallel); the two divisions are the reference's
/// `sum / kh / kw` in f32.
fn area_resize(img: &Rgb<'_>, region: [usize; 4], oh: usize, ow: usize, out: &mut [f32]) {
    let [x0, y0, w, h] = region;
    let span = |o: usize, n: usize, out: usize| (o * n / out, ((o + 1) * n).div_ceil(out));
    let cols: Vec<(usize, usize)> = (0..ow).map(|o| span(o, w, ow)).collect();
    let stride = img.width * 3;
    let (r, rest) = out.split_at_mut(oh * ow);
    let (g, b) = rest.split_at_mut(oh * ow);
    r.par_chunks_mut(ow)
        .zip(g.par_chunks_mut(ow))
        .zip(b.par_chunks_mut(ow))
        .enumerate()
        .with_min_len(8)
        .for_each_init(Vec::new, |sums: &mut Vec<u32>, (oy, ((r, g), b))| {
            let (ya, yb) = span(oy, h, oh);
            sums.clear();
            sums.resize(3 * w, 0);
            for y in y0 + ya..y0 + yb {
                let row = &img.data[y * stride + x0 * 3..][..3 * w];
                for (s, &p) in sums.iter_mut().zip(row) {
                    *s += p as u32;
                }
            }
            let kh = (yb - ya) as f32;
            for (ox, &(xa, xb)) in cols.iter().enumerate() {
                let mut sum = [0u32; 3];
                for px in sums[xa * 3..xb * 3].chunks_exact(3) {
                    for (s, &p) in sum.iter_mut().zip(px) {
                        *s += p;
                    }
                }
                let kw = (xb - xa) as f32;
                let v = |s: u32| (s as f32 / kh / kw - 127.5) * 0.0078125;
                (r[ox], g[ox], b[ox]) = (v(sum[0]), v(sum[1]), v(sum[2]));
            }
        });
}

/// torchvision's `nms`: indices kept, highest score first (a stable sort, so ties keep
/// their order); a box is dropped when its IoU with a kept one is above `iou` (areas
/// without `+1`).
fn nms_iou(c: &[Cand], iou: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| c[b].score.total_cmp(&c[a].score));
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let mut dropped = vec![false; c.len()];
    let mut keep = vec![];
    for (k, &i) in order.iter().enumerate() {
        if dropped[i] {
            continue;
        }
        keep.push(i);
        let bi = &c[i].b;
        for &j in &order[k + 1..] {
            if dropped[j] {
                continue;
            }
            let bj = &c[j].b;
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            let o = inter / (area(bi) + area(bj) - inter);
            if o as f64 > iou {
                dropped[j] = true;
            }
        }
    }
    keep
}

/// facenet-pytorch's `nms_numpy(.., 'Min')`: overlap is the intersection over the smaller
/// box (areas with `+1`); the highest score first (among equal scores the later one, as
/// after `np.argsort`), and boxes overlapping it more than `threshold` are dropped.
fn nms_min(boxes: &[[f32; 4]], scores: &[f32], threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut pick = vec![];
    while let Some(i) = order.pop() {
        pick.push(i);
        let bi = &boxes[i];
        order.retain(|&j| {
            let bj = &boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + 1.0).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + 1.0).max(0.0);
            let inter = w * h;
            inter / area(bi).min(area(bj)) <= threshold
        });
    }
    pick
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_matches_the_reference_scales() {
        // 512x512, min_face 20: 0.6 · 0.709^k while 512 · 0.6 · 0.709^k ≥ 12.
        let s = pyramid(512, 512, &DetectParams::default());
        assert_eq!(s.len(), 10);
        assert!((s[0] - 0.6).abs() < 1e-12 && (s[1] - 0.6 * 0.709).abs() < 1e-12);
        assert!(pyramid(19, 100, &DetectParams::default()).is_empty());
    }

    #[test]
    fn area_resize_averages_whole_and_partial_windows() {
        // A 3x1 gray ramp to 2x1: windows [0, 2) and [1, 3).
        let data = [0u8, 0, 0, 30, 30, 30, 90, 90, 90];
        let img = Rgb {
            data: &data,
            width: 3,
            height: 1,
        };
        let mut out = vec![0.0; 6];
        area_resize(&img, [0, 0, 3, 1], 1, 2, &mut out);
        let want = [15.0f32, 60.0].map(|v| (v - 127.5) * 0.0078125);
        assert_eq!(out[..2], want);
        assert_eq!(out[2..4], want);
    }

    /// The CPU path (Winograd kernels on mosaics, hand-written pools and heads) computes what
    /// Burn's layers compute, at sizes with odd and even sides and partial pool windows.
    #[test]
    fn cpu_kernels_agree_with_burns_layers() {
        let device = Device::flex();
        let det = crate::kinds::face_detect::builtin_detector(&device).expect("weights");
        let mut state = 12345u32;
        let mut noise = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                    (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
                })
                .collect()
        };
        let close = |what: &str, a: &[f32], b: &[f32]| {
            assert_eq!(a.len(), b.len(), "{what}: lengths");
            let d = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(d < 1e-4, "{what}: differs by {d}");
        };
        for (h, w) in [(12, 12), (17, 23), (40, 31)] {
            let n = 2;
            let x = noise(n * 3 * h * w);
            let (reg, prob, oh, ow) = det.pnet.forward_cpu(&x, n, h, w).expect("the CPU path");
            let (r, p) = det.pnet.forward(cpu_tensor(x, [n, 3, h, w], &device));
            assert_eq!(p.dims(), [n, 2, oh, ow], "P-Net output size at {h}x{w}");
            close("P-Net regression", &reg, &floats(r));
            close("P-Net probabilities", &prob, &floats(p));
        }
        let x = noise(5 * 3 * 24 * 24);
        let (reg, prob) = det.rnet.forward_host(&x, 5, &device);
        let (r, p) = floats2(det.rnet.forward(cpu_tensor(x, [5, 3, 24, 24], &device)));
        close("R-Net regression", &reg, &r);
        close("R-Net probabilities", &prob, &p);
        let x = noise(3 * 3 * 48 * 48);
        let (reg, marks, prob) = det.onet.forward_host(&x, 3, &device);
        let (r, m, p) = det.onet.forward(cpu_tensor(x, [3, 3, 48, 48], &device));
        close("O-Net regression", &reg, &floats(r));
        close("O-Net landmarks", &marks, &floats(m));
        close("O-Net probabilities", &prob, &floats(p));
    }

    #[test]
    fn crop_regions_clip_like_the_reference() {
        assert_eq!(
            crop_region([-5.5, 2.7, 10.2, 30.0], 20, 20),
            Some([1, 20, 0, 10])
        );
        assert_eq!(crop_region([25.0, 2.0, 30.0, 9.0], 20, 20), None);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let c = |b: [f32; 4], score| Cand {
            b,
            score,
            reg: [0.0; 4],
        };
        let cands = [
            c([0.0, 0.0, 10.0, 10.0], 0.8),
            c([1.0, 1.0, 11.0, 11.0], 0.9),
            c([50.0, 50.0, 60.0, 60.0], 0.7),
        ];
        assert_eq!(nms_iou(&cands, 0.5), vec![1, 2]);
        let boxes: Vec<[f32; 4]> = cands.iter().map(|c| c.b).collect();
        // A small box inside a big one overlaps it fully by the "Min" measure.
        let boxes = [boxes[0], [2.0, 2.0, 5.0, 5.0], boxes[2]];
        assert_eq!(nms_min(&boxes, &[0.8, 0.9, 0.7], 0.7), vec![1, 2]);
    }
}
