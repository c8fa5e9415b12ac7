//! WebGPU adapter discovery through `navigator.gpu`, in the page or in a worker.
//!
//! burn's WebGPU device aborts when the browser has no WebGPU, so this module asks the browser
//! first, and only when it yields an adapter is a burn device created.

use js_sys::{Array, Promise};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::js::get;
use crate::protocol::AdapterInfo;

fn get_string(target: &JsValue, key: &str) -> String {
    get(target, key).as_string().unwrap_or_default()
}

/// Requests a WebGPU adapter and describes it.
///
/// # Errors
/// A sentence for the user saying why WebGPU cannot be used: no `navigator.gpu`, or
/// `requestAdapter()` failing or returning `null`.
pub async fn find_adapter() -> Result<AdapterInfo, String> {
    let navigator = get(&js_sys::global(), "navigator");
    let gpu = get(&navigator, "gpu");
    if gpu.is_undefined() || gpu.is_null() {
        return Err("this browser does not offer WebGPU here (navigator.gpu is missing)".into());
    }
    let request = get(&gpu, "requestAdapter")
        .dyn_into::<js_sys::Function>()
        .map_err(|_| "navigator.gpu.requestAdapter is not a function".to_string())?;
    let promise: Promise = request
        .call0(&gpu)
        .map_err(|e| {
            format!(
                "navigator.gpu.requestAdapter() threw: {}",
                crate::error::describe(&e)
            )
        })?
        .unchecked_into();
    let adapter = JsFuture::from(promise).await.map_err(|e| {
        format!(
            "navigator.gpu.requestAdapter() failed: {}",
            crate::error::describe(&e)
        )
    })?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err(
            "WebGPU is present but no adapter is available (requestAdapter() returned null)".into(),
        );
    }
    let info = get(&adapter, "info");
    let mut features: Vec<String> = Array::from(&get(&adapter, "features"))
        .iter()
        .filter_map(|f| f.as_string())
        .collect();
    features.sort();
    let fallback = [
        get(&info, "isFallbackAdapter"),
        get(&adapter, "isFallbackAdapter"),
    ]
    .iter()
    .any(|f| f.as_bool() == Some(true));
    Ok(AdapterInfo {
        vendor: get_string(&info, "vendor"),
        architecture: get_string(&info, "architecture"),
        device: get_string(&info, "device"),
        description: get_string(&info, "description"),
        features,
        fallback,
    })
}

/// `performance.now()` in the current global scope (page or worker), in milliseconds.
pub fn now_ms() -> f64 {
    let performance = get(&js_sys::global(), "performance");
    get(&performance, "now")
        .dyn_into::<js_sys::Function>()
        .ok()
        .and_then(|now| now.call0(&performance).ok())
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0)
}
