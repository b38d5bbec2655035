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
