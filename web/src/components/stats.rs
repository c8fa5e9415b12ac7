//! Expert load per layer (tokens per expert vs capacity, load-balancing loss), the capacity
//! what-if, and the performance figures.

use leptos::prelude::*;

use super::palette::expert_colour;
use crate::ctx::Ctx;
use crate::protocol::Stack;
use crate::state::Status;

pub use crate::page::{balance_loss, load};

#[component]
pub fn ExpertLoad() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    let rows = move || {
        let experts = state
            .model
            .with(|m| m.as_ref().map_or(0, |m| m.num_experts));
        // Per layer, what its row shows (no copy of the routing).
        let summaries: Vec<(Stack, usize, Vec<usize>, usize, usize, f64)> = state
            .with_shown_layers(|layers| {
                layers
                    .iter()
                    .map(|&route| {
                        (
                            route.stack,
                            route.block,
                            load(route, experts),
                            route.expert.iter().filter(|&&e| e < 0).count(),
                            route.capacity,
                            balance_loss(route, experts),
                        )
                    })
                    .collect()
            });
        summaries
            .into_iter()
            .map(|(stack, block, counts, dropped, capacity, balance)| {
                let most = counts.iter().copied().max().unwrap_or(0).max(capacity).max(1);
                // Capacity matters where a layer routes a whole sequence at once (the encoder).
                let show_capacity = stack == Stack::Encoder;
                let bars = counts
                    .iter()
                    .enumerate()
                    .map(|(e, &n)| {
                        let h = 40.0 * n as f64 / most as f64;
                        view! {
                            <g>
                                <title>{format!("expert {e}: {n} tokens")}</title>
                                <rect x=e as f64 * 14.0 y=42.0 - h width="12" height=h.max(0.5) fill=expert_colour(e) />
                            </g>
                        }
                    })
                    .collect_view();
                let cap_y = 42.0 - 40.0 * capacity as f64 / most as f64;
                let width = experts as f64 * 14.0;
                view! {
                    <div class="detail-row" data-testid="expert-load"
                        data-stack=stack.as_str() data-block=block>
                        <span class="layer-label">{format!("{} {block}", stack.as_str())}</span>
                        <svg width=width height="44" role="img"
                            aria-label=format!("tokens per expert: {counts:?}")>
                            {bars}
                            {show_capacity.then(|| view! {
                                <line class="capacity" x1="0" x2=width y1=cap_y y2=cap_y />
                            })}
                        </svg>
                        <span>
                            {format!("balance loss {balance:.2}")}
                            {show_capacity.then(|| format!(" · capacity {capacity} · dropped {dropped}"))}
                        </span>
                    </div>
                }
            })
            .collect_view()
    };
    view! {
        <section class="panel" aria-labelledby="load-title">
            <h2 id="load-title">"Expert load"</h2>
            <p class="hint">"Tokens per expert in each layer; the line is the capacity; 1.00 is a perfectly balanced layer."</p>
            {rows}
        </section>
    }
}

#[component]
pub fn CapacityWhatIf() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    let factor = RwSignal::new(1.0f64);
    let ready = move || state.status.get() == Status::Done;
    view! {
        <section class="panel" aria-labelledby="whatif-title">
            <h2 id="whatif-title">"Capacity what-if"</h2>
            <p class="hint">
                "Expert capacity = ⌈tokens / experts × factor⌉ per sequence. Move the factor to \
                 recompute this run's routing and see which tokens would be dropped."
            </p>
            <label>
                {move || format!("Capacity factor {:.2}", factor.get())}
                <input type="range" min="0.25" max="4" step="0.25" data-testid="what-if-factor"
                    disabled=move || !ready()
                    prop:value=move || factor.get().to_string()
                    on:change=move |ev| {
                        if let Ok(f) = event_target_value(&ev).parse::<f64>() {
                            factor.set(f);
                            ctx.what_if(f);
                        }
                    } />
            </label>
            <button data-testid="what-if-reset" disabled=move || state.what_if.get().is_none()
                on:click=move |_| state.what_if.set(None)>"Show the run's own routing"</button>
        </section>
    }
}

/// Encoder blocks' times, then decoder blocks' medians over the generated tokens.
fn layer_times(state: &crate::state::AppState) -> String {
    state.trace.with(|t| {
        if t.encoder_block_ms.is_empty() {
            return "turn on \"Time each layer\" in the settings".into();
        }
        let mut parts: Vec<String> = t
            .encoder_block_ms
            .iter()
            .enumerate()
            .map(|(i, ms)| format!("encoder {i}: {ms:.1}"))
            .collect();
        let blocks = t.decoder_block_ms.first().map_or(0, Vec::len);
        for i in 0..blocks {
            let times: Vec<f64> = t
                .decoder_block_ms
                .iter()
                .filter_map(|s| s.get(i).copied())
                .collect();
            parts.push(format!("decoder {i}: {:.1}", median(&times)));
        }
        format!("{} ms (decoder: median per token)", parts.join(" · "))
    })
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[component]
pub fn Performance() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    view! {
        <section class="panel" aria-labelledby="perf-title" data-testid="performance">
            <h2 id="perf-title">"Performance"</h2>
            {move || {
                let fetch_ms: Vec<f64> = state.shards.get().iter().filter_map(|c| c.ms.get()).collect();
                let steps = state.trace.with(|t| t.step_ms.clone());
                let load_ms = state.model.with(|m| m.as_ref().map(|m| m.load_ms));
                view! {
                    <dl class="facts-list">
                        <dt>"Model load"</dt>
                        <dd>{load_ms.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "…".into())}</dd>
                        {state.summary.get().map(|s| view! {
                            <dt>"Encoder"</dt><dd>{format!("{:.0} ms", s.encoder_ms)}</dd>
                            <dt>"Time to first token"</dt><dd data-testid="ttft">{format!("{:.0} ms", s.first_token_ms)}</dd>
                            <dt>"Tokens per second"</dt><dd data-testid="tokens-per-s">{format!("{:.1}", s.tokens_per_s)}</dd>
                            <dt>"Total"</dt><dd>{format!("{:.0} ms for {} tokens", s.total_ms, s.output_ids.len())}</dd>
                            <dt>"Device work per token"</dt>
                            {
                                let per = s.decode_counts.per(s.output_ids.len());
                                view! {
                                    <dd data-testid="device-work" data-dispatches=per.dispatches
                                        data-uploads=per.uploads data-host-waits=per.host_waits>
                                        {format!("{:.1} dispatches · {:.1} uploads · {:.2} host waits", per.dispatches, per.uploads, per.host_waits)}
                                    </dd>
                                }
                            }
                            <dt>"Expert requests"</dt>
                            <dd>{format!("{} ({} hits, {} fetches, {} evictions)", s.stats.requests, s.stats.hits, s.stats.fetches, s.stats.evictions)}</dd>
                            <dt>"Prefetch"</dt>
                            <dd>{format!("{} started, {} used, {:.1} kB unused", s.stats.prefetches, s.stats.prefetch_used, s.stats.prefetch_wasted_bytes as f64 / 1e3)}</dd>
                            <dt>"Experts resident"</dt>
                            <dd data-testid="resident-bytes" data-bytes=s.stats.resident_bytes data-peak=s.stats.peak_resident_bytes>
                                {format!("{:.2} MB (peak {:.2} MB)", s.stats.resident_bytes as f64 / 1e6, s.stats.peak_resident_bytes as f64 / 1e6)}
                            </dd>
                            <dt>"Worker memory"</dt>
                            <dd data-testid="wasm-memory" data-bytes=s.wasm_memory_bytes>
                                {format!("{:.1} MB of wasm memory", s.wasm_memory_bytes as f64 / 1e6)}
                            </dd>
                        })}
                        <dt>"Per token (median)"</dt>
                        <dd>{if steps.is_empty() { "…".to_string() } else { format!("{:.1} ms", median(&steps)) }}</dd>
                        <dt>"Time per layer"</dt>
                        <dd data-testid="layer-times">{layer_times(&state)}</dd>
                        <dt>"Shard fetches"</dt>
                        <dd>{if fetch_ms.is_empty() { "none yet".to_string() } else {
                            format!("{} · median {:.1} ms · slowest {:.1} ms", fetch_ms.len(), median(&fetch_ms),
                                fetch_ms.iter().copied().fold(0.0, f64::max))
                        }}</dd>
                    </dl>
                }
            }}
        </section>
    }
}
