//! The root component and the page's URL parameters.

use leptos::prelude::*;

use crate::WebError;
use crate::components::backend_check::BackendCheck;
use crate::protocol::BackendPreference;

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

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    view! {
        <header class="top">
            <h1>"Switchscope"</h1>
            <p class="tagline">
                "A Switch Transformer running in your browser on WebGPU, showing which expert \
                 every token is routed to."
            </p>
        </header>
        <main>
            <BackendCheck preference=backend_preference() />
        </main>
    }
}
