//! Real-ESRGAN architecture detection: which network a checkpoint holds (SRVGGNetCompact or
//! RRDBNet, and their hyper-parameters), recognised from its keys and shapes the way spandrel
//! does it, and the check that every key the network needs is there with the right shape.
//! Every error names the file and what was expected.
//!
//! Pure Rust on a [`Checkpoint`]; moved here from the checkpoint reader, which knows file
//! formats only.

use crate::weights::{Checkpoint, WeightsError};
use std::fmt;

/// SRVGGNetCompact (Real-ESRGAN's compact VGG-style network: realesr-animevideov3,
/// realesr-general-x4v3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrvggConfig {
    pub num_in_ch: usize,
    pub num_out_ch: usize,
    pub num_feat: usize,
    pub num_conv: usize,
    pub upscale: usize,
}

/// RRDBNet (ESRGAN / Real-ESRGAN x4plus, x4plus_anime_6B, x2plus).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RrdbConfig {
    pub num_in_ch: usize,
    pub num_out_ch: usize,
    pub num_feat: usize,
    pub num_block: usize,
    pub num_grow_ch: usize,
    /// 4, 2 (input pixel-unshuffled by 2) or 1 (by 4).
    pub scale: usize,
}

/// A recognised architecture and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Srvgg(SrvggConfig),
    Rrdb(RrdbConfig),
}

impl Arch {
    /// The network's own scale factor.
    pub fn scale(&self) -> usize {
        match self {
            Arch::Srvgg(c) => c.upscale,
            Arch::Rrdb(c) => c.scale,
        }
    }
    pub fn in_channels(&self) -> usize {
        match self {
            Arch::Srvgg(c) => c.num_in_ch,
            Arch::Rrdb(c) => c.num_in_ch,
        }
    }
    pub fn out_channels(&self) -> usize {
        match self {
            Arch::Srvgg(c) => c.num_out_ch,
            Arch::Rrdb(c) => c.num_out_ch,
        }
    }
    /// Every key the architecture reads, with its shape.
    pub fn expected(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = vec![];
        let mut conv = |name: &str, o: usize, i: usize| {
            v.push((format!("{name}.weight"), vec![o, i, 3, 3]));
            v.push((format!("{name}.bias"), vec![o]));
        };
        match self {
            Arch::Srvgg(c) => {
                conv("body.0", c.num_feat, c.num_in_ch);
                for k in 0..c.num_conv {
                    conv(&format!("body.{}", 2 * (k + 1)), c.num_feat, c.num_feat);
                }
                let last = 2 * (c.num_conv + 1);
                conv(
                    &format!("body.{last}"),
                    c.num_out_ch * c.upscale * c.upscale,
                    c.num_feat,
                );
                for k in 0..=c.num_conv {
                    v.push((format!("body.{}.weight", 2 * k + 1), vec![c.num_feat]));
                }
            }
            Arch::Rrdb(c) => {
                let unshuffle = match c.scale {
                    2 => 4,
                    1 => 16,
                    _ => 1,
                };
                let (nf, gc) = (c.num_feat, c.num_grow_ch);
                conv("conv_first", nf, c.num_in_ch * unshuffle);
                for b in 0..c.num_block {
                    for r in 1..=3 {
                        let p = format!("body.{b}.rdb{r}");
                        conv(&format!("{p}.conv1"), gc, nf);
                        conv(&format!("{p}.conv2"), gc, nf + gc);
                        conv(&format!("{p}.conv3"), gc, nf + 2 * gc);
                        conv(&format!("{p}.conv4"), gc, nf + 3 * gc);
                        conv(&format!("{p}.conv5"), nf, nf + 4 * gc);
                    }
                }
                conv("conv_body", nf, nf);
                conv("conv_up1", nf, nf);
                conv("conv_up2", nf, nf);
                conv("conv_hr", nf, nf);
                conv("conv_last", c.num_out_ch, nf);
            }
        }
        v
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::Srvgg(c) => write!(
                f,
                "SRVGGNetCompact x{} (num_feat {}, num_conv {}, PReLU)",
                c.upscale, c.num_feat, c.num_conv
            ),
            Arch::Rrdb(c) => write!(
                f,
                "RRDBNet x{} (num_feat {}, num_block {}, num_grow_ch {})",
                c.scale, c.num_feat, c.num_block, c.num_grow_ch
            ),
        }
    }
}

fn shape_of<'a>(ck: &'a Checkpoint, key: &str) -> Option<&'a [usize]> {
    ck.tensors.get(key).map(|t| t.shape.as_slice())
}

/// Recognises the architecture from the keys and shapes, then checks that every key it needs
/// is present with the right shape. The error lists what is missing or mis-shaped.
pub fn detect(ck: &Checkpoint) -> Result<Arch, WeightsError> {
    let path = ck.path.display().to_string();
    let arch_err = |why: String| WeightsError::Architecture {
        path: path.clone(),
        why,
    };
    let arch = if ck.tensors.contains_key("conv_first.weight")
        && ck.tensors.keys().any(|k| k.starts_with("body.0.rdb1."))
    {
        let first = shape_of(ck, "conv_first.weight").unwrap_or(&[]);
        let [nf, cin, 3, 3] = *first else {
            return Err(arch_err(format!(
                "RRDBNet key `conv_first.weight` has shape {first:?}, expected [num_feat, in_ch, 3, 3]"
            )));
        };
        let gc = shape_of(ck, "body.0.rdb1.conv1.weight")
            .and_then(|s| s.first().copied())
            .ok_or_else(|| arch_err("RRDBNet key `body.0.rdb1.conv1.weight` is missing".into()))?;
        let num_block = (0..)
            .take_while(|b| {
                ck.tensors
                    .contains_key(&format!("body.{b}.rdb1.conv1.weight"))
            })
            .count();
        let num_out_ch = shape_of(ck, "conv_last.weight")
            .and_then(|s| s.first().copied())
            .unwrap_or(3);
        let (num_in_ch, scale) = match cin {
            c if c % 16 == 0 && c / 16 <= 4 && c / 16 >= 1 && c != 4 => (c / 16, 1),
            c if c % 4 == 0 && c / 4 <= 4 && c / 4 >= 1 && c > 4 => (c / 4, 2),
            c => (c, 4),
        };
        Arch::Rrdb(RrdbConfig {
            num_in_ch,
            num_out_ch,
            num_feat: nf,
            num_block,
            num_grow_ch: gc,
            scale,
        })
    } else if ck.tensors.contains_key("body.0.weight")
        && shape_of(ck, "body.0.weight").is_some_and(|s| s.len() == 4)
    {
        let first = shape_of(ck, "body.0.weight").unwrap_or(&[]);
        let (nf, cin) = (first[0], first[1]);
        // Convs sit at even indices; the last one is the highest 4-D `body.N.weight`.
        let last = ck
            .tensors
            .iter()
            .filter_map(|(k, t)| {
                let n = k.strip_prefix("body.")?.strip_suffix(".weight")?;
                let n: usize = n.parse().ok()?;
                (t.shape.len() == 4).then_some(n)
            })
            .max()
            .unwrap_or(0);
        if last < 2 || last % 2 != 0 {
            return Err(arch_err(format!(
                "looks like SRVGGNetCompact (`body.0.weight`) but its last convolution is `body.{last}`, expected an even index >= 2"
            )));
        }
        if !ck.tensors.contains_key("body.1.weight") {
            return Err(arch_err(
                "looks like SRVGGNetCompact but has no PReLU weights (`body.1.weight`); only the PReLU variant (as published by Real-ESRGAN) is supported".into(),
            ));
        }
        let out = shape_of(ck, &format!("body.{last}.weight")).map_or(0, |s| s[0]);
        let num_out_ch = cin;
        let up2 = out / num_out_ch.max(1);
        let upscale = (up2 as f64).sqrt().round() as usize;
        if upscale * upscale * num_out_ch != out {
            return Err(arch_err(format!(
                "SRVGGNetCompact's last convolution `body.{last}.weight` has {out} output channels, expected {num_out_ch} x scale²"
            )));
        }
        Arch::Srvgg(SrvggConfig {
            num_in_ch: cin,
            num_out_ch,
            num_feat: nf,
            num_conv: last / 2 - 1,
            upscale,
        })
    } else {
        let mut keys: Vec<&str> = ck.tensors.keys().map(String::as_str).take(6).collect();
        if ck.tensors.len() > 6 {
            keys.push("…");
        }
        return Err(arch_err(format!(
            "not a Real-ESRGAN checkpoint: expected the keys of SRVGGNetCompact (`body.0.weight`, `body.1.weight`, …) or RRDBNet (`conv_first.weight`, `body.0.rdb1.conv1.weight`, …), found {} tensors: {}",
            ck.tensors.len(),
            keys.join(", ")
        )));
    };
    check_keys(ck, &arch)?;
    Ok(arch)
}

/// Checks that the checkpoint has every key of `arch` with the right shape.
pub fn check_keys(ck: &Checkpoint, arch: &Arch) -> Result<(), WeightsError> {
    let mut missing = vec![];
    let mut misshaped = vec![];
    for (key, shape) in arch.expected() {
        match ck.tensors.get(&key) {
            None => missing.push(format!("`{key}` {shape:?}")),
            Some(t) if t.shape != shape => {
                misshaped.push(format!("`{key}` is {:?}, expected {shape:?}", t.shape))
            }
            Some(_) => {}
        }
    }
    if missing.is_empty() && misshaped.is_empty() {
        return Ok(());
    }
    let list = |v: &[String]| {
        let mut s = v.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 8 {
            s.push_str(&format!(" and {} more", v.len() - 8));
        }
        s
    };
    let mut why = format!("looks like {arch} but does not fit it:");
    if !missing.is_empty() {
        why.push_str(&format!(" missing keys: {};", list(&missing)));
    }
    if !misshaped.is_empty() {
        why.push_str(&format!(" mis-shaped keys: {};", list(&misshaped)));
    }
    why.pop();
    Err(WeightsError::Architecture {
        path: ck.path.display().to_string(),
        why,
    })
}
