"""The task mix of switchscope-mini's second generation: T5-style text prefixes over one model.

    translate English to Spanish: <KJV or WEB verse>   ->  the Reina-Valera 1909 verse
    translate Spanish to English: <RV1909 verse>       ->  the KJV verse
    modernize: <KJV verse>                              ->  the WEB verse
    <a corpus chunk with masked spans>                  ->  the spans (T5 span corruption)

Verse pairs come from WORK/corpus/verses.jsonl (written by fetch_corpus.py, aligned by reference);
the held-out chapters are in none of them. Examples are drawn so that span corruption is
`span_share` of them, and batched by length: a window of examples is sorted by length and cut
into batches of at most `batch_tokens` padded tokens (inputs plus targets), so that short verses
are not padded to the longest chunk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PREFIXES = {
    "en-es": "translate English to Spanish: ",
    "es-en": "translate Spanish to English: ",
    "modernize": "modernize: ",
}
TASKS = ["en-es", "es-en", "modernize", "span"]
MAX_INPUT = 128
MAX_TARGET = 128
MAX_RATIO = 3.0  # a pair whose token counts differ more than this is a misalignment (e.g. a glossary)
WINDOW_BATCHES = 64  # batches sorted by length together


def verse_pairs(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(task, source, target) for every training verse: KJV and WEB -> RV1909, RV1909 -> KJV,
    KJV -> WEB. Held-out chapters and verses missing on one side are left out."""
    out = []
    for r in rows:
        if r["heldout"]:
            continue
        kjv, web, rv = r["kjv"], r.get("web"), r.get("rv1909")
        if rv:
            out.append(("en-es", kjv, rv))
            out.append(("es-en", rv, kjv))
            if web:
                out.append(("en-es", web, rv))
        if web:
            out.append(("modernize", kjv, web))
    return out


def heldout_pairs(path: Path) -> list[tuple[str, str]]:
    """source TAB reference lines of tools/model/heldout/*.tsv."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        src, ref = line.split("\t")
        pairs.append((src, ref))
    return pairs


def encode_pairs(tok, triples: list[tuple[str, str, str]], eos_id: int) -> dict[str, np.ndarray]:
    """Tokenized pairs as flat arrays with offsets (prefix + source + </s>, target + </s>)."""
    srcs = tok.encode_batch([PREFIXES[t] + s for t, s, _ in triples], add_special_tokens=False)
    tgts = tok.encode_batch([y for _, _, y in triples], add_special_tokens=False)
    task, x_flat, x_off, y_flat, y_off = [], [], [0], [], [0]
    dropped = 0
    for (t, _s, _y), xs, ys in zip(triples, srcs, tgts):
        x, y = xs.ids + [eos_id], ys.ids + [eos_id]
        if len(x) > MAX_INPUT or len(y) > MAX_TARGET or max(len(x), len(y)) > MAX_RATIO * min(len(x), len(y)) + 8:
            dropped += 1
            continue
        task.append(TASKS.index(t))
        x_flat += x
        y_flat += y
        x_off.append(len(x_flat))
        y_off.append(len(y_flat))
    return {
        "task": np.array(task, dtype=np.int8),
        "x": np.array(x_flat, dtype=np.int32), "x_off": np.array(x_off, dtype=np.int64),
        "y": np.array(y_flat, dtype=np.int32), "y_off": np.array(y_off, dtype=np.int64),
        "dropped": np.array(dropped),
    }


def load_pairs(work: Path, tok, eos_id: int) -> dict[str, np.ndarray]:
    """The training pairs, tokenized once (cache WORK/pairs.npz, rebuilt when missing)."""
    cache = work / "pairs.npz"
    if cache.exists():
        z = np.load(cache)
        return {k: z[k] for k in z.files}
    rows = [json.loads(line) for line in open(work / "corpus" / "verses.jsonl", encoding="utf-8")]
    out = encode_pairs(tok, verse_pairs(rows), eos_id)
    np.savez(cache, **out)
    return out


def pair(data: dict, i: int) -> tuple[list[int], list[int]]:
    x = data["x"][data["x_off"][i]:data["x_off"][i + 1]]
    y = data["y"][data["y_off"][i]:data["y_off"][i + 1]]
    return x.tolist(), y.tolist()


class MixSampler:
    """An endless stream of length-bucketed batches of (input ids, target ids, task) examples.

    Each round draws every training pair once, in a random order, plus as many span-corruption
    chunks as make them `span_share` of the round's examples; a window of WINDOW_BATCHES batches'
    worth of examples is sorted by length, cut into batches of at most `batch_tokens` padded
    tokens, and those batches are yielded in random order. The whole state is one numpy generator
    plus a position, so that a checkpoint can resume the stream exactly (`state`/`from_state`).
    """

    def __init__(self, pairs: dict, chunks: np.ndarray, span_fn, span_share: float, batch_tokens: int,
                 rng: np.random.Generator):
        self.pairs, self.chunks, self.span_fn = pairs, chunks, span_fn
        self.span_share, self.batch_tokens, self.rng = span_share, batch_tokens, rng
        self.queue: list[list[tuple[list[int], list[int], int]]] = []

    def _round(self) -> list[tuple[str, int]]:
        n_pairs = len(self.pairs["task"])
        n_span = int(round(n_pairs * self.span_share / (1 - self.span_share))) if self.span_share < 1 else len(self.chunks)
        items = [("p", int(i)) for i in self.rng.permutation(n_pairs)] if self.span_share < 1 else []
        items += [("s", int(i)) for i in self.rng.choice(len(self.chunks), size=min(n_span, len(self.chunks)), replace=False)]
        order = self.rng.permutation(len(items))
        return [items[i] for i in order]

    def _example(self, kind: str, i: int) -> tuple[list[int], list[int], int]:
        if kind == "p":
            x, y = pair(self.pairs, i)
            return x, y, int(self.pairs["task"][i])
        x, y = self.span_fn([int(t) for t in self.chunks[i] if t >= 0], self.rng)
        return x[:MAX_INPUT], y, TASKS.index("span")

    def _fill(self) -> None:
        if not getattr(self, "items", None):
            self.items = self._round()
        window = []
        budget = WINDOW_BATCHES * self.batch_tokens
        used = 0
        while self.items and used < budget:
            ex = self._example(*self.items.pop())
            window.append(ex)
            used += len(ex[0]) + len(ex[1])
        window.sort(key=lambda e: (len(e[0]), len(e[1])))
        batches, cur, mx, my = [], [], 0, 0
        for ex in window:
            nx, ny = max(mx, len(ex[0])), max(my, len(ex[1]))
            if cur and (len(cur) + 1) * (nx + ny) > self.batch_tokens:
                batches.append(cur)
                cur, nx, ny = [], len(ex[0]), len(ex[1])
            cur.append(ex)
            mx, my = nx, ny
        if cur:
            batches.append(cur)
        self.queue = [batches[i] for i in self.rng.permutation(len(batches))]

    def next(self) -> list[tuple[list[int], list[int], int]]:
        if not self.queue:
            self._fill()
        return self.queue.pop()

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "items": getattr(self, "items", []), "queue": self.queue}

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.items = [tuple(it) for it in state["items"]]
        self.queue = state["queue"]


def collate(batch: list[tuple[list[int], list[int], int]], pad_id: int):
    import torch

    b = len(batch)
    lx = max(len(x) for x, _, _ in batch)
    ly = max(len(y) for _, y, _ in batch)
    inp = np.full((b, lx), pad_id, dtype=np.int64)
    lab = np.full((b, ly), -100, dtype=np.int64)
    for i, (x, y, _t) in enumerate(batch):
        inp[i, :len(x)] = x
        lab[i, :len(y)] = y
    inp_t = torch.from_numpy(inp)
    return {"input_ids": inp_t, "attention_mask": (inp_t != pad_id).long(), "labels": torch.from_numpy(lab)}
