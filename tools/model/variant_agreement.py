#!/usr/bin/env python3
"""Routing agreement and held-out loss of a converted variant against the float32 checkpoint.

    python tools/model/variant_agreement.py --model DIR [--work tools/model/work] [--max-chunks N] [--limit N]

DIR is a converted model directory (int8 or int4 experts). It compares the expert chosen at every
position of every sparse layer by the float32 checkpoint and by the weights in DIR (dequantized
like the runtime) over two sets of held-out tokens: the held-out corpus split, span-corrupted like
in training, and the held-out verses (tools/model/heldout/) as translation prompts in both
directions with their references teacher-forced. It prints the fraction that agree, per set, per
layer and overall, with both held-out cross-entropies and the greedy fill-ins of the held-out
examples. Used to decide whether a variant is worth shipping (switchscope-mini ships an int4
variant only when both agreements are >= 97 %).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import SwitchTransformersForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parent))
import card_span as cs  # noqa: E402
import make_reference as mr  # noqa: E402
import routing_story as rs  # noqa: E402
import tasks  # noqa: E402
import train as tr  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

HERE = Path(__file__).resolve().parent


def verse_routing(model, tok: Tokenizer, limit: int = 0) -> tuple[list[tuple[str, int]], list[np.ndarray]]:
    """(sparse layers, experts per layer) over the held-out verses as translation prompts, both
    directions (prefix included), encoder over the prompt, decoder over the teacher-forced
    reference; every token but the closing </s>; -1 where dropped by capacity."""
    rec = mr.Routers(model)
    per_layer: list[list[np.ndarray]] = [[] for _ in rec.layers]
    for direction, fname in (("en-es", "en-es.tsv"), ("es-en", "es-en.tsv")):
        pairs = tasks.heldout_pairs(HERE / "heldout" / fname)
        if limit:
            pairs = pairs[:limit]
        xs = [tok.encode(tasks.PREFIXES[direction] + s).ids[:tasks.MAX_INPUT] for s, _ in pairs]
        ys = [tok.encode(r).ids[:tasks.MAX_TARGET] for _, r in pairs]
        for li, (enc, dec) in enumerate(rs.route(model, rec, xs, ys, [0] * len(xs))):
            per_layer[li] += [enc, dec]
    layers = list(rec.layers)
    for h in rec.handles:
        h.remove()
    return layers, [np.concatenate(p) for p in per_layer]


def agreement(layers: list[tuple[str, int]], a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    """Share of routing decisions on which `a` and `b` choose the same expert, overall and per layer."""
    per_layer = {f"{stack}.{block}": float((x == y).mean()) for (stack, block), x, y in zip(layers, a, b)}
    agree = sum(int((x == y).sum()) for x, y in zip(a, b))
    total = sum(len(x) for x in a)
    return {"agreement": agree / total, "decisions": total, "per_layer": per_layer}


def chunk_experts(log: "cs.RouteLog") -> list[np.ndarray]:
    """The experts of a RouteLog filled by card_span.held_out, per sparse layer."""
    return [np.concatenate(r)[:, 2] for r in log.rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--hf", type=Path, default=None, help="the float32 checkpoint (default WORK/hf)")
    ap.add_argument("--max-chunks", type=int, default=0, help="quick runs only: fewer held-out chunks")
    ap.add_argument("--limit", type=int, default=0, help="quick runs only: the first N held-out verses per direction")
    ap.add_argument("--min-agreement", type=float, default=0.0,
                    help="exit with status 1 when either agreement (chunks, verses) is below this")
    ap.add_argument("--card", action="store_true", help="write DIR/README.md describing the variant")
    args = ap.parse_args()
    torch.set_num_threads(1)
    hf = args.hf or args.work / "hf"
    if not (hf / "config.json").exists():
        sys.exit(f"error: {hf} is not a Hugging Face checkpoint (no config.json); train.py writes one when a run finishes")
    model = SwitchTransformersForConditionalGeneration.from_pretrained(hf, dtype=torch.float32).eval()
    variant = mr.shipped_model(model, args.model)
    data = tr.tokenize_corpus(args.work)
    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    la, lb = cs.RouteLog(model), cs.RouteLog(variant)
    loss_a = cs.held_out(model, data, model.config.vocab_size, la, max_chunks=args.max_chunks)
    loss_b = cs.held_out(variant, data, model.config.vocab_size, lb, max_chunks=args.max_chunks)
    chunks = agreement(la.layers, chunk_experts(la), chunk_experts(lb))
    layers, va = verse_routing(model, tok, args.limit)
    _, vb = verse_routing(variant, tok, args.limit)
    verses = agreement(layers, va, vb)
    fills = []
    for ex in mr.fill_in_examples(args.work):
        ids = tok.encode(ex["text"]).ids
        fa, fb = mr.greedy(model, ids)[0], mr.greedy(variant, ids)[0]
        fills.append({"source": ex["source"], "f32": tok.decode(fa, skip_special_tokens=False),
                      "variant": tok.decode(fb, skip_special_tokens=False), "same": fa == fb})
    manifest = json.loads((args.model / "manifest.json").read_text())
    q = manifest["quantization"]
    print(json.dumps({"model": str(args.model), "quantization": q,
                      "agreement": chunks["agreement"], "per_layer": chunks["per_layer"],
                      "verse_agreement": verses["agreement"], "verse_per_layer": verses["per_layer"],
                      "held_out_ce_f32": loss_a["ce"], "held_out_ce_variant": loss_b["ce"], "fills": fills},
                     indent=1, ensure_ascii=False))
    if args.card:
        size = sum(f["bytes"] for f in manifest["files"])
        lines = [
            f"# switchscope-mini ({q['experts']})\n",
            "The same trained checkpoint as `../switchscope-mini/` (see its README.md for the tasks, the training "
            "data and licences, architecture, training, translation scores of this variant and what the experts "
            f"learned), converted with {q['experts']} experts (group {q['group_size']}, {q['scale_dtype']} scales) "
            f"and {q['dense']} dense weights: {size / 1e6:.2f} MB in the manifest's files.\n",
            "Against the float32 checkpoint, over held-out tokens of all sparse layers: the held-out corpus split "
            f"({chunks['decisions']:,} routing decisions, span-corrupted like in training) and the held-out verses "
            f"as translation prompts in both directions with their references teacher-forced "
            f"({verses['decisions']:,} decisions):\n",
            "| | held-out split | held-out verses |\n|---|---|---|",
            f"| same expert chosen | {chunks['agreement'] * 100:.2f} % | {verses['agreement'] * 100:.2f} % |",
        ]
        lines += [f"| same expert, {k.replace('.', ' block ')} | {v * 100:.2f} % | {verses['per_layer'][k] * 100:.2f} % |"
                  for k, v in chunks["per_layer"].items()]
        lines += [
            "",
            f"Held-out span-corruption cross-entropy {loss_b['ce']:.4f} (float32: {loss_a['ce']:.4f}); greedy "
            f"fill-ins equal to float32's: {sum(f['same'] for f in fills)} of {len(fills)} held-out examples.\n",
            f"Made by `tools/model/build.sh` (`switchscope convert --quant {q['experts']} --group-size {q['group_size']} "
            "--f16-dense`, then `tools/model/variant_agreement.py --min-agreement 0.97 --card`).\n",
        ]
        if args.max_chunks or args.limit:
            lines.append(f"(A quick run: the first {args.max_chunks or 'all'} held-out chunks and "
                         f"{args.limit or 'all'} verses per direction.)\n")
        (args.model / "README.md").write_text("\n".join(lines), encoding="utf-8")
    low = [name for name, r in (("held-out split", chunks), ("held-out verses", verses))
           if r["agreement"] < args.min_agreement]
    if low:
        print("routing agreement below " + f"{args.min_agreement}: "
              + ", ".join(f"{n} {r['agreement']:.4f}" for n, r in (("held-out split", chunks), ("held-out verses", verses))
                          if n in low), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
