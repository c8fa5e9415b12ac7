//! Precompressed copies of the app's files: `NAME.br` (Brotli) and `NAME.gz` (gzip) beside each
//! text or wasm file of a build, which [`crate::http`] answers `Accept-Encoding` with.
//!
//! Only formats that compress are copied (wasm, JS, CSS, HTML, JSON, the web manifest, SVG),
//! and a copy is kept only when it is smaller than its file. Weights (`.safetensors`, shard
//! files) are never compressed: they are quantized bytes that gain little, and they are read by
//! byte ranges, which must address the file itself.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A content coding with a file written beside the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
}

/// The codings written, in the order the server prefers them.
pub const CODINGS: [Coding; 2] = [Coding::Brotli, Coding::Gzip];

impl Coding {
    /// The token in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Gzip => "gzip",
        }
    }

    /// The suffix of the copy beside the original (`app.wasm.br`).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Gzip => "gz",
        }
    }

    /// The copy of `path` in this coding.
    pub fn variant(self, path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".");
        name.push(self.suffix());
        PathBuf::from(name)
    }

    /// `data` in this coding, at the strongest setting (a build pays once, every visit gains).
    pub fn encode(self, data: &[u8]) -> Result<Vec<u8>> {
        match self {
            Self::Brotli => {
                let mut out = Vec::new();
                let params = brotli::enc::BrotliEncoderParams {
                    quality: 11,
                    lgwin: 22,
                    ..Default::default()
                };
                brotli::BrotliCompress(&mut &data[..], &mut out, &params)?;
                Ok(out)
            }
            Self::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                encoder.write_all(data)?;
                Ok(encoder.finish()?)
            }
        }
    }
}

/// Whether files like `path` get compressed copies.
pub fn compressible(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("wasm" | "js" | "mjs" | "css" | "html" | "json" | "webmanifest" | "svg")
    )
}

/// What [`write_variants`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Files that got at least one copy.
    pub files: usize,
    /// Their total size, and the total of their smallest copies.
    pub bytes: u64,
    pub smallest: u64,
}

/// Writes `.br` and `.gz` beside every compressible file under `dir` (recursively), each only
/// when smaller than its file; removes copies that no longer have a file or no longer gain.
pub fn write_variants(dir: &Path) -> Result<Written> {
    let mut written = Written::default();
    for path in files(dir)? {
        let name = path.to_string_lossy();
        let stale = CODINGS.iter().find_map(|c| {
            name.strip_suffix(&format!(".{}", c.suffix()))
                .map(PathBuf::from)
        });
        if let Some(original) = stale {
            if !original.is_file() || !compressible(&original) {
                fs::remove_file(&path)?;
            }
            continue;
        }
        if !compressible(&path) {
            continue;
        }
        let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut smallest = data.len() as u64;
        for coding in CODINGS {
            let encoded = coding.encode(&data)?;
            let variant = coding.variant(&path);
            if encoded.len() < data.len() {
                fs::write(&variant, &encoded)
                    .with_context(|| format!("writing {}", variant.display()))?;
                smallest = smallest.min(encoded.len() as u64);
            } else if variant.exists() {
                fs::remove_file(&variant)?;
            }
        }
        if smallest < data.len() as u64 {
            written.files += 1;
            written.bytes += data.len() as u64;
            written.smallest += smallest;
        }
    }
    Ok(written)
}

/// The app's code in a build (its top-level wasm and JS files) with each file's gzip size:
/// what the size goal of the app counts.
pub fn app_code(dist: &Path) -> Result<Vec<(String, u64, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dist)? {
        let path = entry?.path();
        let code = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("wasm" | "js")
        );
        if !code || !path.is_file() {
            continue;
        }
        let data = fs::read(&path)?;
        let gz = Coding::Gzip.encode(&data)?.len() as u64;
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into();
        out.push((name, data.len() as u64, gz));
    }
    out.sort();
    Ok(out)
}

fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files(&path)?);
        } else {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn copies_decode_to_their_file_and_weights_get_none() {
        let dir = std::env::temp_dir().join(format!("xtask-compress-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("models/m")).unwrap();
        let text = "fn main() { println!(\"routing\"); }\n".repeat(200);
        fs::write(dir.join("app.js"), &text).unwrap();
        fs::write(dir.join("models/m/manifest.json"), &text).unwrap();
        fs::write(dir.join("models/m/experts.safetensors"), &text).unwrap();
        fs::write(dir.join("tiny.css"), "a{}").unwrap();
        // a copy whose file is gone
        fs::write(dir.join("old.js.br"), "x").unwrap();

        let written = write_variants(&dir).unwrap();
        assert_eq!(written.files, 2);
        assert!(written.smallest < written.bytes / 10, "{written:?}");
        let br = fs::read(dir.join("app.js.br")).unwrap();
        let mut decoded = Vec::new();
        brotli::Decompressor::new(&br[..], 4096)
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text.as_bytes());
        let gz = fs::read(dir.join("models/m/manifest.json.gz")).unwrap();
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text);
        assert!(!dir.join("models/m/experts.safetensors.br").exists());
        assert!(!dir.join("models/m/experts.safetensors.gz").exists());
        // three bytes do not shrink
        assert!(!dir.join("tiny.css.br").exists() && !dir.join("tiny.css.gz").exists());
        assert!(!dir.join("old.js.br").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
