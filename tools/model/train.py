#!/usr/bin/env python3
"""Train switchscope-mini: a small Switch Transformer (HF architecture) on T5 span corruption.

    python tools/model/train.py [--work tools/model/work] [--tokens 27000000] [--deadline UNIX_TIME]

Reads WORK/corpus/{train,eval}.jsonl and WORK/tokenizer.json; writes
  WORK/tokens.npz          the tokenized corpus (cache; rebuilt when missing)
  WORK/hf/                 the checkpoint (save_pretrained, safetensors) + tokenizer.json
  WORK/hf/train_log.csv    step, tokens, lr, loss, ce, z_loss, aux_loss (unscaled router losses)
  WORK/hf/train_info.json  command, wall time, tokens seen, final losses, configuration

Data: every document is tokenized (no </s>), cut into chunks of RAW_LEN tokens, and each chunk is
span-corrupted like T5 (noise density 0.15, mean span length 3, sentinels <extra_id_0>... from the
top of the vocabulary, inputs ending in </s>): 141 raw tokens -> 128 input and 29 target tokens.
Chunks are shuffled with a fixed seed, and the noise masks come from a seeded generator, so a run
is reproducible on the same machine and library versions (CPU, torch.manual_seed, fixed thread count).
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 1234
RAW_LEN = 141  # -> 128 input tokens (incl. </s>) and 29 target tokens after span corruption
INPUT_LEN = 128
TARGET_LEN = 32
MIN_CHUNK = 24  # shorter document tails are dropped
NOISE_DENSITY = 0.15
MEAN_SPAN = 3.0
PAD_ID, EOS_ID = 0, 1
ROUTER_INIT_SCALE = 0.1
SOURCES = ["prose-en", "bible-en", "bible-es", "code-python", "handbook-en", "handbook-es", "handbook-fr",
           "handbook-de", "numbers"]


def model_config(vocab_size: int, router_aux_loss_coef: float = 0.001) -> SwitchTransformersConfig:
    num_experts = 8
    return SwitchTransformersConfig(
        vocab_size=vocab_size,
        d_model=192,
        d_kv=32,
        d_ff=512,
        num_heads=6,
        num_layers=4,
        num_decoder_layers=4,
        num_sparse_encoder_layers=2,  # encoder_sparse_step = 2: blocks 1 and 3 are sparse
        num_sparse_decoder_layers=2,  # decoder_sparse_step = 2
        num_experts=num_experts,
        # per sequence and expert (HF counts capacity along each batch row): 2x the even share of
        # a 128-token input, so that training drops few tokens; the decoder (<= 32 tokens) never drops
        expert_capacity=math.ceil(INPUT_LEN / num_experts * 2),
        router_bias=False,
        router_jitter_noise=0.0,
        router_dtype="float32",
        router_ignore_padding_tokens=False,
        router_z_loss_coef=0.001,
        router_aux_loss_coef=router_aux_loss_coef,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        initializer_factor=1.0,
        dense_act_fn="relu",
        is_encoder_decoder=True,
        use_cache=True,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )


# ---------------------------------------------------------------- data

def tokenize_corpus(work: Path) -> dict:
    cache = work / "tokens.npz"
    if cache.exists():
        z = np.load(cache)
        return {k: z[k] for k in z.files}
    tok = Tokenizer.from_file(str(work / "tokenizer.json"))
    out = {}
    for split in ("train", "eval"):
        docs = [json.loads(line) for line in open(work / "corpus" / f"{split}.jsonl", encoding="utf-8")]
        encs = tok.encode_batch([d["text"] for d in docs], add_special_tokens=False)
        chunks, srcs = [], []
        for d, e in zip(docs, encs):
            ids = e.ids
            for i in range(0, len(ids), RAW_LEN):
                c = ids[i:i + RAW_LEN]
                if len(c) >= MIN_CHUNK:
                    chunks.append(c + [-1] * (RAW_LEN - len(c)))
                    srcs.append(SOURCES.index(d["source"]))
        out[f"{split}_chunks"] = np.array(chunks, dtype=np.int32)
        out[f"{split}_source"] = np.array(srcs, dtype=np.int8)
        print(f"{split}: {len(docs)} docs, {len(chunks)} chunks", file=sys.stderr)
    np.savez(cache, **out)
    return out


def random_segmentation(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n items into k non-empty segments (lengths), uniformly at random like T5."""
    cuts = np.sort(rng.choice(np.arange(1, n), size=k - 1, replace=False)) if k > 1 else np.array([], dtype=int)
    return np.diff(np.concatenate([[0], cuts, [n]]))


def span_corrupt(ids: list[int], rng: np.random.Generator, vocab_size: int, noise_density: float = NOISE_DENSITY,
                 mean_span: float = MEAN_SPAN) -> tuple[list[int], list[int]]:
    n = len(ids)
    num_noise = min(max(int(round(n * noise_density)), 1), n - 1)
    num_spans = max(int(round(num_noise / mean_span)), 1)
    num_spans = min(num_spans, num_noise, n - num_noise)
    noise_lens = random_segmentation(rng, num_noise, num_spans)
    keep_lens = random_segmentation(rng, n - num_noise, num_spans)
    inputs, targets = [], []
    pos = 0
    for s in range(num_spans):
        sentinel = vocab_size - 1 - s
        inputs += ids[pos:pos + keep_lens[s]]
        pos += keep_lens[s]
        inputs.append(sentinel)
        targets.append(sentinel)
        targets += ids[pos:pos + noise_lens[s]]
        pos += noise_lens[s]
    return inputs + [EOS_ID], targets + [EOS_ID]


def make_batch(chunks: np.ndarray, rng: np.random.Generator, vocab_size: int, noise_density: float = NOISE_DENSITY,
               mean_span: float = MEAN_SPAN) -> dict[str, torch.Tensor]:
    """Span-corrupted inputs (INPUT_LEN, padded) and labels (padded with -100 to TARGET_LEN, or to the
    longest target of the batch when a denser noise makes targets longer)."""
    b = len(chunks)
    pairs = [span_corrupt([int(t) for t in c if t >= 0], rng, vocab_size, noise_density, mean_span) for c in chunks]
    target_len = max(TARGET_LEN, max(len(y) for _, y in pairs))
    inp = np.full((b, INPUT_LEN), PAD_ID, dtype=np.int64)
    lab = np.full((b, target_len), -100, dtype=np.int64)
    for i, (x, y) in enumerate(pairs):
        x = x[:INPUT_LEN]
        inp[i, :len(x)] = x
        lab[i, :len(y)] = y
    inp_t = torch.from_numpy(inp)
    return {"input_ids": inp_t, "attention_mask": (inp_t != PAD_ID).long(), "labels": torch.from_numpy(lab)}


def losses(model, batch) -> dict[str, torch.Tensor]:
    out = model(**batch, output_router_logits=True, return_dict=True)
    z = out.encoder_z_loss + out.decoder_z_loss
    aux = out.encoder_aux_loss + out.decoder_aux_loss
    ce = out.loss - model.config.router_z_loss_coef * z - model.config.router_aux_loss_coef * aux
    return {"loss": out.loss, "ce": ce, "z_loss": z, "aux_loss": aux}


@torch.no_grad()
def evaluate(model, data: dict, vocab_size: int, batch_size: int, max_chunks: int = 2048) -> dict[str, float]:
    """Held-out span-corruption losses with fixed noise (seed) over the eval chunks."""
    model.eval()
    rng = np.random.default_rng(SEED + 1)
    chunks = data["eval_chunks"][:max_chunks]
    sums = {"loss": 0.0, "ce": 0.0, "z_loss": 0.0, "aux_loss": 0.0}
    n = 0
    for i in range(0, len(chunks), batch_size):
        batch = make_batch(chunks[i:i + batch_size], rng, vocab_size)
        w = int((batch["labels"] != -100).sum())
        for k, v in losses(model, batch).items():
            sums[k] += float(v) * w
        n += w
    model.train()
    return {k: v / n for k, v in sums.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--tokens", type=int, default=27_000_000, help="raw (uncorrupted) tokens to train on")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-2, help="peak learning rate (before the RMS scaling of adamw-rms)")
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--max-steps", type=int, default=0, help="stop early (speed trials); keeps the schedule")
    ap.add_argument("--deadline", type=float, default=0,
                    help="unix time by which training must end: when the remaining time (at the measured speed) "
                         "only fits a cool-down, the learning rate decays linearly to 10 %% over COOLDOWN "
                         "steps and training stops; train_info.json records the step, which --cooldown-at replays")
    ap.add_argument("--cooldown-at", type=int, default=0, help="start the cool-down at this step (replay)")
    ap.add_argument("--cooldown-steps", type=int, default=0, help="cool-down length (default: max(100, step/8))")
    ap.add_argument("--router-aux-coef", type=float, default=0.01,
                    help="load-balancing loss coefficient (Switch's 0.01)")
    ap.add_argument("--optimizer", choices=["adamw", "adamw-rms", "adafactor"], default="adamw-rms",
                    help="adamw: AdamW with one learning rate; adamw-rms: AdamW whose step for each weight matrix "
                         "is scaled by that matrix's RMS (at least 1e-3), like Adafactor's parameter scaling, which "
                         "suits T5's unscaled attention; adafactor: transformers' Adafactor with parameter scaling")
    ap.add_argument("--accumulate", type=int, default=1, help="batches per optimizer step (gradient accumulation)")
    ap.add_argument("--noise-density", type=float, default=NOISE_DENSITY,
                    help="share of each training chunk's tokens that is masked (T5: 0.15); held-out losses always "
                         "use 0.15 and mean span 3")
    ap.add_argument("--mean-span", type=float, default=MEAN_SPAN, help="mean masked span length of training chunks")
    ap.add_argument("--out", type=Path, default=None, help="default WORK/hf")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="continue from these weights (a new optimizer and schedule; the router loss coefficients "
                         "come from the flags): a Hugging Face checkpoint (architecture from its config.json) or a "
                         "model directory converted by `switchscope convert` (manifest.json; this script's "
                         "architecture, the weights exactly as the runtime reads them: f16 dense, dequantized experts)")
    ap.add_argument("--data-seed", type=int, default=SEED,
                    help="seed of the chunk order and noise masks (use another one when continuing a run, "
                         "so that it does not replay the first run's batches)")
    args = ap.parse_args()
    out_dir = args.out or args.work / "hf"

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    tok = Tokenizer.from_file(str(args.work / "tokenizer.json"))
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    data = tokenize_corpus(args.work)
    config = model_config(vocab_size, args.router_aux_coef)
    if args.init_from is not None:
        if (args.init_from / "manifest.json").exists():
            from make_reference import shipped_model
            model = shipped_model(SwitchTransformersForConditionalGeneration(config), args.init_from)
            model.config.router_aux_loss_coef = args.router_aux_coef
            torch.set_num_threads(args.threads)  # importing make_reference sets one thread
        else:
            model = SwitchTransformersForConditionalGeneration.from_pretrained(args.init_from)
        model.config.router_aux_loss_coef = args.router_aux_coef
        for mod in model.modules():  # HF copies the coefficient into every sparse block
            if hasattr(mod, "router_aux_loss_coef"):
                mod.router_aux_loss_coef = args.router_aux_coef
        config = model.config
    else:
        model = SwitchTransformersForConditionalGeneration(config)
        # HF initialises router weights with std 1 (router logits of std ~sqrt(d_model), i.e. nearly
        # hard routing from the start); Switch/Mesh TensorFlow use variance scaling 0.1 (fan-in).
        with torch.no_grad():
            for name, mod in model.named_modules():
                if name.endswith("mlp.router.classifier"):
                    mod.weight.normal_(0.0, (ROUTER_INIT_SCALE / config.d_model) ** 0.5)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}; train chunks {len(data['train_chunks'])}", file=sys.stderr)

    steps = math.ceil(args.tokens / (args.batch_size * args.accumulate * RAW_LEN))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "layer_norm" in name else decay).append(p)
    if args.optimizer == "adamw":
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    elif args.optimizer == "adamw-rms":
        # one group per tensor: its learning rate is set every step to lr x max(1e-3, RMS(tensor))
        groups = [{"params": [p], "weight_decay": 0.01, "rms_of": p} for p in decay]
        groups += [{"params": [p], "weight_decay": 0.0, "rms_of": p} for p in no_decay]
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    else:
        from transformers.optimization import Adafactor
        opt = Adafactor(model.parameters(), lr=args.lr, scale_parameter=True, relative_step=False,
                        warmup_init=False, clip_threshold=1.0, weight_decay=0.0)

    def set_lr(lr: float) -> None:
        for g in opt.param_groups:
            if "rms_of" in g:
                p = g["rms_of"]
                g["lr"] = lr * max(1e-3, float(p.detach().pow(2).mean().sqrt()))
            else:
                g["lr"] = lr

    cooldown = {"start": args.cooldown_at or None, "len": args.cooldown_steps or None}

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10 % (or the cool-down, see --deadline)
        if cooldown["start"] is not None and step >= cooldown["start"]:
            t = min(1.0, (step - cooldown["start"] + 1) / cooldown["len"])
            return base_lr(cooldown["start"]) * (1 - t) + args.lr * 0.1 * t
        return base_lr(step)

    def base_lr(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    rng = np.random.default_rng(args.data_seed)
    order = rng.permutation(len(data["train_chunks"]))
    cursor = 0
    out_dir.mkdir(parents=True, exist_ok=True)
    log_f = open(out_dir / "train_log.csv", "w", newline="")
    log = csv.writer(log_f)
    log.writerow(["step", "tokens", "lr", "loss", "ce", "z_loss", "aux_loss", "split"])
    t0 = time.time()
    raw_tokens = 0
    acc = {"loss": 0.0, "ce": 0.0, "z_loss": 0.0, "aux_loss": 0.0}
    acc_n = 0
    last = {}
    done = 0
    stopped_early = None
    if cooldown["start"] is not None and cooldown["len"] is None:
        cooldown["len"] = max(100, cooldown["start"] // 8)
    for step in range(steps):
        if args.max_steps and step >= args.max_steps:
            stopped_early = f"--max-steps {args.max_steps}"
            break
        if cooldown["start"] is not None and step >= cooldown["start"] + cooldown["len"]:
            stopped_early = (f"cool-down from step {cooldown['start']} over {cooldown['len']} steps "
                             f"(replay: --cooldown-at {cooldown['start']} --cooldown-steps {cooldown['len']})")
            break
        if args.deadline and time.time() > args.deadline + 300:
            stopped_early = f"hard stop 5 min after the deadline at step {step}"
            break
        if args.deadline and cooldown["start"] is None and step > args.warmup:
            per_step = (time.time() - t0) / step
            cd_len = max(100, step // 8)
            if time.time() + (cd_len + 10) * per_step * 1.2 > args.deadline:
                cooldown["start"], cooldown["len"] = step, cd_len
                print(f"deadline: cool-down from step {step} over {cd_len} steps", file=sys.stderr, flush=True)
        set_lr(lr_at(step))
        opt.zero_grad(set_to_none=True)
        parts = []
        for _ in range(args.accumulate):
            if cursor + args.batch_size > len(order):
                order = rng.permutation(len(data["train_chunks"]))
                cursor = 0
            idx = order[cursor:cursor + args.batch_size]
            cursor += args.batch_size
            chunks = data["train_chunks"][idx]
            raw_tokens += int((chunks >= 0).sum())
            batch = make_batch(chunks, rng, vocab_size, args.noise_density, args.mean_span)
            part = losses(model, batch)
            (part["loss"] / args.accumulate).backward()
            parts.append({k: v.detach() for k, v in part.items()})
        ls = {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        for k, v in ls.items():
            acc[k] += float(v.detach())
        acc_n += 1
        if (step + 1) % 50 == 0 or step + 1 == steps or (args.max_steps and step + 1 == args.max_steps):
            last = {k: v / acc_n for k, v in acc.items()}
            log.writerow([step + 1, raw_tokens, f"{lr_at(step):.6g}"] + [f"{last[k]:.5f}" for k in acc] + ["train"])
            log_f.flush()
            el = time.time() - t0
            print(f"step {step + 1}/{steps} tok {raw_tokens:,} {raw_tokens / el:.0f} tok/s "
                  + " ".join(f"{k} {v:.4f}" for k, v in last.items()), file=sys.stderr, flush=True)
            acc = {k: 0.0 for k in acc}
            acc_n = 0
        if (step + 1) % args.eval_every == 0:
            ev = evaluate(model, data, vocab_size, 64, max_chunks=256)
            log.writerow([step + 1, raw_tokens, f"{lr_at(step):.6g}"] + [f"{ev[k]:.5f}" for k in acc] + ["eval"])
            log_f.flush()
            print(f"eval {ev}", file=sys.stderr, flush=True)
    wall = time.time() - t0
    ev = evaluate(model, data, vocab_size, 64)
    log.writerow([done, raw_tokens, f"{lr_at(done - 1):.6g}"] + [f"{ev[k]:.5f}" for k in acc] + ["eval"])
    log_f.close()
    print(f"final eval {ev}", file=sys.stderr)

    model.save_pretrained(out_dir, safe_serialization=True)
    shutil.copy(args.work / "tokenizer.json", out_dir / "tokenizer.json")
    info = {
        "command": "python tools/model/train.py " + " ".join(sys.argv[1:]),
        "seed": SEED,
        "data_seed": args.data_seed,
        "init_from": str(args.init_from) if args.init_from else None,
        "steps": done,
        "planned_steps": steps,
        "stopped_early": stopped_early,
        "cooldown": cooldown if cooldown["start"] is not None else None,
        "batch_size": args.batch_size,
        "raw_tokens_seen": raw_tokens,
        "input_target_tokens_per_example": [INPUT_LEN, 29],
        "noise_density": args.noise_density,
        "mean_span": args.mean_span,
        "wall_seconds": round(wall, 1),
        "tokens_per_second": round(raw_tokens / wall, 1),
        "threads": args.threads,
        "lr": args.lr, "warmup": args.warmup, "schedule": "linear warm-up, cosine to 10 %", "optimizer": {
            "adamw": "AdamW(0.9, 0.98), wd 0.01, clip 1.0",
            "adamw-rms": "AdamW(0.9, 0.98), wd 0.01, clip 1.0, step of each tensor x max(1e-3, its RMS)",
            "adafactor": "Adafactor (transformers; parameter scaling, clip threshold 1.0), gradient clip 1.0",
        }[args.optimizer],
        "accumulate": args.accumulate,
        "final_train": last,
        "held_out": ev,
        "held_out_chunks": int(min(len(data["eval_chunks"]), 2048)),
        "parameters": n_params,
        "router_init": f"normal, std sqrt({ROUTER_INIT_SCALE}/d_model)",
        "torch": torch.__version__,
    }
    (out_dir / "train_info.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
