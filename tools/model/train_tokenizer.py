#!/usr/bin/env python3
"""Train the T5-style Unigram tokenizer of switchscope-mini.

    python tools/model/train_tokenizer.py [--work tools/model/work]

Reads WORK/corpus/train.jsonl (fetch_corpus.py), writes WORK/tokenizer.json:

  * Unigram model, NFKC normalizer, Metaspace("▁", split) pre-tokenizer and decoder,
    post-processor "$A </s>" (like T5's tokenizer.json);
  * the sentinels are special added tokens with lstrip, and Metaspace prepends "▁" only to the
    first section of the text ("first"), so that "fox <extra_id_0> over." encodes as
    ... "x" <extra_id_0> "▁over" "." exactly like the span-corruption inputs seen in training
    (T5's "always" would add a stray "▁" before and after every sentinel);
  * ids 0, 1, 2 = <pad>, </s>, <unk>;
  * the last 100 ids are the sentinels, highest first like T5: <extra_id_0> = VOCAB_SIZE - 1,
    <extra_id_99> = VOCAB_SIZE - 100; they are in the model vocab and are special added tokens;
  * exactly VOCAB_SIZE entries, which is the model's vocab_size.

The trainer sees a fixed sample of the training split with at most SAMPLE_BYTES per source
category, so that no source dominates the vocabulary. Note: tokenizers' UnigramTrainer iterates
Rust hash maps, so a retrain gives the same kind of tokenizer but not necessarily bit-identical
scores; the shipped tokenizer.json is the reference.

Runs of spaces are collapsed to one space in the trainer's sample only: otherwise the
indentation of the Python sources makes a lone "▁" so probable that ordinary words get split
after it ("▁", "b", "row", "n"). The model itself still sees the indentation (as "▁" pieces).
"""

from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

HERE = Path(__file__).resolve().parent
VOCAB_SIZE = 6000
NUM_SENTINELS = 100
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
SAMPLE_BYTES = 2_000_000
MAX_PIECE_LENGTH = 16


def sentinel(i: int) -> str:
    return f"<extra_id_{i}>"


def pipeline() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", EOS_ID)]
    )
    return tok


def sample(corpus: Path) -> list[str]:
    """Training documents ordered by a hash of their id; the first SAMPLE_BYTES per category."""
    docs = []
    for line in open(corpus, encoding="utf-8"):
        d = json.loads(line)
        docs.append((hashlib.sha256(d["id"].encode()).hexdigest(), d["source"], d["text"]))
    docs.sort()
    used: dict[str, int] = {}
    out = []
    for _, src, text in docs:
        if used.get(src, 0) >= SAMPLE_BYTES:
            continue
        used[src] = used.get(src, 0) + len(text.encode("utf-8"))
        out.append(re.sub(" {2,}", " ", text))
    print("tokenizer sample bytes:", json.dumps(used), file=sys.stderr)
    return out


def train(texts: list[str]) -> dict:
    tok = pipeline()
    trainer = trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE - NUM_SENTINELS,
        special_tokens=SPECIAL_TOKENS,
        unk_token="<unk>",
        max_piece_length=MAX_PIECE_LENGTH,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return json.loads(tok.to_str())


def finish(spec: dict) -> Tokenizer:
    """Trainer output -> final tokenizer: pipeline settings, sentinel ids, added tokens."""
    spec = json.loads(json.dumps(spec))
    base = json.loads(pipeline().to_str())
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        spec[key] = base[key]
    vocab = spec["model"]["vocab"]
    assert [p for p, _ in vocab[:3]] == SPECIAL_TOKENS, vocab[:3]
    n = len(vocab)
    assert n <= VOCAB_SIZE - NUM_SENTINELS, n
    if n < VOCAB_SIZE - NUM_SENTINELS:
        sys.exit(f"trainer produced only {n} pieces; want {VOCAB_SIZE - NUM_SENTINELS}")
    # sentinels: <extra_id_99> first ... <extra_id_0> last (highest id), like T5
    for i in reversed(range(NUM_SENTINELS)):
        vocab.append([sentinel(i), 0.0])
    spec["model"]["unk_id"] = UNK_ID
    added = spec.get("added_tokens") or []
    for i in reversed(range(NUM_SENTINELS)):
        added.append({
            "id": VOCAB_SIZE - 1 - i, "content": sentinel(i), "single_word": False, "lstrip": True,
            "rstrip": False, "normalized": False, "special": True,  # lstrip: see above
        })
    spec["added_tokens"] = added
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def check(tok: Tokenizer) -> None:
    vocab = tok.get_vocab(with_added_tokens=True)
    assert len(vocab) == VOCAB_SIZE and sorted(vocab.values()) == list(range(VOCAB_SIZE)), len(vocab)
    for name, want in zip(SPECIAL_TOKENS, (PAD_ID, EOS_ID, UNK_ID)):
        assert tok.token_to_id(name) == want, name
    for i in range(NUM_SENTINELS):
        assert tok.token_to_id(sentinel(i)) == VOCAB_SIZE - 1 - i, i
    for text in ["The quick brown fox <extra_id_0> over the lazy dog.", "En el principio <extra_id_0> Dios.",
                 "def f(x):\n    return <extra_id_0> + 1", "17 + 25 = <extra_id_0>."]:
        enc = tok.encode(text)
        assert enc.ids[-1] == EOS_ID, enc.ids
        assert VOCAB_SIZE - 1 in enc.ids, (text, enc.tokens)
        print(f"{text!r} -> {enc.tokens}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--reuse-trained", action="store_true",
                    help="skip the Unigram trainer and finish WORK/unigram_trained.json again")
    args = ap.parse_args()
    trained = args.work / "unigram_trained.json"
    if not args.reuse_trained:
        trained.write_text(json.dumps(train(sample(args.work / "corpus" / "train.jsonl")), ensure_ascii=False))
    tok = finish(json.loads(trained.read_text(encoding="utf-8")))
    check(tok)
    out = args.work / "tokenizer.json"
    tok.save(str(out))
    tok = Tokenizer.from_file(str(out))
    check(tok)
    h = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"{h[:16]}  {out.stat().st_size}  {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
