//! A checkpoint's tensors as byte ranges of its files, found by reading only headers: a
//! safetensors file's length prefix and JSON header; a `pytorch_model.bin`'s end-of-directory
//! record, central directory, `data.pkl` and each storage's local header. Whatever holds the
//! bytes (a local file, an HTTP server answering `Range`) is behind [`RangeRead`], so a reader
//! can then fetch one tensor, or one expert, at a time.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use super::safetensors::{MAX_HEADER, parse_header};
use super::torch_pickle::{StorageType, tensor_refs};
use super::zip;
use crate::CoreError;

/// A future returning bytes.
pub type BytesFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, CoreError>> + 'a>>;

/// Random access to one file's bytes.
pub trait RangeRead {
    /// The file's name or URL, for messages.
    fn label(&self) -> &str;
    /// Its length in bytes.
    fn size(&self) -> u64;
    /// Exactly `len` bytes from `start` (a short answer is an error).
    fn read(&self, start: u64, len: u64) -> BytesFuture<'_>;
}

/// One tensor's bytes in a file: contiguous, little-endian, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRange {
    /// Which file, as the caller numbered them.
    pub file: usize,
    /// From the file's start.
    pub start: u64,
    pub bytes: u64,
    /// `F32`, `F16` or `BF16`.
    pub dtype: String,
    pub shape: Vec<usize>,
}

impl TensorRange {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.bytes
    }
}

fn bad(file: &str, what: impl std::fmt::Display) -> CoreError {
    CoreError::Weights(format!("{file}: {what}"))
}

fn check_dtype(file: &str, name: &str, dtype: &str) -> Result<(), CoreError> {
    if matches!(dtype, "F32" | "F16" | "BF16") {
        Ok(())
    } else {
        Err(bad(
            file,
            format!("tensor {name} has dtype {dtype}; this reader reads F32, F16 and BF16"),
        ))
    }
}

/// The tensors of a safetensors file: two reads (the header's length, then the header).
///
/// # Errors
/// [`CoreError::Weights`] for a file that is not safetensors, a header that does not parse,
/// a tensor range outside the file, or a dtype other than F32/F16/BF16; the reader's errors.
pub async fn safetensors_ranges(
    file: usize,
    reader: &dyn RangeRead,
) -> Result<BTreeMap<String, TensorRange>, CoreError> {
    let name = reader.label();
    let size = reader.size();
    if size < 8 {
        return Err(bad(name, "too short to be safetensors (truncated?)"));
    }
    let prefix = reader.read(0, 8).await?;
    let header_len = u64::from_le_bytes(prefix[..8].try_into().expect("8 bytes"));
    if header_len > MAX_HEADER || 8 + header_len > size {
        return Err(bad(
            name,
            "header length is past the end of the file (truncated or not safetensors)",
        ));
    }
    let header = reader.read(8, header_len).await?;
    let data_start = 8 + header_len;
    let (tensors, _) = parse_header(&header, size - data_start).map_err(|e| bad(name, e))?;
    tensors
        .into_iter()
        .map(|(tensor, info)| {
            check_dtype(name, &tensor, &info.dtype)?;
            let [a, b] = info.data_offsets;
            Ok((
                tensor,
                TensorRange {
                    file,
                    start: data_start + a,
                    bytes: b - a,
                    dtype: info.dtype,
                    shape: info.shape,
                },
            ))
        })
        .collect()
}

/// The tensors of a `pytorch_model.bin` (a `torch.save` zip): the end of the archive, its
/// directory, `data.pkl`, and the local header of each storage a tensor uses.
///
/// # Errors
/// [`CoreError::Weights`] for an archive that is not a `torch.save` state dict, a tensor that is
/// not contiguous in its storage, or one reaching past its storage; the reader's errors.
pub async fn torch_ranges(
    file: usize,
    reader: &dyn RangeRead,
) -> Result<BTreeMap<String, TensorRange>, CoreError> {
    let name = reader.label();
    let size = reader.size();
    let within = |offset: u64, n: u64| -> Result<(), CoreError> {
        if offset.checked_add(n).is_none_or(|end| end > size) {
            Err(bad(
                name,
                "zip directory points past the end (truncated file?)",
            ))
        } else {
            Ok(())
        }
    };
    let tail_len = size.min(zip::TAIL_BYTES);
    let tail = reader.read(size - tail_len, tail_len).await?;
    let mut directory = zip::locate_directory(&tail).map_err(|e| bad(name, e))?;
    if let zip::Directory::Zip64Record(at) = directory {
        within(at, zip::ZIP64_RECORD_BYTES)?;
        let record = reader.read(at, zip::ZIP64_RECORD_BYTES).await?;
        directory = zip::zip64_directory(&record).map_err(|e| bad(name, e))?;
    }
    let zip::Directory::At {
        offset,
        size: cd_size,
        count,
    } = directory
    else {
        return Err(bad(name, "corrupt zip64 end-of-directory record"));
    };
    within(offset, cd_size)?;
    let cd = reader.read(offset, cd_size).await?;
    let entries = zip::parse_directory(&cd, count).map_err(|e| bad(name, e))?;
    let pkl = entries
        .keys()
        .find(|k| k.ends_with("/data.pkl"))
        .cloned()
        .ok_or_else(|| bad(name, "no data.pkl in the archive (not a torch.save file?)"))?;
    let prefix = pkl.trim_end_matches("data.pkl").to_owned();
    let data_of = async |entry: &zip::ZipEntry| -> Result<u64, CoreError> {
        within(entry.header_offset, zip::LOCAL_HEADER_BYTES)?;
        let header = reader
            .read(entry.header_offset, zip::LOCAL_HEADER_BYTES)
            .await?;
        let data = zip::data_offset(entry, &header).map_err(|e| bad(name, e))?;
        within(data, entry.size)?;
        Ok(data)
    };
    let pkl_entry = entries[&pkl];
    let pkl_start = data_of(&pkl_entry).await?;
    let pkl_bytes = reader.read(pkl_start, pkl_entry.size).await?;
    let refs = tensor_refs(&pkl_bytes).map_err(|e| bad(name, format!("data.pkl: {e}")))?;
    let mut storages: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (tensor, r) in refs {
        if !r.is_contiguous() {
            return Err(bad(
                name,
                format!("tensor {tensor} is not contiguous in its storage; convert the checkpoint"),
            ));
        }
        let (start, len) = match storages.get(&r.storage_key) {
            Some(&s) => s,
            None => {
                let key = format!("{prefix}data/{}", r.storage_key);
                let entry = entries
                    .get(&key)
                    .ok_or_else(|| bad(name, format!("tensor {tensor}: no entry {key}")))?;
                let s = (data_of(entry).await?, entry.size);
                storages.insert(r.storage_key.clone(), s);
                s
            }
        };
        let element = r.dtype.size() as u64;
        let numel: u64 = r.shape.iter().map(|&d| d as u64).product();
        let from = r.offset as u64 * element;
        if from + numel * element > len {
            return Err(bad(
                name,
                format!("tensor {tensor} reads past the end of its storage"),
            ));
        }
        let dtype = match r.dtype {
            StorageType::F32 => "F32",
            StorageType::F16 => "F16",
            StorageType::Bf16 => "BF16",
        };
        out.insert(
            tensor,
            TensorRange {
                file,
                start: start + from,
                bytes: numel * element,
                dtype: dtype.to_owned(),
                shape: r.shape,
            },
        );
    }
    Ok(out)
}

/// `ranges` (start, end) sorted and merged where they touch or overlap: one request each.
pub fn coalesce(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// A local file read range by range (the same reads an HTTP reader makes).
#[derive(Debug)]
pub struct FileRanges {
    path: PathBuf,
    name: String,
    len: u64,
}

impl FileRanges {
    /// # Errors
    /// [`CoreError::Io`] when the file cannot be opened.
    pub fn open(path: &Path) -> Result<Self, CoreError> {
        let len = std::fs::metadata(path)
            .map_err(|e| CoreError::io(path, e))?
            .len();
        Ok(Self {
            path: path.to_owned(),
            name: path.display().to_string(),
            len,
        })
    }
}

impl RangeRead for FileRanges {
    fn label(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.len
    }

    fn read(&self, start: u64, len: u64) -> BytesFuture<'_> {
        Box::pin(async move {
            use std::io::{Read, Seek, SeekFrom};
            let mut file =
                std::fs::File::open(&self.path).map_err(|e| CoreError::io(&self.path, e))?;
            file.seek(SeekFrom::Start(start))
                .map_err(|e| CoreError::io(&self.path, e))?;
            let mut bytes = vec![0u8; len as usize];
            file.read_exact(&mut bytes)
                .map_err(|_| bad(&self.name, format!("bytes {start}+{len} are past its end")))?;
            Ok(bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::tensor::{TensorSource, decode_floats_named};

    fn fixture(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures")
            .join(path)
    }

    /// Each range decodes to what the whole-file reader reads.
    fn same_as_reader(
        ranges: &BTreeMap<String, TensorRange>,
        path: &Path,
        reader: &mut dyn TensorSource,
    ) {
        assert!(ranges.len() > 10, "{} tensors", ranges.len());
        for (name, r) in ranges {
            let bytes =
                pollster::block_on(FileRanges::open(path).unwrap().read(r.start, r.bytes)).unwrap();
            let values = decode_floats_named(&r.dtype, &bytes, name).unwrap();
            let expected = reader.get(name).unwrap().unwrap();
            assert_eq!(expected.shape, r.shape, "{name}");
            assert_eq!(expected.data, values, "{name}");
        }
    }

    #[test]
    fn safetensors_ranges_are_the_tensors() {
        let path = fixture("tiny/model.safetensors");
        let reader = FileRanges::open(&path).unwrap();
        let ranges = pollster::block_on(safetensors_ranges(0, &reader)).unwrap();
        let mut whole = crate::formats::checkpoint::SafetensorsFiles::file(&path);
        same_as_reader(&ranges, &path, &mut whole);
    }

    #[test]
    fn torch_ranges_are_the_tensors() {
        let path = fixture("tiny-bin/pytorch_model.bin");
        let reader = FileRanges::open(&path).unwrap();
        let ranges = pollster::block_on(torch_ranges(0, &reader)).unwrap();
        let mut whole = crate::formats::torch_pickle::TorchFile::open(&path).unwrap();
        same_as_reader(&ranges, &path, &mut whole);
    }

    #[test]
    fn truncated_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("ranged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (source, name) in [
            ("tiny/model.safetensors", "cut.safetensors"),
            ("tiny-bin/pytorch_model.bin", "cut.bin"),
        ] {
            let bytes = std::fs::read(fixture(source)).unwrap();
            let cut = dir.join(name);
            std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
            let reader = FileRanges::open(&cut).unwrap();
            let result = if name.ends_with(".bin") {
                pollster::block_on(torch_ranges(0, &reader))
            } else {
                pollster::block_on(safetensors_ranges(0, &reader))
            };
            let err = result.unwrap_err().to_string();
            assert!(err.contains("truncated"), "{name}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A safetensors file with `header` as its JSON header and `data` bytes after it.
    fn safetensors_with(dir: &Path, name: &str, header: &str, data: usize) -> PathBuf {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn headers_that_cannot_be_read_are_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("ranged-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            ("not-json", "{\"w\": [1, 2", "malformed header"),
            (
                "outside",
                r#"{"w": {"dtype": "F32", "shape": [40], "data_offsets": [0, 160]}}"#,
                "tensor w has a byte range that does not fit",
            ),
            (
                "int8",
                r#"{"w": {"dtype": "I8", "shape": [16], "data_offsets": [0, 16]}}"#,
                "has dtype I8; this reader reads F32, F16 and BF16",
            ),
        ];
        for (name, header, expected) in cases {
            let path = safetensors_with(&dir, name, header, 16);
            let reader = FileRanges::open(&path).unwrap();
            let err = pollster::block_on(safetensors_ranges(0, &reader))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{name}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn coalescing_merges_touching_ranges_only() {
        assert_eq!(
            coalesce(vec![(10, 20), (0, 10), (30, 40), (35, 38), (41, 50)]),
            vec![(0, 20), (30, 40), (41, 50)]
        );
    }
}
