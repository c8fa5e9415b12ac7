//! Messages between the page and the compute worker, sent as JSON strings with `postMessage`.
//!
//! The data both sides share with the core (routing, shard events, store counters, sampling)
//! are `switchscope-wire`'s types, re-exported here: the page links that crate (serde only, no
//! burn), the worker gets the same types from the core.

use serde::{Deserialize, Serialize};
pub use switchscope_wire::{
    DeviceCounts, LayerRouting, Origin, Sampling, ShardEvent, ShardEventKind, Stack, StoreStats,
};

/// The backend that computed a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The browser's WebGPU.
    Webgpu,
    /// burn's CPU backend in wasm.
    Cpu,
}

impl Backend {
    /// `webgpu` or `cpu`, as the UI shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webgpu => "webgpu",
            Self::Cpu => "cpu",
        }
    }
}

/// Which backend the user asked for (`?backend=` in the URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendPreference {
    /// WebGPU when an adapter exists, else the CPU.
    #[default]
    Auto,
    /// WebGPU or an error.
    Webgpu,
    /// The CPU even when WebGPU exists.
    Cpu,
}

impl BackendPreference {
    /// Parses the URL parameter; unknown values are an error naming the value.
    ///
    /// # Errors
    /// When `s` is not `auto`, `webgpu` or `cpu`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "auto" | "" => Ok(Self::Auto),
            "webgpu" => Ok(Self::Webgpu),
            "cpu" => Ok(Self::Cpu),
            other => Err(format!(
                "unknown backend {other:?} in the URL: use auto, webgpu or cpu"
            )),
        }
    }
}

/// One message between the page and the worker: a [`Request`] or a [`Response`] and the id
/// of the request it belongs to. The page numbers its requests from 1; a request's final
/// reply ([`Response::is_final`]) carries its id, so each caller gets its own answer whatever
/// order replies come in. Messages that answer no request (`ready`, a lost device, streamed
/// events) have no id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub body: T,
}

/// A request from the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Run the backend probe on the preferred backend and, for comparison, on the CPU.
    Probe {
        /// Which backend to use.
        backend: BackendPreference,
    },
    /// Load the converted model at `url` (a directory URL ending in `/`, holding
    /// `manifest.json`): the dense weights now, experts when routed to.
    Load {
        url: String,
        backend: BackendPreference,
        /// Most bytes of experts kept on the device (`None`: no limit).
        budget_bytes: Option<u64>,
        /// Pre-gating prefetch of the next sparse layer's experts.
        prefetch: bool,
        /// The expert store's eviction policy by name (`cache=` in the page's URL, e.g. `lru`;
        /// `None`: the store's default).
        cache_policy: Option<String>,
    },
    /// Generate after `input_ids` (already tokenized, with the final `</s>`), streaming
    /// [`Response::Encoded`], [`Response::Token`] and [`Response::Shard`], then
    /// [`Response::Done`].
    Generate {
        input_ids: Vec<u32>,
        settings: Settings,
        /// A token that ends the answer like `</s>`: the sentinel after the prompt's last one,
        /// when `settings.stop_at_spans` (`GenerateOptions::stop_at`).
        #[serde(default)]
        stop_at: Option<u32>,
    },
    /// Recompute the routing of a finished generation with another capacity factor
    /// (teacher-forced), answered by [`Response::Routed`].
    Route {
        input_ids: Vec<u32>,
        output_ids: Vec<u32>,
        capacity_factor: Option<f64>,
    },
    /// Stop the running generation after the current token (no reply of its own: the
    /// generation ends with [`Response::Done`] and `stopped`).
    Stop,
    /// Store every file of the loaded model in the browser's cache, streaming
    /// [`Response::OfflineProgress`], answered by [`Response::Offline`].
    MakeOffline,
    /// Remove the loaded model's files from the browser's cache ([`Response::Offline`]).
    RemoveOffline,
    /// Make every expert of the loaded model resident on the device, fetching and verifying
    /// those that are not (streaming [`Response::Shard`]): a warm session's steady state, in
    /// which a GPU's decode steps choose the experts on the device. Answered by
    /// [`Response::Resident`]. The page sends it after loading with `resident=all`.
    MakeResident,
}

/// Generation settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Replaces the configured expert capacity with `ceil(tokens / experts × factor)`.
    pub capacity_factor: Option<f64>,
    /// Time every block (the device is synchronised after each: slower).
    #[serde(default)]
    pub time_layers: bool,
    /// Stop once every masked span of the prompt has its answer (the model would go on with
    /// spans the prompt does not have); off: up to `</s>`, like transformers.
    #[serde(default = "yes")]
    pub stop_at_spans: bool,
}

fn yes() -> bool {
    true
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_new_tokens: 24,
            sampling: Sampling::Greedy,
            capacity_factor: None,
            time_layers: false,
            stop_at_spans: true,
        }
    }
}

/// One expert's shard as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub stack: Stack,
    pub block: usize,
    pub expert: usize,
    pub file: String,
    pub bytes: u64,
    /// Whether a copy was in the browser's cache when the model was loaded.
    pub cached: bool,
}

/// A loaded model, as the page needs to know it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The directory URL it was loaded from.
    pub url: String,
    pub backend: Backend,
    /// Why the CPU is used although WebGPU was not refused by the user.
    pub fallback_reason: Option<String>,
    pub adapter: Option<AdapterInfo>,
    pub d_model: usize,
    pub d_ff: usize,
    pub num_experts: usize,
    pub vocab_size: usize,
    pub num_layers: usize,
    pub num_decoder_layers: usize,
    /// The sparse layers, encoder first, in order.
    pub sparse_layers: Vec<(Stack, usize)>,
    /// The configured per-sequence expert capacity.
    pub expert_capacity: usize,
    /// E.g. `int8 experts (group 32, f16 scales), f16 dense`.
    pub quantization: String,
    pub shards: Vec<ShardInfo>,
    pub dense_bytes: u64,
    /// Bytes of the model's files this load took from the network (the dense weights and the
    /// tokenizer when the browser's cache did not have them).
    #[serde(default)]
    pub downloaded_bytes: u64,
    /// Every file of the model.
    pub total_bytes: u64,
    /// Device bytes of one expert once decoded (f32).
    pub expert_device_bytes: u64,
    /// The expert store's eviction policy (e.g. `least-stale+pins`).
    #[serde(default)]
    pub cache_policy: String,
    /// `tokenizer.json`'s text (checked against the manifest).
    pub tokenizer_json: Option<String>,
    pub pad_token_id: u32,
    pub eos_token_id: u32,
    pub decoder_start_token_id: u32,
    /// Milliseconds from the request to a usable model.
    pub load_ms: f64,
}

/// How a generation went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The generated ids (without the decoder start token).
    pub output_ids: Vec<u32>,
    /// Whether the user stopped it.
    pub stopped: bool,
    /// When a stop cut a download short: what was cancelled.
    #[serde(default)]
    pub cancelled: Option<String>,
    /// The worker's wasm memory at the end of the run (it only grows).
    #[serde(default)]
    pub wasm_memory_bytes: u64,
    pub encoder_ms: f64,
    /// From the request to the first generated token.
    pub first_token_ms: f64,
    pub total_ms: f64,
    /// Generated tokens per second after the first.
    pub tokens_per_s: f64,
    /// What the decode steps asked of the device (divide by the output's length for per-token
    /// figures).
    #[serde(default)]
    pub decode_counts: DeviceCounts,
    pub stats: StoreStats,
}

/// What the worker knows about the WebGPU adapter it found.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AdapterInfo {
    /// `GPUAdapterInfo.vendor`.
    pub vendor: String,
    /// `GPUAdapterInfo.architecture`.
    pub architecture: String,
    /// `GPUAdapterInfo.device`.
    pub device: String,
    /// `GPUAdapterInfo.description`.
    pub description: String,
    /// `GPUAdapter.features`, sorted.
    pub features: Vec<String>,
    /// `GPUAdapterInfo.isFallbackAdapter` (or the older `GPUAdapter.isFallbackAdapter`): the
    /// browser says the adapter is slow (software) or limited.
    #[serde(default)]
    pub fallback: bool,
}

/// Software renderers that offer WebGPU on the CPU, as their adapters name themselves.
const SOFTWARE_RENDERERS: &[(&str, &str)] = &[
    ("swiftshader", "SwiftShader"),
    ("llvmpipe", "llvmpipe"),
    ("lavapipe", "lavapipe"),
    ("softpipe", "softpipe"),
    ("basic render", "Microsoft Basic Render Driver"),
];

impl AdapterInfo {
    /// The software renderer behind this adapter (named by its vendor, architecture, device or
    /// description, or flagged by the browser as a fallback adapter), or `None` for hardware.
    pub fn software(&self) -> Option<&'static str> {
        let named = [
            &self.vendor,
            &self.architecture,
            &self.device,
            &self.description,
        ]
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .find_map(|s| {
            SOFTWARE_RENDERERS
                .iter()
                .find_map(|(key, name)| s.contains(key).then_some(*name))
        });
        named.or(self.fallback.then_some("a fallback adapter"))
    }

    /// Whether the adapter offers 16-bit floats in shaders.
    pub fn has_f16(&self) -> bool {
        self.features.iter().any(|f| f == "shader-f16")
    }
}

/// The probe's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The backend that computed `result`.
    pub backend: Backend,
    /// Why the CPU is used although WebGPU was not refused by the user; `None` on WebGPU.
    pub fallback_reason: Option<String>,
    /// The adapter, when one was found.
    pub adapter: Option<AdapterInfo>,
    /// The result on `backend`, `rows × cols` row-major.
    pub result: Vec<f32>,
    /// Columns of the result.
    pub cols: usize,
    /// The agreement required between backends.
    pub tolerance: f32,
    /// The same computation on the CPU backend.
    pub cpu_result: Vec<f32>,
    /// Largest absolute difference between `result` and `cpu_result`.
    pub max_abs_diff: f32,
    /// Largest absolute difference between `result` and the plain-Rust reference.
    pub reference_diff: f32,
    /// Whether both differences are within `tolerance`.
    pub matches: bool,
    /// Milliseconds for the run on `backend` (including device set-up on first use).
    pub backend_ms: f64,
    /// Milliseconds for the CPU run.
    pub cpu_ms: f64,
}

/// A reply from the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The worker has loaded and listens.
    Ready,
    /// The answer to [`Request::Probe`].
    Probe(ProbeReport),
    /// The answer to [`Request::Load`].
    Loaded(ModelInfo),
    /// During [`Request::Generate`]: the encoder's routing (and milliseconds per block when
    /// `time_layers`).
    Encoded {
        routing: Vec<LayerRouting>,
        ms: f64,
        #[serde(default)]
        block_ms: Vec<f64>,
    },
    /// During [`Request::Generate`]: one generated token and its decoder routing.
    Token {
        index: usize,
        id: u32,
        routing: Vec<LayerRouting>,
        ms: f64,
        #[serde(default)]
        block_ms: Vec<f64>,
    },
    /// Whenever a shard changes state.
    Shard(ShardEvent),
    /// The end of [`Request::Generate`].
    Done(RunSummary),
    /// The answer to [`Request::Route`]: encoder layers, then decoder layers.
    Routed { routing: Vec<LayerRouting> },
    /// During [`Request::MakeOffline`].
    OfflineProgress {
        files_done: usize,
        files: usize,
        bytes_done: u64,
        bytes: u64,
    },
    /// The answer to [`Request::MakeOffline`] (`stored`) and [`Request::RemoveOffline`].
    Offline {
        stored: bool,
        files: usize,
        bytes: u64,
    },
    /// The answer to [`Request::MakeResident`]: how many experts are resident.
    Resident { experts: usize },
    /// While a file downloads: bytes received so far (`total` from `Content-Length`, else the
    /// manifest's size). Sent at most every 100 ms per file.
    Download {
        file: String,
        received: u64,
        total: u64,
    },
    /// The GPU device was lost (sent by the worker's boot script, `public/worker-boot.js`, when
    /// `GPUDevice.lost` resolves): the page replaces the worker and continues on the CPU.
    DeviceLost {
        /// `destroyed` or `unknown` (WebGPU's `GPUDeviceLostReason`).
        reason: String,
        message: String,
    },
    /// A request failed; the message is meant for the user.
    Error {
        /// What went wrong.
        message: String,
    },
}

impl Response {
    /// Whether this message ends a request (or, for `ready`, the worker's start); the others
    /// stream while a request runs.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            Self::Encoded { .. }
                | Self::Token { .. }
                | Self::Shard(_)
                | Self::OfflineProgress { .. }
                | Self::Download { .. }
                | Self::DeviceLost { .. }
        )
    }
}
