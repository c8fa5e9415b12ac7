//! The routing grid (rows: sparse layers, encoder then decoder; columns: tokens; colour: the
//! expert; opacity: the router's probability; dropped tokens crossed out) and the token
//! detail (a focused token's router probabilities over all experts, per layer).

use leptos::prelude::*;

use super::palette::expert_colour;
use crate::ctx::Ctx;
use crate::protocol::{LayerRouting, Stack};
use crate::state::AppState;

const CELL_W: f64 = 26.0;
const CELL_H: f64 = 22.0;
const LABEL_W: f64 = 92.0;
const HEADER_H: f64 = 64.0;

/// A token piece as shown: `▁` (word start) becomes a visible space mark.
pub fn show_piece(piece: &str) -> String {
    piece.replace('▁', "·")
}

fn layer_label(route: &LayerRouting) -> String {
    format!("{} {}", route.stack.as_str(), route.block)
}

/// One token's decision in one layer, as a cell shows it.
struct Cell {
    row: usize,
    block: usize,
    expert: i32,
    chosen: usize,
    weight: f32,
}

/// One cell of the grid: token `t` of the layer in row `cell.row`.
fn cell_view(
    stack: Stack,
    t: usize,
    piece: &str,
    cell: Cell,
    state: AppState,
) -> impl IntoView + use<> {
    let Cell {
        row,
        block,
        expert,
        chosen,
        weight,
    } = cell;
    let y = HEADER_H + CELL_H * row as f64;
    let x = LABEL_W + CELL_W * t as f64;
    let dropped = expert < 0;
    let layer = format!("{} {block}", stack.as_str());
    let title = if dropped {
        format!(
            "{layer} · token {t} {:?}: chose expert {chosen} (p = {weight:.3}) but it was full: dropped, passed on the residual",
            show_piece(piece)
        )
    } else {
        format!(
            "{layer} · token {t} {:?}: expert {expert}, p = {weight:.3}",
            show_piece(piece)
        )
    };
    let label = title.clone();
    view! {
        <g class="route-cell" data-testid="route-cell"
            data-stack=stack.as_str() data-block=block data-token=t
            data-expert=expert data-chosen=chosen
            data-weight=format!("{weight:.4}")
            tabindex="0" role="img" aria-label=label
            on:mouseenter=move |_| state.focus.set(Some((stack, t)))
            on:focus=move |_| state.focus.set(Some((stack, t)))>
            <title>{title}</title>
            <rect x=x + 1.0 y=y + 1.0 width=CELL_W - 2.0 height=CELL_H - 2.0 rx="3"
                fill=expert_colour(chosen)
                fill-opacity=if dropped { 0.18 } else { f64::from(weight).clamp(0.15, 1.0) } />
            {dropped.then(|| view! {
                <path class="dropped" d=format!("M{} {} L{} {} M{} {} L{} {}",
                    x + 5.0, y + 5.0, x + CELL_W - 5.0, y + CELL_H - 5.0,
                    x + CELL_W - 5.0, y + 5.0, x + 5.0, y + CELL_H - 5.0) />
            })}
            <text class="cell-label" x=x + CELL_W / 2.0 y=y + CELL_H / 2.0 + 4.0>
                {if dropped { "×".to_string() } else { expert.to_string() }}
            </text>
        </g>
    }
}

/// Token `t`'s column: its label and its cell in every layer of `stack`. Drawn once, when the
/// token arrives; what it shows is read then, without tracking (the column's key changes with
/// the run and the what-if).
fn column_view(stack: Stack, t: usize, state: AppState) -> impl IntoView {
    let piece = state
        .trace
        .with_untracked(|tr| tr.pieces(stack).get(t).cloned());
    let cells: Vec<Cell> = state.with_shown_layers_untracked(|layers| {
        layers
            .iter()
            .filter(|r| r.stack == stack)
            .enumerate()
            .filter(|(_, r)| t < r.expert.len())
            .map(|(row, r)| Cell {
                row,
                block: r.block,
                expert: r.expert[t],
                chosen: r.chosen[t] as usize,
                weight: r.weight[t],
            })
            .collect()
    });
    let x = LABEL_W + CELL_W * (t as f64 + 0.5);
    let y = HEADER_H - 4.0;
    let header = piece.clone().map(|piece| {
        view! {
            <text class="token-label" x=x y=y
                transform=format!("rotate(-55 {x} {y})")>{show_piece(&piece)}</text>
        }
    });
    let piece = piece.unwrap_or_default();
    let cells = cells
        .into_iter()
        .map(|cell| cell_view(stack, t, &piece, cell, state))
        .collect_view();
    view! { <g class="token-column">{header}{cells}</g> }
}

/// One stack's grid. A new token appends its column (keyed by run, what-if and token); the
/// columns already drawn stay as they are.
#[component]
fn StackGrid(stack: Stack) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    // What the columns are keyed by besides the token: a new run or another what-if redraws.
    let epoch = Memo::new(move |_| {
        let run = state.trace.with(|t| t.run);
        let what_if = state.what_if.with(|w| w.as_ref().map(|(f, _)| f.to_bits()));
        (run, what_if)
    });
    // This stack's layers (by block) and tokens: cheap to recompute, and unchanged for most
    // messages.
    let blocks = Memo::new(move |_| {
        state.with_shown_layers(|layers| {
            layers
                .iter()
                .filter(|r| r.stack == stack)
                .map(|r| r.block)
                .collect::<Vec<usize>>()
        })
    });
    let tokens = Memo::new(move |_| {
        let routed = state.with_shown_layers(|layers| {
            layers
                .iter()
                .filter(|r| r.stack == stack)
                .map(|r| r.expert.len())
                .max()
        });
        routed.map_or(0, |n| n.max(state.trace.with(|t| t.pieces(stack).len())))
    });
    let shown = Memo::new(move |_| tokens.get() > 0 && !blocks.with(Vec::is_empty));
    let width = move || LABEL_W + CELL_W * tokens.get() as f64 + 4.0;
    let height = move || HEADER_H + CELL_H * blocks.with(Vec::len) as f64 + 4.0;
    view! {
        <Show when=move || shown.get()>
            <figure class="stack-grid">
                <figcaption>{match stack {
                    Stack::Encoder => "Encoder: the prompt's tokens",
                    Stack::Decoder => "Decoder: the generated tokens",
                }}</figcaption>
                <div class="scroll">
                    <svg width=width height=height viewBox=move || format!("0 0 {} {}", width(), height())
                        role="group" aria-label=format!("{} routing", stack.as_str())>
                        <For
                            each=move || {
                                let e = epoch.get();
                                blocks.get().into_iter().enumerate().map(move |(row, b)| (e, row, b)).collect::<Vec<_>>()
                            }
                            key=|k| *k
                            children=move |(_, row, block)| view! {
                                <text class="layer-label" x="0" y=HEADER_H + CELL_H * row as f64 + CELL_H / 2.0 + 4.0>
                                    {format!("{} {block}", stack.as_str())}
                                </text>
                            }
                        />
                        <For
                            each=move || {
                                let e = epoch.get();
                                (0..tokens.get()).map(move |t| (e, t)).collect::<Vec<_>>()
                            }
                            key=|k| *k
                            children=move |(_, t)| column_view(stack, t, state)
                        />
                    </svg>
                </div>
            </figure>
        </Show>
    }
}

#[component]
pub fn RoutingGrid() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    let legend = move || {
        state.model.with(|m| {
            m.as_ref().map(|m| {
                (0..m.num_experts)
                    .map(|e| {
                        view! {
                            <span class="legend-item">
                                <span class="swatch" style=format!("background:{}", expert_colour(e))></span>
                                {e.to_string()}
                            </span>
                        }
                    })
                    .collect_view()
            })
        })
    };
    view! {
        <section class="panel" aria-labelledby="grid-title">
            <h2 id="grid-title">"Routing"</h2>
            <p class="hint">
                "Each cell is one token in one sparse layer. Colour: the expert the router chose; \
                 opacity: its probability; × : the expert was full and the token skipped the layer. \
                 Hover or focus a cell for the router's full distribution."
                {move || state.what_if.get().map(|(f, _)| view! {
                    <strong class="banner" data-testid="what-if-banner">
                        {format!(" Showing a what-if with capacity factor {f}.")}
                    </strong>
                })}
            </p>
            <div class="legend" aria-label="Expert colours">"Experts: " {legend}</div>
            <div data-testid="routing-grid" class="routing-grid">
                <StackGrid stack=Stack::Encoder />
                <StackGrid stack=Stack::Decoder />
            </div>
        </section>
    }
}

#[component]
pub fn TokenDetail() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    move || {
        let (stack, t) = state.focus.get()?;
        let piece = state
            .trace
            .with(|tr| tr.pieces(stack).get(t).cloned())
            .unwrap_or_default();
        // Only token `t`'s probabilities are copied.
        let layers: Vec<(String, Vec<f32>, usize, f32, bool)> = state.with_shown_layers(|layers| {
            layers
                .iter()
                .filter(|r| r.stack == stack && t < r.probs.len())
                .map(|r| {
                    (
                        layer_label(r),
                        r.probs[t].clone(),
                        r.chosen[t] as usize,
                        r.weight[t],
                        r.expert[t] < 0,
                    )
                })
                .collect()
        });
        let rows = layers
            .into_iter()
            .map(|(label, probs, chosen, weight, dropped)| {
                let bars = probs
                    .iter()
                    .enumerate()
                    .map(|(e, &p)| {
                        let h = (f64::from(p) * 40.0).max(1.0);
                        view! {
                            <g>
                                <title>{format!("expert {e}: {p:.4}")}</title>
                                <rect x=e as f64 * 14.0 y=42.0 - h width="12" height=h
                                    fill=expert_colour(e)
                                    stroke=if e == chosen { "currentColor" } else { "none" } />
                            </g>
                        }
                    })
                    .collect_view();
                let width = probs.len() as f64 * 14.0;
                view! {
                    <div class="detail-row">
                        <span class="layer-label">{label.clone()}</span>
                        <svg width=width height="44" role="img"
                            aria-label=format!("{label}: probabilities over {} experts; chose {chosen}", probs.len())>
                            {bars}
                        </svg>
                        <span>{format!("expert {chosen} · p = {weight:.3}{}",
                            if dropped { " · dropped" } else { "" })}</span>
                    </div>
                }
            })
            .collect_view();
        Some(view! {
            <section class="panel" data-testid="token-detail" aria-live="polite">
                <h2>{format!("Token {t} {:?} ({})", show_piece(&piece), stack.as_str())}</h2>
                {rows}
            </section>
        })
    }
}
