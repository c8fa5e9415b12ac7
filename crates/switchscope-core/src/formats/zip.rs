//! The parts of a zip archive a reader needs to find entries without reading the whole file:
//! the end-of-central-directory record (zip64 included), the central directory, and a local
//! header's length. Pure functions over bytes; the caller reads them from a file or over HTTP.
//! Only stored (uncompressed) entries are accepted, as `torch.save` writes them.

use std::collections::HashMap;

/// A stored entry: where its local header starts, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipEntry {
    pub header_offset: u64,
    pub size: u64,
}

/// How many bytes at the end of an archive hold the end-of-central-directory record (with the
/// longest comment allowed) and a zip64 locator before it.
pub const TAIL_BYTES: u64 = 65_557 + 20 + 56;

/// Bytes of a local header before its name and extra field.
pub const LOCAL_HEADER_BYTES: u64 = 30;

/// Bytes of a zip64 end-of-central-directory record.
pub const ZIP64_RECORD_BYTES: u64 = 56;

/// Where the central directory is, as the end of the archive says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directory {
    /// At `offset`, `size` bytes, `count` entries.
    At { offset: u64, size: u64, count: u64 },
    /// The zip64 record at this offset says (read [`ZIP64_RECORD_BYTES`] there).
    Zip64Record(u64),
}

pub(crate) fn u16_at(b: &[u8], i: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[i], b[i + 1]]))
}
pub(crate) fn u32_at(b: &[u8], i: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]))
}
pub(crate) fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

/// Finds the central directory from the archive's last bytes (`tail`, up to [`TAIL_BYTES`]).
///
/// # Errors
/// A sentence when there is no end-of-central-directory record.
pub fn locate_directory(tail: &[u8]) -> Result<Directory, String> {
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or("not a zip archive (is the file truncated?)")?;
    let count = u16_at(tail, eocd + 10);
    let size = u32_at(tail, eocd + 12);
    let offset = u32_at(tail, eocd + 16);
    if (offset == 0xFFFF_FFFF || count == 0xFFFF) && eocd >= 20 {
        let locator = eocd - 20;
        if tail[locator..locator + 4] == [0x50, 0x4b, 0x06, 0x07] {
            return Ok(Directory::Zip64Record(u64_at(tail, locator + 8)));
        }
    }
    Ok(Directory::At {
        offset,
        size,
        count,
    })
}

/// The central directory's place from a zip64 record.
///
/// # Errors
/// A sentence when `record` is not one.
pub fn zip64_directory(record: &[u8]) -> Result<Directory, String> {
    if record.len() < ZIP64_RECORD_BYTES as usize || record[..4] != [0x50, 0x4b, 0x06, 0x06] {
        return Err("corrupt zip64 end-of-directory record".into());
    }
    Ok(Directory::At {
        count: u64_at(record, 32),
        size: u64_at(record, 40),
        offset: u64_at(record, 48),
    })
}

/// The entries of a central directory of `count` entries.
///
/// # Errors
/// A sentence for a corrupt directory or a compressed entry.
pub fn parse_directory(cd: &[u8], count: u64) -> Result<HashMap<String, ZipEntry>, String> {
    let mut entries = HashMap::new();
    let mut i = 0usize;
    for _ in 0..count {
        if i + 46 > cd.len() || cd[i..i + 4] != [0x50, 0x4b, 0x01, 0x02] {
            return Err("corrupt zip directory".into());
        }
        let method = u16_at(cd, i + 10);
        let mut size = u32_at(cd, i + 24);
        let name_len = u16_at(cd, i + 28) as usize;
        let extra_len = u16_at(cd, i + 30) as usize;
        let comment_len = u16_at(cd, i + 32) as usize;
        let mut header_offset = u32_at(cd, i + 42);
        if i + 46 + name_len + extra_len > cd.len() {
            return Err("corrupt zip directory".into());
        }
        let name = String::from_utf8_lossy(&cd[i + 46..i + 46 + name_len]).into_owned();
        // Zip64 extra field: sizes and offset that did not fit in 32 bits, in this order.
        let extra = &cd[i + 46 + name_len..i + 46 + name_len + extra_len];
        let mut e = 0;
        while e + 4 <= extra.len() {
            let (id, n) = (u16_at(extra, e), u16_at(extra, e + 2) as usize);
            if id == 1 {
                let mut f = e + 4;
                let field = |f: &mut usize| -> Result<u64, String> {
                    let v = extra.get(*f..*f + 8).ok_or("corrupt zip64 extra field")?;
                    *f += 8;
                    Ok(u64::from_le_bytes(v.try_into().expect("8 bytes")))
                };
                if u32_at(cd, i + 24) == 0xFFFF_FFFF {
                    size = field(&mut f)?; // uncompressed
                }
                if u32_at(cd, i + 20) == 0xFFFF_FFFF {
                    field(&mut f)?; // compressed
                }
                if u32_at(cd, i + 42) == 0xFFFF_FFFF {
                    header_offset = field(&mut f)?;
                }
            }
            e += 4 + n;
        }
        if method != 0 {
            return Err(format!(
                "entry {name} is compressed; torch.save stores entries"
            ));
        }
        entries.insert(
            name,
            ZipEntry {
                header_offset,
                size,
            },
        );
        i += 46 + name_len + extra_len + comment_len;
    }
    Ok(entries)
}

/// Where an entry's data starts, from its local header's first [`LOCAL_HEADER_BYTES`].
///
/// # Errors
/// A sentence when `header` is not a local header.
pub fn data_offset(entry: &ZipEntry, header: &[u8]) -> Result<u64, String> {
    if header.len() < LOCAL_HEADER_BYTES as usize || header[..4] != [0x50, 0x4b, 0x03, 0x04] {
        return Err("corrupt zip local header".into());
    }
    Ok(entry.header_offset + LOCAL_HEADER_BYTES + u16_at(header, 26) + u16_at(header, 28))
}
