//! Reading PyTorch `pytorch_model.bin` checkpoints (the format google/switch-base-* ship):
//! a zip archive of uncompressed entries holding `*/data.pkl` (a pickled state dict whose
//! tensors refer to storages by key) and `*/data/{key}` (the storages' raw bytes).
//!
//! Only what `torch.save` of a state dict produces is understood; nothing is executed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::tensor::{HostTensor, TensorSource};
use super::zip::{self, ZipEntry, u32_at, u64_at};
use crate::CoreError;

/// An opened `pytorch_model.bin`.
#[derive(Debug)]
pub struct TorchFile {
    path: PathBuf,
    file: File,
    entries: HashMap<String, ZipEntry>,
    prefix: String,
    tensors: HashMap<String, TensorRef>,
}

/// A tensor of the state dict: a view of a storage (`data/{storage_key}` in the archive).
#[derive(Debug, Clone)]
pub(crate) struct TensorRef {
    pub storage_key: String,
    pub dtype: StorageType,
    /// In elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorRef {
    /// Whether the view is the storage's elements from `offset` in row-major order.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&dim, &stride) in self.shape.iter().zip(&self.stride).rev() {
            if dim > 1 && stride != expected {
                return false;
            }
            expected *= dim;
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum StorageType {
    F32,
    F16,
    Bf16,
}

impl StorageType {
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }
}

fn bad(path: &Path, what: impl std::fmt::Display) -> CoreError {
    CoreError::Weights(format!("{}: {what}", path.display()))
}

/// Reads the zip central directory (zip64 included).
fn read_entries(file: &mut File, path: &Path) -> Result<HashMap<String, ZipEntry>, CoreError> {
    let len = file.metadata().map_err(|e| CoreError::io(path, e))?.len();
    let mut read_at = |offset: u64, n: u64| -> Result<Vec<u8>, CoreError> {
        if offset + n > len {
            return Err(bad(
                path,
                "zip directory points past the end (truncated file?)",
            ));
        }
        let mut bytes = vec![0u8; n as usize];
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| CoreError::io(path, e))?;
        file.read_exact(&mut bytes)
            .map_err(|e| CoreError::io(path, e))?;
        Ok(bytes)
    };
    let tail_len = len.min(zip::TAIL_BYTES);
    let tail = read_at(len - tail_len, tail_len)?;
    let mut directory = zip::locate_directory(&tail).map_err(|e| bad(path, e))?;
    if let zip::Directory::Zip64Record(at) = directory {
        let record = read_at(at, zip::ZIP64_RECORD_BYTES)?;
        directory = zip::zip64_directory(&record).map_err(|e| bad(path, e))?;
    }
    let zip::Directory::At {
        offset,
        size,
        count,
    } = directory
    else {
        return Err(bad(path, "corrupt zip64 end-of-directory record"));
    };
    let cd = read_at(offset, size)?;
    zip::parse_directory(&cd, count).map_err(|e| bad(path, e))
}

impl TorchFile {
    /// Opens the archive and reads its state dict's structure (not the tensors' bytes).
    ///
    /// # Errors
    /// [`CoreError::Io`], or [`CoreError::Weights`] naming the file for anything unreadable.
    pub fn open(path: &Path) -> Result<Self, CoreError> {
        let mut file = File::open(path).map_err(|e| CoreError::io(path, e))?;
        let entries = read_entries(&mut file, path)?;
        let pkl = entries
            .keys()
            .find(|k| k.ends_with("/data.pkl"))
            .cloned()
            .ok_or_else(|| bad(path, "no data.pkl in the archive (not a torch.save file?)"))?;
        let prefix = pkl.trim_end_matches("data.pkl").to_owned();
        let mut this = Self {
            path: path.to_owned(),
            file,
            entries,
            prefix,
            tensors: HashMap::new(),
        };
        let bytes = this.entry_bytes(&pkl)?;
        this.tensors = tensor_refs(&bytes).map_err(|e| bad(path, format!("data.pkl: {e}")))?;
        Ok(this)
    }

    /// Names of all tensors in the state dict.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tensors.keys().cloned().collect();
        names.sort();
        names
    }

    fn entry_bytes(&mut self, name: &str) -> Result<Vec<u8>, CoreError> {
        let entry = self
            .entries
            .get(name)
            .cloned()
            .ok_or_else(|| bad(&self.path, format!("no entry {name}")))?;
        let mut header = [0u8; zip::LOCAL_HEADER_BYTES as usize];
        let io = |e| CoreError::io(&self.path, e);
        self.file
            .seek(SeekFrom::Start(entry.header_offset))
            .map_err(io)?;
        self.file
            .read_exact(&mut header)
            .map_err(|e| CoreError::io(&self.path, e))?;
        let data = zip::data_offset(&entry, &header).map_err(|e| bad(&self.path, e))?;
        let mut bytes = vec![0u8; entry.size as usize];
        self.file
            .seek(SeekFrom::Start(data))
            .map_err(|e| CoreError::io(&self.path, e))?;
        self.file
            .read_exact(&mut bytes)
            .map_err(|_| bad(&self.path, format!("entry {name} is truncated")))?;
        Ok(bytes)
    }
}

impl TensorSource for TorchFile {
    fn get(&mut self, name: &str) -> Result<Option<HostTensor>, CoreError> {
        let Some(t) = self.tensors.get(name).cloned() else {
            return Ok(None);
        };
        let key = format!("{}data/{}", self.prefix, t.storage_key);
        let bytes = self.entry_bytes(&key)?;
        let size = t.dtype.size();
        let numel: usize = t.shape.iter().product();
        let value = |element: usize| -> Option<f32> {
            let b = bytes.get(element * size..(element + 1) * size)?;
            Some(match t.dtype {
                StorageType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                StorageType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                StorageType::Bf16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            })
        };
        let mut data = Vec::with_capacity(numel);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let element = t.offset
                + index
                    .iter()
                    .zip(&t.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            data.push(value(element).ok_or_else(|| {
                bad(
                    &self.path,
                    format!("tensor {name} reads past the end of its storage"),
                )
            })?);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(Some(HostTensor {
            shape: t.shape,
            data,
        }))
    }
}

/// The tensors of a state dict pickled in `data.pkl`, by name.
///
/// # Errors
/// A sentence for a pickle that is not a state dict of float tensors.
pub(crate) fn tensor_refs(pkl: &[u8]) -> Result<HashMap<String, TensorRef>, String> {
    state_dict(unpickle(pkl)?)
}

/// The pickle values a state dict is made of.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Call(Box<Value>, Vec<Value>),
    PersId(Box<Value>),
    Mark,
}

fn unpickle(data: &[u8]) -> Result<Value, String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u64, Value> = HashMap::new();
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = data.get(*pos..*pos + n).ok_or("unexpected end of pickle")?;
        *pos += n;
        Ok(s)
    };
    let line = |pos: &mut usize| -> Result<String, String> {
        let end = data[*pos..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated line")?;
        let s = String::from_utf8_lossy(&data[*pos..*pos + end]).into_owned();
        *pos += end + 1;
        Ok(s)
    };
    fn pop_mark(stack: &mut Vec<Value>) -> Result<Vec<Value>, String> {
        let at = stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or("MARK missing")?;
        let items = stack.split_off(at + 1);
        stack.pop();
        Ok(items)
    }
    fn pop(stack: &mut Vec<Value>) -> Result<Value, String> {
        stack.pop().ok_or_else(|| "stack underflow".to_string())
    }
    loop {
        let op = *take(&mut pos, 1)?.first().expect("one byte");
        match op {
            0x80 => {
                take(&mut pos, 1)?;
            }
            0x95 => {
                take(&mut pos, 8)?;
            }
            b'.' => return pop(&mut stack),
            b'(' => stack.push(Value::Mark),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'K' => stack.push(Value::Int(i64::from(take(&mut pos, 1)?[0]))),
            b'M' => {
                let b = take(&mut pos, 2)?;
                stack.push(Value::Int(i64::from(u16::from_le_bytes([b[0], b[1]]))));
            }
            b'J' => {
                let b = take(&mut pos, 4)?;
                stack.push(Value::Int(i64::from(i32::from_le_bytes([
                    b[0], b[1], b[2], b[3],
                ]))));
            }
            0x8a => {
                let n = take(&mut pos, 1)?[0] as usize;
                let b = take(&mut pos, n)?;
                if n > 8 {
                    return Err("integer too large".into());
                }
                let mut v: i64 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= i64::from(byte) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => {
                let b = take(&mut pos, 8)?;
                stack.push(Value::Float(f64::from_be_bytes(
                    b.try_into().expect("8 bytes"),
                )));
            }
            b'X' | 0x8c | b'T' | b'U' | b'B' | b'C' | 0x8d | 0x8e => {
                let n = match op {
                    0x8c | b'U' | b'C' => take(&mut pos, 1)?[0] as usize,
                    0x8d | 0x8e => u64_at(take(&mut pos, 8)?, 0) as usize,
                    _ => u32_at(take(&mut pos, 4)?, 0) as usize,
                };
                let s = String::from_utf8_lossy(take(&mut pos, n)?).into_owned();
                stack.push(Value::Str(s));
            }
            b'c' => {
                let module = line(&mut pos)?;
                let name = line(&mut pos)?;
                stack.push(Value::Global(module, name));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(m, n)),
                    _ => return Err("STACK_GLOBAL of non-strings".into()),
                }
            }
            b'q' => {
                let k = u64::from(take(&mut pos, 1)?[0]);
                memo.insert(k, stack.last().cloned().ok_or("empty stack")?);
            }
            b'r' => {
                let k = u32_at(take(&mut pos, 4)?, 0);
                memo.insert(k, stack.last().cloned().ok_or("empty stack")?);
            }
            0x94 => {
                let k = memo.len() as u64;
                memo.insert(k, stack.last().cloned().ok_or("empty stack")?);
            }
            b'h' => {
                let k = u64::from(take(&mut pos, 1)?[0]);
                stack.push(memo.get(&k).cloned().ok_or("unknown memo key")?);
            }
            b'j' => {
                let k = u32_at(take(&mut pos, 4)?, 0);
                stack.push(memo.get(&k).cloned().ok_or("unknown memo key")?);
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err("stack underflow".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::List(items));
            }
            b'd' => {
                let items = pop_mark(&mut stack)?;
                let pairs = items
                    .chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| (c[0].clone(), c[1].clone()))
                    .collect();
                stack.push(Value::Dict(pairs));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                if let Some(Value::List(l)) = stack.last_mut() {
                    l.push(v);
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                if let Some(Value::List(l)) = stack.last_mut() {
                    l.extend(items);
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                insert(stack.last_mut(), vec![k, v])?;
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                insert(stack.last_mut(), items)?;
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                let args = match args {
                    Value::Tuple(a) => a,
                    _ => return Err("REDUCE without an argument tuple".into()),
                };
                // An OrderedDict() call is just a dict.
                let value = match &callable {
                    Value::Global(m, n) if m == "collections" && n == "OrderedDict" => {
                        Value::Dict(Vec::new())
                    }
                    _ => Value::Call(Box::new(callable), args),
                };
                stack.push(value);
            }
            b'Q' => {
                let id = pop(&mut stack)?;
                stack.push(Value::PersId(Box::new(id)));
            }
            b'b' => {
                // BUILD: set state on the object; state dicts' metadata is not needed.
                pop(&mut stack)?;
            }
            b'0' => {
                pop(&mut stack)?;
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => {
                let top = stack.last().cloned().ok_or("empty stack")?;
                stack.push(top);
            }
            other => {
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {}",
                    pos - 1
                ));
            }
        }
    }
}

fn insert(target: Option<&mut Value>, items: Vec<Value>) -> Result<(), String> {
    match target {
        Some(Value::Dict(d)) => {
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                d.push((k, v));
            }
            Ok(())
        }
        _ => Err("SETITEM(S) on something that is not a dict".into()),
    }
}

fn usizes(v: &Value) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|i| match i {
                Value::Int(n) if *n >= 0 => Ok(*n as usize),
                _ => Err("a shape or stride that is not a list of sizes".to_string()),
            })
            .collect(),
        _ => Err("a shape or stride that is not a tuple".into()),
    }
}

fn state_dict(value: Value) -> Result<HashMap<String, TensorRef>, String> {
    let Value::Dict(pairs) = value else {
        return Err("the pickle is not a state dict".into());
    };
    let mut tensors = HashMap::new();
    for (key, value) in pairs {
        let Value::Str(name) = key else { continue };
        let Value::Call(callable, args) = value else {
            continue;
        };
        let Value::Global(_, function) = *callable else {
            continue;
        };
        if function != "_rebuild_tensor_v2" && function != "_rebuild_tensor" {
            continue;
        }
        let Some(Value::PersId(id)) = args.first() else {
            return Err(format!("tensor {name} has no storage"));
        };
        let Value::Tuple(id) = id.as_ref() else {
            return Err(format!("tensor {name}: unexpected storage id"));
        };
        let (Some(Value::Global(_, storage)), Some(Value::Str(storage_key))) =
            (id.get(1), id.get(2))
        else {
            return Err(format!("tensor {name}: unexpected storage id"));
        };
        let dtype = match storage.as_str() {
            "FloatStorage" => StorageType::F32,
            "HalfStorage" => StorageType::F16,
            "BFloat16Storage" => StorageType::Bf16,
            other => {
                return Err(format!(
                    "tensor {name} has storage {other}; expected float, half or bfloat16"
                ));
            }
        };
        let offset = match args.get(1) {
            Some(Value::Int(o)) if *o >= 0 => *o as usize,
            _ => return Err(format!("tensor {name}: bad storage offset")),
        };
        let shape = usizes(args.get(2).ok_or("missing shape")?)?;
        let stride = usizes(args.get(3).ok_or("missing stride")?)?;
        if shape.len() != stride.len() {
            return Err(format!("tensor {name}: shape and stride differ in rank"));
        }
        tensors.insert(
            name,
            TensorRef {
                storage_key: storage_key.clone(),
                dtype,
                offset,
                shape,
                stride,
            },
        );
    }
    Ok(tensors)
}
