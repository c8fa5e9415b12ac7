//! Where shard bytes come from: an [`ExpertSource`] (files natively, HTTP with the Cache API in
//! the browser, byte ranges of a checkpoint in `super::remote`). Whatever the source, the store
//! has every shard's bytes checked ([`ExpertSource::verify`]: against the manifest's SHA-256,
//! unless the source checked them as they arrived) before it uses them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

use switchscope_wire::Origin;

use crate::CoreError;
use crate::formats::manifest::{FileEntry, verify};

/// A shard's bytes and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub origin: Origin,
    /// Whether a prefetch started this transfer before the bytes were asked for.
    pub prefetched: bool,
}

/// A future returning a shard's bytes.
pub type ShardFuture<'a> = Pin<Box<dyn Future<Output = Result<Fetched, CoreError>> + 'a>>;

/// Where shard bytes come from.
pub trait ExpertSource: fmt::Debug + Send + Sync {
    /// The bytes of `file`. Implementations that keep bytes (a cache) must [`verify`] them
    /// before keeping; the caller verifies again before use.
    fn fetch<'a>(&'a self, file: &'a FileEntry) -> ShardFuture<'a>;

    /// A hint that `file` will probably be fetched soon: a source may start the transfer now,
    /// so that [`Self::fetch`] finds it under way. The default does nothing.
    fn prefetch(&self, file: &FileEntry) {
        let _ = file;
    }

    /// Checks fetched bytes before the store uses them: by default their size and SHA-256
    /// against the manifest ([`verify`]). A source that checks its bytes another way as it
    /// receives them (a checkpoint read by byte ranges: each response against the file's
    /// `ETag` and length) checks the size only.
    ///
    /// # Errors
    /// [`CoreError::Shard`] for bytes that do not match.
    fn verify(&self, file: &FileEntry, bytes: &[u8]) -> Result<(), CoreError> {
        verify(file, bytes)
    }

    /// The shard the store decodes from fetched bytes: by default the bytes themselves; a
    /// source whose bytes are a checkpoint's raw tensors builds the shard from them.
    ///
    /// # Errors
    /// [`CoreError::Weights`] for bytes that do not make a shard.
    fn shard<'b>(&self, file: &FileEntry, bytes: &'b [u8]) -> Result<Cow<'b, [u8]>, CoreError> {
        let _ = file;
        Ok(Cow::Borrowed(bytes))
    }
}

/// Shards in a local directory. A prefetch reads the file into memory ahead of time.
#[derive(Debug, Default)]
pub struct FileSource {
    pub dir: PathBuf,
    early: Mutex<HashMap<String, Vec<u8>>>,
}

impl FileSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            early: Mutex::default(),
        }
    }

    fn read(&self, file: &FileEntry) -> Result<Vec<u8>, CoreError> {
        std::fs::read(self.dir.join(&file.name)).map_err(|e| CoreError::Shard {
            file: file.name.clone(),
            reason: format!("cannot be read: {e}"),
        })
    }
}

impl ExpertSource for FileSource {
    fn fetch<'a>(&'a self, file: &'a FileEntry) -> ShardFuture<'a> {
        Box::pin(async move {
            let early = self
                .early
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&file.name);
            Ok(match early {
                Some(bytes) => Fetched {
                    bytes,
                    origin: Origin::Disk,
                    prefetched: true,
                },
                None => Fetched {
                    bytes: self.read(file)?,
                    origin: Origin::Disk,
                    prefetched: false,
                },
            })
        })
    }

    fn prefetch(&self, file: &FileEntry) {
        // A failed read is left for `fetch` to report.
        if let Ok(bytes) = self.read(file) {
            self.early
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(file.name.clone(), bytes);
        }
    }
}
