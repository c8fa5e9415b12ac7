#!/usr/bin/env python3
"""Where the router sends each language: for every sparse layer, the share of each kind of
token that goes to each expert, over held-out text.

    python tools/model/routing_story.py --model DIR [--out PLOTS_DIR] [--json OUT.json] [--limit N]

Encoder rows: the held-out verses as translation inputs (English KJV with the English -> Spanish
prefix, Spanish RV1909 with the Spanish -> English prefix; the prefix tokens are left out) and
the held-out corpus chunks by source (span corruption). Decoder rows: the tokens of Spanish
answers (English -> Spanish references, teacher-forced), English answers (Spanish -> English)
and span-corruption answers. DIR is anything score.py reads. Writes PLOTS_DIR/routing_by_language.png
and reports, per sparse layer, the total variation distance between the expert distributions of
the English and the Spanish rows (0: routed alike, 1: no expert in common).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import make_reference as mr
import score
import tasks
import train as tr

HERE = Path(__file__).resolve().parent


@torch.no_grad()
def route(model, rec: mr.Routers, inputs: list[list[int]], targets: list[list[int]], skip: list[int],
          batch_size: int = 32) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per sparse layer: the experts of every encoder token (after the first `skip[i]` of input i)
    or decoder token, -1 where dropped; returned as (encoder experts, decoder experts) per layer."""
    enc = [[] for _ in rec.layers]
    dec = [[] for _ in rec.layers]
    for i in range(0, len(inputs), batch_size):
        xs, ys, sk = inputs[i:i + batch_size], targets[i:i + batch_size], skip[i:i + batch_size]
        batch = tasks.collate([(x, y, 0) for x, y in zip(xs, ys)], tr.PAD_ID)
        rec.reset()
        labels = batch["labels"]
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
              decoder_input_ids=model._shift_right(labels), use_cache=False)
        for li, ((stack, _b), calls) in enumerate(zip(rec.layers, rec.calls)):
            dispatch, logits = calls[-1]
            choice = torch.argmax(logits, dim=-1)
            expert = torch.where(dispatch.sum(-1) > 0, choice, torch.full_like(choice, -1))
            for j in range(len(xs)):
                if stack == "encoder":
                    enc[li].append(expert[j, sk[j]:len(xs[j]) - 1].numpy())  # without prefix and </s>
                else:
                    dec[li].append(expert[j, :len(ys[j]) - 1].numpy())  # without </s>
    return [(np.concatenate(e) if e else np.zeros(0, int), np.concatenate(d) if d else np.zeros(0, int))
            for e, d in zip(enc, dec)]


def shares(experts: np.ndarray, n: int) -> list[float]:
    kept = experts[experts >= 0]
    counts = np.bincount(kept, minlength=n).astype(float)
    return (counts / max(1, len(experts))).round(4).tolist()


def story(model, tok, work: Path, per_source: int = 32, limit: int = 0) -> dict:
    """The routing shares of every row (see the module's description) and, per sparse layer, the
    total variation between the English and the Spanish rows; `limit`: only the first held-out
    verses (0: all)."""
    n = model.config.num_experts
    vocab = model.config.vocab_size
    rec = mr.Routers(model)
    rows = {}  # name -> (stack, experts per layer)
    pairs = tasks.heldout_pairs(HERE / "heldout" / "en-es.tsv")
    if limit:
        pairs = pairs[:limit]
    for direction, src_side, tgt_side, enc_name, dec_name in (
            ("en-es", 0, 1, "English verse (input)", "Spanish answer (output)"),
            ("es-en", 1, 0, "Spanish verse (input)", "English answer (output)")):
        prefix = tok.encode(tasks.PREFIXES[direction].rstrip(), add_special_tokens=False).ids
        xs = [tok.encode(tasks.PREFIXES[direction] + p[src_side]).ids[:tasks.MAX_INPUT] for p in pairs]
        ys = [tok.encode(p[tgt_side]).ids[:tasks.MAX_TARGET] for p in pairs]
        res = route(model, rec, xs, ys, [len(prefix)] * len(xs))
        rows[enc_name] = ("encoder", [e for e, _ in res])
        rows[dec_name] = ("decoder", [d for _, d in res])
    data = tr.tokenize_corpus(work)
    rng = np.random.default_rng(tr.SEED + 1)
    span_all = []
    for s_idx, s_name in enumerate(tr.SOURCES):  # up to `per_source` held-out chunks of every source
        sel = np.flatnonzero(data["eval_source"] == s_idx)[:per_source]
        if len(sel) == 0:
            continue
        span = [tr.span_corrupt([int(t) for t in data["eval_chunks"][i] if t >= 0], rng, vocab) for i in sel]
        res = route(model, rec, [x for x, _ in span], [y for _, y in span], [0] * len(span))
        rows[f"{s_name} (span input)"] = ("encoder", [e for e, _ in res])
        span_all.append([d for _, d in res])
    rows["span answers (output)"] = ("decoder", [np.concatenate([d[li] for d in span_all])
                                                  for li in range(len(rec.layers))])
    for h in rec.handles:
        h.remove()

    out = {"experts": n, "verses": len(pairs), "chunks_per_source": per_source, "layers": {}}
    for li, (stack, block) in enumerate(rec.layers):
        lname = f"{stack} block {block}"
        table = {name: shares(per[li], n) for name, (st, per) in rows.items() if st == stack}
        out["layers"][lname] = {"stack": stack, "block": block, "shares": table,
                                "tokens": {name: int(len(per[li])) for name, (st, per) in rows.items() if st == stack}}
        en = "English verse (input)" if stack == "encoder" else "English answer (output)"
        es = "Spanish verse (input)" if stack == "encoder" else "Spanish answer (output)"
        tv = 0.5 * float(np.abs(np.array(table[en]) - np.array(table[es])).sum())
        out["layers"][lname]["english_vs_spanish_tv"] = round(tv, 3)
        print(f"{lname}: English vs Spanish total variation {tv:.3f}", file=sys.stderr)
    return out


def plot(out: dict, path: Path) -> None:
    """routing_by_language.png: one heat map per sparse layer, a row per kind of token."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = out["experts"]
    layers = list(out["layers"])
    fig, axes = plt.subplots(len(layers), 1, figsize=(max(8, 0.35 * n + 4), 2.2 * len(layers) + 1))
    for ax, lname in zip(np.atleast_1d(axes), layers):
        table = out["layers"][lname]["shares"]
        names = list(table)
        m = np.array([table[k] for k in names])
        ax.imshow(m, aspect="auto", cmap="viridis", vmin=0, vmax=max(0.5, float(m.max())))
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xticks(range(n), [str(e) for e in range(n)], fontsize=7)
        if n <= 16:
            for (r, c), v in np.ndenumerate(m):
                ax.text(c, r, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v < 0.3 else "black")
        ax.set_title(f"{lname}: share of each row's tokens per expert "
                     f"(English vs Spanish TV {out['layers'][lname]['english_vs_spanish_tv']:.2f})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--out", type=Path, default=None, help="directory for routing_by_language.png")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--per-source", type=int, default=32, help="held-out chunks per corpus source")
    ap.add_argument("--limit", type=int, default=0, help="only the first N held-out verses")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    model, tok = score.open_model(args.model, threads=args.threads)
    out = story(model, tok, args.work, args.per_source, args.limit)
    if args.out:
        plot(out, args.out / "routing_by_language.png")
    text = json.dumps(out, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
