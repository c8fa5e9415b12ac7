//! Opening what a command names: a model directory on a backend, its tokenizer.

use std::path::Path;

use anyhow::{Context, Result, bail};
use switchscope_core::runtime::store::StoreOptions;
use switchscope_core::tensor::Device;
use switchscope_core::tokenizer::Tokenizer;
use switchscope_core::{BackendKind, OpenOptions, Switch, backend};

/// Opens a checkpoint or converted model directory on `backend` (`cpu` or `wgpu`); a converted
/// model's experts come from its files on demand, kept as `store` says.
pub fn open(dir: &Path, backend: &str, store: StoreOptions) -> Result<Switch> {
    let kind: BackendKind = backend.parse()?;
    let device: Device = pollster::block_on(backend::gpu_device(kind))?;
    let options = OpenOptions {
        store,
        ..OpenOptions::default()
    };
    pollster::block_on(Switch::open(dir, &device, options))
        .with_context(|| format!("loading {}", dir.display()))
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
