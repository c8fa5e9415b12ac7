//! The crate's one error type.

/// Everything that can go wrong in the compute core.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// No GPU adapter could be acquired (no WebGPU in this browser, no Vulkan driver natively).
    #[error("no GPU adapter is available: {0}")]
    NoAdapter(String),
    /// The backend was asked for but this build does not include it.
    #[error("the {0} backend is not compiled into this build")]
    NotCompiled(&'static str),
    /// A GPU computation or read-back failed (for example, the device was lost).
    #[error("GPU execution failed: {0}")]
    Execution(String),
    /// A configuration this implementation cannot run, naming the key.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// Weights missing, of the wrong shape or in an unreadable format; names the tensor or file.
    #[error("{0}")]
    Weights(String),
    /// A manifest that is malformed, of another format or version, or unsafe.
    #[error("{0}")]
    Manifest(String),
    /// A shard (any file of a converted model) that is missing, truncated or corrupt.
    #[error("shard {file} {reason}")]
    Shard { file: String, reason: String },
    /// A tokenizer that cannot be loaded or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Bad input from the caller (empty sequence, id outside the vocabulary, ...).
    #[error("{0}")]
    Input(String),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// An HTTP request that failed or was answered in a way a ranged reader cannot use (no
    /// `Range` support, headers hidden by CORS, a file that changed since it was opened).
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    /// A backend name that is not one of `webgpu`, `wgpu`, `cpu`.
    #[error("unknown backend {0:?}: expected one of webgpu, wgpu, cpu")]
    UnknownBackend(String),
}

impl CoreError {
    /// An I/O error on `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
