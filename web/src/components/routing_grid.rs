//! The routing grid (rows: sparse layers, encoder then decoder; columns: tokens; colour: the
//! expert; opacity: the router's probability; dropped tokens crossed out) and the token
//! detail (a focused token's router probabilities over all experts, per layer).

use leptos::prelude::*;

use super::palette::expert_colour;
use crate::ctx::Ctx;
use crate::protocol::{LayerRouting, Stack};

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

#[component]
fn StackGrid(stack: Stack) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let state = ctx.state;
    // Only this stack's layers and pieces: the encoder's grid is not redrawn while the decoder
    // streams.
    let data = Memo::new(move |_| {
        let layers: Vec<LayerRouting> = state
            .shown_layers()
            .into_iter()
            .filter(|r| r.stack == stack)
            .collect();
        let pieces: Vec<String> = state.trace.with(|t| t.pieces(stack).to_vec());
        (layers, pieces)
    });
    move || {
        let (layers, pieces) = data.get();
        let tokens = layers
            .first()
            .map_or(0, |l| l.expert.len())
            .max(pieces.len());
        if layers.is_empty() || tokens == 0 {
            return None;
        }
        let width = LABEL_W + CELL_W * tokens as f64 + 4.0;
        let height = HEADER_H + CELL_H * layers.len() as f64 + 4.0;
        let headers = pieces
            .iter()
            .enumerate()
            .map(|(t, piece)| {
                let x = LABEL_W + CELL_W * (t as f64 + 0.5);
                let y = HEADER_H - 4.0;
                view! {
                    <text class="token-label" x=x y=y
                        transform=format!("rotate(-55 {x} {y})")>{show_piece(piece)}</text>
                }
            })
            .collect_view();
        let rows = layers
            .iter()
            .enumerate()
            .map(|(row, route)| {
                let y = HEADER_H + CELL_H * row as f64;
                let cells = (0..route.expert.len())
                    .map(|t| {
                        let expert = route.expert[t];
                        let chosen = route.chosen[t] as usize;
                        let weight = route.weight[t];
                        let x = LABEL_W + CELL_W * t as f64;
                        let piece = pieces.get(t).cloned().unwrap_or_default();
                        let dropped = expert < 0;
                        let title = if dropped {
                            format!("{} · token {t} {:?}: chose expert {chosen} (p = {weight:.3}) but it was full: dropped, passed on the residual", layer_label(route), show_piece(&piece))
                        } else {
                            format!("{} · token {t} {:?}: expert {expert}, p = {weight:.3}", layer_label(route), show_piece(&piece))
                        };
                        let block = route.block;
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
                    })
                    .collect_view();
                view! {
                    <text class="layer-label" x="0" y=y + CELL_H / 2.0 + 4.0>{layer_label(route)}</text>
                    {cells}
                }
            })
            .collect_view();
        Some(view! {
            <figure class="stack-grid">
                <figcaption>{match stack {
                    Stack::Encoder => "Encoder: the prompt's tokens",
                    Stack::Decoder => "Decoder: the generated tokens",
                }}</figcaption>
                <div class="scroll">
                    <svg width=width height=height viewBox=format!("0 0 {width} {height}")
                        role="group" aria-label=format!("{} routing", stack.as_str())>
                        {headers}
                        {rows}
                    </svg>
                </div>
            </figure>
        })
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
        let layers: Vec<LayerRouting> = state
            .shown_layers()
            .into_iter()
            .filter(|r| r.stack == stack && t < r.probs.len())
            .collect();
        let rows = layers
            .into_iter()
            .map(|route| {
                let probs = route.probs[t].clone();
                let chosen = route.chosen[t] as usize;
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
                        <span class="layer-label">{layer_label(&route)}</span>
                        <svg width=width height="44" role="img"
                            aria-label=format!("{}: probabilities over {} experts; chose {chosen}", layer_label(&route), probs.len())>
                            {bars}
                        </svg>
                        <span>{format!("expert {chosen} · p = {:.3}{}", route.weight[t],
                            if route.expert[t] < 0 { " · dropped" } else { "" })}</span>
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
