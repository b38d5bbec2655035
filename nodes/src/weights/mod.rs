//! Checkpoint loading: `.safetensors` and PyTorch `.pth` files (the zip format of
//! `torch.save` since PyTorch 1.6) as published, into plain f32 arrays by name.
//!
//! - A `.pth` holds a pickled object (in a zip since PyTorch 1.6; the legacy format before
//!   it, pickles and raw storages in a plain file, is read too: facenet-pytorch's MTCNN
//!   weights are published in it); the state dict is taken from `params_ema`, `params`,
//!   `state_dict`, `model` or `net_g` when the top level is a wrapper dict, or the top level
//!   itself when its values are tensors. A `module.` prefix (from `DataParallel`) is removed.
//! - fp16, bf16 and f64 stored weights are converted to f32.
//! - The unpickler is a small, safe one: it understands the opcodes `torch.save` writes and
//!   never runs code. Anything else is reported as "not a checkpoint".
//!
//! Every error names the file and what was expected. Architecture detection from the keys
//! and shapes (the way spandrel does it) belongs to the networks, not to the file formats: see
//! `models::realesrgan::detect`.
//!
//! This module owns the checkpoint formats only: [`Checkpoint`], [`load`] / [`from_bytes`] and
//! their errors here, the `.safetensors` reader in `safetensors` (on the `safetensors` crate),
//! the `torch.save` zip and its pickle in `pickle` (zip container via the `zip` crate).
//!
//! Pure Rust, no Burn: compiled in every build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod pickle;
mod safetensors;

/// One named array of a checkpoint, converted to f32, row-major (C order).
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl RawTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The tensors of a checkpoint file, by name (a PyTorch state dict).
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    /// Which file format it was: `safetensors`, `pth` or `pth-legacy`.
    pub format: &'static str,
    /// For a `.pth`: which entry of the top-level dict held the weights (`params_ema`…).
    pub entry: Option<String>,
    pub tensors: BTreeMap<String, RawTensor>,
}

/// Why a checkpoint could not be used. Every message names the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read weights file `{path}`: {error}")]
    Io { path: String, error: String },
    #[error(
        "weights file `{path}` is not a checkpoint: {why}; expected a PyTorch .pth (zip) or a .safetensors file"
    )]
    NotCheckpoint { path: String, why: String },
    #[error("weights file `{path}` is damaged or truncated: {why}")]
    Damaged { path: String, why: String },
    #[error("weights file `{path}`: {why}")]
    Architecture { path: String, why: String },
}

impl WeightsError {
    pub fn path(&self) -> &str {
        match self {
            WeightsError::Io { path, .. }
            | WeightsError::NotCheckpoint { path, .. }
            | WeightsError::Damaged { path, .. }
            | WeightsError::Architecture { path, .. } => path,
        }
    }
}

/// Loads a `.pth` or `.safetensors` file; the format is recognised from its first bytes,
/// not its name.
pub fn load(path: &Path) -> Result<Checkpoint, WeightsError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| WeightsError::Io {
        path: shown.clone(),
        error: e.to_string(),
    })?;
    from_bytes(path, &bytes)
}

/// The key and version a loaded network is kept under in a run's `Shared` (see
/// `vidflow_engine::node::Shared::keyed`): the key names the file (absolute path, or the
/// built-in weights) and the options the network was built with; the version is the file's
/// size and modification time, so a checkpoint replaced between a worker's chunks is loaded
/// again, in place of the old one.
pub fn cache_key(
    kind: &str,
    path: Option<&Path>,
    options: impl std::fmt::Debug,
) -> (String, String) {
    let Some(p) = path else {
        return (format!("{kind} built-in {options:?}"), String::new());
    };
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let version = std::fs::metadata(p)
        .map(|m| format!("{} {:?}", m.len(), m.modified().ok()))
        .unwrap_or_default();
    (format!("{kind} {} {options:?}", abs.display()), version)
}

/// Parses checkpoint bytes; `path` is used in messages.
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint, WeightsError> {
    let shown = path.display().to_string();
    let not = |why: &str| WeightsError::NotCheckpoint {
        path: shown.clone(),
        why: why.to_string(),
    };
    if bytes.len() < 8 {
        return Err(not(&format!("the file has only {} bytes", bytes.len())));
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        let (entry, tensors) = pickle::read(bytes).map_err(|e| e.into_error(&shown))?;
        return finish(path, "pth", entry, tensors);
    }
    if pickle::is_legacy(bytes) {
        let (entry, tensors) = pickle::read_legacy(bytes).map_err(|e| e.into_error(&shown))?;
        return finish(path, "pth-legacy", entry, tensors);
    }
    if bytes[0] == 0x80 && bytes.len() > 2 && bytes[1] <= 5 {
        return Err(not(
            "it is a pickle without torch.save's magic number (a plain pickle, not a checkpoint)",
        ));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let looks_safetensors = bytes.get(8) == Some(&b'{') && header_len < (1 << 30);
    if !looks_safetensors {
        return Err(not(
            "it starts neither with a zip signature (PyTorch .pth) nor with a safetensors header",
        ));
    }
    let tensors =
        safetensors::read(bytes, header_len as usize).map_err(|e| e.into_error(&shown))?;
    finish(path, "safetensors", None, tensors)
}

fn finish(
    path: &Path,
    format: &'static str,
    entry: Option<String>,
    tensors: BTreeMap<String, RawTensor>,
) -> Result<Checkpoint, WeightsError> {
    if tensors.is_empty() {
        return Err(WeightsError::NotCheckpoint {
            path: path.display().to_string(),
            why: "it holds no tensors".into(),
        });
    }
    // Strip the `module.` prefix that `nn.DataParallel` adds, when every key has it.
    let tensors = if tensors.keys().all(|k| k.starts_with("module.")) {
        tensors
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_string(), v))
            .collect()
    } else {
        tensors
    };
    Ok(Checkpoint {
        path: path.to_path_buf(),
        format,
        entry,
        tensors,
    })
}

/// A parse failure before the file name is attached.
enum ParseError {
    Not(String),
    Damaged(String),
}

impl ParseError {
    fn into_error(self, path: &str) -> WeightsError {
        match self {
            ParseError::Not(why) => WeightsError::NotCheckpoint {
                path: path.into(),
                why,
            },
            ParseError::Damaged(why) => WeightsError::Damaged {
                path: path.into(),
                why,
            },
        }
    }
}

/// Element types found in checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DType {
    F32,
    F16,
    BF16,
    F64,
}

impl DType {
    fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F64 => 8,
        }
    }
    /// Converts `n` little-endian elements starting at element `offset` of `bytes`.
    fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            DType::F64 => bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
        }
    }
}

/// IEEE half → single, exact (subnormals, infinities and NaN included).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_is_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn short_and_foreign_files_are_not_checkpoints() {
        let p = Path::new("x.pth");
        let e = from_bytes(p, b"hi").unwrap_err();
        assert!(e.to_string().contains("x.pth"), "{e}");
        let e = from_bytes(p, b"hello world, this is text").unwrap_err();
        assert!(matches!(e, WeightsError::NotCheckpoint { .. }), "{e}");
    }
}
