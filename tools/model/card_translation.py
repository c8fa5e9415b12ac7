"""Translation of the held-out verses, for the model card (eval_and_card.py): the cache of the
translation scores (score.py) and of the routing story, keyed by the weights, and the card's
sections on the scores with example translations and on the int8 and int4 weights against
float32 (routing agreement from variant_agreement.py, score differences, held-out loss).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch
import transformers

import tasks
from card_common import DIRECTION_NAMES, HERE, fmt_bytes, md_escape, spread
from fetch_corpus import sha256

BLEU_GOAL = 12.0  # the second generation's goal: held-out BLEU of the shipped weights, both directions
NAMES = {"float32": "float32 checkpoint", "int8": "**shipped**: int8 experts, f16 dense",
         "int4": "int4 experts, f16 dense (variant)"}


def fingerprint(model_dir: Path) -> str:
    """What identifies a model's weights: a converted directory's manifest (it holds every file's
    SHA-256), or a Hugging Face checkpoint's safetensors."""
    if (model_dir / "manifest.json").exists():
        return sha256(model_dir / "manifest.json")
    return sha256(model_dir / "model.safetensors")


class Cache:
    """Results in DIR/KIND-KEY.json, KEY a hash of what they depend on; `None` as DIR: no cache."""

    CODE = ["score.py", "routing_story.py", "make_reference.py", "tasks.py", "train.py", "heldout/en-es.tsv",
            "heldout/es-en.tsv"]

    def __init__(self, directory: Path | None):
        self.dir = directory
        self.code = hashlib.sha256(b"".join((HERE / f).read_bytes() for f in self.CODE)).hexdigest()

    def get(self, kind: str, parts: list, compute):
        key = hashlib.sha256(json.dumps([kind, self.code, transformers.__version__, torch.__version__, *parts])
                             .encode()).hexdigest()[:20]
        path = self.dir / f"{kind}-{key}.json" if self.dir else None
        if path is not None and path.exists():
            print(f"{kind}: cached ({path})", file=sys.stderr)
            return json.loads(path.read_text(encoding="utf-8"))
        t0 = time.time()
        value = compute()
        print(f"{kind}: {time.time() - t0:.0f} s", file=sys.stderr)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value, ensure_ascii=False) + "\n", encoding="utf-8")
        return value


def sc_max_new_tokens() -> int:
    import score
    return score.MAX_NEW_TOKENS


def sacrebleu_version() -> str:
    import sacrebleu
    return sacrebleu.__version__


def translation_section(bleu: dict, examples: int) -> list[str]:
    """The card's *Translation of held-out verses* section: the scores of every weights (score.py
    with keep_outputs) and `examples` example translations per direction."""
    L: list[str] = []
    w = L.append
    sh, f32 = bleu["int8"], bleu["float32"]
    dirs = list(DIRECTION_NAMES)
    n_verses = {d: sh[d]["verses"] for d in dirs}
    w("## Translation of held-out verses\n")
    w(f"{n_verses['en-es']} verses per direction from the held-out chapters (`tools/model/heldout/en-es.tsv`: King "
      "James source, Reina-Valera 1909 reference; `es-en.tsv` the other way round), which are in none of the "
      "training data (`tools/model/DATASET.md`). Scored by `tools/model/score.py`: the prompt is the prefix and the "
      f"verse, decoding greedy up to {sc_max_new_tokens()} new tokens (as `switchscope generate --greedy "
      f"--max-new-tokens {sc_max_new_tokens()}`), BLEU and chrF by sacrebleu {sacrebleu_version()} with its default "
      "13a tokenizer over the whole set. A *repetition loop* is an output in which some word 3-gram occurs three "
      "times or more.\n")
    w("| weights | " + " | ".join(f"{DIRECTION_NAMES[d]} BLEU | chrF" for d in dirs)
      + " | outputs in a repetition loop |\n|---|" + "---|---|" * len(dirs) + "---|")
    for name, r in bleu.items():
        delta = (lambda d: "") if name == "float32" else (lambda d: f" ({r[d]['bleu'] - f32[d]['bleu']:+.2f})")  # noqa: E731
        w(f"| {NAMES[name]} | " + " | ".join(f"{r[d]['bleu']:.2f}{delta(d)} | {r[d]['chrf']:.2f}" for d in dirs)
          + " | " + ", ".join(f"{r[d]['repetition_loops'] * 100:.1f} %" for d in dirs) + " |")
    w("\n(In brackets: the difference from the float32 checkpoint.)\n")
    short = [d for d in dirs if sh[d]["bleu"] < BLEU_GOAL]
    w(f"The goal of this generation was held-out BLEU ≥ {BLEU_GOAL:g} in both directions with the shipped weights: "
      + ("**met**." if not short else "**not met** (" + ", ".join(f"{DIRECTION_NAMES[d]} {sh[d]['bleu']:.2f}"
                                                                 for d in short) + ").") + "\n")
    w("Examples, spread evenly over the held-out file (output: the shipped weights, greedy; *same as f32*: the "
      "float32 checkpoint's output is the same text):\n")
    for d in dirs:
        pairs_d = tasks.heldout_pairs(HERE / "heldout" / f"{d}.tsv")[:n_verses[d]]
        w(f"**{DIRECTION_NAMES[d]}**\n")
        w("| line | source | reference | output | same as f32 |\n|---|---|---|---|---|")
        for i in spread(n_verses[d], examples):
            src, ref = pairs_d[i]
            out = sh[d]["outputs"][i]
            w(f"| {i + 1} | {md_escape(src)} | {md_escape(ref)} | {md_escape(out)} | "
              f"{'yes' if out == f32[d]['outputs'][i] else 'no'} |")
        w("")
    return L


def variants_section(R: dict, float32_params: int, int8_bytes: int, int4_dir: Path | None,
                     min_agreement: float) -> list[str]:
    """The card's section on the int8 (shipped) and int4 weights against float32."""
    L: list[str] = []
    w = L.append
    bleu, agreement = R["bleu"], R["agreement"]
    f32 = bleu["float32"]
    dirs = list(DIRECTION_NAMES)
    w("## int8 (shipped) and int4 weights against float32\n")
    w("The shipped experts are int8 (groups of 32 values along the input dimension, f16 scales) and every dense "
      "tensor f16, dequantized exactly like the runtime (`tools/model/make_reference.py`). *Same expert*: the "
      "share of routing decisions (every token of every sparse layer) on which the weights choose the float32 "
      f"checkpoint's expert, over the held-out corpus split (span-corrupted like in training; "
      f"{agreement['int8']['chunks']['decisions']:,} decisions) and over the held-out verses as translation "
      f"prompts in both directions with their references teacher-forced ({agreement['int8']['verses']['decisions']:,} "
      "decisions); `tools/model/variant_agreement.py` computes the same.\n")
    w("| weights | model files | same expert: held-out split | same expert: held-out verses | "
      + " | ".join(f"BLEU {DIRECTION_NAMES[d]} vs float32" for d in dirs) + " | held-out span cross-entropy |")
    w("|---|---|---|---|" + "---|" * len(dirs) + "---|")
    w(f"| float32 checkpoint | {fmt_bytes(float32_params * 4)} as f32 | 100 % | 100 % | " + " | ".join("—" for _ in dirs)
      + f" | {R['span_loss']['float32']['ce']:.4f} |")
    sizes = {"int8": int8_bytes}
    if int4_dir is not None:
        sizes["int4"] = sum(f["bytes"] for f in json.loads((int4_dir / "manifest.json").read_text())["files"])
    for name in agreement:
        a = agreement[name]
        w(f"| {NAMES[name]} | {fmt_bytes(sizes[name])} | {a['chunks']['agreement'] * 100:.2f} % | "
          f"{a['verses']['agreement'] * 100:.2f} % | "
          + " | ".join(f"{bleu[name][d]['bleu'] - f32[d]['bleu']:+.2f}" for d in dirs)
          + f" | {R['span_loss'][name]['ce']:.4f} |")
    w("")
    if "int4" in agreement:
        a4 = agreement["int4"]
        ok = min(a4["chunks"]["agreement"], a4["verses"]["agreement"]) >= min_agreement
        w(f"The int4 variant (`public/models/switchscope-mini-int4`, {sizes['int4'] / sizes['int8'] * 100:.0f} % of "
          f"the shipped size) is built only while both its agreements are ≥ {min_agreement * 100:g} %: "
          + ("they are, so it is built." if ok else "they are not, so it is left out.") + " Per layer:\n")
        w("| layer | int8: held-out split | int8: verses | int4: held-out split | int4: verses |\n|---|---|---|---|---|")
        for k in agreement["int8"]["chunks"]["per_layer"]:
            w(f"| {k.replace('.', ' block ')} | " + " | ".join(
                f"{agreement[n][s]['per_layer'][k] * 100:.2f} %" for n in ("int8", "int4") for s in ("chunks", "verses"))
              + " |")
        w("")
    return L
