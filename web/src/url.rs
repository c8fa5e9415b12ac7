//! What the page's URL says: the model to load, the backend, the settings and the budget, and
//! which origins a model may come from.

use crate::WebError;
use crate::protocol::{BackendPreference, Settings};

/// The model loaded when the URL names none.
pub const DEFAULT_MODEL: &str = "models/switchscope-mini/";
/// The default model's variants: (label, directory).
pub const VARIANTS: [(&str, &str); 2] = [
    ("int8 experts", DEFAULT_MODEL),
    ("int4 experts", "models/switchscope-mini-int4/"),
];

/// The value of URL query parameter `name`, if present.
pub fn url_parameter(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()?
        .get(name)
}

/// The backend asked for with `?backend=auto|webgpu|cpu` (default `auto`).
///
/// # Errors
/// [`WebError::InvalidParameter`] for any other value.
pub fn backend_preference() -> Result<BackendPreference, WebError> {
    url_parameter("backend")
        .map_or(Ok(BackendPreference::Auto), |v| {
            BackendPreference::parse(&v)
        })
        .map_err(WebError::InvalidParameter)
}

/// Generation settings from the URL (`max_new_tokens`, `sampling=greedy|sample`,
/// `temperature`, `top_k`, `top_p`, `seed`, `capacity_factor`, `time_layers=1`, `spans=all`).
///
/// # Errors
/// [`WebError::InvalidParameter`] naming the parameter.
pub fn settings_from_url() -> Result<Settings, WebError> {
    crate::page::settings_from(url_parameter).map_err(WebError::InvalidParameter)
}

/// The expert memory budget from `budget_mb=` (`None`: unlimited).
///
/// # Errors
/// [`WebError::InvalidParameter`] naming the parameter.
pub fn budget_from_url() -> Result<Option<f64>, WebError> {
    crate::page::budget_from(url_parameter).map_err(WebError::InvalidParameter)
}

/// Whether `resident=all` asks for every expert on the device after loading.
///
/// # Errors
/// [`WebError::InvalidParameter`] for a value other than `all`.
pub fn all_resident_from_url() -> Result<bool, WebError> {
    crate::page::all_resident_from(url_parameter).map_err(WebError::InvalidParameter)
}

/// The model directory to load: `?model=` (same origin only) or the default.
///
/// # Errors
/// [`WebError::InvalidParameter`] for a URL on another origin.
pub fn model_url() -> Result<String, WebError> {
    let Some(url) = url_parameter("model").filter(|u| !u.is_empty()) else {
        return Ok(DEFAULT_MODEL.to_owned());
    };
    let location = web_sys::window().map(|w| w.location());
    let origin = location.as_ref().and_then(|l| l.origin().ok());
    let href = location
        .as_ref()
        .and_then(|l| l.href().ok())
        .unwrap_or_default();
    let resolved = web_sys::Url::new_with_base(&url, &href)
        .map_err(|_| WebError::InvalidParameter(format!("model={url} is not a valid URL")))?;
    if Some(resolved.origin()) != origin && !allowed_model_origins().contains(&resolved.origin()) {
        return Err(WebError::InvalidParameter(format!(
            "model={url} is on another origin ({}); only models on this site, or on origins this \
             deployment allows, can be loaded",
            resolved.origin()
        )));
    }
    Ok(resolved.href())
}

/// Other origins this deployment lets `?model=` load from: the space-separated `content` of
/// `<meta name="switchscope-model-origins">` in `index.html` (empty as shipped). A deployment
/// that fills it in must also allow the origins in the page's `connect-src` policy.
pub fn allowed_model_origins() -> Vec<String> {
    web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| {
            d.query_selector(r#"meta[name="switchscope-model-origins"]"#)
                .ok()
                .flatten()
        })
        .and_then(|m| m.get_attribute("content"))
        .map(|c| {
            c.split_whitespace()
                .filter(|o| *o != "*" && *o != "null")
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect()
        })
        .unwrap_or_default()
}
