//! Messages between the page and the compute worker, sent as JSON strings with `postMessage`.

use serde::{Deserialize, Serialize};

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

/// A request from the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Run the backend probe on the preferred backend and, for comparison, on the CPU.
    Probe {
        /// Which backend to use.
        backend: BackendPreference,
    },
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
}

impl AdapterInfo {
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
    /// A request failed; the message is meant for the user.
    Error {
        /// What went wrong.
        message: String,
    },
}
