//! Every expert of every sparse layer as a cell with its shard's state, and the bytes
//! downloaded against the whole model.

use leptos::prelude::*;

use crate::ctx::Ctx;
use crate::state::ShardState;

#[component]
pub fn ShardPanel() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    let rows = move || {
        let model = state.model.get()?;
        let cells = state.shards.get();
        let view = model
            .sparse_layers
            .iter()
            .map(|&(stack, block)| {
                let row = cells
                    .iter()
                    .copied()
                    .filter(|c| c.info.with_value(|i| i.stack == stack && i.block == block))
                    .map(|c| {
                        let info = c.info.get_value();
                        view! {
                            <span class="shard" data-testid="shard"
                                data-stack=stack.as_str() data-block=block data-expert=info.expert
                                data-state=move || c.state.get().as_str()
                                title=move || format!("{} · {:.1} kB · {}{}", switchscope_wire::ranges::describe(&info.file), info.bytes as f64 / 1e3,
                                    c.state.get().as_str(),
                                    c.ms.get().map(|ms| format!(" · fetched in {ms:.1} ms")).unwrap_or_default())>
                                {info.expert}
                            </span>
                        }
                    })
                    .collect_view();
                view! {
                    <div class="shard-row">
                        <span class="layer-label">{format!("{} {}", stack.as_str(), block)}</span>
                        {row}
                    </div>
                }
            })
            .collect_view();
        Some(view)
    };
    let summary = move || {
        let model = state.model.get()?;
        let cells = state.shards.get();
        let count = |s: ShardState| cells.iter().filter(|c| c.state.get() == s).count();
        Some(format!(
            "Downloaded {:.2} MB of {:.2} MB ({:.0} %) · {} resident, {} cached, {} remote, {} evicted, {} failed",
            state.downloaded.get() as f64 / 1e6,
            model.total_bytes as f64 / 1e6,
            100.0 * state.downloaded.get() as f64 / model.total_bytes.max(1) as f64,
            count(ShardState::Resident),
            count(ShardState::Cached),
            count(ShardState::Remote),
            count(ShardState::Evicted),
            count(ShardState::Failed),
        ))
    };
    let cache = move || {
        let policy = state
            .model
            .with(|m| m.as_ref().map(|m| m.cache_policy.clone()))
            .unwrap_or_default();
        state.cache.get().sentence(&policy)
    };
    view! {
        <section class="panel" aria-labelledby="shards-title">
            <h2 id="shards-title">"Expert shards"</h2>
            <p class="hint">
                "One cell per expert. An expert's weights are fetched only when a router sends a \
                 token to it. States: "
                <span class="shard" data-state="remote">"remote"</span>
                <span class="shard" data-state="fetching">"fetching"</span>
                <span class="shard" data-state="cached">"cached"</span>
                <span class="shard" data-state="resident">"resident"</span>
                <span class="shard" data-state="evicted">"evicted"</span>
                <span class="shard" data-state="failed">"failed"</span>
            </p>
            <p data-testid="shard-summary" data-downloaded=move || state.downloaded.get()
                data-total=move || state.model.with(|m| m.as_ref().map_or(0, |m| m.total_bytes))>{summary}</p>
            {move || state.download.get().map(|(file, received, total)| view! {
                <p class="download" data-testid="download-progress" aria-live="polite">
                    <progress max=total value=received></progress>
                    {format!(" Downloading {file}: {:.1} of {:.1} kB", received as f64 / 1e3, total as f64 / 1e3)}
                </p>
            })}
            <p data-testid="cache-hit-rate" data-hits=move || state.cache.get().hits
                data-requests=move || state.cache.get().requests>{cache}</p>
            <div data-testid="shard-panel" class="shard-panel">{rows}</div>
        </section>
    }
}
