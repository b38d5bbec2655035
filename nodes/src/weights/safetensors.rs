//! `.safetensors` files, parsed by Hugging Face's `safetensors` crate (header, offsets and
//! bounds checks); this module only maps its dtypes and errors to ours.
use super::{DType, ParseError, RawTensor};
use ::safetensors::{Dtype, SafeTensorError, SafeTensors};
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
    let file = SafeTensors::deserialize(bytes).map_err(|e| match e {
        // The data section does not match the offsets the header declares: cut short.
        SafeTensorError::MetadataIncompleteBuffer | SafeTensorError::InvalidOffset(_) => {
            ParseError::Damaged(format!("its safetensors data section is incomplete ({e})"))
        }
        SafeTensorError::InvalidHeaderDeserialization(_)
        | SafeTensorError::InvalidHeader(_)
        | SafeTensorError::JsonError(_) => {
            ParseError::Not(format!("its safetensors header is not valid JSON ({e})"))
        }
        other => ParseError::Not(format!("its safetensors header is invalid ({other})")),
    })?;
    let mut out = BTreeMap::new();
    for (name, view) in file.iter() {
        let dtype = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::F64 => DType::F64,
            // Bookkeeping (BatchNorm's `num_batches_tracked`), as in `.pth` files.
            Dtype::I64 | Dtype::I32 | Dtype::I16 | Dtype::I8 | Dtype::U8 | Dtype::BOOL => continue,
            other => {
                return Err(ParseError::Not(format!(
                    "safetensors entry `{name}`: dtype {other:?} is not a float type (F32, F16, BF16, F64)"
                )));
            }
        };
        out.insert(
            name.to_string(),
            RawTensor {
                shape: view.shape().to_vec(),
                data: dtype.decode(view.data()),
            },
        );
    }
    Ok(out)
}
