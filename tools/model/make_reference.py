#!/usr/bin/env python3
"""Reference outputs of switchscope-mini for the Rust tests: tests/fixtures/switchscope-mini/reference.json.

    python tools/model/make_reference.py [--hf tools/model/work/hf] [--model public/models/switchscope-mini]
                                         [--cli PATH_TO_switchscope]

For a few held-out examples of the model's two kinds of prompt: fill-ins (text with <extra_id_0>,
taken from the evaluation split) and translations (held-out verses of tools/model/heldout/ with
the task prefix, e.g. "translate English to Spanish: <KJV verse>"):

  f32      greedy ids of the ORIGINAL float32 PyTorch checkpoint (the HF directory);
  shipped  the same model with the SHIPPED weights: every dense tensor read back from the model
           directory's dense.safetensors (f16 -> f32) and every expert's wi/wo dequantized from its
           int8 shard exactly like crates/switchscope-core/src/formats/quant.rs (q as f32 × scale as
           f32, padding columns dropped). Records its greedy ids, and the routing of a teacher-forced
           pass (encoder over input_ids; decoder over decoder_input_ids = the shipped greedy ids,
           starting with decoder_start_token_id 0, every generated id included), with the config's
           expert_capacity (nothing is dropped at these lengths; a dropped token would be -1).

The runtime dequantizes the shards the same way, so its routing must equal `shipped.routing`
and its greedy output on the int8 model should equal `f32.output_ids` (and `shipped.output_ids`).
Every example is decoded for the same MAX_NEW_TOKENS (the fixture's `generate.max_new_tokens`,
which the tests use for all of them), so a translation may be the beginning of the answer. Each
example's `task` is "fill-in", "en-es" or "es-en". At least one fill-in's answer must go on past
<extra_id_1>, the sentinel that ends its one span (the web tests of the span stop use it).
With --cli the script runs `switchscope generate` and `switchscope forward` on the model directory
and reports whether they agree (printed, not stored).
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import copy  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import SwitchTransformersForConditionalGeneration  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tasks  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MAX_NEW_TOKENS = 16

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

# (source category, number of words kept before the masked span, words masked); the text is the
# beginning of the first evaluation document of that category (documents sorted by id) whose
# first words form a clean snippet. Chosen for sources with distinct styles.
EXAMPLES = [
    ("prose-en", 14, 1),
    ("bible-en", 12, 1),
    ("bible-es", 12, 1),
    ("code-python", 10, 1),
    ("numbers", 10, 1),
    ("handbook-fr", 12, 1),
]
SNIPPET_WORDS = 22
# A snippet whose greedy output differs between the f32 and the shipped weights (a near tie that
# int8 rounding flips) is skipped for the next held-out document of the same source, at most this
# many tries; the number skipped is recorded.
CANDIDATES = 5
# Translation examples: per direction, this many of the first held-out verses whose prompt
# (prefix, verse, </s>) has at most TRANSLATION_MAX_INPUT tokens, so that no expert's capacity
# (expert_capacity tokens per sequence) can drop a token, and whose reference translation (with
# </s>) fits in MAX_NEW_TOKENS, so that a good answer is not cut short; a verse whose greedy
# output differs between the f32 and the shipped weights is skipped like a fill-in candidate.
TRANSLATIONS = {"en-es": 2, "es-en": 2}
TRANSLATION_MAX_INPUT = 32
# Held-out fill-in candidates searched for one whose answer goes on past its span, when none of
# the chosen ones does.
PAST_SPAN_CANDIDATES = 25


def load_eval(work: Path) -> dict[str, list[dict]]:
    by_src: dict[str, list[dict]] = {}
    for line in open(work / "corpus" / "eval.jsonl", encoding="utf-8"):
        d = json.loads(line)
        by_src.setdefault(d["source"], []).append(d)
    for v in by_src.values():
        v.sort(key=lambda d: d["id"])
    return by_src


def masked_snippet(text: str, keep: int, n_mask: int) -> tuple[str, str]:
    """First SNIPPET_WORDS space-separated words (newlines kept for code), span keep..keep+n masked."""
    words = text.split(" ")
    words = [w for w in words[: SNIPPET_WORDS + 8]][:SNIPPET_WORDS]
    masked = " ".join(words[keep:keep + n_mask])
    out = " ".join(words[:keep]) + " <extra_id_0> " + " ".join(words[keep + n_mask:])
    return out.strip(), masked


def fill_in_candidates(work: Path, per_source: int = CANDIDATES) -> list[list[dict]]:
    """Per entry of EXAMPLES: the first `per_source` usable held-out snippets (documents sorted by id)."""
    by_src = load_eval(work)
    out = []
    for src, keep, n_mask in EXAMPLES:
        cands = []
        for d in by_src[src]:
            words = d["text"].split(" ")
            if len(words) < SNIPPET_WORDS + 2 or "<" in d["text"][:400]:
                continue
            text, masked = masked_snippet(d["text"], keep, n_mask)
            if not masked.strip() or "\n" in masked:
                continue
            cands.append({"source": src, "doc_id": d["id"], "text": text, "masked": masked})
            if len(cands) == per_source:
                break
        out.append(cands)
    return out


def translation_candidates(tok, direction: str, max_input: int = TRANSLATION_MAX_INPUT,
                           max_target: int = MAX_NEW_TOKENS) -> list[dict]:
    """The held-out verses of `direction` whose prompt has at most `max_input` tokens and whose
    reference at most `max_target` (both with </s>), in file order."""
    out = []
    path = HERE / "heldout" / f"{direction}.tsv"
    for line_no, (src, ref) in enumerate(tasks.heldout_pairs(path), start=1):
        text = tasks.PREFIXES[direction] + src
        if len(tok.encode(text).ids) <= max_input and len(tok.encode(ref).ids) <= max_target:
            out.append({"source": direction, "task": direction, "doc_id": f"tools/model/heldout/{path.name}:{line_no}",
                        "text": text, "reference": ref})
    return out


def goes_past_span(output_ids: list[int], vocab_size: int) -> bool:
    """Whether a one-span answer goes on past <extra_id_1> (the sentinel that ends it) by at least
    two more tokens, as tests/e2e/params.test.mjs looks for."""
    return (vocab_size - 2) in output_ids[:-2]


def fill_in_examples(work: Path) -> list[dict]:
    """The first candidate of every source (what the model card shows when no reference exists)."""
    return [c[0] for c in fill_in_candidates(work, 1) if c]


def shipped_model(model, model_dir: Path):
    """A copy of `model` carrying exactly the weights the runtime uses for `model_dir`."""
    shipped = copy.deepcopy(model)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    q = manifest["quantization"]
    assert q["experts"] in ("int8", "int4"), q
    group = int(q["group_size"])
    sd = shipped.state_dict()
    new = {}
    dense = load_file(str(model_dir / manifest["dense"]))
    for name, arr in dense.items():
        assert name in sd, name
        assert tuple(arr.shape) == tuple(sd[name].shape), (name, arr.shape)
        new[name] = torch.from_numpy(arr.astype(np.float32))
    for e in manifest["experts"]:
        t = load_file(str(model_dir / e["file"]))
        for w in ("wi", "wo"):
            qw = t[f"{w}.qweight"]
            if q["experts"] == "int4":  # eight 4-bit values per little-endian u32, value j in bits 4j..4j+4, stored q + 8
                assert qw.dtype == np.uint32, qw.dtype
                shifts = np.arange(8, dtype=np.uint32) * 4
                qw = (((qw[:, :, None] >> shifts) & 0xF).astype(np.int16) - 8).reshape(qw.shape[0], -1)
            else:
                assert qw.dtype == np.int8, qw.dtype
            sc = t[f"{w}.scales"].astype(np.float32)
            name = f"{e['stack']}.block.{e['block']}.layer.{1 if e['stack'] == 'encoder' else 2}.mlp.experts.expert_{e['expert']}.{w}.weight"
            rows, cols = sd[name].shape
            assert qw.shape[0] == rows and qw.shape[1] % group == 0 and qw.shape[1] >= cols, (name, qw.shape)
            deq = qw.astype(np.float32) * np.repeat(sc, group, axis=1)  # one f32 product per value
            new[name] = torch.from_numpy(np.ascontiguousarray(deq[:, :cols]))
    missing = [k for k in sd if k not in new and not k.endswith("embed_tokens.weight") and k != "lm_head.weight"]
    assert not missing, missing[:5]
    shipped.load_state_dict(new, strict=False)
    shipped.tie_weights()
    assert torch.equal(shipped.lm_head.weight, new["shared.weight"])
    return shipped.eval()


class Routers:
    def __init__(self, model):
        self.layers = []
        self.calls: list[list] = []
        self.handles = []
        for stack_name, stack in (("encoder", model.encoder), ("decoder", model.decoder)):
            for i, blk in enumerate(stack.block):
                mlp = blk.layer[-1].mlp
                if hasattr(mlp, "router"):
                    li = len(self.layers)
                    self.layers.append((stack_name, i))
                    self.calls.append([])
                    self.handles.append(mlp.router.register_forward_hook(self._hook(li)))

    def _hook(self, li):
        def hook(module, args, output):
            dispatch, _, logits = output
            self.calls[li].append((dispatch.detach().clone(), logits.detach().clone()))
        return hook

    def reset(self):
        self.calls = [[] for _ in self.layers]

    def summary(self) -> list[dict]:
        out = []
        for (stack, block), calls in zip(self.layers, self.calls):
            assert len(calls) == 1, (stack, block, len(calls))
            dispatch, logits = calls[0]
            probs = torch.softmax(logits[0], dim=-1, dtype=torch.float32)
            kept = dispatch[0].sum(-1) > 0
            choice = torch.argmax(probs, dim=-1)
            expert = torch.where(kept, choice, torch.full_like(choice, -1))
            top2 = torch.topk(probs, 2, dim=-1).values
            out.append({
                "stack": stack,
                "block": block,
                "expert": [int(x) for x in expert],
                "top_prob": [float(np.float32(x)) for x in top2[:, 0]],
                "gap": [float(np.float32(x)) for x in (top2[:, 0] - top2[:, 1])],
            })
        return out


@torch.no_grad()
def greedy(model, ids: list[int]) -> tuple[list[int], float]:
    x = torch.tensor([ids])
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, num_beams=1,
                         max_new_tokens=MAX_NEW_TOKENS, use_cache=True, output_scores=True,
                         return_dict_in_generate=True)
    margins = [float((lambda t: t[0] - t[1])(torch.topk(s[0].float(), 2).values)) for s in out.scores]
    return [int(t) for t in out.sequences[0]], min(margins)


@torch.no_grad()
def teacher_forced_routing(model, rec: Routers, ids: list[int], dec: list[int]) -> list[dict]:
    rec.reset()
    model(input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([dec]), use_cache=False)
    return rec.summary()


def run_cli(cli: str, model_dir: Path, ex: dict) -> dict:
    ids = ",".join(str(i) for i in ex["input_ids"])
    cmd = shlex.split(cli)
    g = json.loads(subprocess.run([*cmd, "generate", "--model", str(model_dir), "--input-ids", ids, "--max-new-tokens",
                                   str(MAX_NEW_TOKENS), "--greedy", "--json"], check=True, capture_output=True,
                                  text=True).stdout)
    dec = ",".join(str(i) for i in ex["shipped"]["decoder_input_ids"])
    f = json.loads(subprocess.run([*cmd, "forward", "--model", str(model_dir), "--input-ids", ids, "--decoder-input-ids",
                                   dec, "--json"], check=True, capture_output=True, text=True).stdout)
    routing_equal = [r["expert"] for r in f["routing"]] == [r["expert"] for r in ex["shipped"]["routing"]]
    return {"cli_output_ids": g["output_ids"], "greedy_equal_f32": g["output_ids"] == ex["f32"]["output_ids"],
            "greedy_equal_shipped": g["output_ids"] == ex["shipped"]["output_ids"], "routing_equal": routing_equal}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--hf", type=Path, default=None, help="default WORK/hf")
    ap.add_argument("--model", type=Path, default=ROOT / "public" / "models" / "switchscope-mini")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "switchscope-mini" / "reference.json")
    ap.add_argument("--cli", default=None, help="switchscope command (e.g. a binary path, or 'cargo run --release -p switchscope-cli --'): "
                         "also compare the runtime's outputs")
    args = ap.parse_args()
    hf = args.hf or args.work / "hf"

    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    model = SwitchTransformersForConditionalGeneration.from_pretrained(hf, dtype=torch.float32).eval()
    shipped = shipped_model(model, args.model)
    cfg = model.config
    rec_f32, rec_shipped = Routers(model), Routers(shipped)

    examples = []
    agree = total = 0
    skipped = []

    def pick(cands: list[dict]) -> tuple[dict, list[int], list[int], list[int], float, float]:
        """The first candidate whose greedy ids are the same with the f32 and the shipped weights
        (the last one when none is); the others tried are recorded in `skipped`."""
        for ci, ex in enumerate(cands):
            ids = tok.encode(ex["text"]).ids
            assert ids[-1] == cfg.eos_token_id, (ex, ids)
            out_f32, m_f32 = greedy(model, ids)
            out_sh, m_sh = greedy(shipped, ids)
            if out_f32 == out_sh or ci == len(cands) - 1:
                return ex, ids, out_f32, out_sh, m_f32, m_sh
            skipped.append({"source": ex["source"], "doc_id": ex["doc_id"], "text": ex["text"]})
        raise ValueError("no candidates")

    def record(ex: dict, ids: list[int], out_f32: list[int], out_sh: list[int], m_f32: float, m_sh: float) -> None:
        nonlocal agree, total
        routing = teacher_forced_routing(shipped, rec_shipped, ids, out_sh)
        routing_f32 = teacher_forced_routing(model, rec_f32, ids, out_sh)
        for a, b in zip(routing, routing_f32):
            agree += sum(int(x == y) for x, y in zip(a["expert"], b["expert"]))
            total += len(a["expert"])
        examples.append({
            "source": ex["source"],
            "task": ex.get("task", "fill-in"),
            "doc_id": ex["doc_id"],
            "text": ex["text"],
            "masked": ex.get("masked"),
            **({"reference": ex["reference"]} if "reference" in ex else {}),
            "input_ids": ids,
            "f32": {
                "output_ids": out_f32,
                "output_text": tok.decode(out_f32, skip_special_tokens=False),
                "min_logit_margin": round(m_f32, 6),
            },
            "shipped": {
                "output_ids": out_sh,
                "output_text": tok.decode(out_sh, skip_special_tokens=False),
                "min_logit_margin": round(m_sh, 6),
                "decoder_input_ids": out_sh,
                "routing": routing,
                "dropped": sum(r["expert"].count(-1) for r in routing),
                "min_gap": min(min(r["gap"]) for r in routing),
            },
        })

    for cands in fill_in_candidates(args.work):
        ex, ids, out_f32, out_sh, m_f32, m_sh = pick(cands)
        assert cfg.vocab_size - 1 in ids, (ex, ids)
        record(ex, ids, out_f32, out_sh, m_f32, m_sh)
    if not any(goes_past_span(e["shipped"]["output_ids"], cfg.vocab_size) for e in examples):
        # one more held-out fill-in whose answer goes on past its span (same f32 and shipped ids)
        chosen = {e["doc_id"] for e in examples}
        found = None
        for ex in (c for cands in fill_in_candidates(args.work, PAST_SPAN_CANDIDATES) for c in cands):
            if ex["doc_id"] in chosen:
                continue
            ids = tok.encode(ex["text"]).ids
            out_f32, m_f32 = greedy(model, ids)
            out_sh, m_sh = greedy(shipped, ids)
            if out_f32 == out_sh and goes_past_span(out_sh, cfg.vocab_size):
                found = (ex, ids, out_f32, out_sh, m_f32, m_sh)
                break
        if found is None:
            print(f"error: no held-out fill-in (first {PAST_SPAN_CANDIDATES} usable documents of each source) whose "
                  "greedy answer goes on past <extra_id_1>; tests/e2e/params.test.mjs needs one", file=sys.stderr)
            return 1
        record(*found)
    for direction, count in TRANSLATIONS.items():
        cands = translation_candidates(tok, direction)
        if len(cands) < count:
            print(f"error: only {len(cands)} held-out {direction} verses have a prompt of at most "
                  f"{TRANSLATION_MAX_INPUT} tokens and a reference of at most {MAX_NEW_TOKENS}; {count} are needed",
                  file=sys.stderr)
            return 1
        for i in range(count):  # candidates i, i + count, i + 2 count, ... so that the examples differ
            record(*pick(cands[i::count][:CANDIDATES]))

    manifest_bytes = (args.model / "manifest.json").read_bytes()
    ref = {
        "fixture": "switchscope-mini",
        "description": "held-out examples, fill-ins (task fill-in) and verse translations with their prefix (tasks "
                       "en-es, es-en; decoded for the same max_new_tokens, so an answer may be cut short): greedy ids "
                       "of the f32 checkpoint, and greedy ids + teacher-forced routing of the shipped weights (f16 "
                       "dense, dequantized int8 experts)",
        "model_dir": "public/models/switchscope-mini",
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "generator": {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
                      "torch": torch.__version__.split("+")[0], "dtype": "float32"},
        "quantization": json.loads(manifest_bytes)["quantization"],
        "expert_capacity": cfg.expert_capacity,
        "decoder_start_token_id": 0,
        "generate": {"do_sample": False, "num_beams": 1, "max_new_tokens": MAX_NEW_TOKENS, "use_cache": True},
        "sparse_layers": [{"stack": s, "block": b} for s, b in rec_shipped.layers],
        "routing_agreement_f32_vs_shipped": round(agree / total, 6),
        "skipped_candidates": skipped,
        "examples": examples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    summary = {"routing_agreement_f32_vs_shipped": ref["routing_agreement_f32_vs_shipped"], "examples": []}
    for ex in examples:
        s = {"source": ex["source"], "task": ex["task"], "text": ex["text"], "masked": ex["masked"],
             "f32": ex["f32"]["output_text"],
             "shipped": ex["shipped"]["output_text"], "f32==shipped": ex["f32"]["output_ids"] == ex["shipped"]["output_ids"],
             "min_gap": ex["shipped"]["min_gap"], "min_margin": min(ex["f32"]["min_logit_margin"], ex["shipped"]["min_logit_margin"])}
        if args.cli:
            s.update(run_cli(args.cli, args.model, ex))
            s["cli_output_ids"] = " ".join(map(str, s["cli_output_ids"]))
        summary["examples"].append(s)
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    print(f"{hashlib.sha256(args.out.read_bytes()).hexdigest()[:16]}  {args.out.stat().st_size}  {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
