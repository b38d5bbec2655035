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
