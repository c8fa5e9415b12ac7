//! On-demand experts: a sparse layer asks the [`ExpertStore`] for an expert only after its
//! router has sent a token to it; the store fetches the shard from an [`ExpertSource`]
//! (files natively, HTTP in the browser), checks its size and SHA-256, decodes it onto the
//! device and keeps it resident under a byte budget, evicting the least recently used expert.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::manifest::Manifest;
use super::quant::{Quantized, Scheme};
use super::safetensors::{TensorInfo, parse_bytes};
pub use super::source::{ExpertSource, Fetched, FileSource, Origin, ShardFuture, verify};
use crate::CoreError;
use crate::model::StackKind;
use crate::model::layers::DenseActDense;
use crate::model::weights::decode_floats_named;

/// Decodes one matrix (`wi` or `wo`) of an expert shard to f32, `[rows, cols]`.
///
/// # Errors
/// [`CoreError::Shard`] naming the file when a tensor is missing or malformed.
pub fn decode_matrix(
    manifest: &Manifest,
    file: &str,
    bytes: &[u8],
    matrix: &str,
) -> Result<(Vec<f32>, [usize; 2]), CoreError> {
    with_matrix(
        manifest,
        file,
        bytes,
        matrix,
        |shape, scheme, group, get| {
            Ok((
                decode_stored(file, matrix, shape, scheme, group, get)?,
                shape,
            ))
        },
    )
}

/// Reads one quantized matrix (`wi` or `wo`) of an expert shard as stored, `[rows, cols]`.
///
/// # Errors
/// [`CoreError::Shard`] naming the file when a tensor is missing or malformed.
pub fn quantized_matrix(
    manifest: &Manifest,
    file: &str,
    bytes: &[u8],
    matrix: &str,
) -> Result<Quantized, CoreError> {
    with_matrix(
        manifest,
        file,
        bytes,
        matrix,
        |shape, scheme, group, get| stored_quantized(file, matrix, shape, scheme, group, get),
    )
}

/// Parses an expert shard and calls `read` with matrix `matrix`'s shape, the manifest's
/// scheme and group size, and a lookup of the shard's tensors.
fn with_matrix<T>(
    manifest: &Manifest,
    file: &str,
    bytes: &[u8],
    matrix: &str,
    read: impl FnOnce([usize; 2], Scheme, usize, FindTensor<'_, '_>) -> Result<T, CoreError>,
) -> Result<T, CoreError> {
    let tensors = parse_bytes(bytes).map_err(|reason| CoreError::Shard {
        file: file.to_owned(),
        reason,
    })?;
    let c = &manifest.config;
    let shape = if matrix == "wi" {
        [c.d_ff, c.d_model]
    } else {
        [c.d_model, c.d_ff]
    };
    let q = &manifest.quantization;
    let get = |name: &str| tensors.get(name).map(|(info, raw)| (info.clone(), *raw));
    read(shape, q.experts, q.group_size, &get)
}

/// Finds a stored tensor's header entry and bytes by name.
pub type FindTensor<'a, 'b> = &'b dyn Fn(&str) -> Option<(TensorInfo, &'a [u8])>;

/// Decodes tensor `stem` (`wi`, or a dense name without `.weight`) of shape `[rows, cols]`
/// stored as `{stem}.weight` (f32/f16) or `{stem}.qweight` + `{stem}.scales` (int8/int4) in
/// `file`, whose tensors `get` finds.
///
/// # Errors
/// [`CoreError::Shard`] naming the file when a tensor is missing or malformed.
pub fn decode_stored<'a>(
    file: &str,
    stem: &str,
    [rows, cols]: [usize; 2],
    scheme: Scheme,
    group_size: usize,
    get: FindTensor<'a, '_>,
) -> Result<Vec<f32>, CoreError> {
    let shard = |what: String| CoreError::Shard {
        file: file.to_owned(),
        reason: what,
    };
    let find = |name: String| get(&name).ok_or_else(|| shard(format!("has no {name}")));
    Ok(match scheme {
        Scheme::F32 | Scheme::F16 => {
            let (info, raw) = find(format!("{stem}.weight"))?;
            if info.shape != [rows, cols] {
                return Err(shard(format!(
                    "{stem}.weight has shape {:?}, expected {:?}",
                    info.shape,
                    [rows, cols]
                )));
            }
            decode_floats_named(&info.dtype, raw, stem)?
        }
        _ => stored_quantized(file, stem, [rows, cols], scheme, group_size, get)?.dequantize(),
    })
}

/// Reads tensor `stem` (`wi`, `wo`) of shape `[rows, cols]` stored as `{stem}.qweight` +
/// `{stem}.scales` (int8/int4) in `file`, as it is stored (nothing dequantized).
///
/// # Errors
/// [`CoreError::Shard`] naming the file when a tensor is missing or has the wrong size.
pub fn stored_quantized<'a>(
    file: &str,
    stem: &str,
    [rows, cols]: [usize; 2],
    scheme: Scheme,
    group_size: usize,
    get: FindTensor<'a, '_>,
) -> Result<Quantized, CoreError> {
    let shard = |what: String| CoreError::Shard {
        file: file.to_owned(),
        reason: what,
    };
    let find = |name: String| get(&name).ok_or_else(|| shard(format!("has no {name}")));
    if !scheme.is_quantized() {
        return Err(shard(format!("{stem} is stored as {}", scheme.as_str())));
    }
    let (_, qraw) = find(format!("{stem}.qweight"))?;
    let (sinfo, sraw) = find(format!("{stem}.scales"))?;
    let padded = super::quant::padded_cols(cols, group_size);
    let per_row = if scheme == Scheme::Int4 {
        padded / 2
    } else {
        padded
    };
    let scales = decode_floats_named(&sinfo.dtype, sraw, stem)?;
    if qraw.len() != rows * per_row || scales.len() != rows * (padded / group_size) {
        return Err(shard(format!(
            "{stem} has the wrong size for {} with group {group_size}",
            scheme.as_str(),
        )));
    }
    Ok(Quantized {
        rows,
        cols,
        group_size,
        scheme,
        data: qraw.to_vec(),
        scales,
    })
}

/// One expert of one sparse layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExpertId {
    pub stack: StackKind,
    pub block: usize,
    pub expert: usize,
}

/// What happened to a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ShardEventKind {
    /// The router picked the expert and it was not resident: its shard is being fetched.
    Requested,
    /// The router picked the expert and it was resident.
    Hit,
    /// Pre-gating predicted the expert and its transfer was started early.
    Prefetching,
    /// The shard's bytes arrived and passed the size and SHA-256 checks.
    Fetched {
        bytes: u64,
        origin: Origin,
        /// Whether a prefetch had started the transfer.
        prefetched: bool,
        /// From the request to verified bytes.
        ms: f64,
    },
    /// Decoded onto the device; `resident_bytes` is the store's total afterwards.
    Resident {
        device_bytes: u64,
        resident_bytes: u64,
    },
    /// Dropped from the device to stay within the budget.
    Evicted { resident_bytes: u64 },
    /// The fetch, the check or the decoding failed; nothing was kept.
    Failed { reason: String },
}

/// Something that happened to the shard of `expert`, for the UI and for accounting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEvent {
    #[serde(flatten)]
    pub expert: ExpertId,
    pub file: String,
    #[serde(flatten)]
    pub kind: ShardEventKind,
}

/// Counters over a store's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Times a router asked for an expert.
    pub requests: u64,
    /// Of those, how many found it resident.
    pub hits: u64,
    /// Shards fetched (each a miss).
    pub fetches: u64,
    /// Bytes of the shards fetched.
    pub bytes_fetched: u64,
    /// Fetches that a prefetch had started.
    pub prefetch_used: u64,
    /// Prefetches started.
    pub prefetches: u64,
    /// Bytes of prefetched shards that no router asked for (so far).
    pub prefetch_wasted_bytes: u64,
    pub evictions: u64,
    /// Device bytes of the experts resident now.
    pub resident_bytes: u64,
    /// The most device bytes resident at any time.
    pub peak_resident_bytes: u64,
}

/// A callback for each [`ShardEvent`] as it happens.
pub type ShardListener = Arc<dyn Fn(&ShardEvent) + Send + Sync>;

/// How the store keeps experts.
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// Most device bytes of resident experts (`None`: no limit). An expert larger than the
    /// budget is still used, then dropped.
    pub budget_bytes: Option<u64>,
    /// Apply the next sparse layer's router to the current hidden state and start fetching the
    /// experts it picks before they are needed.
    pub prefetch: bool,
    /// Milliseconds since some fixed time, for event timings (`None`: timings are 0).
    pub clock: Option<fn() -> f64>,
    /// Called for each event as it happens.
    pub listener: Option<ShardListener>,
    /// On a GPU, keep int8/int4 experts dequantized to f32 and run them with burn's generic
    /// ops, instead of keeping them quantized and running our kernels (the default).
    pub generic_experts: bool,
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("budget_bytes", &self.budget_bytes)
            .field("prefetch", &self.prefetch)
            .field("generic_experts", &self.generic_experts)
            .finish_non_exhaustive()
    }
}

/// A resident expert, in the form the device computes it with.
#[derive(Debug)]
pub enum Expert {
    /// f32 weights, for burn's generic ops (the CPU, and GPUs without our kernels).
    Dense(DenseActDense),
    /// int8/int4 weights as the shard stores them, for our kernels (`crate::kernels`).
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    Quantized(crate::kernels::QuantExpert),
}

struct Resident {
    module: Arc<Expert>,
    bytes: u64,
    last_use: u64,
}

#[derive(Default)]
struct State {
    resident: HashMap<ExpertId, Resident>,
    /// Prefetched and not yet asked for, with their shard sizes.
    prefetched: HashMap<ExpertId, u64>,
    tick: u64,
    stats: StoreStats,
    events: Vec<ShardEvent>,
}

/// Experts of a converted model, loaded on first use and kept on the device.
pub struct ExpertStore {
    manifest: Manifest,
    source: Box<dyn ExpertSource>,
    device: Device,
    options: StoreOptions,
    /// Our kernels' context, when experts are kept quantized on a GPU.
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    gpu: Option<crate::kernels::Gpu>,
    state: Mutex<State>,
}

impl fmt::Debug for ExpertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpertStore")
            .field("source", &self.source)
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ExpertStore {
    pub fn new(manifest: Manifest, source: Box<dyn ExpertSource>, device: Device) -> Self {
        Self::with_options(manifest, source, device, StoreOptions::default())
    }

    pub fn with_options(
        manifest: Manifest,
        source: Box<dyn ExpertSource>,
        device: Device,
        options: StoreOptions,
    ) -> Self {
        #[cfg(any(feature = "wgpu", feature = "webgpu"))]
        let gpu = if manifest.quantization.experts.is_quantized() && !options.generic_experts {
            crate::kernels::Gpu::of(&device)
        } else {
            None
        };
        Self {
            manifest,
            source,
            device,
            options,
            #[cfg(any(feature = "wgpu", feature = "webgpu"))]
            gpu,
            state: Mutex::default(),
        }
    }

    /// Our kernels' context when this store keeps experts quantized on a GPU (then every
    /// expert it returns is [`Expert::Quantized`]).
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    pub fn kernels(&self) -> Option<&crate::kernels::Gpu> {
        self.gpu.as_ref()
    }

    /// Decodes a verified shard into the form this store keeps, with its device bytes.
    fn decode(&self, file: &str, bytes: &[u8]) -> Result<(Expert, u64), CoreError> {
        #[cfg(any(feature = "wgpu", feature = "webgpu"))]
        if let Some(gpu) = &self.gpu {
            use crate::kernels::{QuantExpert, QuantMatrix};
            let matrix = |name: &str| -> Result<QuantMatrix, CoreError> {
                let q = quantized_matrix(&self.manifest, file, bytes, name)?;
                QuantMatrix::upload(gpu, &q)
            };
            let expert = QuantExpert {
                wi: matrix("wi")?,
                wo: matrix("wo")?,
            };
            let device_bytes = expert.device_bytes();
            return Ok((Expert::Quantized(expert), device_bytes));
        }
        let tensor = |matrix: &str| -> Result<Param<Tensor<2>>, CoreError> {
            let (data, shape) = decode_matrix(&self.manifest, file, bytes, matrix)?;
            Ok(Param::from_tensor(Tensor::from_data(
                TensorData::new(data, shape),
                &self.device,
            )))
        };
        let module = DenseActDense {
            wi: tensor("wi")?,
            wo: tensor("wo")?,
        };
        let c = &self.manifest.config;
        Ok((Expert::Dense(module), (2 * c.d_model * c.d_ff * 4) as u64))
    }

    /// The manifest the store serves.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The options the store was made with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What has happened so far, in order.
    pub fn events(&self) -> Vec<ShardEvent> {
        self.lock().events.clone()
    }

    /// Counters so far.
    pub fn stats(&self) -> StoreStats {
        self.lock().stats
    }

    /// The experts resident now, least recently used first.
    pub fn resident(&self) -> Vec<ExpertId> {
        let state = self.lock();
        let mut ids: Vec<(u64, ExpertId)> = state
            .resident
            .iter()
            .map(|(id, r)| (r.last_use, *id))
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// The shard files fetched so far, in order.
    pub fn loaded_files(&self) -> Vec<String> {
        self.lock()
            .events
            .iter()
            .filter(|e| matches!(e.kind, ShardEventKind::Fetched { .. }))
            .map(|e| e.file.clone())
            .collect()
    }

    fn now(&self) -> f64 {
        self.options.clock.map_or(0.0, |clock| clock())
    }

    fn emit(&self, state: &mut State, expert: ExpertId, file: &str, kind: ShardEventKind) {
        let event = ShardEvent {
            expert,
            file: file.to_owned(),
            kind,
        };
        if let Some(listener) = &self.options.listener {
            listener(&event);
        }
        state.events.push(event);
    }

    fn file_of(&self, id: ExpertId) -> Result<super::manifest::FileEntry, CoreError> {
        let entry = self
            .manifest
            .expert(id.stack, id.block, id.expert)
            .ok_or_else(|| {
                CoreError::Manifest(format!(
                    "the manifest has no expert {} of {} block {}",
                    id.expert,
                    id.stack.as_str(),
                    id.block
                ))
            })?;
        self.manifest
            .file(&entry.file)
            .cloned()
            .ok_or_else(|| CoreError::Manifest(format!("expert file {} is not listed", entry.file)))
    }

    fn file_name(&self, id: ExpertId) -> String {
        self.manifest
            .expert(id.stack, id.block, id.expert)
            .map(|e| e.file.clone())
            .unwrap_or_default()
    }

    /// Starts fetching the shards of `experts` that are neither resident nor already
    /// prefetched (when the store was made with `prefetch`).
    pub fn prefetch(&self, experts: &[ExpertId]) {
        if !self.options.prefetch {
            return;
        }
        for &id in experts {
            let Ok(file) = self.file_of(id) else { continue };
            {
                let mut state = self.lock();
                if state.resident.contains_key(&id) || state.prefetched.contains_key(&id) {
                    continue;
                }
                state.prefetched.insert(id, file.bytes);
                state.stats.prefetches += 1;
                state.stats.prefetch_wasted_bytes += file.bytes;
                self.emit(&mut state, id, &file.name, ShardEventKind::Prefetching);
            }
            self.source.prefetch(&file);
        }
    }

    /// The expert, fetching and decoding its shard when it is not resident.
    ///
    /// # Errors
    /// [`CoreError::Shard`] when the shard is missing, truncated or corrupt (nothing is kept),
    /// [`CoreError::Manifest`] when the manifest has no such expert.
    pub async fn expert(
        &self,
        stack: StackKind,
        block: usize,
        expert: usize,
    ) -> Result<Arc<Expert>, CoreError> {
        let id = ExpertId {
            stack,
            block,
            expert,
        };
        let file = self.file_of(id)?;
        {
            let mut state = self.lock();
            state.stats.requests += 1;
            state.tick += 1;
            let tick = state.tick;
            if let Some(r) = state.resident.get_mut(&id) {
                r.last_use = tick;
                let module = r.module.clone();
                state.stats.hits += 1;
                self.emit(&mut state, id, &file.name, ShardEventKind::Hit);
                return Ok(module);
            }
            if let Some(bytes) = state.prefetched.remove(&id) {
                state.stats.prefetch_wasted_bytes -= bytes;
            }
            self.emit(&mut state, id, &file.name, ShardEventKind::Requested);
        }
        let start = self.now();
        let decoded = async {
            let fetched = self.source.fetch(&file).await?;
            verify(&file, &fetched.bytes)?;
            let ms = self.now() - start;
            let (module, device_bytes) = self.decode(&file.name, &fetched.bytes)?;
            Ok::<_, CoreError>((module, device_bytes, fetched, ms))
        }
        .await;
        let mut state = self.lock();
        match decoded {
            Ok((module, device_bytes, fetched, ms)) => {
                state.stats.fetches += 1;
                state.stats.bytes_fetched += fetched.bytes.len() as u64;
                if fetched.prefetched {
                    state.stats.prefetch_used += 1;
                }
                let kind = ShardEventKind::Fetched {
                    bytes: fetched.bytes.len() as u64,
                    origin: fetched.origin,
                    prefetched: fetched.prefetched,
                    ms,
                };
                self.emit(&mut state, id, &file.name, kind);
                self.make_room(&mut state, device_bytes);
                let module = Arc::new(module);
                let tick = state.tick;
                state.resident.insert(
                    id,
                    Resident {
                        module: module.clone(),
                        bytes: device_bytes,
                        last_use: tick,
                    },
                );
                state.stats.resident_bytes += device_bytes;
                state.stats.peak_resident_bytes = state
                    .stats
                    .peak_resident_bytes
                    .max(state.stats.resident_bytes);
                let resident_bytes = state.stats.resident_bytes;
                self.emit(
                    &mut state,
                    id,
                    &file.name,
                    ShardEventKind::Resident {
                        device_bytes,
                        resident_bytes,
                    },
                );
                Ok(module)
            }
            Err(e) => {
                let reason = e.to_string();
                self.emit(
                    &mut state,
                    id,
                    &file.name,
                    ShardEventKind::Failed { reason },
                );
                Err(e)
            }
        }
    }

    /// Evicts least recently used experts until `incoming` more bytes fit the budget.
    fn make_room(&self, state: &mut State, incoming: u64) {
        let Some(budget) = self.options.budget_bytes else {
            return;
        };
        while state.stats.resident_bytes + incoming > budget {
            let Some((&victim, _)) = state.resident.iter().min_by_key(|(_, r)| r.last_use) else {
                return;
            };
            let gone = state.resident.remove(&victim).expect("present");
            state.stats.resident_bytes -= gone.bytes;
            state.stats.evictions += 1;
            let resident_bytes = state.stats.resident_bytes;
            let file = self.file_name(victim);
            self.emit(
                state,
                victim,
                &file,
                ShardEventKind::Evicted { resident_bytes },
            );
        }
    }

    /// Drops every resident expert (e.g. after the device was lost); events say so.
    pub fn clear(&self) {
        let mut state = self.lock();
        let ids: Vec<ExpertId> = state.resident.keys().copied().collect();
        for id in ids {
            let gone = state.resident.remove(&id).expect("present");
            state.stats.resident_bytes -= gone.bytes;
            let resident_bytes = state.stats.resident_bytes;
            let file = self.file_name(id);
            self.emit(
                &mut state,
                id,
                &file,
                ShardEventKind::Evicted { resident_bytes },
            );
        }
    }
}

/// A sparse layer's handle on the store.
#[derive(Debug, Clone)]
pub struct LazyExperts {
    pub store: Arc<ExpertStore>,
    pub stack: StackKind,
    pub block: usize,
}
