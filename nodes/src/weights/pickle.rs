//! The pickle inside a `torch.save` zip, read by a small stack machine that builds plain
//! values; tensors are rebuilt from their storages in `data/<key>`. The zip container itself
//! is read by the `zip` crate. The legacy (pre-1.6) `torch.save` format, pickles and raw
//! storages one after the other in a plain file, is read by the same machine
//! ([`read_legacy`]).
//!
//! Why this pickle machine is our own code and not a crate (measured 2026-12, on
//! models/rife-v4.25-flownet.pkl, realesr-animevideov3-x4.pth and
//! wav2lip-random-seed0.fp16.pth, all zip-format `torch.save` files):
//! - `pytorch-reader` =0.22.1 (the reader behind `burn-store` 0.22.1; reads zip, legacy, TAR;
//!   fp16; nested dicts flattened as `state_dict.module.x`) loads all three from a *path*, but
//!   has no in-memory API for checkpoints with tensors: `PytorchReader::from_reader` on the
//!   bytes fails with "pickle: invalid data in pickle file: Invalid UTF-8 ..." (it reads
//!   plain pickles only; its docs: "a checkpoint with tensors must be loaded from a file").
//!   [`super::from_bytes`] serves the built-in weights, compiled in with `include_bytes!`, so
//!   it would need a temporary file. It also adds `tar`, `filetime`, `xattr`, `rustix`,
//!   `zlib-rs`, `typed-path`, `zeroize` and more (40 crates in its own tree).
//!   `burn-store` itself needs `burn-core`, which `weights/` (compiled without `neural`)
//!   must not.
//! - `serde-pickle` has no persistent-id (BINPERSID) support, which every torch tensor uses,
//!   and refuses `torch._utils._rebuild_tensor_v2` globals.
//! - `candle-core`'s pickle module reads from a file path too, and brings a second tensor
//!   framework.
use super::{DType, ParseError, RawTensor};
use std::collections::BTreeMap;
use std::io::{Cursor, Read as _};
use zip::ZipArchive;
use zip::result::ZipError;

type Archive<'a> = ZipArchive<Cursor<&'a [u8]>>;

/// The bytes of entry `name`, which `torch.save` writes stored (uncompressed).
fn entry_bytes(archive: &mut Archive<'_>, name: &str) -> Result<Vec<u8>, ParseError> {
    let mut file = archive.by_name(name).map_err(|e| match e {
        ZipError::UnsupportedArchive(why) => ParseError::Not(format!(
            "zip entry `{name}` is compressed ({why}); torch.save writes stored entries"
        )),
        ZipError::FileNotFound => {
            ParseError::Damaged(format!("zip entry `{name}` is missing from the archive"))
        }
        other => ParseError::Damaged(format!("zip entry `{name}` cannot be read ({other})")),
    })?;
    if file.compression() != zip::CompressionMethod::Stored {
        return Err(ParseError::Not(format!(
            "zip entry `{name}` is compressed ({}); torch.save writes stored entries",
            file.compression()
        )));
    }
    let mut out = Vec::with_capacity(file.size() as usize);
    file.read_to_end(&mut out).map_err(|e| {
        ParseError::Damaged(format!(
            "zip entry `{name}` is cut short or corrupt ({e}); it should hold {} bytes",
            file.size()
        ))
    })?;
    Ok(out)
}

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
    fn new(code: &'a [u8]) -> Machine<'a> {
        Machine {
            code,
            pos: 0,
            stack: vec![],
            memo: BTreeMap::new(),
        }
    }
    /// Forgets the stack and memo before the next pickle of a file (each `pickle.load` starts
    /// afresh).
    fn reset(&mut self) {
        self.stack.clear();
        self.memo.clear();
    }
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
    let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(|e| {
        ParseError::Damaged(format!("its zip archive cannot be read, cut short? ({e})"))
    })?;
    let pkl = archive
        .file_names_raw()
        .find(|n| *n == b"data.pkl" || n.ends_with(b"/data.pkl"))
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .ok_or_else(|| {
            ParseError::Not("it is a zip archive without data.pkl (not a torch.save file)".into())
        })?;
    let prefix = &pkl[..pkl.len() - "data.pkl".len()];
    let code = entry_bytes(&mut archive, &pkl)?;
    let root = Machine::new(&code).run()?;
    let (entry, dict) = state_dict(root)?;
    let tensors = build_tensors(dict, |name, key| {
        let file = format!("{prefix}data/{key}");
        if archive.index_for_name(&file).is_none() {
            return Err(ParseError::Damaged(format!(
                "the storage of tensor `{name}` ({file}) is missing from the archive"
            )));
        }
        Ok((file.clone(), entry_bytes(&mut archive, &file)?))
    })?;
    Ok((entry, tensors))
}

/// The first bytes of a legacy (pre-1.6) `torch.save` file: PROTO 2, then LONG1 of the
/// 10-byte magic number 0x1950a86a20f9469cfc6c.
const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// Whether `bytes` start like a legacy `torch.save` file.
pub(super) fn is_legacy(bytes: &[u8]) -> bool {
    bytes.starts_with(LEGACY_MAGIC)
}

/// Reads a legacy (pre-1.6, non-zip) `torch.save` file, the format facenet-pytorch's MTCNN
/// weights are published in: five pickles one after the other (magic number, protocol
/// version, system info, the object, the list of storage keys), then each storage in that
/// list's order as an 8-byte little-endian element count followed by its raw bytes.
pub(super) fn read_legacy(bytes: &[u8]) -> Result<Read, ParseError> {
    let mut m = Machine::new(bytes);
    for _ in 0..3 {
        m.run()?; // magic number, protocol version, system info
        m.reset();
    }
    let root = m.run()?;
    m.reset();
    let keys = match m.run()? {
        V::List(keys) => keys
            .into_iter()
            .map(|k| match k {
                V::Str(s) => Ok(s),
                other => Err(ParseError::Not(format!(
                    "its list of storage keys holds {other:?}, not strings"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(ParseError::Not(
                "it has no list of storage keys after its pickled object".into(),
            ));
        }
    };
    // The storages are not self-describing: an element count, then count × element size
    // bytes, where the element size is the storage type's (known from the pickle).
    let (entry, dict) = state_dict(root)?;
    let sizes: BTreeMap<String, usize> = dict
        .iter()
        .filter_map(|(_, v)| match v {
            V::Tensor(t) => t.dtype.map(|d| (t.key.clone(), d.size())),
            _ => None,
        })
        .collect();
    let mut storages: BTreeMap<String, &[u8]> = BTreeMap::new();
    let mut pos = m.pos;
    for key in keys {
        let count = bytes
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
            .ok_or_else(|| ParseError::Damaged(format!("storage `{key}` is cut short")))?;
        let Some(&es) = sizes.get(&key) else {
            return Err(ParseError::Not(format!(
                "storage `{key}` holds a type this reader does not know (not f32, f16, bf16 or f64)"
            )));
        };
        let len = count.saturating_mul(es);
        let data = bytes
            .get(pos + 8..(pos + 8).saturating_add(len))
            .ok_or_else(|| {
                ParseError::Damaged(format!(
                    "storage `{key}` should hold {len} bytes; the file ends first"
                ))
            })?;
        storages.insert(key, data);
        pos += 8 + len;
    }
    let tensors = build_tensors(dict, |name, key| {
        let data = storages.get(key).ok_or_else(|| {
            ParseError::Damaged(format!(
                "the storage `{key}` of tensor `{name}` is missing from the file"
            ))
        })?;
        Ok((format!("storage `{key}`"), data.to_vec()))
    })?;
    Ok((entry, tensors))
}

/// A pickled dict's entries.
type Dict = Vec<(V, V)>;

/// The state dict inside a checkpoint's pickled object: the object itself when its values
/// are tensors, else the first of its wrapper entries that holds tensors.
fn state_dict(root: V) -> Result<(Option<String>, Dict), ParseError> {
    let V::Dict(top) = root else {
        return Err(ParseError::Not(
            "its pickled object is not a dict (a state dict or {'params': …})".into(),
        ));
    };
    if is_tensor_dict(&top) {
        return Ok((None, top));
    }
    for want in ["params_ema", "params", "state_dict", "model", "net_g"] {
        if let Some((_, V::Dict(d))) = top
            .iter()
            .find(|(k, _)| matches!(k, V::Str(s) if s == want))
            && is_tensor_dict(d)
        {
            return Ok((Some(want.to_string()), d.clone()));
        }
    }
    let keys: Vec<String> = top
        .iter()
        .filter_map(|(k, _)| match k {
            V::Str(s) => Some(format!("`{s}`")),
            _ => None,
        })
        .take(8)
        .collect();
    Err(ParseError::Not(format!(
        "it holds a dict with keys [{}] and no state dict (expected tensors at the top level or under `params_ema`, `params` or `state_dict`)",
        keys.join(", ")
    )))
}

/// The float tensors of a state dict, each read from its storage: `storage(name, key)` gives
/// the storage's bytes and how to name it in messages.
fn build_tensors(
    dict: Dict,
    mut storage: impl FnMut(&str, &str) -> Result<(String, Vec<u8>), ParseError>,
) -> Result<BTreeMap<String, RawTensor>, ParseError> {
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
        let (file, bytes) = storage(&name, &t.key)?;
        let storage = &bytes[..];
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
    Ok(out)
}
