//! `manifest.json`: what a converted model directory holds (see `docs/FORMAT.md`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::quant::Scheme;
use crate::CoreError;
use crate::config::{Stack as StackKind, SwitchConfig};

/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The `format` field's value.
pub const FORMAT_NAME: &str = "switchscope";

/// One file of the model directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// A plain relative path (`/`-separated, no `..`, not absolute).
    pub name: String,
    pub bytes: u64,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// How the weights are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantization {
    /// Expert FFN weights.
    pub experts: Scheme,
    /// Values per scale along the input dimension (quantized schemes only).
    pub group_size: usize,
    /// `f16` or `f32` scales (quantized schemes only).
    pub scale_dtype: String,
    /// Everything else (embeddings, attention, norms, routers, dense FFNs): `f32`, `f16`, or
    /// `int8` (matrices block-wise with `group_size`; routers and position biases in f32).
    pub dense: Scheme,
}

/// One expert's shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertEntry {
    pub stack: StackKind,
    pub block: usize,
    pub expert: usize,
    /// Name of its file in `files`.
    pub file: String,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The model's Hugging Face config, as read.
    pub config: SwitchConfig,
    /// `tokenizer.json` when the model has one.
    pub tokenizer: Option<String>,
    pub quantization: Quantization,
    /// The dense-weights file's name.
    pub dense: String,
    pub experts: Vec<ExpertEntry>,
    pub files: Vec<FileEntry>,
}

/// The file name of an expert's shard: `experts/encoder.b3.e17.safetensors`.
pub fn expert_file(stack: StackKind, block: usize, expert: usize) -> String {
    format!("experts/{}.b{block}.e{expert}.safetensors", stack.as_str())
}

/// Rejects names that could leave the model directory or URL: absolute paths, `..`, `\`,
/// empty segments, and anything but `[A-Za-z0-9._-]` in a segment.
///
/// # Errors
/// [`CoreError::Manifest`] naming the file.
pub fn check_name(name: &str) -> Result<(), CoreError> {
    let bad = |why: &str| Err(CoreError::Manifest(format!("file name {name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.starts_with('/') || name.contains('\\') || name.contains(':') {
        return bad("is not a plain relative path");
    }
    for segment in name.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return bad("has an empty, `.` or `..` segment");
        }
        if !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return bad("has characters outside [A-Za-z0-9._-]");
        }
    }
    Ok(())
}

impl Manifest {
    /// Parses and validates `manifest.json`.
    ///
    /// # Errors
    /// [`CoreError::Manifest`] for malformed JSON, another format, an unknown version, unsafe
    /// file names, or references to files the manifest does not list.
    pub fn from_json(text: &str) -> Result<Self, CoreError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| CoreError::Manifest(format!("manifest.json is not valid JSON: {e}")))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT_NAME) => {}
            other => {
                return Err(CoreError::Manifest(format!(
                    "manifest.json is not a Switchscope manifest (format {other:?})"
                )));
            }
        }
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(CoreError::Manifest(format!(
                    "manifest.json has format version {v}; this build reads version {FORMAT_VERSION}"
                )));
            }
            None => {
                return Err(CoreError::Manifest(
                    "manifest.json has no format version".into(),
                ));
            }
        }
        let manifest: Self = serde_json::from_value(value)
            .map_err(|e| CoreError::Manifest(format!("manifest.json: {e}")))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks names, references and the expert table against the config.
    ///
    /// # Errors
    /// [`CoreError::Manifest`].
    pub fn validate(&self) -> Result<(), CoreError> {
        self.validate_structure()?;
        for f in &self.files {
            if f.sha256.len() != 64 || !f.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(CoreError::Manifest(format!(
                    "file {} has a malformed sha256",
                    f.name
                )));
            }
        }
        Ok(())
    }

    /// [`Self::validate`] without the SHA-256s: for a manifest built in memory to describe a
    /// checkpoint read by byte ranges (`runtime::remote`), whose bytes are checked as they
    /// arrive instead.
    ///
    /// # Errors
    /// [`CoreError::Manifest`].
    pub fn validate_structure(&self) -> Result<(), CoreError> {
        self.config
            .validate()
            .map_err(|e| CoreError::Manifest(e.to_string()))?;
        for f in &self.files {
            check_name(&f.name)?;
        }
        let listed = |name: &str| self.files.iter().any(|f| f.name == name);
        if !listed(&self.dense) {
            return Err(CoreError::Manifest(format!(
                "dense file {} is not listed in files",
                self.dense
            )));
        }
        if let Some(t) = &self.tokenizer
            && !listed(t)
        {
            return Err(CoreError::Manifest(format!(
                "tokenizer {t} is not listed in files"
            )));
        }
        let mut expected = 0;
        for stack in [StackKind::Encoder, StackKind::Decoder] {
            expected += self.config.sparse_blocks(stack).len() * self.config.num_experts;
        }
        if self.experts.len() != expected {
            return Err(CoreError::Manifest(format!(
                "{} experts listed; the config has {expected}",
                self.experts.len()
            )));
        }
        for e in &self.experts {
            if !self.config.is_sparse(e.stack, e.block) || e.expert >= self.config.num_experts {
                return Err(CoreError::Manifest(format!(
                    "expert {} of {} block {} is not in the model",
                    e.expert,
                    e.stack.as_str(),
                    e.block
                )));
            }
            if !listed(&e.file) {
                return Err(CoreError::Manifest(format!(
                    "expert file {} is not listed in files",
                    e.file
                )));
            }
        }
        Ok(())
    }

    /// The file entry called `name`.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Every expert, as the store and the routing name them, in the manifest's order.
    pub fn expert_ids(&self) -> Vec<switchscope_wire::ExpertId> {
        self.experts
            .iter()
            .map(|e| switchscope_wire::ExpertId {
                stack: e.stack,
                block: e.block,
                expert: e.expert,
            })
            .collect()
    }

    /// The shard of one expert.
    pub fn expert(&self, stack: StackKind, block: usize, expert: usize) -> Option<&ExpertEntry> {
        self.experts
            .iter()
            .find(|e| e.stack == stack && e.block == block && e.expert == expert)
    }

    /// Total bytes of all files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks shard bytes against their manifest entry.
///
/// # Errors
/// [`CoreError::Shard`]: wrong size (truncated) or wrong SHA-256 (corrupt).
pub fn verify(entry: &FileEntry, bytes: &[u8]) -> Result<(), CoreError> {
    if bytes.len() as u64 != entry.bytes {
        return Err(CoreError::Shard {
            file: entry.name.clone(),
            reason: format!(
                "has {} bytes; the manifest says {} (truncated?)",
                bytes.len(),
                entry.bytes
            ),
        });
    }
    if sha256_hex(bytes) != entry.sha256 {
        return Err(CoreError::Shard {
            file: entry.name.clone(),
            reason: "does not match its sha256 (corrupt)".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_model() {
        for good in [
            "dense.safetensors",
            "experts/encoder.b1.e0.safetensors",
            "tokenizer.json",
        ] {
            check_name(good).unwrap();
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "experts/../../x",
            "a//b",
            "a\\b",
            "C:x",
            "./a",
            "a b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn versions_and_formats_are_checked() {
        let err = Manifest::from_json(r#"{"format": "switchscope", "version": 2}"#).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        let err = Manifest::from_json(r#"{"format": "other", "version": 1}"#).unwrap_err();
        assert!(
            err.to_string().contains("not a Switchscope manifest"),
            "{err}"
        );
        let err = Manifest::from_json("{").unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }
}
