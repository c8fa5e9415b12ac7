//! A streaming reader and a writer for safetensors files.
//!
//! Reading parses the header once and then reads one tensor's byte range at a time, so a
//! converter never holds more than one tensor of a multi-gigabyte checkpoint in memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Largest header accepted (the format's own limit is 100 MB).
pub(crate) const MAX_HEADER: u64 = 100_000_000;

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte range within the data section.
    pub data_offsets: [u64; 2],
}

impl TensorInfo {
    /// Bytes per element of `dtype`, if known.
    pub fn element_size(&self) -> Option<u64> {
        Some(match self.dtype.as_str() {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" => 1,
            _ => return None,
        })
    }
}

/// An open safetensors file: its header, read once.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    file: File,
    data_start: u64,
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> CoreError {
    CoreError::Weights(format!("{}: {what}", path.display()))
}

impl SafetensorsFile {
    /// Opens `path` and validates its header against the file's size.
    ///
    /// # Errors
    /// [`CoreError::Io`]; [`CoreError::Weights`] naming the file for a truncated or malformed one.
    pub fn open(path: &Path) -> Result<Self, CoreError> {
        let mut file = File::open(path).map_err(|e| CoreError::io(path, e))?;
        let size = file.metadata().map_err(|e| CoreError::io(path, e))?.len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|_| bad(path, "too short to be safetensors (truncated?)"))?;
        let header_len = u64::from_le_bytes(len);
        if header_len > MAX_HEADER || 8 + header_len > size {
            return Err(bad(
                path,
                "header length is past the end of the file (truncated or not safetensors)",
            ));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .map_err(|e| CoreError::io(path, e))?;
        let (tensors, metadata) =
            parse_header(&header, size - 8 - header_len).map_err(|what| bad(path, what))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            data_start: 8 + header_len,
            tensors,
            metadata,
        })
    }

    /// The raw bytes of tensor `name`, or `None` when the file has no such tensor.
    ///
    /// # Errors
    /// [`CoreError::Io`].
    pub fn read(&mut self, name: &str) -> Result<Option<(TensorInfo, Vec<u8>)>, CoreError> {
        let Some(info) = self.tensors.get(name).cloned() else {
            return Ok(None);
        };
        let [start, end] = info.data_offsets;
        let mut bytes = vec![0u8; (end - start) as usize];
        self.file
            .seek(SeekFrom::Start(self.data_start + start))
            .map_err(|e| CoreError::io(&self.path, e))?;
        self.file
            .read_exact(&mut bytes)
            .map_err(|e| CoreError::io(&self.path, e))?;
        Ok(Some((info, bytes)))
    }
}

/// Tensor name → entry.
pub type Header = BTreeMap<String, TensorInfo>;

/// Parses a header against the data section's length.
pub(crate) fn parse_header(
    header: &[u8],
    data_len: u64,
) -> Result<(Header, BTreeMap<String, String>), String> {
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("malformed header: {e}"))?;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, value) in raw {
        if name == "__metadata__" {
            metadata = serde_json::from_value(value).map_err(|e| format!("metadata: {e}"))?;
            continue;
        }
        let info: TensorInfo =
            serde_json::from_value(value).map_err(|e| format!("tensor {name}: {e}"))?;
        let [start, end] = info.data_offsets;
        // The byte size the shape implies, in checked arithmetic: a header may claim any shape.
        let expected = match info.element_size() {
            Some(size) => Some(
                info.shape
                    .iter()
                    .try_fold(size, |n, &d| n.checked_mul(d as u64))
                    .ok_or_else(|| {
                        format!(
                            "tensor {name} has a shape too large to address: {:?}",
                            info.shape
                        )
                    })?,
            ),
            None => None,
        };
        if start > end || end > data_len || expected.is_some_and(|e| e != end - start) {
            return Err(format!(
                "tensor {name} has a byte range that does not fit (truncated?)"
            ));
        }
        tensors.insert(name, info);
    }
    Ok((tensors, metadata))
}

/// The tensors of safetensors bytes held in memory, each with its data.
///
/// # Errors
/// A sentence saying what is wrong (truncated, malformed header).
pub fn parse_bytes(bytes: &[u8]) -> Result<BTreeMap<String, (TensorInfo, &[u8])>, String> {
    let len = bytes
        .get(..8)
        .ok_or("too short to be safetensors (truncated?)")?;
    let header_len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    if header_len > MAX_HEADER || 8 + header_len > bytes.len() as u64 {
        return Err("header length is past the end (truncated or not safetensors)".into());
    }
    let start = 8 + header_len as usize;
    let (tensors, _) = parse_header(&bytes[8..start], (bytes.len() - start) as u64)?;
    Ok(tensors
        .into_iter()
        .map(|(name, info)| {
            let [a, b] = info.data_offsets;
            let data = &bytes[start + a as usize..start + b as usize];
            (name, (info, data))
        })
        .collect())
}

/// A tensor to write.
#[derive(Debug, Clone)]
pub struct OutTensor {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// The bytes of a safetensors file holding `tensors` (in the given order) and `metadata`.
pub fn serialize(tensors: &[OutTensor], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).expect("strings"),
        );
    }
    let mut offset = 0u64;
    for t in tensors {
        let end = offset + t.bytes.len() as u64;
        header.insert(
            t.name.clone(),
            serde_json::json!({ "dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).expect("serialisable");
    // Pad the header with spaces so the data section starts 8-byte aligned.
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset as usize);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for t in tensors {
        out.extend_from_slice(&t.bytes);
    }
    out
}

/// Writes `bytes` to `path`.
///
/// # Errors
/// [`CoreError::Io`].
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    }
    let mut f = File::create(path).map_err(|e| CoreError::io(path, e))?;
    f.write_all(bytes).map_err(|e| CoreError::io(path, e))?;
    f.sync_all().map_err(|e| CoreError::io(path, e))
}
