"""Span corruption over held-out text, for the model card (eval_and_card.py) and for
variant_agreement.py:

  * held_out: the span-corruption losses over the held-out corpus split, with a RouteLog that
    records the expert of every position of every sparse layer (card_experts.py reads it);
  * frequency_baseline: the held-out cross-entropy of a predictor that knows only token frequencies;
  * fill_ins and exact_match: the greedy fill-ins of held-out and written examples, and the
    exact-word score over many held-out one-word masks;
  * fill_in_section: the card's *Fill-in (span corruption)* section.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

import make_reference as mr
import train as tr
from card_common import md_escape

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


def fill_ins(model, shipped, tok: Tokenizer, work: Path, reference: Path, model_dir: Path,
             vocab_size: int) -> list[dict]:
    """Greedy fill-ins of the float32 checkpoint `model` and the `shipped` weights: the held-out
    examples of make_reference.py's fixture `reference` when it belongs to the converted model in
    `model_dir` (else those that make_reference.py picks from WORK), then WRITTEN_EXAMPLES."""
    fills = []
    held = mr.fill_in_examples(work)
    if reference.exists():
        ref = json.loads(reference.read_text(encoding="utf-8"))
        if ref["manifest_sha256"] == hashlib.sha256((model_dir / "manifest.json").read_bytes()).hexdigest():
            held = [e for e in ref["examples"] if e.get("task", "fill-in") == "fill-in"]
    for kind, items in (("held-out", [(e["source"], e["text"], e["masked"]) for e in held]),
                        ("written", [(s, t, None) for s, t in WRITTEN_EXAMPLES])):
        for src, text, masked in items:
            ids = tok.encode(text).ids
            out_f32, _ = mr.greedy(model, ids)
            out_sh, _ = mr.greedy(shipped, ids)
            full = tok.decode(out_sh, skip_special_tokens=False).replace("<pad>", "").replace("</s>", "").strip()
            cut = tok.decode(end_of_answer(out_sh, ids, vocab_size), skip_special_tokens=False)
            cut = cut.replace("<pad>", "").replace("</s>", "").strip()
            fills.append({"kind": kind, "source": src, "text": text, "masked": masked, "full": full, "cut": cut,
                          "filled": filled_in(text, span_answer(cut)),
                          "f32": span_answer(tok.decode(out_f32, skip_special_tokens=False)),
                          "shipped": span_answer(tok.decode(out_sh, skip_special_tokens=False)),
                          "same": out_f32 == out_sh})
    return fills


def exact_match(shipped, tok: Tokenizer, work: Path, docs: int, vocab_size: int) -> dict:
    """How often the `shipped` weights find the exact masked word of a held-out one-word mask (the
    first `docs` usable documents per source), and how often the word's first token is among the 5
    most probable first tokens."""
    scored = [c for cands in mr.fill_in_candidates(work, docs) for c in cands]
    exact = top5 = 0
    for c in scored:
        ids = tok.encode(c["text"]).ids
        out, _ = mr.greedy(shipped, ids)
        answer = span_answer(tok.decode(out, skip_special_tokens=False))
        exact += answer.strip(" ,.;:") == c["masked"].strip(" ,.;:")
        word = [t for t in tok.encode(c["masked"].strip(" ,.;:")).ids if t != tr.EOS_ID]
        top5 += bool(word) and first_token_rank(shipped, ids, word[0], vocab_size) < 5
    return {"exact": exact, "top5_first_token": top5, "masks": len(scored)}


def fill_in_section(R: dict, exact_docs: int) -> list[str]:
    """The card's *Fill-in* section, from the results of eval_and_card.main."""
    L: list[str] = []
    w = L.append
    w("## Fill-in (span corruption)\n")
    n_chunks = R["span_loss_chunks"]
    w(f"Held-out span-corruption loss ({n_chunks} held-out chunks, fixed noise): cross-entropy "
      f"**{R['span_loss']['float32']['ce']:.3f}** (perplexity {np.exp(R['span_loss']['float32']['ce']):.1f}) for the "
      f"float32 checkpoint, **{R['span_loss']['int8']['ce']:.3f}** for the shipped weights; a predictor that knows "
      "every sentinel and the end of sequence and guesses each masked token by its frequency in the training "
      f"split gets {R['frequency_baseline']:.3f}. The shipped weights find the exact masked word in "
      f"**{R['exact_match']['exact']} of {R['exact_match']['masks']}** held-out one-word masks (the first "
      f"{exact_docs} usable documents of each source below, masked like the examples; the word's first token "
      f"is among the 5 most probable first tokens in {R['exact_match']['top5_first_token']} of them).\n")
    w(f"Greedy decoding (at most {mr.MAX_NEW_TOKENS} new tokens) of the shipped weights, shown as the app shows it: "
      "the prompt with the answer in [brackets], decoding stopped once every masked span has its answer (at "
      "`<extra_id_1>` for these one-span prompts); *output* is that answer as decoded, without `<pad>` and `</s>`, "
      "and *beyond* what the model would have gone on with without the stop (spaces inside code are shown as `·`). "
      "*Held-out* inputs are the beginnings of held-out documents with one word masked (the masked word is given); "
      "*written* inputs were written for this card. *Same as f32*: the float32 checkpoint gives the same ids.\n")
    w("| kind | source | filled in | masked | output | beyond | same as f32 |\n|---|---|---|---|---|---|---|")
    for f in R["fills"]:
        code = lambda s: "`" + md_escape(s).replace("  ", "··").replace("`", "ˋ") + "`" if s else ""  # noqa: E731
        beyond = f["full"][len(f["cut"]):].strip() if f["full"].startswith(f["cut"]) else f["full"]
        w(f"| {f['kind']} | {f['source']} | {md_escape(f['filled'])} | {md_escape(f['masked'] or '')} | "
          f"{code(f['cut'])} | {code(beyond)} | {'yes' if f['same'] else 'no (f32: ' + md_escape(f['f32']) + ')'} |")
    w("")
    return L
