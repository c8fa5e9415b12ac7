//! Exports: the routing trace as JSON and CSV, the grid as PNG, and a permalink that restores
//! the prompt and the settings.

use leptos::prelude::*;
use wasm_bindgen::{JsCast, JsValue};

use super::palette::expert_colour;
use crate::ctx::Ctx;
use crate::page::{TraceExport, permalink_parameters};
use crate::state::{AppState, Status};
use crate::url::url_parameter;

/// The CSV export of what the grid shows (a capacity what-if's routing when one is shown).
pub fn csv(state: &AppState) -> String {
    let layers = state.shown_layers();
    state.trace.with_untracked(|t| crate::page::csv(&layers, t))
}

fn download_url(url: &str, name: &str) -> Result<(), JsValue> {
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let a: web_sys::HtmlAnchorElement = document.create_element("a")?.unchecked_into();
    a.set_href(url);
    a.set_download(name);
    a.click();
    Ok(())
}

fn download_text(text: &str, mime: &str, name: &str) -> Result<(), JsValue> {
    let parts = js_sys::Array::of1(&JsValue::from_str(text));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob)?;
    let result = download_url(&url, name);
    web_sys::Url::revoke_object_url(&url)?;
    result
}

/// Draws the routing grid on a canvas and returns it as a PNG data URL.
fn grid_png(state: &AppState) -> Result<String, JsValue> {
    const W: f64 = 18.0;
    const H: f64 = 16.0;
    const LABEL: f64 = 90.0;
    let layers = state.shown_layers();
    let columns = layers.iter().map(|l| l.expert.len()).max().unwrap_or(0);
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let canvas: web_sys::HtmlCanvasElement = document.create_element("canvas")?.unchecked_into();
    canvas.set_width((LABEL + W * columns as f64 + 8.0) as u32);
    canvas.set_height((H * layers.len() as f64 + 8.0) as u32);
    let g: web_sys::CanvasRenderingContext2d = canvas
        .get_context("2d")?
        .ok_or("no 2d context")?
        .unchecked_into();
    g.set_fill_style_str("#ffffff");
    g.fill_rect(
        0.0,
        0.0,
        f64::from(canvas.width()),
        f64::from(canvas.height()),
    );
    g.set_font("11px sans-serif");
    for (row, route) in layers.iter().enumerate() {
        let y = 4.0 + H * row as f64;
        g.set_global_alpha(1.0);
        g.set_fill_style_str("#1b1f24");
        g.fill_text(
            &format!("{} {}", route.stack.as_str(), route.block),
            2.0,
            y + H - 4.0,
        )?;
        for t in 0..route.expert.len() {
            let x = LABEL + W * t as f64;
            let dropped = route.expert[t] < 0;
            g.set_fill_style_str(expert_colour(route.chosen[t] as usize));
            g.set_global_alpha(if dropped {
                0.18
            } else {
                f64::from(route.weight[t]).clamp(0.15, 1.0)
            });
            g.fill_rect(x + 1.0, y + 1.0, W - 2.0, H - 2.0);
            if dropped {
                g.set_global_alpha(1.0);
                g.begin_path();
                g.move_to(x + 3.0, y + 3.0);
                g.line_to(x + W - 3.0, y + H - 3.0);
                g.move_to(x + W - 3.0, y + 3.0);
                g.line_to(x + 3.0, y + H - 3.0);
                g.stroke();
            }
        }
    }
    canvas.to_data_url_with_type("image/png")
}

/// The page's URL with the prompt, the settings, the budget and prefetch as parameters (and
/// the current URL's model, backend, theme, panels and origins).
pub fn permalink(state: &AppState) -> String {
    let Some(window) = web_sys::window() else {
        return String::new();
    };
    let location = window.location();
    let base = format!(
        "{}{}",
        location.origin().unwrap_or_default(),
        location.pathname().unwrap_or_default()
    );
    let Ok(params) = web_sys::UrlSearchParams::new() else {
        return base;
    };
    let settings = state.settings.get_untracked();
    for (k, v) in permalink_parameters(
        url_parameter,
        &state.prompt.get_untracked(),
        &settings,
        state.budget_mb.get_untracked(),
        state.prefetch.get_untracked(),
    ) {
        params.append(&k, &v);
    }
    format!("{base}?{}", String::from(params.to_string()))
}

#[component]
pub fn Export() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    let done = move || state.status.get() == Status::Done;
    let report = move |r: Result<(), JsValue>| {
        if let Err(e) = r {
            state.error.set(Some(format!(
                "export failed: {}",
                crate::error::describe(&e)
            )));
        }
    };
    let json = move || {
        let model = state
            .model
            .with_untracked(|m| m.as_ref().map(|m| m.url.clone()).unwrap_or_default());
        let layers = state.shown_layers();
        let what_if = state
            .what_if
            .with_untracked(|w| w.as_ref().map(|(f, _)| *f));
        state.trace.with_untracked(|t| {
            TraceExport::new(&model, state.settings.get_untracked(), t, &layers, what_if).to_json()
        })
    };
    // Everything the permalink writes: a change to any of them changes the link.
    let link = Memo::new(move |_| {
        state.prompt.track();
        state.settings.track();
        state.budget_mb.track();
        state.prefetch.track();
        permalink(&state)
    });
    view! {
        <section class="panel" aria-labelledby="export-title">
            <h2 id="export-title">"Export"</h2>
            <div class="actions">
                <button data-testid="export-json" disabled=move || !done()
                    on:click=move |_| report(download_text(&json(), "application/json", "switchscope-routing.json"))>
                    "Routing (JSON)"</button>
                <button data-testid="export-csv" disabled=move || !done()
                    on:click=move |_| report(download_text(&csv(&state), "text/csv", "switchscope-routing.csv"))>
                    "Routing (CSV)"</button>
                <button data-testid="export-png" disabled=move || !done()
                    on:click=move |_| report(grid_png(&state).and_then(|url| download_url(&url, "switchscope-routing.png")))>
                    "Grid (PNG)"</button>
            </div>
            <p>"Permalink: " <a data-testid="permalink" href=move || link.get()>"this prompt with these settings"</a></p>
        </section>
    }
}
