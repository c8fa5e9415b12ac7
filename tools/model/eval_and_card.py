#!/usr/bin/env python3
"""Evaluate switchscope-mini (second generation: translation, modernization and span corruption)
and write its model card with plots.

    python tools/model/eval_and_card.py [--work tools/model/work] [--hf WORK/hf]
        [--model public/models/switchscope-mini] [--int4 DIR | --no-int4] [--limit N] [--no-cache]

Reads the trained checkpoint (HF: weights, train_log.csv, train_info.json, as train.py writes them
when a run finishes), the corpus (WORK/corpus, WORK/tokens.npz, WORK/pairs.npz), the converted model
directory MODEL (int8 experts: the shipped weights) and, unless --no-int4, the int4 variant converted
from the same checkpoint (default public/models/switchscope-mini-int4); computes

  * held-out translation scores (score.py: BLEU and chrF with sacrebleu's default 13a tokenizer,
    greedy, 64 new tokens, the app's prompt format) of the float32 checkpoint, the shipped weights
    and the int4 variant on tools/model/heldout/{en-es,es-en}.tsv, with example translations and
    the share of outputs caught in a repetition loop;
  * routing agreement of the int8 and int4 weights with float32, over the held-out corpus split
    (span-corrupted) and over the held-out verses (variant_agreement.py);
  * the routing by language of the shipped weights (routing_story.py);
  * the held-out span-corruption loss, fill-in examples and the exact-match score over held-out
    one-word masks;
  * for every sparse layer: each expert's share of the tokens, its most frequent and most specific
    tokens, and its tokens' shares by source category, over the held-out split;

and writes MODEL/README.md with MODEL/plots/{loss,experts_sources,experts_lift,routing_by_language,
switch-scaling}.png (the last copied from tools/model/runs/gen2-switch/), plus WORK/expert_stats.json
and WORK/card_results.json (every number of the card).

The translation scores and the routing story are cached in WORK/card-cache/, keyed by the weights,
the held-out files and the code that computes them (--no-cache recomputes). --limit,
--max-eval-chunks and --exact-docs make quick runs over subsets; the card then says so at the top.

This script runs the evaluation and assembles the card; its parts are modules of this directory,
which never import this script:

  * card_common.py: paths, the direction names and the Markdown helpers they all share;
  * card_translation.py: the results cache, the translation scores with example translations, and
    the int8 and int4 weights against float32;
  * card_span.py: the held-out span-corruption pass (losses and routing record), the frequency
    baseline, the fill-ins and the exact-match score;
  * card_experts.py: the experts' statistics by source with their plots, and the routing by language;
  * card_training.py: the training data, the training record with its loss plot, and the Switch
    experiment.
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import SwitchTransformersForConditionalGeneration  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_reference as mr  # noqa: E402
import tasks  # noqa: E402
import train as tr  # noqa: E402
from card_common import DIRECTION_NAMES, HERE, ROOT, fmt_bytes  # noqa: E402
from card_experts import (expert_stats, experts_section, layer_tvs, plot_lift, plot_sources,  # noqa: E402
                          routing_section, tv_words)
from card_span import (RouteLog, exact_match, fill_in_section, fill_ins, frequency_baseline,  # noqa: E402
                       held_out)
from card_training import (data_section, plot_loss, read_log, switch_experiment, switch_section,  # noqa: E402
                           training_section)
from card_translation import Cache, fingerprint, translation_section, variants_section  # noqa: E402

PLOTS = ["loss.png", "experts_sources.png", "experts_lift.png", "routing_by_language.png", "switch-scaling.png"]
transformers.logging.set_verbosity_error()


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


def same_checkpoint(a: Path, b: Path) -> bool:
    """Whether two converted directories come from one checkpoint: their f16 dense weights, which
    every expert quantization shares, are the same bytes."""
    def dense_sha(d: Path) -> str:
        m = json.loads((d / "manifest.json").read_text())
        return next(f["sha256"] for f in m["files"] if f["name"] == m["dense"])
    return dense_sha(a) == dense_sha(b)


def mr_layers(model) -> list[tuple[str, int]]:
    """The sparse layers (stack, block) of a model."""
    return [(s, i) for s, stack in (("encoder", model.encoder), ("decoder", model.decoder))
            for i, blk in enumerate(stack.block) if hasattr(blk.layer[-1].mlp, "router")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--hf", type=Path, default=None,
                    help="the finished training run (config.json, model.safetensors, train_info.json, train_log.csv); "
                         "default WORK/hf")
    ap.add_argument("--model", type=Path, default=ROOT / "public" / "models" / "switchscope-mini",
                    help="the converted model (int8 experts) whose README.md and plots/ are written")
    ap.add_argument("--int4", type=Path, default=None,
                    help="the int4 variant converted from the same checkpoint (default "
                         "public/models/switchscope-mini-int4)")
    ap.add_argument("--no-int4", action="store_true", help="leave the int4 variant out of the card")
    ap.add_argument("--int4-min-agreement", type=float, default=0.97,
                    help="the routing agreement the int4 variant needs to ship (build.sh's gate)")
    ap.add_argument("--reference", type=Path, default=ROOT / "tests" / "fixtures" / "switchscope-mini" / "reference.json",
                    help="make_reference.py's fixture: its fill-in examples are shown when it belongs to MODEL")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0,
                    help="quick runs only: the first N held-out verses per direction (scores, routing)")
    ap.add_argument("--max-eval-chunks", type=int, default=0, help="quick runs only: fewer held-out chunks")
    ap.add_argument("--exact-docs", type=int, default=25,
                    help="held-out documents per source for the exact-match score of one-word masks")
    ap.add_argument("--examples", type=int, default=3, help="example translations per direction")
    ap.add_argument("--no-cache", action="store_true", help="recompute the translation scores and the routing story")
    ap.add_argument("--results", type=Path, default=None, help="every number of the card (default WORK/card_results.json)")
    args = ap.parse_args()

    import routing_story as rs
    import score as sc
    import variant_agreement as va

    hf = args.hf or args.work / "hf"
    for f in ("config.json", "model.safetensors", "train_info.json", "train_log.csv"):
        if not (hf / f).exists():
            sys.exit(f"error: {hf / f} is missing: --hf must be a finished training run (train.py writes these "
                     "files when the run ends)")
    if not (args.model / "manifest.json").exists():
        sys.exit(f"error: {args.model} is not a converted model directory (no manifest.json); convert {hf} with "
                 "`switchscope convert --quant int8 --group-size 32 --f16-dense` first")
    int4_dir = None
    if not args.no_int4:
        int4_dir = args.int4 or ROOT / "public" / "models" / "switchscope-mini-int4"
        if not (int4_dir / "manifest.json").exists():
            sys.exit(f"error: no int4 variant at {int4_dir}: convert {hf} with `switchscope convert --quant int4 "
                     "--group-size 32 --f16-dense` and pass --int4 DIR, or leave it out with --no-int4")
        if not same_checkpoint(args.model, int4_dir):
            sys.exit(f"error: {int4_dir} was not converted from the same checkpoint as {args.model} (their "
                     "dense.safetensors differ): convert the int4 variant again, or pass --no-int4")
    torch.set_num_threads(args.threads)
    plots = args.model / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    cache = Cache(None if args.no_cache else args.work / "card-cache")
    quick = [s for s, on in ((f"the first {args.limit} held-out verses per direction", args.limit),
                             (f"the first {args.max_eval_chunks} held-out chunks", args.max_eval_chunks),
                             (f"{args.exact_docs} documents per source for exact match", args.exact_docs != 25)) if on]

    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    model = SwitchTransformersForConditionalGeneration.from_pretrained(hf, dtype=torch.float32).eval()
    shipped = mr.shipped_model(model, args.model)
    int4 = mr.shipped_model(model, int4_dir) if int4_dir else None
    torch.set_num_threads(args.threads)
    cfg = model.config
    info = json.loads((hf / "train_info.json").read_text())
    corpus = json.loads((args.work / "corpus" / "stats.json").read_text())
    manifest = json.loads((args.model / "manifest.json").read_text())
    data = tr.tokenize_corpus(args.work)
    pairs = tasks.load_pairs(args.work, tok, tr.EOS_ID)
    weights = {"float32": (model, hf), "int8": (shipped, args.model)}
    if int4 is not None:
        weights["int4"] = (int4, int4_dir)

    # span corruption over the held-out split: losses and routing of every variant
    t0 = time.time()
    logs, span_loss = {}, {}
    for name, (m, _) in weights.items():
        logs[name] = RouteLog(m)
        span_loss[name] = held_out(m, data, cfg.vocab_size, logs[name], max_chunks=args.max_eval_chunks)
        for h in logs[name].rec.handles:  # routing is recorded for this pass only
            h.remove()
    stats = expert_stats(logs["int8"], tok, cfg.num_experts)
    baseline = frequency_baseline(data, cfg.vocab_size)
    print(f"held-out span corruption: {time.time() - t0:.0f} s", file=sys.stderr)
    (args.work / "expert_stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False) + "\n")

    # routing agreement with float32: held-out chunks and held-out verses
    t0 = time.time()
    chunk_routes = {name: va.chunk_experts(log) for name, log in logs.items()}
    verse_routes = {}
    for name, (m, _) in weights.items():
        layers, verse_routes[name] = va.verse_routing(m, tok, args.limit)
    agreement = {name: {"chunks": va.agreement(logs[name].layers, chunk_routes["float32"], chunk_routes[name]),
                        "verses": va.agreement(layers, verse_routes["float32"], verse_routes[name])}
                 for name in weights if name != "float32"}
    print(f"routing agreement: {time.time() - t0:.0f} s", file=sys.stderr)

    # translation scores (cached)
    bleu = {name: cache.get(f"score-{name}", [fingerprint(d), args.limit],
                            lambda m=m: sc.score(m, tok, args.limit, 0, keep_outputs=True))
            for name, (m, d) in weights.items()}
    # the routing story of the shipped weights (cached)
    story = cache.get("routing-story", [fingerprint(args.model), args.limit],
                      lambda: rs.story(shipped, tok, args.work, limit=args.limit))

    # plots
    for f in plots.glob("*.png"):  # the card's plots only: older ones go
        if f.name not in PLOTS:
            f.unlink()
    log_rows = read_log(hf / "train_log.csv")
    plot_loss(log_rows, plots / "loss.png")
    plot_sources(stats, plots / "experts_sources.png")
    plot_lift(stats, plots / "experts_lift.png")
    rs.plot(story, plots / "routing_by_language.png")
    switch, switch_info = switch_experiment(plots)

    # fill-ins: the fixture's held-out examples (when it belongs to this model) and written ones, and the
    # exact-word score over many held-out one-word masks (the first usable documents per source)
    t0 = time.time()
    fills = fill_ins(model, shipped, tok, args.work, args.reference, args.model, cfg.vocab_size)
    exact = exact_match(shipped, tok, args.work, args.exact_docs, cfg.vocab_size)
    print(f"fill-ins: {time.time() - t0:.0f} s", file=sys.stderr)

    results = {
        "quick_run": quick, "bleu": bleu, "agreement": agreement, "span_loss": span_loss,
        "span_loss_chunks": min(len(data["eval_chunks"]), args.max_eval_chunks or len(data["eval_chunks"])),
        "frequency_baseline": baseline, "routing_story": story, "fills": fills,
        "exact_match": exact,
        "switch_experiment": switch,
    }
    write_card(args, results, cfg, info, corpus, manifest, data, pairs, stats, log_rows, switch_info, int4_dir,
               model)
    (args.results or args.work / "card_results.json").write_text(
        json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, r in bleu.items():
        print(f"{name}: " + "; ".join(f"{d} BLEU {r[d]['bleu']} chrF {r[d]['chrf']}" for d in DIRECTION_NAMES),
              file=sys.stderr)
    print(f"wrote {args.model / 'README.md'}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- the card

def write_card(args, R: dict, cfg, info: dict, corpus: dict, manifest: dict, data: dict, pairs: dict,
               stats: list[dict], log_rows: list[dict], switch_info: dict, int4_dir: Path | None, model) -> None:
    L: list[str] = []
    w = L.append
    bleu, story = R["bleu"], R["routing_story"]
    sh = bleu["int8"]
    dirs = list(DIRECTION_NAMES)
    p = params(model)
    files = {f["name"]: f["bytes"] for f in manifest["files"]}
    dense_b = sum(b for n, b in files.items() if not n.startswith("experts/") and n != manifest.get("tokenizer"))
    expert_b = sum(b for n, b in files.items() if n.startswith("experts/"))
    tok_b = files.get(manifest.get("tokenizer") or "", 0)
    plots_b = sum(f.stat().st_size for f in (args.model / "plots").glob("*.png"))
    hours = info["cpu_seconds"] / 3600

    w("# switchscope-mini\n")
    if R["quick_run"]:
        w("> **Quick run over subsets** (" + "; ".join(R["quick_run"]) + "): the numbers below are not the "
          "model's held-out results.\n")
    w("The default model of Switchscope: a small [Switch Transformer](https://arxiv.org/abs/2101.03961) "
      "(T5 encoder-decoder whose feed-forward layers in every other block are replaced by a mixture of "
      f"{cfg.num_experts} experts with top-1 routing), trained from scratch for this project. This is its second "
      "generation, trained on a task mix with T5-style text prefixes; the prefix must be written exactly as here:\n")
    w("| prompt | answer |\n|---|---|")
    w("| `translate English to Spanish: ` + an English verse | the verse in Spanish (Reina-Valera 1909) |")
    w("| `translate Spanish to English: ` + a Spanish verse | the verse in English (King James Version) |")
    w("| `modernize: ` + a King James verse | the verse in modern English (World English Bible) |")
    w("| text with `<extra_id_0>`, `<extra_id_1>`, … where words are missing | the missing spans (T5 span corruption) |")
    w("")
    enc_words = tv_words(layer_tvs(story, "encoder"))
    w(f"It is small and was trained for {hours:.1f} CPU hours of one training process (held-out BLEU "
      + " and ".join(f"{sh[d]['bleu']:.1f} {DIRECTION_NAMES[d]}" for d in dirs)
      + f", below). Its routing is what this model is for: the same verse goes to {enc_words} in the encoder when "
      "it is written in English and in Spanish, and the tables below show how each expert's tokens divide by "
      "source.\n")
    w("This directory is the converted model (Switchscope format v1, see `docs/FORMAT.md`): "
      f"`manifest.json`, `dense.safetensors`, `tokenizer.json` and {len(manifest['experts'])} expert shards in "
      "`experts/`. It is built by one command from pinned sources (see *Reproduce*).\n")

    L += translation_section(bleu, args.examples)
    L += variants_section(R, p["total"], sum(files.values()), int4_dir, args.int4_min_agreement)
    L += routing_section(story)
    L += switch_section(R, switch_info, cfg)

    # ------------------------------------------------------------ architecture, sizes
    w("## Architecture\n")
    w("| | |\n|---|---|")
    w(f"| class | Hugging Face `SwitchTransformersForConditionalGeneration` (transformers {transformers.__version__}) |")
    w(f"| blocks | {cfg.num_layers} encoder + {cfg.num_decoder_layers} decoder; sparse: "
      + ", ".join(f"{s} block {b}" for s, b in mr_layers(model))
      + f" (`encoder_sparse_step` {cfg.encoder_sparse_step}, `decoder_sparse_step` {cfg.decoder_sparse_step}) |")
    w(f"| width | d_model {cfg.d_model}, d_ff {cfg.d_ff} (dense FF and each expert), {cfg.num_heads} heads × d_kv {cfg.d_kv}, {cfg.dense_act_fn} |")
    w(f"| experts | {cfg.num_experts} per sparse layer, top-1 router {'with' if cfg.router_bias else 'without'} bias, "
      f"{cfg.router_dtype} router, expert_capacity {cfg.expert_capacity} tokens per sequence "
      f"({cfg.expert_capacity / (tr.INPUT_LEN / cfg.num_experts):g} × {tr.INPUT_LEN}/{cfg.num_experts}) |")
    w(f"| vocabulary | {cfg.vocab_size} (Unigram; pad 0, `</s>` 1, unk 2; `<extra_id_0>` = {cfg.vocab_size - 1} … `<extra_id_99>` = {cfg.vocab_size - 100}) |")
    w(f"| other | tied input/output embeddings (output scaled by d_model^-0.5), relative position buckets "
      f"{cfg.relative_attention_num_buckets} / max distance {cfg.relative_attention_max_distance}, RMSNorm eps "
      f"{cfg.layer_norm_epsilon:g}, dropout {cfg.dropout_rate:g}, decoder_start_token_id {cfg.decoder_start_token_id} |")
    w(f"| parameters | {p['total']:,}: {p['dense']:,} dense (incl. {cfg.vocab_size * cfg.d_model:,} embedding) + "
      f"{p['expert']:,} in experts; per token about {p['dense'] + p['expert'] // cfg.num_experts:,} are active |")
    w("")
    w("## Files and sizes\n")
    w("| part | storage | bytes |\n|---|---|---|")
    q = manifest["quantization"]
    w(f"| dense weights (`dense.safetensors`) | {q['dense']} | {fmt_bytes(dense_b)} |")
    w(f"| experts (`experts/*.safetensors`, {len(manifest['experts'])} files) | {q['experts']}, group {q['group_size']}, "
      f"{q['scale_dtype']} scales | {fmt_bytes(expert_b)} |")
    w(f"| tokenizer (`tokenizer.json`) | | {fmt_bytes(tok_b)} |")
    w("| this card and `plots/` | | about CARD_AND_PLOTS_BYTES |")
    w(f"| **model total** (files in the manifest) | | **{fmt_bytes(sum(files.values()))}** |")
    w("")
    w("A page fetches the dense weights and the tokenizer once, and an expert only when a router picks it. "
      "What each of the page's presets fetches (experts hit, expert bytes, model bytes) is measured by "
      "`switchscope bench shards --model public/models/switchscope-mini` and written in "
      "docs/BENCHMARKS.md, section 3.")
    w("")

    L += data_section(corpus, pairs)
    L += training_section(info, cfg, pairs, data, log_rows)
    L += fill_in_section(R, args.exact_docs)
    L += experts_section(stats)

    # ------------------------------------------------------------ reproduce
    w("## Reproduce\n")
    w("From the repository root, with Python 3.11, `apt-get` (Debian 12 archive) and `npm` available:\n")
    w("```sh\npython3 -m venv .venv && .venv/bin/pip install -r tools/model/requirements.txt\n"
      "PYTHON=.venv/bin/python tools/model/build.sh\n```\n")
    w("`build.sh` runs `fetch_corpus.py` → `train_tokenizer.py` → `train_gen2.sh` (the training command above) → "
      "`switchscope convert --quant int8 --group-size 32 --f16-dense` → `make_reference.py` (the test fixture "
      "`tests/fixtures/switchscope-mini/reference.json`) → `switchscope convert --quant int4 …` → "
      "`eval_and_card.py` (this card) → `variant_agreement.py` (the int4 variant, kept only at ≥ 97 % routing "
      "agreement). Training is seeded and deterministic on one machine, but float32 CPU kernels differ between "
      "machines, and the Unigram trainer of `tokenizers` is not bit-reproducible, so a rebuild gives a model of the "
      "same quality, not the same bytes. The first generation (span corruption only) is reproducible with "
      "`build.sh` as it stands at commit 556cd3c.\n")

    # ------------------------------------------------------------ limitations
    enc_drop = (sum(layer["dropped"] for layer in stats if layer["stack"] == "encoder")
                / max(1, sum(layer["tokens"] for layer in stats if layer["stack"] == "encoder")))
    top_share = {f"{layer['stack']} {layer['block']}": max(e["share"] for e in layer["experts"]) for layer in stats}
    w("## Limitations\n")
    w("- **Translations.** Held-out BLEU " + " and ".join(f"{sh[d]['bleu']:.1f} ({DIRECTION_NAMES[d]})" for d in dirs)
      + f" after {info['tokens_seen'] / 1e6:.0f} M tokens on a CPU; "
      + " and ".join(f"{sh[d]['repetition_loops'] * 100:.1f} %" for d in dirs)
      + " of the outputs (in that order) are caught in a repetition loop. It learned to translate Bible verses "
      "into the archaic language of its references (Reina-Valera 1909 spelling such as `fué` and `á`, King James "
      "English): text unlike those verses is outside anything it was trained to translate.")
    w(f"- **Fill-in.** It finds the exact masked word in {R['exact_match']['exact']} of {R['exact_match']['masks']} "
      "held-out one-word masks. Left alone it proposes more spans (`<extra_id_1>`, …) than the input has, since "
      "every training chunk had several: the app and `switchscope generate --stop-at-spans` stop once the input's "
      "spans are answered.")
    w("- **Routing balance.** The busiest expert takes "
      + ", ".join(f"{v * 100:.0f} % ({k})" for k, v in top_share.items())
      + f" of the routed tokens of the held-out split (an even share is {100 / cfg.num_experts:.1f} %). On its "
      f"{tr.INPUT_LEN}-token span-corruption inputs the encoder drops {enc_drop * 100:.0f} % of the tokens at "
      f"expert_capacity {cfg.expert_capacity} (they skip the expert layer on the residual path); prompts of at most "
      f"{cfg.expert_capacity} tokens never drop anything.")
    w("- Not for any use beyond looking at how a mixture-of-experts model routes tokens.\n")
    text = "\n".join(L)
    text = text.replace("CARD_AND_PLOTS_BYTES", fmt_bytes(plots_b + len(text.encode("utf-8"))))
    (args.model / "README.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
