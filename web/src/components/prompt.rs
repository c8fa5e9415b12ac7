//! The prompt, the run and stop buttons, the settings, the status and the streamed output.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::ctx::Ctx;
use crate::page::MAX_NEW_TOKENS;
use crate::presets::{PRESETS, preset, preset_of};
use crate::protocol::Sampling;
use crate::spans::Filled;
use crate::state::Status;
use crate::url::VARIANTS;

/// The lowest sentinel `<extra_id_N>` not yet in `text`.
fn next_sentinel(text: &str) -> String {
    (0..100)
        .map(|n| format!("<extra_id_{n}>"))
        .find(|s| !text.contains(s.as_str()))
        .unwrap_or_else(|| "<extra_id_99>".into())
}

/// Replaces the selected text of the prompt (or inserts at the cursor) with the next sentinel.
fn mask_selection(ctx: Ctx, area: &web_sys::HtmlTextAreaElement) {
    let text = area.value();
    let chars: Vec<char> = text.chars().collect();
    // Selection offsets are in UTF-16 code units.
    let to_char = |units: u32| {
        let mut seen = 0u32;
        chars
            .iter()
            .position(|c| {
                let here = seen;
                seen += c.len_utf16() as u32;
                here >= units
            })
            .unwrap_or(chars.len())
    };
    let start = to_char(area.selection_start().ok().flatten().unwrap_or(0));
    let end = to_char(area.selection_end().ok().flatten().unwrap_or(0));
    let sentinel = next_sentinel(&text);
    let before: String = chars[..start].iter().collect();
    let after: String = chars[end.max(start)..].iter().collect();
    ctx.state.prompt.set(format!("{before}{sentinel}{after}"));
}

/// The sampling parameters being edited: temperature, top-k, top-p, seed.
type SampleParts = (f32, Option<usize>, Option<f32>, u64);

/// The sampling parameters of `sampling` (defaults for greedy, to start editing from).
fn sample_parts(sampling: Sampling) -> SampleParts {
    match sampling {
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
            seed,
        } => (temperature, top_k, top_p, seed),
        Sampling::Greedy => (0.8, None, None, 0),
    }
}

/// Parses an optional number input ("" → `None`).
fn optional<T: std::str::FromStr>(value: &str) -> Option<T> {
    value.trim().parse().ok()
}

#[component]
pub fn PromptPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    let area = NodeRef::<leptos::html::Textarea>::new();
    let busy = move || matches!(state.status.get(), Status::Generating | Status::Loading);
    let sample = move || matches!(state.settings.get().sampling, Sampling::Sample { .. });
    let set_sampling = move |f: &dyn Fn(&mut SampleParts)| {
        state.settings.update(|s| {
            let mut parts = sample_parts(s.sampling);
            f(&mut parts);
            s.sampling = Sampling::Sample {
                temperature: parts.0,
                top_k: parts.1,
                top_p: parts.2,
                seed: parts.3,
            };
        });
    };
    let sampling_parts = move || sample_parts(state.settings.get().sampling);
    view! {
        <section class="panel prompt" aria-labelledby="prompt-title">
            <h2 id="prompt-title">"Prompt"</h2>
            <label class="preset">"Preset "
                <select data-testid="preset"
                    prop:value=move || preset_of(&state.prompt.get()).map_or("", |p| p.id)
                    on:change=move |ev| {
                        if let Ok(p) = preset(&event_target_value(&ev)) {
                            state.prompt.set(p.prompt.to_owned());
                            state.settings.update(|s| s.max_new_tokens = p.max_new_tokens);
                        }
                    }>
                    <option value="">"Your own text"</option>
                    {PRESETS.iter().map(|p| view! { <option value=p.id>{p.label}</option> }).collect_view()}
                </select>
            </label>
            <p class="hint" data-testid="preset-provenance">
                {move || preset_of(&state.prompt.get()).map(|p| p.provenance)}
            </p>
            <p class="hint">
                "Mark spans for the model to fill in with " <code>"<extra_id_0>"</code>
                ", " <code>"<extra_id_1>"</code> ", … — type them, or select text and press Mask."
            </p>
            <textarea
                data-testid="prompt"
                rows="3"
                node_ref=area
                aria-label="Prompt"
                prop:value=move || state.prompt.get()
                on:input=move |ev| state.prompt.set(event_target_value(&ev))
                on:keydown=move |ev: web_sys::KeyboardEvent| {
                    if ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key()) {
                        ev.prevent_default();
                        ctx.run();
                    }
                }
            ></textarea>
            <div class="actions">
                <button data-testid="mask" on:click=move |_| {
                    if let Some(area) = area.get() {
                        let area: web_sys::HtmlTextAreaElement = area.unchecked_into();
                        mask_selection(ctx, &area);
                    }
                }>"Mask"</button>
                <button class="primary" data-testid="run" disabled=busy on:click=move |_| ctx.run()>
                    "Run"
                </button>
                <button data-testid="stop"
                    disabled=move || state.status.get() != Status::Generating
                    on:click=move |_| ctx.stop()>"Stop"</button>
                <span class="status">
                    "Status: " <strong data-testid="status">{move || state.status.get().as_str()}</strong>
                </span>
            </div>
            <details class="settings">
                <summary>"Settings"</summary>
                <div class="grid-form">
                    <label>"Max new tokens"
                        <input type="number" min="1" max=MAX_NEW_TOKENS.to_string() data-testid="max-new-tokens"
                            prop:value=move || state.settings.get().max_new_tokens.to_string()
                            on:change=move |ev| { if let Some(n) = optional::<usize>(&event_target_value(&ev)) {
                                state.settings.update(|s| s.max_new_tokens = n.clamp(1, MAX_NEW_TOKENS));
                            } } />
                    </label>
                    <label>"Decoding"
                        <select data-testid="sampling" on:change=move |ev| {
                            if event_target_value(&ev) == "sample" {
                                set_sampling(&|_| {});
                            } else {
                                state.settings.update(|s| s.sampling = Sampling::Greedy);
                            }
                        }>
                            <option value="greedy" selected=move || !sample()>"greedy"</option>
                            <option value="sample" selected=sample>"sample"</option>
                        </select>
                    </label>
                    <label>"Temperature"
                        <input type="number" data-testid="temperature" step="0.1" min="0.01" disabled=move || !sample()
                            prop:value=move || sampling_parts().0.to_string()
                            on:change=move |ev| { if let Some(t) = optional::<f32>(&event_target_value(&ev)) {
                                set_sampling(&|p| p.0 = t.max(0.01));
                            } } />
                    </label>
                    <label>"Top-k"
                        <input type="number" data-testid="top-k" min="0" disabled=move || !sample()
                            prop:value=move || sampling_parts().1.map(|k| k.to_string()).unwrap_or_default()
                            on:change=move |ev| {
                                let k = optional::<usize>(&event_target_value(&ev)).filter(|&k| k > 0);
                                set_sampling(&|p| p.1 = k);
                            } />
                    </label>
                    <label>"Top-p"
                        <input type="number" data-testid="top-p" step="0.05" min="0" max="1" disabled=move || !sample()
                            prop:value=move || sampling_parts().2.map(|p| p.to_string()).unwrap_or_default()
                            on:change=move |ev| {
                                let p = optional::<f32>(&event_target_value(&ev)).filter(|&p| p > 0.0 && p <= 1.0);
                                set_sampling(&|parts| parts.2 = p);
                            } />
                    </label>
                    <label>"Seed"
                        <input type="number" data-testid="seed" min="0" disabled=move || !sample()
                            prop:value=move || sampling_parts().3.to_string()
                            on:change=move |ev| { if let Some(seed) = optional::<u64>(&event_target_value(&ev)) {
                                set_sampling(&|p| p.3 = seed);
                            } } />
                    </label>
                    <label>"Capacity factor"
                        <input type="number" step="0.25" min="0.25" placeholder="config"
                            data-testid="capacity-factor"
                            prop:value=move || state.settings.get().capacity_factor.map(|f| f.to_string()).unwrap_or_default()
                            on:change=move |ev| {
                                let f = optional::<f64>(&event_target_value(&ev)).filter(|&f| f > 0.0);
                                state.settings.update(|s| s.capacity_factor = f);
                            } />
                    </label>
                    <label>"Expert memory budget (MB)"
                        <input type="number" step="0.5" min="0" placeholder="unlimited" data-testid="budget"
                            prop:value=move || state.budget_mb.get().map(|b| b.to_string()).unwrap_or_default()
                            on:change=move |ev| {
                                state.budget_mb.set(optional::<f64>(&event_target_value(&ev)).filter(|&b| b > 0.0));
                                ctx.load();
                            } />
                    </label>
                    <label>"Model variant"
                        <select data-testid="variant" on:change=move |ev| {
                            let dir = event_target_value(&ev);
                            if let Some((_, dir)) = VARIANTS.iter().find(|(_, d)| *d == dir) {
                                ctx.url.set_value((*dir).to_owned());
                                ctx.load();
                            }
                        }>
                            {VARIANTS.iter().map(|(label, dir)| {
                                let current = ctx.url.get_value();
                                view! { <option value=*dir selected=current.ends_with(dir)>{*label}</option> }
                            }).collect_view()}
                        </select>
                    </label>
                    <label class="check">
                        <input type="checkbox" data-testid="prefetch"
                            prop:checked=move || state.prefetch.get()
                            on:change=move |ev| {
                                state.prefetch.set(event_target_checked(&ev));
                                ctx.load();
                            } />
                        "Prefetch the next layer's experts (pre-gating)"
                    </label>
                    <label class="check">
                        <input type="checkbox" data-testid="time-layers"
                            prop:checked=move || state.settings.get().time_layers
                            on:change=move |ev| {
                                let on = event_target_checked(&ev);
                                state.settings.update(|s| s.time_layers = on);
                            } />
                        "Time each layer (slower: waits for the device after every block)"
                    </label>
                    <label class="check">
                        <input type="checkbox" data-testid="stop-at-spans"
                            prop:checked=move || state.settings.get().stop_at_spans
                            on:change=move |ev| {
                                let on = event_target_checked(&ev);
                                state.settings.update(|s| s.stop_at_spans = on);
                            } />
                        "Stop when every masked span has its answer (off: until the model ends, inventing further spans)"
                    </label>
                </div>
            </details>
            {move || state.notice.get().map(|n| view! { <p class="notice" data-testid="notice">{n}</p> })}
            {move || state.error.get().map(|e| view! { <p class="error" role="alert" data-testid="error">{e}</p> })}
            <h3>"Output"</h3>
            <FilledIn />
            <p class="output" data-testid="output" aria-live="polite">
                {move || {
                    let ids = state.trace.with(|t| t.output_ids.clone());
                    ctx.text.with_value(|t| t.as_ref().map(|t| t.decode(&ids)).unwrap_or_default())
                }}
            </p>
        </section>
    }
}

/// The prompt of the run with its masked spans filled in by the answer so far (nothing for a
/// prompt without `<extra_id_N>`).
#[component]
fn FilledIn() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    move || {
        let pieces = state.trace.with(|t| {
            ctx.text.with_value(|x| {
                x.as_ref()
                    .and_then(|x| x.fill_in(&t.prompt, &t.input_ids, &t.output_ids))
            })
        })?;
        // Before the first token there is nothing to show.
        state.trace.with(|t| !t.output_ids.is_empty()).then(|| {
            let pieces = pieces
                .into_iter()
                .map(|piece| match piece {
                    Filled::Prompt(text) => view! { <span>{text}</span> }.into_any(),
                    Filled::Answer { n, text } => view! {
                        <mark class="answer" title=format!("the answer for <extra_id_{n}>")>{text}</mark>
                    }
                    .into_any(),
                    Filled::Missing(n) => view! {
                        <mark class="answer missing" title=format!("no answer for <extra_id_{n}> yet")>"…"</mark>
                    }
                    .into_any(),
                })
                .collect_view();
            view! { <p class="filled" data-testid="filled">{pieces}</p> }
        })
    }
}
