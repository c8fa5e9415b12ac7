//! The web crate's error type.

/// What can fail between the page, the worker and the GPU.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebError {
    /// The worker script could not be started.
    #[error("could not start the compute worker: {0}")]
    WorkerStart(String),
    /// The worker crashed or its script failed to load.
    #[error("the compute worker failed: {0}")]
    WorkerCrashed(String),
    /// The page replaced the worker while a request ran (the GPU device was lost).
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// A message that does not decode as the protocol says.
    #[error("malformed message from the compute worker: {0}")]
    Protocol(String),
    /// The worker answered with an error.
    #[error("{0}")]
    Remote(String),
    /// A URL parameter with a value the app does not know.
    #[error("{0}")]
    InvalidParameter(String),
    /// A JavaScript call failed.
    #[error("browser call failed: {0}")]
    Js(String),
}

impl WebError {
    /// Wraps a thrown JavaScript value, keeping its message.
    pub fn js(value: &wasm_bindgen::JsValue) -> Self {
        Self::Js(describe(value))
    }
}

/// A readable message for a thrown JavaScript value (`Error.message`, or its string form).
pub fn describe(value: &wasm_bindgen::JsValue) -> String {
    if let Some(s) = value.as_string() {
        return s;
    }
    js_sys::Reflect::get(value, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}
