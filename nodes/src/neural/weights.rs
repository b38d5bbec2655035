//! Checkpoint loading: `.safetensors` and PyTorch `.pth` files (the zip format of
//! `torch.save` since PyTorch 1.6) as published, into plain f32 arrays by name.
//!
//! - A `.pth` holds a pickled object; the state dict is taken from `params_ema`, `params`,
//!   `state_dict`, `model` or `net_g` when the top level is a wrapper dict, or the top level
//!   itself when its values are tensors. A `module.` prefix (from `DataParallel`) is removed.
//! - fp16, bf16 and f64 stored weights are converted to f32.
//! - The unpickler is a small, safe one: it understands the opcodes `torch.save` writes and
//!   never runs code. Anything else is reported as "not a checkpoint".
//!
//! Architecture detection from the keys and shapes (the way spandrel does it) is
//! [`detect`]; every error names the file and what was expected.
//!
//! Pure Rust, no Burn: compiled in every build.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

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
    /// Which file format it was: `safetensors` or `pth`.
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
        let (entry, tensors) = pth::read(bytes).map_err(|e| e.into_error(&shown))?;
        return finish(path, "pth", entry, tensors);
    }
    if bytes[0] == 0x80 && bytes.len() > 2 && bytes[1] <= 5 {
        return Err(WeightsError::NotCheckpoint {
            path: shown,
            why: "it is a legacy (pre-1.6, non-zip) PyTorch file, which is not supported; re-save it with `torch.save(obj, path)` from PyTorch >= 1.6 or convert it to .safetensors".into(),
        });
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

mod safetensors {
    use super::{DType, ParseError, RawTensor};
    use std::collections::BTreeMap;

    pub(super) fn read(
        bytes: &[u8],
        header_len: usize,
    ) -> Result<BTreeMap<String, RawTensor>, ParseError> {
        let start = 8 + header_len;
        if bytes.len() < start {
            return Err(ParseError::Damaged(format!(
                "its safetensors header says {header_len} bytes but the file has only {} after the length",
                bytes.len() - 8
            )));
        }
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..start])
            .map_err(|e| ParseError::Not(format!("its safetensors header is not JSON ({e})")))?;
        let obj = header
            .as_object()
            .ok_or_else(|| ParseError::Not("its safetensors header is not a JSON object".into()))?;
        let data = &bytes[start..];
        let mut out = BTreeMap::new();
        for (name, info) in obj {
            if name == "__metadata__" {
                continue;
            }
            let bad = |what: &str| ParseError::Not(format!("safetensors entry `{name}`: {what}"));
            let dtype = match info.get("dtype").and_then(|d| d.as_str()) {
                Some("F32") => DType::F32,
                Some("F16") => DType::F16,
                Some("BF16") => DType::BF16,
                Some("F64") => DType::F64,
                // Bookkeeping (BatchNorm's `num_batches_tracked`), as in `.pth` files.
                Some("I64" | "I32" | "I16" | "I8" | "U8" | "BOOL") => continue,
                Some(other) => {
                    return Err(bad(&format!(
                        "dtype {other} is not a float type (F32, F16, BF16, F64)"
                    )));
                }
                None => return Err(bad("no dtype")),
            };
            let shape: Vec<usize> = info
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad("no shape"))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("shape is not a list of sizes"))?;
            let offsets: Vec<usize> = info
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad("no data_offsets"))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| bad("data_offsets are not numbers"))?;
            let [b, e] = offsets[..] else {
                return Err(bad("data_offsets is not [begin, end]"));
            };
            let numel: usize = shape.iter().product();
            if e < b || e - b != numel * dtype.size() {
                return Err(bad(&format!(
                    "data_offsets [{b}, {e}] do not match shape {shape:?} of {dtype:?}"
                )));
            }
            if e > data.len() {
                return Err(ParseError::Damaged(format!(
                    "tensor `{name}` needs bytes {b}..{e} of the data section, which has only {} bytes",
                    data.len()
                )));
            }
            out.insert(
                name.clone(),
                RawTensor {
                    shape,
                    data: dtype.decode(&data[b..e]),
                },
            );
        }
        Ok(out)
    }
}

mod zip {
    //! Just enough of the zip format to read `torch.save` archives (stored entries).
    use super::ParseError;

    pub(super) struct Entry {
        pub name: String,
        pub method: u16,
        pub size: usize,
        pub local_offset: usize,
    }

    fn u16_at(b: &[u8], o: usize) -> Option<u16> {
        Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
    }
    fn u32_at(b: &[u8], o: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
    }
    fn u64_at(b: &[u8], o: usize) -> Option<u64> {
        Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
    }

    pub(super) fn entries(b: &[u8]) -> Result<Vec<Entry>, ParseError> {
        let damaged = |w: &str| ParseError::Damaged(format!("its zip archive {w}"));
        // End of central directory: the last "PK\x05\x06" within the final 64 KiB + 22.
        let lo = b.len().saturating_sub(65_557);
        let eocd = (lo..b.len().saturating_sub(21))
            .rev()
            .find(|&i| &b[i..i + 4] == b"PK\x05\x06")
            .ok_or_else(|| damaged("has no end-of-central-directory record (cut short?)"))?;
        let mut count = u16_at(b, eocd + 10).unwrap_or(0) as u64;
        let mut cd_offset = u32_at(b, eocd + 16).unwrap_or(0) as u64;
        if (count == 0xffff || cd_offset == 0xffff_ffff) && eocd >= 20 {
            // Zip64: the locator sits just before the EOCD record.
            let loc = eocd - 20;
            if &b[loc..loc + 4] == b"PK\x06\x07" {
                let z64 =
                    u64_at(b, loc + 8).ok_or_else(|| damaged("has a bad zip64 locator"))? as usize;
                if b.get(z64..z64 + 4) != Some(b"PK\x06\x06") {
                    return Err(damaged("has a bad zip64 record"));
                }
                count = u64_at(b, z64 + 32).ok_or_else(|| damaged("has a bad zip64 record"))?;
                cd_offset = u64_at(b, z64 + 48).ok_or_else(|| damaged("has a bad zip64 record"))?;
            }
        }
        let mut out = Vec::new();
        let mut p = cd_offset as usize;
        for _ in 0..count {
            if b.get(p..p + 4) != Some(b"PK\x01\x02") {
                return Err(damaged("has a broken central directory"));
            }
            let bad = || damaged("has a broken central directory entry");
            let method = u16_at(b, p + 10).ok_or_else(bad)?;
            let mut compressed = u32_at(b, p + 20).ok_or_else(bad)? as u64;
            let mut size = u32_at(b, p + 24).ok_or_else(bad)? as u64;
            let name_len = u16_at(b, p + 28).ok_or_else(bad)? as usize;
            let extra_len = u16_at(b, p + 30).ok_or_else(bad)? as usize;
            let comment_len = u16_at(b, p + 32).ok_or_else(bad)? as usize;
            let mut local = u32_at(b, p + 42).ok_or_else(bad)? as u64;
            let name = b.get(p + 46..p + 46 + name_len).ok_or_else(bad)?;
            let name = String::from_utf8_lossy(name).into_owned();
            // Zip64 extended information (id 1) replaces the 0xffffffff fields, in order.
            let extra = b
                .get(p + 46 + name_len..p + 46 + name_len + extra_len)
                .ok_or_else(bad)?;
            let mut e = 0;
            while e + 4 <= extra.len() {
                let id = u16_at(extra, e).unwrap_or(0);
                let len = u16_at(extra, e + 2).unwrap_or(0) as usize;
                if id == 1 {
                    let mut q = e + 4;
                    for field in [&mut size, &mut compressed, &mut local] {
                        if *field == 0xffff_ffff {
                            *field = u64_at(extra, q).ok_or_else(bad)?;
                            q += 8;
                        }
                    }
                }
                e += 4 + len;
            }
            out.push(Entry {
                name,
                method,
                size: size as usize,
                local_offset: local as usize,
            });
            p += 46 + name_len + extra_len + comment_len;
        }
        Ok(out)
    }

    /// The bytes of a stored (uncompressed) entry.
    pub(super) fn data<'a>(b: &'a [u8], e: &Entry) -> Result<&'a [u8], ParseError> {
        let o = e.local_offset;
        if b.get(o..o + 4) != Some(b"PK\x03\x04") {
            return Err(ParseError::Damaged(format!(
                "zip entry `{}` has no local header",
                e.name
            )));
        }
        if e.method != 0 {
            return Err(ParseError::Not(format!(
                "zip entry `{}` is compressed (method {}); torch.save writes stored entries",
                e.name, e.method
            )));
        }
        let name_len = u16_at(b, o + 26).unwrap_or(0) as usize;
        let extra_len = u16_at(b, o + 28).unwrap_or(0) as usize;
        let start = o + 30 + name_len + extra_len;
        b.get(start..start + e.size).ok_or_else(|| {
            ParseError::Damaged(format!(
                "zip entry `{}` needs {} bytes at offset {start}, past the end of the file",
                e.name, e.size
            ))
        })
    }
}

mod pth {
    //! The pickle inside a `torch.save` zip, read by a small stack machine that builds plain
    //! values; tensors are rebuilt from their storages in `data/<key>`.
    use super::{DType, ParseError, RawTensor, zip};
    use std::collections::BTreeMap;

    /// Pickle values; the payloads of scalars are kept for debugging though only tensors,
    /// strings and containers are read.
    #[derive(Clone, Debug)]
    #[allow(dead_code)]
    enum V {
        None,
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
        Bytes(Vec<u8>),
        Tuple(Vec<V>),
        List(Vec<V>),
        Dict(Vec<(V, V)>),
        Global(String, String),
        Storage {
            key: String,
            dtype: Option<DType>,
        },
        Tensor(Box<TensorRef>),
        /// An object built by a callable this reader does not model (kept for messages).
        Object(String),
        Mark,
    }

    #[derive(Clone, Debug)]
    struct TensorRef {
        key: String,
        dtype: Option<DType>,
        offset: usize,
        size: Vec<usize>,
        stride: Vec<usize>,
    }

    fn storage_dtype(name: &str) -> Option<DType> {
        match name {
            "FloatStorage" => Some(DType::F32),
            "HalfStorage" => Some(DType::F16),
            "BFloat16Storage" => Some(DType::BF16),
            "DoubleStorage" => Some(DType::F64),
            _ => None,
        }
    }

    fn as_usize_list(v: &V) -> Option<Vec<usize>> {
        match v {
            V::Tuple(items) | V::List(items) => items
                .iter()
                .map(|i| match i {
                    V::Int(n) if *n >= 0 => Some(*n as usize),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    struct Machine<'a> {
        code: &'a [u8],
        pos: usize,
        stack: Vec<V>,
        memo: BTreeMap<u32, V>,
    }

    impl<'a> Machine<'a> {
        fn bad(&self, what: &str) -> ParseError {
            ParseError::Not(format!("its pickle (data.pkl) {what} at byte {}", self.pos))
        }
        fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
            let s = self
                .code
                .get(self.pos..self.pos + n)
                .ok_or_else(|| ParseError::Damaged("its pickle (data.pkl) is cut short".into()))?;
            self.pos += n;
            Ok(s)
        }
        fn u8(&mut self) -> Result<u8, ParseError> {
            Ok(self.take(1)?[0])
        }
        fn u16(&mut self) -> Result<u16, ParseError> {
            Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
        }
        fn u32(&mut self) -> Result<u32, ParseError> {
            Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
        }
        fn line(&mut self) -> Result<String, ParseError> {
            let rest = &self.code[self.pos.min(self.code.len())..];
            let end = rest
                .iter()
                .position(|&c| c == b'\n')
                .ok_or_else(|| self.bad("has an unterminated line"))?;
            let s = String::from_utf8_lossy(&rest[..end]).into_owned();
            self.pos += end + 1;
            Ok(s)
        }
        fn pop(&mut self) -> Result<V, ParseError> {
            self.stack
                .pop()
                .ok_or_else(|| self.bad("pops an empty stack"))
        }
        fn pop_mark(&mut self) -> Result<Vec<V>, ParseError> {
            let m = self
                .stack
                .iter()
                .rposition(|v| matches!(v, V::Mark))
                .ok_or_else(|| self.bad("has no mark"))?;
            let items = self.stack.split_off(m + 1);
            self.stack.pop();
            Ok(items)
        }
        fn top(&mut self) -> Result<&mut V, ParseError> {
            let pos = self.pos;
            self.stack.last_mut().ok_or(ParseError::Not(format!(
                "its pickle (data.pkl) uses an empty stack at byte {pos}"
            )))
        }
        fn str_of(&self, bytes: &[u8]) -> V {
            V::Str(String::from_utf8_lossy(bytes).into_owned())
        }

        fn run(&mut self) -> Result<V, ParseError> {
            loop {
                let op = self.u8()?;
                match op {
                    0x80 => {
                        self.u8()?; // PROTO
                    }
                    0x95 => {
                        self.take(8)?; // FRAME
                    }
                    b'.' => return self.pop(), // STOP
                    b'(' => self.stack.push(V::Mark),
                    b'}' => self.stack.push(V::Dict(vec![])),
                    b']' => self.stack.push(V::List(vec![])),
                    b')' => self.stack.push(V::Tuple(vec![])),
                    b'N' => self.stack.push(V::None),
                    0x88 => self.stack.push(V::Bool(true)),
                    0x89 => self.stack.push(V::Bool(false)),
                    b'J' => {
                        let n = self.u32()? as i32;
                        self.stack.push(V::Int(n as i64))
                    }
                    b'K' => {
                        let n = self.u8()?;
                        self.stack.push(V::Int(n as i64))
                    }
                    b'M' => {
                        let n = self.u16()?;
                        self.stack.push(V::Int(n as i64))
                    }
                    0x8a => {
                        // LONG1
                        let n = self.u8()? as usize;
                        let b = self.take(n)?;
                        let mut v: i64 = 0;
                        for (i, byte) in b.iter().enumerate().take(8) {
                            v |= (*byte as i64) << (8 * i);
                        }
                        if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                            v -= 1i64 << (8 * n);
                        }
                        self.stack.push(V::Int(v))
                    }
                    b'G' => {
                        let b = self.take(8)?;
                        self.stack
                            .push(V::Float(f64::from_be_bytes(b.try_into().expect("8"))))
                    }
                    b'X' => {
                        let n = self.u32()? as usize;
                        let b = self.take(n)?;
                        let v = self.str_of(b);
                        self.stack.push(v)
                    }
                    0x8c => {
                        let n = self.u8()? as usize;
                        let b = self.take(n)?;
                        let v = self.str_of(b);
                        self.stack.push(v)
                    }
                    0x8d => {
                        let n = u64::from_le_bytes(self.take(8)?.try_into().expect("8")) as usize;
                        let b = self.take(n)?;
                        let v = self.str_of(b);
                        self.stack.push(v)
                    }
                    b'U' => {
                        let n = self.u8()? as usize;
                        let b = self.take(n)?;
                        let v = self.str_of(b);
                        self.stack.push(v)
                    }
                    b'T' => {
                        let n = self.u32()? as usize;
                        let b = self.take(n)?;
                        let v = self.str_of(b);
                        self.stack.push(v)
                    }
                    b'C' => {
                        let n = self.u8()? as usize;
                        let b = self.take(n)?.to_vec();
                        self.stack.push(V::Bytes(b))
                    }
                    b'B' => {
                        let n = self.u32()? as usize;
                        let b = self.take(n)?.to_vec();
                        self.stack.push(V::Bytes(b))
                    }
                    b'c' => {
                        let module = self.line()?;
                        let name = self.line()?;
                        self.stack.push(V::Global(module, name))
                    }
                    0x93 => {
                        let name = self.pop()?;
                        let module = self.pop()?;
                        match (module, name) {
                            (V::Str(m), V::Str(n)) => self.stack.push(V::Global(m, n)),
                            _ => return Err(self.bad("has a STACK_GLOBAL without names")),
                        }
                    }
                    b'q' => {
                        let i = self.u8()? as u32;
                        let v = self.top()?.clone();
                        self.memo.insert(i, v);
                    }
                    b'r' => {
                        let i = self.u32()?;
                        let v = self.top()?.clone();
                        self.memo.insert(i, v);
                    }
                    0x94 => {
                        let i = self.memo.len() as u32;
                        let v = self.top()?.clone();
                        self.memo.insert(i, v);
                    }
                    b'h' => {
                        let i = self.u8()? as u32;
                        let v = self
                            .memo
                            .get(&i)
                            .cloned()
                            .ok_or_else(|| self.bad("reads an unset memo"))?;
                        self.stack.push(v)
                    }
                    b'j' => {
                        let i = self.u32()?;
                        let v = self
                            .memo
                            .get(&i)
                            .cloned()
                            .ok_or_else(|| self.bad("reads an unset memo"))?;
                        self.stack.push(v)
                    }
                    b't' => {
                        let items = self.pop_mark()?;
                        self.stack.push(V::Tuple(items))
                    }
                    0x85 => {
                        let a = self.pop()?;
                        self.stack.push(V::Tuple(vec![a]))
                    }
                    0x86 => {
                        let b = self.pop()?;
                        let a = self.pop()?;
                        self.stack.push(V::Tuple(vec![a, b]))
                    }
                    0x87 => {
                        let c = self.pop()?;
                        let b = self.pop()?;
                        let a = self.pop()?;
                        self.stack.push(V::Tuple(vec![a, b, c]))
                    }
                    b'l' => {
                        let items = self.pop_mark()?;
                        self.stack.push(V::List(items))
                    }
                    b'd' => {
                        let items = self.pop_mark()?;
                        let pairs = pairs(items);
                        self.stack.push(V::Dict(pairs))
                    }
                    b'a' => {
                        let v = self.pop()?;
                        if let V::List(l) = self.top()? {
                            l.push(v)
                        }
                    }
                    b'e' => {
                        let items = self.pop_mark()?;
                        if let V::List(l) = self.top()? {
                            l.extend(items)
                        }
                    }
                    b's' => {
                        let v = self.pop()?;
                        let k = self.pop()?;
                        if let V::Dict(d) = self.top()? {
                            d.push((k, v))
                        }
                    }
                    b'u' => {
                        let items = self.pop_mark()?;
                        let new = pairs(items);
                        if let V::Dict(d) = self.top()? {
                            d.extend(new)
                        }
                    }
                    0x8f => self.stack.push(V::List(vec![])), // EMPTY_SET
                    0x90 => {
                        let items = self.pop_mark()?; // ADDITEMS
                        if let V::List(l) = self.top()? {
                            l.extend(items)
                        }
                    }
                    0x91 => {
                        let items = self.pop_mark()?; // FROZENSET
                        self.stack.push(V::List(items))
                    }
                    b'Q' => {
                        // BINPERSID: ('storage', storage_type, key, location, numel)
                        let pid = self.pop()?;
                        let V::Tuple(t) = pid else {
                            return Err(self.bad("has a persistent id that is not a tuple"));
                        };
                        let dtype = match t.get(1) {
                            Some(V::Global(_, name)) => storage_dtype(name),
                            _ => None,
                        };
                        let key = match t.get(2) {
                            Some(V::Str(k)) => k.clone(),
                            Some(V::Int(k)) => k.to_string(),
                            _ => return Err(self.bad("has a storage without a key")),
                        };
                        self.stack.push(V::Storage { key, dtype })
                    }
                    b'R' => {
                        let args = self.pop()?;
                        let func = self.pop()?;
                        let v = self.reduce(func, args)?;
                        self.stack.push(v)
                    }
                    0x81 => {
                        // NEWOBJ
                        let args = self.pop()?;
                        let cls = self.pop()?;
                        let v = self.reduce(cls, args)?;
                        self.stack.push(v)
                    }
                    b'b' => {
                        // BUILD: state applied to an object. Dicts (OrderedDict `_metadata`) and
                        // tensors need nothing from it.
                        self.pop()?;
                    }
                    b'0' => {
                        self.pop()?;
                    }
                    b'2' => {
                        let v = self.top()?.clone();
                        self.stack.push(v)
                    }
                    b'1' => {
                        self.pop_mark()?;
                    }
                    other => {
                        return Err(self.bad(&format!(
                            "uses opcode 0x{other:02x}, which a torch.save checkpoint does not"
                        )));
                    }
                }
            }
        }

        fn reduce(&self, func: V, args: V) -> Result<V, ParseError> {
            let V::Global(module, name) = &func else {
                return Ok(V::Object("?".into()));
            };
            let args = match args {
                V::Tuple(a) => a,
                other => vec![other],
            };
            Ok(match (module.as_str(), name.as_str()) {
                ("collections", "OrderedDict") | ("builtins", "dict") => V::Dict(vec![]),
                ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                    let (Some(V::Storage { key, dtype }), Some(V::Int(offset))) =
                        (args.first(), args.get(1))
                    else {
                        return Err(self.bad("rebuilds a tensor without a storage"));
                    };
                    let size = args.get(2).and_then(as_usize_list);
                    let stride = args.get(3).and_then(as_usize_list);
                    let (Some(size), Some(stride)) = (size, stride) else {
                        return Err(self.bad("rebuilds a tensor without size and stride"));
                    };
                    V::Tensor(Box::new(TensorRef {
                        key: key.clone(),
                        dtype: *dtype,
                        offset: *offset as usize,
                        size,
                        stride,
                    }))
                }
                ("torch._utils", "_rebuild_parameter")
                | ("torch._utils", "_rebuild_parameter_with_state") => {
                    args.into_iter().next().unwrap_or(V::None)
                }
                _ => V::Object(format!("{module}.{name}")),
            })
        }
    }

    fn pairs(items: Vec<V>) -> Vec<(V, V)> {
        let mut it = items.into_iter();
        let mut out = vec![];
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        out
    }

    fn is_tensor_dict(d: &[(V, V)]) -> bool {
        d.iter().any(|(_, v)| matches!(v, V::Tensor(_)))
    }

    type Read = (Option<String>, BTreeMap<String, RawTensor>);

    pub(super) fn read(bytes: &[u8]) -> Result<Read, ParseError> {
        let entries = zip::entries(bytes)?;
        let pkl = entries
            .iter()
            .find(|e| e.name == "data.pkl" || e.name.ends_with("/data.pkl"))
            .ok_or_else(|| {
                ParseError::Not(
                    "it is a zip archive without data.pkl (not a torch.save file)".into(),
                )
            })?;
        let prefix = &pkl.name[..pkl.name.len() - "data.pkl".len()];
        let code = zip::data(bytes, pkl)?;
        let mut m = Machine {
            code,
            pos: 0,
            stack: vec![],
            memo: BTreeMap::new(),
        };
        let root = m.run()?;
        let V::Dict(top) = root else {
            return Err(ParseError::Not(
                "its pickled object is not a dict (a state dict or {'params': …})".into(),
            ));
        };
        // Choose the state dict.
        let (entry, dict) = if is_tensor_dict(&top) {
            (None, top)
        } else {
            let mut found = None;
            for want in ["params_ema", "params", "state_dict", "model", "net_g"] {
                if let Some((_, V::Dict(d))) = top
                    .iter()
                    .find(|(k, _)| matches!(k, V::Str(s) if s == want))
                    && is_tensor_dict(d)
                {
                    found = Some((Some(want.to_string()), d.clone()));
                    break;
                }
            }
            found.ok_or_else(|| {
                let keys: Vec<String> = top
                    .iter()
                    .filter_map(|(k, _)| match k {
                        V::Str(s) => Some(format!("`{s}`")),
                        _ => None,
                    })
                    .take(8)
                    .collect();
                ParseError::Not(format!(
                    "it holds a dict with keys [{}] and no state dict (expected tensors at the top level or under `params_ema`, `params` or `state_dict`)",
                    keys.join(", ")
                ))
            })?
        };
        let mut out = BTreeMap::new();
        for (k, v) in dict {
            let (V::Str(name), V::Tensor(t)) = (k, v) else {
                continue;
            };
            // Integer tensors are bookkeeping (BatchNorm's `num_batches_tracked`), never the
            // weights of a network we run: leave them out.
            let Some(dtype) = t.dtype else {
                continue;
            };
            let file = format!("{prefix}data/{}", t.key);
            let e = entries.iter().find(|e| e.name == file).ok_or_else(|| {
                ParseError::Damaged(format!(
                    "the storage of tensor `{name}` ({file}) is missing from the archive"
                ))
            })?;
            let storage = zip::data(bytes, e)?;
            let numel: usize = t.size.iter().product();
            let es = dtype.size();
            // Highest element index touched, to check the storage is large enough.
            let last = t.offset
                + t.size
                    .iter()
                    .zip(&t.stride)
                    .map(|(s, st)| s.saturating_sub(1) * st)
                    .sum::<usize>();
            if numel > 0 && (last + 1) * es > storage.len() {
                return Err(ParseError::Damaged(format!(
                    "tensor `{name}` needs {} bytes of storage {file}, which has {}",
                    (last + 1) * es,
                    storage.len()
                )));
            }
            let contiguous = {
                let mut expect = 1;
                let mut ok = true;
                for (s, st) in t.size.iter().zip(&t.stride).rev() {
                    if *s > 1 && *st != expect {
                        ok = false;
                    }
                    expect *= s;
                }
                ok
            };
            let data = if contiguous {
                dtype.decode(&storage[t.offset * es..(t.offset + numel) * es])
            } else {
                let all = dtype.decode(storage);
                let mut data = Vec::with_capacity(numel);
                let mut idx = vec![0usize; t.size.len()];
                for _ in 0..numel {
                    let o: usize =
                        t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
                    data.push(all[o]);
                    for d in (0..idx.len()).rev() {
                        idx[d] += 1;
                        if idx[d] < t.size[d] {
                            break;
                        }
                        idx[d] = 0;
                    }
                }
                data
            };
            out.insert(
                name,
                RawTensor {
                    shape: t.size.clone(),
                    data,
                },
            );
        }
        Ok((entry, out))
    }
}

// ---------------------------------------------------------------------------------------------
// Architecture detection

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
