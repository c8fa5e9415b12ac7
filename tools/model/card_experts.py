"""What the experts learned, for the model card (eval_and_card.py): per sparse layer, each expert's
share of the held-out tokens, its most frequent and most specific tokens and its tokens' shares by
source category (from the RouteLog of card_span.held_out), with their two plots; and the routing of
English and Spanish verses (routing_story.py's results) in words.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

import train as tr  # noqa: E402
from card_common import tok_list  # noqa: E402
from card_span import RouteLog  # noqa: E402


def expert_stats(log: RouteLog, tok: Tokenizer, n_experts: int) -> list[dict]:
    out = []
    for (stack, block), rows in zip(log.layers, log.rows):
        a = np.concatenate(rows)
        ids, src, exp = a[:, 0], a[:, 1], a[:, 2]
        total_src = np.bincount(src, minlength=len(tr.SOURCES)) / len(src)
        tok_total = Counter(ids.tolist())
        layer = {"stack": stack, "block": block, "tokens": int(len(ids)), "dropped": int((exp == -1).sum()),
                 "all_sources": total_src.tolist(), "experts": []}
        for e in range(n_experts):
            m = exp == e
            cnt = int(m.sum())
            shares = (np.bincount(src[m], minlength=len(tr.SOURCES)) / max(cnt, 1)).tolist()
            c = Counter(ids[m].tolist())
            frequent = [tok.id_to_token(t) for t, _ in c.most_common(12)]
            # specific: tokens seen >= 8 times, mostly routed here; ranked by count × share routed here
            spec = sorted(((n * n / tok_total[t], t) for t, n in c.items() if tok_total[t] >= 8 and n / tok_total[t] >= 0.5),
                          reverse=True)
            layer["experts"].append({
                "expert": e, "tokens": cnt, "share": cnt / len(ids), "sources": shares,
                "frequent": frequent, "specific": [tok.id_to_token(t) for _, t in spec[:12]],
            })
        out.append(layer)
    return out


def plot_sources(stats: list[dict], path: Path) -> None:
    colors = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(1, len(stats), figsize=(3.2 * len(stats), 3.6), sharey=True)
    for ax, layer in zip(np.atleast_1d(axes), stats):
        labels = ["all"] + [str(e["expert"]) for e in layer["experts"]]
        rows = [layer["all_sources"]] + [e["sources"] for e in layer["experts"]]
        left = np.zeros(len(rows))
        for si, s in enumerate(tr.SOURCES):
            vals = np.array([r[si] for r in rows])
            ax.barh(labels, vals, left=left, color=colors[si % 10], label=s if layer is stats[0] else None)
            left += vals
        ax.invert_yaxis()
        ax.set_title(f"{layer['stack']} block {layer['block']}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("share of the expert's tokens", fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("expert", fontsize=8)
    fig.legend(loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_lift(stats: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, len(stats), figsize=(3.2 * len(stats), 3.4), sharey=True)
    for ax, layer in zip(np.atleast_1d(axes), stats):
        base = np.array(layer["all_sources"])
        m = np.array([np.array(e["sources"]) / np.maximum(base, 1e-9) for e in layer["experts"]])
        m = np.log2(np.maximum(m, 1 / 16))
        m[[e["share"] < 0.005 for e in layer["experts"]]] = np.nan  # (almost) idle experts: grey
        cmap = plt.get_cmap("RdBu_r").copy()
        cmap.set_bad("0.8")
        im = ax.imshow(m, cmap=cmap, vmin=-4, vmax=4, aspect="auto")
        ax.set_xticks(range(len(tr.SOURCES)), tr.SOURCES, rotation=70, fontsize=6)
        ax.set_yticks(range(len(layer["experts"])), [str(e["expert"]) for e in layer["experts"]], fontsize=7)
        ax.set_title(f"{layer['stack']} block {layer['block']}", fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("expert", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8, label="log2(share in expert / share overall)")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def experts_section(stats: list[dict]) -> list[str]:
    """The card's *What the experts learned, by source* section."""
    L: list[str] = []
    w = L.append
    w("## What the experts learned, by source\n")
    w("Routing of the shipped weights over the held-out corpus split (span-corrupted like in training; encoder "
      "routers see the corrupted inputs, decoder routers the teacher-forced targets). The first plot shows each "
      "expert's tokens by source (the top bar, *all*, is the mix of all tokens); the second the same as a ratio to "
      "the overall mix (red: the source is over-represented in that expert; grey: experts that receive under 0.5 % "
      "of the tokens).\n")
    w("![expert tokens by source](plots/experts_sources.png)\n")
    w("![expert specialisation by source](plots/experts_lift.png)\n")
    for layer in stats:
        w(f"### {layer['stack']} block {layer['block']}\n")
        w(f"{layer['tokens']:,} tokens routed, {layer['dropped']} dropped by capacity.\n")
        w("| expert | tokens | most over-represented sources | most frequent tokens | most specific tokens |\n|---|---|---|---|---|")
        base = np.array(layer["all_sources"])
        for e in layer["experts"]:
            lift = np.array(e["sources"]) / np.maximum(base, 1e-9)
            top = [i for i in np.argsort(-lift)[:2] if lift[i] > 1.3]
            srcs = ", ".join(f"{tr.SOURCES[i]} ×{lift[i]:.1f}" for i in top) or "(mixed)"
            w(f"| {e['expert']} | {e['share'] * 100:.1f} % | {srcs} | {tok_list(e['frequent'])} | {tok_list(e['specific'])} |")
        w("")
    w("*Most specific*: tokens seen at least 8 times of which at least half went to this expert, ranked by "
      "count × that fraction. `▁` marks a word start, `⏎` a newline.\n")
    return L


def how_different(tv: float) -> str:
    """Words for a total variation distance between two expert distributions."""
    if tv >= 0.5:
        return "mostly different experts"
    if tv >= 0.2:
        return "partly different experts"
    return "largely the same experts"


def layer_tvs(story: dict, stack: str) -> list[float]:
    """The English-vs-Spanish total variation distances of the routing story's sparse layers in `stack`."""
    return [layer["english_vs_spanish_tv"] for layer in story["layers"].values() if layer["stack"] == stack]


def tv_words(tvs: list[float]) -> str:
    """Words for the range of some total variation distances."""
    return how_different(min(tvs)) + ("" if how_different(min(tvs)) == how_different(max(tvs))
                                      else f" to {how_different(max(tvs))}")


def language_contrast(layer: dict, a: str, b: str) -> str:
    """The expert whose share differs most between rows a and b, in words."""
    sa, sb = np.array(layer["shares"][a]), np.array(layer["shares"][b])
    e = int(np.argmax(np.abs(sa - sb)))
    more, less = (a, b) if sa[e] >= sb[e] else (b, a)
    hi, lo = (sa[e], sb[e]) if more == a else (sb[e], sa[e])
    return (f"expert {e} takes {hi * 100:.0f} % of the {row_words(more)} and {lo * 100:.0f} % of the "
            f"{row_words(less)}")


def row_words(row: str) -> str:
    return {"English verse (input)": "English verses' tokens", "Spanish verse (input)": "Spanish verses' tokens",
            "English answer (output)": "English answers' tokens",
            "Spanish answer (output)": "Spanish answers' tokens"}.get(row, row)


def routing_section(story: dict) -> list[str]:
    """The card's *Routing by language* section, from routing_story.story of the shipped weights."""
    L: list[str] = []
    w = L.append
    enc, dec = layer_tvs(story, "encoder"), layer_tvs(story, "decoder")
    enc_words, dec_words = tv_words(enc), tv_words(dec)
    w("## Routing by language\n")
    w("![routing by language](plots/routing_by_language.png)\n")
    w(f"Made by `tools/model/routing_story.py` with the shipped weights. Rows: the tokens of the {story['verses']} "
      "held-out verses as translation inputs (English with the English → Spanish prefix, the same verses in "
      "Spanish with the Spanish → English prefix; the prefix tokens and `</s>` are left out) and of "
      f"up to {story['chunks_per_source']} held-out chunks of every corpus source as span-corruption inputs "
      "(encoder); the tokens of the Spanish and the English reference answers, teacher-forced, and of the "
      "span-corruption answers (decoder). Each cell is the share of the row's tokens that goes to that expert. "
      "*TV*: the total variation distance between the English and the Spanish rows' distributions over the "
      "experts (0: routed alike, 1: no expert in common).\n")
    w("| sparse layer | rows compared | TV | the expert that differs most |\n|---|---|---|---|")
    for lname, layer in story["layers"].items():
        a, b = (("English verse (input)", "Spanish verse (input)") if layer["stack"] == "encoder"
                else ("Spanish answer (output)", "English answer (output)"))
        tv = layer["english_vs_spanish_tv"]
        w(f"| {lname} | {a} vs {b} | {tv:.2f} | {language_contrast(layer, a, b)} |")
    w("")
    w(f"What a visitor sees: the same verse, typed in English and then in Spanish, goes to {enc_words} in the "
      "encoder (TV " + " and ".join(f"{t:.2f}" for t in enc) + " in its sparse layers); in the decoder, whose "
      f"tokens are the answer's, Spanish and English answers go to {dec_words} (TV "
      + " and ".join(f"{t:.2f}" for t in dec) + ").\n")
    return L
