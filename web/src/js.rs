//! Small helpers for JavaScript objects reached through `Reflect` (APIs for which no web-sys
//! feature is enabled: adding one rebuilds wgpu for the worker).

use wasm_bindgen::{JsCast, JsValue};

/// `target[key]`, or `undefined`.
pub fn get(target: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// Calls `target[method](...args)`.
///
/// # Errors
/// What the call throws, or a `TypeError`-like value when `target[method]` is not a function.
pub fn call(target: &JsValue, method: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
    let function: js_sys::Function = get(target, method).dyn_into()?;
    function.apply(target, &args.iter().collect::<js_sys::Array>())
}
