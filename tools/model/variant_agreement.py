#!/usr/bin/env python3
"""Routing agreement and held-out loss of a converted variant against the float32 checkpoint.

    python tools/model/variant_agreement.py --model DIR [--work tools/model/work] [--max-chunks N]

DIR is a converted model directory (int8 or int4 experts). Over the held-out split, span-corrupted
like in training, it compares the expert chosen at every position of every sparse layer by the
float32 checkpoint and by the weights in DIR (dequantized like the runtime), and prints the
fraction that agree, per layer and overall, with both held-out cross-entropies and the greedy
fill-ins of the held-out examples. Used to decide whether a variant is worth shipping
(switchscope-mini ships an int4 variant only at >= 97 % agreement).
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
import eval_and_card as ec  # noqa: E402
import make_reference as mr  # noqa: E402
import train as tr  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--hf", type=Path, default=None)
    ap.add_argument("--max-chunks", type=int, default=0)
    ap.add_argument("--min-agreement", type=float, default=0.0, help="exit with status 1 below this agreement")
    ap.add_argument("--card", action="store_true", help="write DIR/README.md describing the variant")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = SwitchTransformersForConditionalGeneration.from_pretrained(args.hf or args.work / "hf", dtype=torch.float32).eval()
    variant = mr.shipped_model(model, args.model)
    data = tr.tokenize_corpus(args.work)
    la, lb = ec.RouteLog(model), ec.RouteLog(variant)
    loss_a = ec.held_out(model, data, model.config.vocab_size, la, max_chunks=args.max_chunks)
    loss_b = ec.held_out(variant, data, model.config.vocab_size, lb, max_chunks=args.max_chunks)
    per_layer = {}
    agree = total = 0
    for (stack, block), ra, rb in zip(la.layers, la.rows, lb.rows):
        a, b = np.concatenate(ra)[:, 2], np.concatenate(rb)[:, 2]
        per_layer[f"{stack}.{block}"] = float((a == b).mean())
        agree += int((a == b).sum())
        total += len(a)
    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    fills = []
    for ex in mr.fill_in_examples(args.work):
        ids = tok.encode(ex["text"]).ids
        fa, fb = mr.greedy(model, ids)[0], mr.greedy(variant, ids)[0]
        fills.append({"source": ex["source"], "f32": tok.decode(fa, skip_special_tokens=False),
                      "variant": tok.decode(fb, skip_special_tokens=False), "same": fa == fb})
    manifest = json.loads((args.model / "manifest.json").read_text())
    q = manifest["quantization"]
    print(json.dumps({"model": str(args.model), "quantization": q,
                      "agreement": agree / total, "per_layer": per_layer, "held_out_ce_f32": loss_a["ce"],
                      "held_out_ce_variant": loss_b["ce"], "fills": fills}, indent=1, ensure_ascii=False))
    if args.card:
        size = sum(f["bytes"] for f in manifest["files"])
        lines = [
            f"# switchscope-mini ({q['experts']})\n",
            "The same trained checkpoint as `../switchscope-mini/` (see its README.md for the training data and "
            f"licences, architecture, training and what the experts learned), converted with {q['experts']} experts "
            f"(group {q['group_size']}, {q['scale_dtype']} scales) and {q['dense']} dense weights: "
            f"{size / 1e6:.2f} MB in the manifest's files.\n",
            f"Against the float32 checkpoint, over the held-out split ({total:,} routing decisions, span-corrupted "
            "like in training, all sparse layers):\n",
            "| | |\n|---|---|",
            f"| same expert chosen | {agree / total * 100:.2f} % |",
        ]
        lines += [f"| same expert, {k.replace('.', ' block ')} | {v * 100:.2f} % |" for k, v in per_layer.items()]
        lines += [
            f"| held-out cross-entropy | {loss_b['ce']:.4f} (float32: {loss_a['ce']:.4f}) |",
            f"| greedy fill-ins equal to float32 | {sum(f['same'] for f in fills)} of {len(fills)} held-out examples |",
            "",
            f"Made by `tools/model/build.sh` (`switchscope convert --quant {q['experts']} --group-size {q['group_size']} "
            "--f16-dense`, then `tools/model/variant_agreement.py --min-agreement 0.97 --card`).\n",
        ]
        (args.model / "README.md").write_text("\n".join(lines), encoding="utf-8")
    if agree / total < args.min_agreement:
        print(f"agreement {agree / total:.4f} below {args.min_agreement}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
