//! On-demand experts: a sparse layer asks the [`ExpertStore`] for an expert only after its
//! router has sent a token to it; the store fetches the shard from an [`ExpertSource`]
//! (files natively, HTTP in the browser), checks its size and SHA-256, decodes it onto the
//! device and keeps it resident under a byte budget, evicting by a [`Policy`] (stale-then-LFU with
//! pre-gate pins unless told otherwise; see [`super::policy`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use switchscope_wire::{ExpertId, ShardEvent, ShardEventKind, Stack, StoreStats};

use super::policy::{Access, Policy, Residency};
use super::source::ExpertSource;
use crate::CoreError;
use crate::formats::manifest::{FileEntry, Manifest};
use crate::formats::shard::decode_matrix;
use crate::model::layers::DenseActDense;

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
    /// Which resident expert goes when the budget is full.
    pub policy: Policy,
    /// Keep the request trace (every demand request and pre-gating prediction, in order) for
    /// [`ExpertStore::trace`]; pre-gating then runs even without `prefetch`.
    pub record_trace: bool,
    /// Keep every event (a hit per routed token included) for [`ExpertStore::events`]. Off,
    /// events only go to the `listener`: a long session would otherwise hold them all.
    pub record_events: bool,
    /// Milliseconds since some fixed time, for event timings (`None`: timings are 0).
    pub clock: Option<fn() -> f64>,
    /// Called for each event as it happens.
    pub listener: Option<ShardListener>,
    /// On a GPU, keep int8/int4 experts dequantized to f32 and run them with burn's generic
    /// ops, instead of keeping them quantized and running our kernels (the default).
    pub generic_experts: bool,
    /// On a GPU, read every sparse layer's routing before its experts run, even where all of
    /// a layer's experts are resident and the device could choose among them (to compare the
    /// two; see [`ExpertStore::table`]).
    pub host_routing: bool,
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("budget_bytes", &self.budget_bytes)
            .field("prefetch", &self.prefetch)
            .field("policy", &self.policy)
            .field("record_trace", &self.record_trace)
            .field("record_events", &self.record_events)
            .field("generic_experts", &self.generic_experts)
            .field("host_routing", &self.host_routing)
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
}

struct State {
    resident: HashMap<ExpertId, Resident>,
    /// What the eviction policy knows (the same keys as `resident`).
    residency: Residency,
    /// Prefetched and not yet asked for, with their shard sizes.
    prefetched: HashMap<ExpertId, u64>,
    stats: StoreStats,
    /// Every event, with `record_events` only.
    events: Vec<ShardEvent>,
    /// The shard files fetched, in order, once per fetch (a file evicted and fetched again is
    /// listed twice): a few bytes per download, not per token.
    fetched_files: Vec<String>,
    trace: Vec<Access>,
    /// Per sparse layer whose experts are all resident: their table (`None`: they cannot
    /// share one), for choosing experts on the device.
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    tables: HashMap<(Stack, usize), Option<Arc<crate::kernels::ExpertTable>>>,
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
        let residency = Residency::new(options.policy, manifest.expert_ids());
        Self {
            manifest,
            source,
            device,
            options,
            #[cfg(any(feature = "wgpu", feature = "webgpu"))]
            gpu,
            state: Mutex::new(State {
                resident: HashMap::new(),
                residency,
                prefetched: HashMap::new(),
                stats: StoreStats::default(),
                events: Vec::new(),
                fetched_files: Vec::new(),
                trace: Vec::new(),
                #[cfg(any(feature = "wgpu", feature = "webgpu"))]
                tables: HashMap::new(),
            }),
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
                let q = crate::formats::shard::quantized_matrix(&self.manifest, file, bytes, name)?;
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
            crate::counters::upload(data.len() * 4);
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

    /// What has happened so far, in order, when the store was opened with
    /// [`StoreOptions::record_events`] (empty otherwise).
    pub fn events(&self) -> Vec<ShardEvent> {
        self.lock().events.clone()
    }

    /// Counters so far.
    pub fn stats(&self) -> StoreStats {
        self.lock().stats
    }

    /// The experts resident now, in the order the policy would give them up.
    pub fn resident(&self) -> Vec<ExpertId> {
        self.lock().residency.eviction_order()
    }

    /// The shard files fetched so far, in order (once per fetch).
    pub fn loaded_files(&self) -> Vec<String> {
        self.lock().fetched_files.clone()
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
        if matches!(event.kind, ShardEventKind::Fetched { .. }) {
            state.fetched_files.push(event.file.clone());
        }
        if self.options.record_events {
            state.events.push(event);
        }
    }

    fn file_of(&self, id: ExpertId) -> Result<FileEntry, CoreError> {
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

    /// Whether the model should pre-gate (predict the next sparse layer's experts and call
    /// [`Self::prefetch`]): to fetch early, to record them, or to pin them where a budget can
    /// evict (without a budget, pins change nothing and the prediction would cost a read-back
    /// per sparse layer for nothing).
    pub fn wants_predictions(&self) -> bool {
        self.options.prefetch
            || self.options.record_trace
            || (self.options.policy.pin_predicted && self.options.budget_bytes.is_some())
    }

    /// The request trace so far (empty unless the store was made with `record_trace`).
    pub fn trace(&self) -> Vec<Access> {
        self.lock().trace.clone()
    }

    /// Pre-gating predicted `experts` for the next sparse layer: the policy may pin them, and
    /// with `prefetch` the store starts fetching those that are neither resident nor already
    /// prefetched.
    pub fn prefetch(&self, experts: &[ExpertId]) {
        {
            let mut state = self.lock();
            state.residency.predicted(experts);
            if self.options.record_trace {
                state.trace.push(Access::Predicted(experts.to_vec()));
            }
        }
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

    /// A sparse layer's tokens were routed to `experts`, which it asks for next, one by one:
    /// none of them is evicted to make room for another.
    pub fn needs(&self, experts: &[ExpertId]) {
        if self.options.budget_bytes.is_none() && !self.options.record_trace {
            return;
        }
        let mut state = self.lock();
        state.residency.needed(experts);
        if self.options.record_trace {
            state.trace.push(Access::Layer(experts.to_vec()));
        }
    }

    /// Counts a router's request for `id`, and answers it when the expert is resident (a hit).
    fn request(&self, state: &mut State, id: ExpertId, file: &str) -> Option<Arc<Expert>> {
        state.stats.requests += 1;
        state.residency.request(id);
        if self.options.record_trace {
            state.trace.push(Access::Demand(id));
        }
        let module = state.resident.get(&id)?.module.clone();
        state.stats.hits += 1;
        self.emit(state, id, file, ShardEventKind::Hit);
        Some(module)
    }

    /// Records that the device ran resident expert `id` for a token (its layer's table chose
    /// it): the same request, hit and event as [`Self::expert`] records for a resident expert.
    ///
    /// # Errors
    /// [`CoreError::Manifest`] for an expert the manifest lacks; [`CoreError::Execution`] when
    /// it is not resident (a table exists only while all its experts are).
    pub fn note_routed(&self, id: ExpertId) -> Result<(), CoreError> {
        let file = self.file_of(id)?;
        let mut state = self.lock();
        match self.request(&mut state, id, &file.name) {
            Some(_) => Ok(()),
            None => Err(CoreError::Execution(format!(
                "{} block {} expert {} ran on the device without being resident",
                id.stack.as_str(),
                id.block,
                id.expert
            ))),
        }
    }

    /// The table of sparse layer `block` of `stack`'s experts, for choosing them on the device:
    /// only when every expert of the layer is resident, nothing can be evicted (no budget), and
    /// no request trace is recorded (pre-gating's predictions would be missing from it). Built
    /// once, the first time the layer is complete; it holds a copy of the layer's experts.
    #[cfg(any(feature = "wgpu", feature = "webgpu"))]
    pub fn table(&self, stack: Stack, block: usize) -> Option<Arc<crate::kernels::ExpertTable>> {
        let gpu = self.gpu.as_ref()?;
        let options = &self.options;
        if options.budget_bytes.is_some() || options.record_trace || options.host_routing {
            return None;
        }
        let mut state = self.lock();
        if let Some(table) = state.tables.get(&(stack, block)) {
            return table.clone();
        }
        let modules = (0..self.manifest.config.num_experts)
            .map(|expert| {
                let id = ExpertId {
                    stack,
                    block,
                    expert,
                };
                state.resident.get(&id).map(|r| r.module.clone())
            })
            .collect::<Option<Vec<Arc<Expert>>>>()?;
        let quantized = modules
            .iter()
            .map(|m| match &**m {
                Expert::Quantized(q) => Some(q),
                Expert::Dense(_) => None,
            })
            .collect::<Option<Vec<_>>>();
        let table = quantized
            .and_then(|q| crate::kernels::ExpertTable::build(gpu, &q))
            .map(Arc::new);
        if let Some(t) = &table {
            state.stats.table_bytes += t.device_bytes();
        }
        state.tables.insert((stack, block), table.clone());
        table
    }

    /// The expert, fetching and decoding its shard when it is not resident.
    ///
    /// # Errors
    /// [`CoreError::Shard`] when the shard is missing, truncated or corrupt (nothing is kept),
    /// [`CoreError::Manifest`] when the manifest has no such expert.
    pub async fn expert(
        &self,
        stack: Stack,
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
            if let Some(module) = self.request(&mut state, id, &file.name) {
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
            self.source.verify(&file, &fetched.bytes)?;
            let ms = self.now() - start;
            let shard = self.source.shard(&file, &fetched.bytes)?;
            let (module, device_bytes) = self.decode(&file.name, &shard)?;
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
                self.make_room(&mut state, id, device_bytes);
                let module = Arc::new(module);
                state.resident.insert(
                    id,
                    Resident {
                        module: module.clone(),
                        bytes: device_bytes,
                    },
                );
                state.residency.insert(id);
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

    /// Evicts the policy's victims until `incoming` more bytes (expert `id`) fit the budget.
    fn make_room(&self, state: &mut State, id: ExpertId, incoming: u64) {
        let Some(budget) = self.options.budget_bytes else {
            return;
        };
        while state.stats.resident_bytes + incoming > budget {
            let Some(victim) = state.residency.victim(Some(id)) else {
                return;
            };
            state.residency.remove(victim);
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
        #[cfg(any(feature = "wgpu", feature = "webgpu"))]
        state.tables.clear();
        let ids: Vec<ExpertId> = state.resident.keys().copied().collect();
        state.residency.clear();
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
