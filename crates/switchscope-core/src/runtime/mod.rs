//! The runtime: a model opened for use. [`Switch`] owns the config, the model, the expert store
//! (for a converted model) and the device, and is opened one way, [`Switch::open`], from a
//! Hugging Face checkpoint directory or a converted one, local or over an [`ExpertSource`].
//!
//! - [`store`]: experts fetched when the router first picks them, kept under a byte budget.
//! - [`policy`]: which resident expert the store gives up when the budget is full.
//! - [`source`]: where shard bytes come from (files here; the web worker adds HTTP).
//! - [`http`]: the HTTP transport and one file read by checked byte ranges.
//! - [`remote`]: a model over HTTP: a checkpoint by byte ranges, a converted model by files.
//! - [`experts`]: a sparse layer's experts held by the store.
//! - [`generate`]: greedy or sampled decoding, recording the routing of every step.

#[cfg(any(feature = "wgpu", feature = "webgpu"))]
mod decode;
pub mod experts;
pub mod generate;
pub mod http;
pub mod policy;
pub mod remote;
pub mod source;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::Device;
use switchscope_wire::LayerRouting;

use crate::CoreError;
use crate::config::SwitchConfig;
use crate::formats::checkpoint::open_hf_source;
use crate::formats::converted::{ConvertedDir, DenseBytes};
use crate::formats::manifest::{Manifest, verify};
use crate::model::experts::Experts;
use crate::model::load::ExpertWeights;
use crate::model::{ForwardOutput, RunOptions, SwitchModel, TokenBatch};
use experts::StoreExperts;
use source::{ExpertSource, FileSource};
use store::{ExpertStore, StoreOptions};

/// Where a model is opened from.
#[derive(Debug)]
pub enum ModelLocation {
    /// A local directory: a converted model (`manifest.json`, every file checked against its
    /// SHA-256 before use) or a Hugging Face checkpoint (`config.json` and
    /// `model.safetensors`, `model.safetensors.index.json` or `pytorch_model.bin`).
    Dir(PathBuf),
    /// A converted model whose files come from `source` (HTTP in the browser).
    Source {
        manifest: Box<Manifest>,
        source: Box<dyn ExpertSource>,
    },
    /// A Hugging Face checkpoint read by byte ranges ([`remote::open_checkpoint`]): its dense
    /// tensors fetched, its experts fetched when routed to.
    Checkpoint(Box<remote::RemoteCheckpoint>),
}

impl From<&Path> for ModelLocation {
    fn from(dir: &Path) -> Self {
        Self::Dir(dir.to_owned())
    }
}

impl From<PathBuf> for ModelLocation {
    fn from(dir: PathBuf) -> Self {
        Self::Dir(dir)
    }
}

/// How a model is opened.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// How a converted model's expert store keeps experts (budget, prefetch, events, kernels).
    pub store: StoreOptions,
    /// A converted directory's experts are all read now, as f32, like a checkpoint's (no
    /// store), instead of each when the router first picks it.
    pub eager: bool,
}

/// A Switch Transformer ready to run: config, weights, the expert store and the device.
#[derive(Debug)]
pub struct Switch {
    config: SwitchConfig,
    model: SwitchModel,
    store: Option<Arc<ExpertStore>>,
    device: Device,
    /// Our kernels' context when the device is a GPU (greedy decoding picks there).
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    gpu: Option<crate::kernels::Gpu>,
}

impl Switch {
    /// Opens the model at `at` on `device`. A converted model's dense weights are read (and
    /// checked) now and its experts, unless `options.eager`, when the router first picks them;
    /// a checkpoint is read whole.
    ///
    /// # Errors
    /// [`CoreError::Io`] for a missing file, [`CoreError::Config`] for a bad config,
    /// [`CoreError::Manifest`] for an invalid manifest, [`CoreError::Shard`] for a missing,
    /// truncated or corrupt file, [`CoreError::Weights`] for weights that do not fit the config,
    /// [`CoreError::Input`] for eager experts over a source.
    pub async fn open(
        at: impl Into<ModelLocation>,
        device: &Device,
        options: OpenOptions,
    ) -> Result<Self, CoreError> {
        let (config, model, store) = match at.into() {
            ModelLocation::Dir(dir) if dir.join("manifest.json").is_file() => {
                let mut dense = ConvertedDir::open(&dir)?;
                let config = dense.manifest.config.clone();
                if options.eager {
                    let model =
                        SwitchModel::load(&config, &mut dense, device, ExpertWeights::Eager)?;
                    (config, model, None)
                } else {
                    let store = ExpertStore::with_options(
                        dense.manifest.clone(),
                        Box::new(FileSource::new(&dir)),
                        device.clone(),
                        options.store,
                    );
                    with_store(config, &mut dense, device, store)?
                }
            }
            ModelLocation::Dir(dir) => {
                let (config, mut source) = open_hf_source(&dir)?;
                let model =
                    SwitchModel::load(&config, source.as_mut(), device, ExpertWeights::Eager)?;
                (config, model, None)
            }
            ModelLocation::Source { .. } | ModelLocation::Checkpoint(_) if options.eager => {
                return Err(CoreError::Input(
                    "a model fetched from a source loads its experts on demand".into(),
                ));
            }
            ModelLocation::Source { manifest, source } => {
                let manifest = *manifest;
                manifest.validate()?;
                let entry = manifest
                    .file(&manifest.dense)
                    .ok_or_else(|| {
                        CoreError::Manifest(format!("dense file {} is not listed", manifest.dense))
                    })?
                    .clone();
                let fetched = source.fetch(&entry).await?;
                verify(&entry, &fetched.bytes)?;
                let mut dense = DenseBytes::new(&manifest, fetched.bytes)?;
                let config = manifest.config.clone();
                let store =
                    ExpertStore::with_options(manifest, source, device.clone(), options.store);
                with_store(config, &mut dense, device, store)?
            }
            ModelLocation::Checkpoint(checkpoint) => {
                let remote::RemoteCheckpoint {
                    manifest,
                    mut dense,
                    experts,
                    ..
                } = *checkpoint;
                let config = manifest.config.clone();
                let store = ExpertStore::with_options(
                    manifest,
                    Box::new(experts),
                    device.clone(),
                    options.store,
                );
                with_store(config, &mut dense, device, store)?
            }
        };
        Ok(Self {
            config,
            model,
            store,
            device: device.clone(),
            #[cfg(any(feature = "wgpu", feature = "webgpu"))]
            gpu: crate::kernels::Gpu::of(device),
        })
    }

    /// The model's configuration (`config.json`).
    pub fn config(&self) -> &SwitchConfig {
        &self.config
    }

    /// The model itself, for step-by-step use (`encode`, `decode`).
    pub fn model(&self) -> &SwitchModel {
        &self.model
    }

    /// The store a converted model's experts come from (`None` for experts loaded up front).
    pub fn store(&self) -> Option<&Arc<ExpertStore>> {
        self.store.as_ref()
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A teacher-forced pass: encoder over `input`, decoder over `decoder_input`.
    ///
    /// # Errors
    /// As [`SwitchModel::forward`].
    pub async fn forward(
        &self,
        input: &TokenBatch,
        decoder_input: &TokenBatch,
        run: RunOptions,
    ) -> Result<ForwardOutput, CoreError> {
        self.model
            .forward(&self.config, input, decoder_input, run)
            .await
    }

    /// The routing of `input_ids` → `output_ids` recomputed teacher-forced (the decoder fed the
    /// start token and `output_ids` but the last): encoder sparse layers, then decoder ones.
    ///
    /// # Errors
    /// [`CoreError::Input`] for an empty input; execution errors.
    pub async fn route(
        &self,
        input_ids: &[u32],
        output_ids: &[u32],
        run: RunOptions,
    ) -> Result<Vec<LayerRouting>, CoreError> {
        let config = &self.config;
        let mut decoder = vec![config.decoder_start()];
        decoder.extend(output_ids.iter().take(output_ids.len().saturating_sub(1)));
        let input = TokenBatch::new(&[input_ids.to_vec()], config.pad_token_id)?;
        let decoder = TokenBatch::new(&[decoder], config.pad_token_id)?;
        let out = self.forward(&input, &decoder, run).await?;
        Ok(out.routing.into_iter().next().unwrap_or_default())
    }
}

/// The model with its dense weights from `dense` and its experts from `store`.
fn with_store(
    config: SwitchConfig,
    dense: &mut dyn crate::formats::tensor::TensorSource,
    device: &Device,
    store: ExpertStore,
) -> Result<(SwitchConfig, SwitchModel, Option<Arc<ExpertStore>>), CoreError> {
    let store = Arc::new(store);
    let provide = |stack, block| -> Arc<dyn Experts> {
        Arc::new(StoreExperts {
            store: store.clone(),
            stack,
            block,
        })
    };
    let model = SwitchModel::load(&config, dense, device, ExpertWeights::Provided(&provide))?;
    Ok((config, model, Some(store)))
}
