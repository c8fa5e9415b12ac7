//! Opening what a command names: a model directory (or its URL) on a backend, its tokenizer.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use switchscope_core::formats::quant::Scheme;
use switchscope_core::runtime::http::Traffic;
use switchscope_core::runtime::remote::{RemoteModel, open_url};
use switchscope_core::runtime::store::StoreOptions;
use switchscope_core::tensor::Device;
use switchscope_core::tokenizer::Tokenizer;
use switchscope_core::{BackendKind, ModelLocation, OpenOptions, Switch, backend};

/// Whether `model` names a URL rather than a directory.
pub fn is_url(model: &Path) -> bool {
    model
        .to_str()
        .is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"))
}

/// A model opened for a command, with the tokenizer a URL brought along.
pub struct Opened {
    pub switch: Switch,
    /// `tokenizer.json` of a model opened from a URL.
    pub tokenizer: Option<Vec<u8>>,
    /// For a checkpoint read by byte ranges: what it moved over the network.
    pub ranged: Option<Ranged>,
}

/// A checkpoint read by byte ranges, as a benchmark counts it.
pub struct Ranged {
    /// Bytes and requests over the network, counted as answers arrive.
    pub traffic: Arc<Traffic>,
    /// Each weight file's name and length.
    pub files: Vec<(String, u64)>,
    /// Bytes of the dense tensors (fetched at open).
    pub dense_bytes: u64,
}

/// Opens a checkpoint or converted model directory on `backend` (`cpu` or `wgpu`); a converted
/// model's experts come from its files on demand, kept as `store` says.
pub fn open(dir: &Path, backend: &str, store: StoreOptions) -> Result<Switch> {
    Ok(open_model(dir, backend, store)?.switch)
}

/// As [`open`], and `model` may also be an `http(s)://` URL: of a converted model directory
/// (its files fetched whole and checked), or of a Hugging Face checkpoint directory, read by
/// byte ranges (headers and dense tensors now, each expert when routed to; quantized to int8
/// as it arrives on a GPU).
pub fn open_model(model: &Path, backend: &str, store: StoreOptions) -> Result<Opened> {
    let kind: BackendKind = backend.parse()?;
    let device: Device = pollster::block_on(backend::gpu_device(kind))?;
    let options = OpenOptions {
        store,
        ..OpenOptions::default()
    };
    if !is_url(model) {
        let switch = pollster::block_on(Switch::open(model, &device, options))
            .with_context(|| format!("loading {}", model.display()))?;
        return Ok(Opened {
            switch,
            tokenizer: None,
            ranged: None,
        });
    }
    let url = model.to_string_lossy().into_owned();
    let experts = if kind == BackendKind::Cpu {
        Scheme::F32
    } else {
        Scheme::Int8
    };
    let transport = Arc::new(crate::http::Ureq::default());
    let remote = pollster::block_on(open_url(&url, transport, experts))
        .with_context(|| format!("opening {url}"))?;
    let (at, tokenizer, ranged) = match remote {
        RemoteModel::Converted {
            manifest,
            source,
            tokenizer,
        } => (
            ModelLocation::Source {
                manifest,
                source: Box::new(source),
            },
            tokenizer,
            None,
        ),
        RemoteModel::Checkpoint(checkpoint) => {
            eprintln!(
                "{url}: a checkpoint read by byte ranges: {} files, {:.2} MB of tensors; fetched {:.2} MB so far (config, headers, {:.2} MB of dense tensors); experts as the router picks them",
                checkpoint
                    .manifest
                    .files
                    .iter()
                    .filter_map(|f| f.name.split('/').next())
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
                checkpoint.manifest.total_bytes() as f64 / 1e6,
                checkpoint
                    .traffic
                    .bytes
                    .load(std::sync::atomic::Ordering::Relaxed) as f64
                    / 1e6,
                checkpoint.dense_bytes as f64 / 1e6,
            );
            let tokenizer = checkpoint.tokenizer.clone();
            let ranged = Ranged {
                traffic: checkpoint.traffic.clone(),
                files: checkpoint
                    .files()
                    .map(|(name, len)| (name.to_owned(), len))
                    .collect(),
                dense_bytes: checkpoint.dense_bytes,
            };
            (
                ModelLocation::Checkpoint(checkpoint),
                tokenizer,
                Some(ranged),
            )
        }
    };
    let switch = pollster::block_on(Switch::open(at, &device, options))
        .with_context(|| format!("loading {url}"))?;
    Ok(Opened {
        switch,
        tokenizer,
        ranged,
    })
}

/// The tokenizer of a model directory (`tokenizer.json`; converted directories keep it too).
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        bail!(
            "--prompt needs a tokenizer: {} has no tokenizer.json (use --input-ids)",
            dir.display()
        );
    }
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Tokenizer::from_bytes(&bytes)?)
}
