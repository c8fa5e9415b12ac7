//! Exports: the routing trace as JSON and CSV, the grid as PNG, and a permalink that restores
//! the prompt and the settings.

use leptos::prelude::*;
use serde::Serialize;
use wasm_bindgen::{JsCast, JsValue};

use super::palette::expert_colour;
use crate::app::Ctx;
use crate::protocol::{Route, Sampling, Settings};
use crate::state::{AppState, Status};

/// The JSON export.
#[derive(Debug, Serialize)]
pub struct TraceExport<'a> {
    pub model: String,
    pub prompt: &'a str,
    pub settings: Settings,
    pub input_ids: &'a [u32],
    pub input_pieces: &'a [String],
    pub output_ids: &'a [u32],
    pub output_pieces: &'a [String],
    /// Encoder layers, then decoder layers.
    pub routing: Vec<Route>,
}

/// One CSV line per (layer, token).
pub fn csv(state: &AppState) -> String {
    let mut out = String::from("stack,block,token,piece,expert,chosen,probability,dropped\n");
    state.trace.with_untracked(|t| {
        for route in t.layers() {
            let pieces = t.pieces(route.stack);
            for i in 0..route.expert.len() {
                let piece = pieces
                    .get(i)
                    .map_or("", String::as_str)
                    .replace('"', "\"\"");
                out.push_str(&format!(
                    "{},{},{i},\"{piece}\",{},{},{:.6},{}\n",
                    route.stack.as_str(),
                    route.block,
                    route.expert[i],
                    route.chosen[i],
                    route.weight[i],
                    route.expert[i] < 0
                ));
            }
        }
    });
    out
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

/// The page's URL with the prompt and the settings as parameters.
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
    let keep = ["model", "backend"];
    if let Ok(current) =
        web_sys::UrlSearchParams::new_with_str(&location.search().unwrap_or_default())
    {
        for k in keep {
            if let Some(v) = current.get(k) {
                params.set(k, &v);
            }
        }
    }
    params.set("prompt", &state.prompt.get_untracked());
    let s = state.settings.get_untracked();
    params.set("max_new_tokens", &s.max_new_tokens.to_string());
    if let Some(f) = s.capacity_factor {
        params.set("capacity_factor", &f.to_string());
    }
    if s.time_layers {
        params.set("time_layers", "1");
    }
    if !s.stop_at_spans {
        params.set("spans", "all");
    }
    match s.sampling {
        Sampling::Greedy => params.set("sampling", "greedy"),
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
            seed,
        } => {
            params.set("sampling", "sample");
            params.set("temperature", &temperature.to_string());
            if let Some(k) = top_k {
                params.set("top_k", &k.to_string());
            }
            if let Some(p) = top_p {
                params.set("top_p", &p.to_string());
            }
            params.set("seed", &seed.to_string());
        }
    }
    if let Some(mb) = state.budget_mb.get_untracked() {
        params.set("budget_mb", &mb.to_string());
    }
    params.set(
        "prefetch",
        if state.prefetch.get_untracked() {
            "1"
        } else {
            "0"
        },
    );
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
        state.trace.with_untracked(|t| {
            let export = TraceExport {
                model,
                prompt: &t.prompt,
                settings: state.settings.get_untracked(),
                input_ids: &t.input_ids,
                input_pieces: &t.input_pieces,
                output_ids: &t.output_ids,
                output_pieces: &t.output_pieces,
                routing: state.shown_layers(),
            };
            serde_json::to_string_pretty(&export).unwrap_or_default()
        })
    };
    let link = Memo::new(move |_| {
        state.prompt.track();
        state.settings.track();
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
