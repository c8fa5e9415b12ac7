#!/usr/bin/env python3
"""Score a model on the held-out verse pairs: BLEU and chrF (sacrebleu, default 13a tokenizer),
greedy decoding with exactly the app's prompt format, and a repetition check.

    python tools/model/score.py --model DIR [--limit N] [--json OUT.json] [--show 5]

DIR is a Hugging Face checkpoint (config.json + safetensors), a converted Switchscope model
directory (manifest.json: the weights exactly as the runtime reads them), or a training run's
directory (its checkpoint.pt). The held-out files are
tools/model/heldout/en-es.tsv (KJV source TAB RV1909 reference) and es-en.tsv (RV1909 TAB KJV);
the prompt is "translate English to Spanish: <source>" (resp. "translate Spanish to English: "),
decoding is greedy up to 64 new tokens, as `switchscope generate --greedy --max-new-tokens 64`.
A repetition loop is an output in which some word 3-gram occurs three times or more.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import sacrebleu
import torch
from tokenizers import Tokenizer
from transformers import SwitchTransformersForConditionalGeneration

import tasks

HERE = Path(__file__).resolve().parent
MAX_NEW_TOKENS = 64
DIRECTIONS = {"en-es": "en-es.tsv", "es-en": "es-en.tsv"}


def load(model_dir: Path):
    if (model_dir / "checkpoint.pt").exists() and not (model_dir / "config.json").exists():  # a run in progress
        from transformers import SwitchTransformersConfig

        ck = torch.load(model_dir / "checkpoint.pt", weights_only=False)
        model = SwitchTransformersForConditionalGeneration(SwitchTransformersConfig.from_dict(ck["config"]))
        model.load_state_dict(ck["model"])
        return model.eval()
    if (model_dir / "manifest.json").exists():
        from make_reference import shipped_model
        from train import model_config

        manifest = json.loads((model_dir / "manifest.json").read_text())
        cfg = manifest["config"]
        config = model_config(cfg["vocab_size"], cfg.get("router_aux_loss_coef", 0.01), cfg["num_experts"])
        return shipped_model(SwitchTransformersForConditionalGeneration(config), model_dir)
    return SwitchTransformersForConditionalGeneration.from_pretrained(model_dir).eval()


def open_model(model_dir: Path, tokenizer: Path | None = None, threads: int = 1):
    """(model, tokenizer) for the scripts that read a model: its tokenizer.json, or the training
    corpus's (WORK/tokenizer.json) for a run in progress, on `threads` torch threads."""
    torch.set_num_threads(threads)
    tok_path = tokenizer or model_dir / "tokenizer.json"
    if not tok_path.exists():
        tok_path = HERE / "work" / "tokenizer.json"
    model = load(model_dir)
    torch.set_num_threads(threads)  # make_reference, imported for converted models, sets one thread
    return model, Tokenizer.from_file(str(tok_path))


def loops(text: str) -> bool:
    words = text.split()
    grams = Counter(tuple(words[i:i + 3]) for i in range(len(words) - 2))
    return any(n >= 3 for n in grams.values())


@torch.no_grad()
def translate(model, tok: Tokenizer, prompts: list[str], batch_size: int = 32) -> list[str]:
    out = []
    for i in range(0, len(prompts), batch_size):
        encs = tok.encode_batch(prompts[i:i + batch_size])  # the tokenizer appends </s>
        width = max(len(e.ids) for e in encs)
        ids = torch.zeros((len(encs), width), dtype=torch.long)
        for j, e in enumerate(encs):
            ids[j, :len(e.ids)] = torch.tensor(e.ids)
        gen = model.generate(input_ids=ids, attention_mask=(ids != 0).long(), max_new_tokens=MAX_NEW_TOKENS,
                             do_sample=False, num_beams=1)
        out += [tok.decode([t for t in g.tolist() if t > 1], skip_special_tokens=False).strip() for g in gen]
    return out


def score(model, tok: Tokenizer, limit: int = 0, show: int = 0, keep_outputs: bool = False) -> dict:
    """BLEU, chrF and the repetition share per direction over the first `limit` held-out verses
    (0: all); `show` examples kept, and every output under "outputs" with `keep_outputs`."""
    res = {}
    for direction, fname in DIRECTIONS.items():
        pairs = tasks.heldout_pairs(HERE / "heldout" / fname)
        if limit:
            pairs = pairs[:limit]
        srcs, refs = [s for s, _ in pairs], [r for _, r in pairs]
        hyps = translate(model, tok, [tasks.PREFIXES[direction] + s for s in srcs])
        res[direction] = {
            "verses": len(pairs),
            "bleu": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
            "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2),
            "repetition_loops": round(sum(loops(h) for h in hyps) / len(hyps), 4),
            "examples": [{"source": s, "reference": r, "output": h} for s, r, h in zip(srcs, refs, hyps)][:show],
        }
        if keep_outputs:
            res[direction]["outputs"] = hyps
        print(f"{direction}: BLEU {res[direction]['bleu']} chrF {res[direction]['chrf']} "
              f"loops {res[direction]['repetition_loops']:.1%} over {len(pairs)} verses", file=sys.stderr)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, default=None, help="default: MODEL/tokenizer.json")
    ap.add_argument("--limit", type=int, default=0, help="only the first N verses of each direction")
    ap.add_argument("--show", type=int, default=3, help="examples to keep in the result")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    model, tok = open_model(args.model, args.tokenizer, args.threads)
    res = score(model, tok, args.limit, args.show)
    text = json.dumps(res, indent=1, ensure_ascii=False)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
