#!/usr/bin/env python3
"""Train switchscope-mini: a small Switch Transformer (HF architecture) on a T5-style task mix.

    python tools/model/train.py [--work tools/model/work] [--task mix|span] [--experts 8]
        [--tokens N | --cpu-budget SECONDS] [--resume DIR] [--upcycle-from DIR --upcycle-factor 4]

Reads WORK/corpus/{train,eval,verses}.jsonl and WORK/tokenizer.json; writes
  WORK/tokens.npz          the tokenized corpus (cache; rebuilt when missing)
  WORK/pairs.npz           the tokenized verse pairs (cache; rebuilt when missing)
  OUT/                     the weights (save_pretrained, safetensors) + tokenizer.json
  OUT/checkpoint.pt        weights, optimizer state, schedule position and data stream (--resume)
  OUT/train_log.csv        step, tokens, cpu seconds, lr, loss, ce, z_loss, aux_loss, split
  OUT/train_info.json      command, times, tokens seen, final losses, configuration

Tasks (`--task mix`, see tasks.py): English -> Spanish and Spanish -> English verse translation,
KJV -> WEB modernization, and T5 span corruption over the whole corpus for `--span-share` of the
examples, in length-bucketed batches of at most `--batch-tokens` padded tokens. `--task span` is
span corruption alone in fixed batches (the first generation's recipe): every document is
tokenized (no </s>), cut into chunks of RAW_LEN tokens, and each chunk is span-corrupted like T5
(noise density 0.15, mean span length 3, sentinels <extra_id_0>... from the top of the
vocabulary, inputs ending in </s>): 141 raw tokens -> 128 input and 29 target tokens.

Time: `--cpu-budget` runs the schedule (warm-up, then cosine to 10 %) over this process's CPU
seconds rather than over steps, so that differently shaped models get the same compute; with one
thread, CPU seconds are wall seconds on an idle machine and are not inflated by other work.
A run checkpoints every `--checkpoint-minutes`; `--resume OUT` continues it exactly (same
optimizer state, schedule position and data stream) with the flags it was started with.
Everything is seeded, so a run is reproducible on the same machine and library versions.
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

import tasks  # noqa: E402

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


def model_config(vocab_size: int, router_aux_loss_coef: float = 0.001, num_experts: int = 8) -> SwitchTransformersConfig:
    """The architecture: 4 + 4 blocks, d_model 192, sparse blocks 1 and 3 of each stack with
    `num_experts` experts each (1 = a dense model of the same active size: its one expert always
    gets probability 1)."""
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
        # a 128-token input, so that training drops few tokens
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


def upcycle(model, factor: int, noise: float, seed: int):
    """A copy of `model` with `factor` times the experts in every sparse layer: each expert copied
    `factor` times with relative Gaussian noise, the router's row of each expert likewise. The
    copies' `wo` is scaled by `factor`, since a token's router probability is split among the
    copies of its expert (about 1/factor each at first) and scales the expert's output."""
    g = torch.Generator().manual_seed(seed)
    old = model.config
    cfg = model_config(old.vocab_size, old.router_aux_loss_coef, old.num_experts * factor)
    new = SwitchTransformersForConditionalGeneration(cfg)
    sd_old = model.state_dict()
    sd = {}

    def noisy(t: torch.Tensor) -> torch.Tensor:
        return t + noise * t.std() * torch.randn(t.shape, generator=g)

    for name, t in new.state_dict().items():
        if ".mlp.experts.expert_" in name:
            head, rest = name.split(".mlp.experts.expert_")
            e, w = rest.split(".", 1)
            src = sd_old[f"{head}.mlp.experts.expert_{int(e) // factor}.{w}"]
            sd[name] = noisy(src) * (factor if w.startswith("wo") else 1)
        elif name.endswith("mlp.router.classifier.weight"):
            src = sd_old[name]
            sd[name] = torch.stack([noisy(src[e // factor]) for e in range(t.shape[0])])
        else:
            sd[name] = sd_old[name]
    new.load_state_dict(sd)
    return new


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


def losses(model, batch, label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """loss = cross-entropy with label smoothing (the objective) + the router losses; `ce` is the
    plain cross-entropy (what held-out numbers report), `z_loss`/`aux_loss` unscaled."""
    labels = batch["labels"]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                decoder_input_ids=model._shift_right(labels), output_router_logits=True, return_dict=True)
    logits = out.logits.reshape(-1, out.logits.size(-1))
    flat = labels.reshape(-1)
    ce = torch.nn.functional.cross_entropy(logits, flat, ignore_index=-100)
    smoothed = ce if label_smoothing == 0 else torch.nn.functional.cross_entropy(
        logits, flat, ignore_index=-100, label_smoothing=label_smoothing)
    z = out.encoder_z_loss + out.decoder_z_loss
    aux = out.encoder_aux_loss + out.decoder_aux_loss
    z, aux = torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(aux, dtype=torch.float32)
    loss = smoothed + model.config.router_z_loss_coef * z + model.config.router_aux_loss_coef * aux
    return {"loss": loss, "ce": ce, "z_loss": z, "aux_loss": aux}


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


@torch.no_grad()
def evaluate_pairs(model, pairs: list[tuple[list[int], list[int]]], batch_size: int = 32) -> float:
    """Teacher-forced cross-entropy (nats per target token) over held-out (input, target) pairs."""
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(pairs), batch_size):
        batch = tasks.collate([(x, y, 0) for x, y in pairs[i:i + batch_size]], PAD_ID)
        w = int((batch["labels"] != -100).sum())
        tot += float(losses(model, batch)["ce"]) * w
        n += w
    model.train()
    return tot / n


def heldout_translation(tok, prefix_task: str, path: Path) -> list[tuple[list[int], list[int]]]:
    srcs, refs = zip(*tasks.heldout_pairs(path))
    xs = tok.encode_batch([tasks.PREFIXES[prefix_task] + s for s in srcs], add_special_tokens=False)
    ys = tok.encode_batch(list(refs), add_special_tokens=False)
    return [(x.ids[:tasks.MAX_INPUT - 1] + [EOS_ID], y.ids[:tasks.MAX_TARGET - 1] + [EOS_ID]) for x, y in zip(xs, ys)]


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--task", choices=["mix", "span"], default="mix")
    ap.add_argument("--experts", type=int, default=8, help="experts per sparse layer (1: a dense model)")
    ap.add_argument("--tokens", type=int, default=27_000_000,
                    help="tokens to train on (span: raw corpus tokens; mix: input + target tokens)")
    ap.add_argument("--cpu-budget", type=float, default=0,
                    help="train for this many CPU seconds of this process instead of --tokens (the schedule "
                         "runs over them)")
    ap.add_argument("--batch-size", type=int, default=64, help="--task span: sequences per batch")
    ap.add_argument("--batch-tokens", type=int, default=8192,
                    help="--task mix: padded input + target tokens per batch (length-bucketed)")
    ap.add_argument("--span-share", type=float, default=0.3, help="--task mix: share of span-corruption examples")
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=2e-2, help="peak learning rate (before the RMS scaling of adamw-rms)")
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--max-steps", type=int, default=0, help="stop early (speed trials); keeps the schedule")
    ap.add_argument("--stop-after-minutes", type=float, default=0,
                    help="checkpoint and stop after this many wall minutes (the schedule is kept: --resume goes on)")
    ap.add_argument("--stop-at-cpu", type=float, default=0,
                    help="checkpoint and stop once the run has used this many CPU seconds (resumable; e.g. the "
                         "point an upcycled run branches off)")
    ap.add_argument("--checkpoint-minutes", type=float, default=10)
    ap.add_argument("--resume", type=Path, default=None,
                    help="continue the run whose OUT directory this is, from its checkpoint.pt, with its flags")
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
                    help="start from these weights (a new optimizer and schedule; the router loss coefficients "
                         "come from the flags): a Hugging Face checkpoint (architecture from its config.json) or a "
                         "model directory converted by `switchscope convert` (manifest.json; this script's "
                         "architecture, the weights exactly as the runtime reads them: f16 dense, dequantized experts)")
    ap.add_argument("--upcycle-from", type=Path, default=None,
                    help="start from this run's checkpoint.pt with --upcycle-factor times the experts (a new "
                         "optimizer; the schedule's clock starts at the checkpoint's CPU seconds and tokens)")
    ap.add_argument("--upcycle-factor", type=int, default=4)
    ap.add_argument("--upcycle-noise", type=float, default=0.01, help="relative std of the copies' noise")
    ap.add_argument("--data-seed", type=int, default=SEED,
                    help="seed of the chunk order and noise masks (use another one when continuing a run, "
                         "so that it does not replay the first run's batches)")
    argv = sys.argv[1:]
    args = ap.parse_args(argv)
    resume = None
    if args.resume is not None:
        resume = torch.load(args.resume / "checkpoint.pt", weights_only=False)
        saved = ap.parse_args(resume["argv"])
        for k in ("stop_after_minutes", "stop_at_cpu", "deadline", "threads", "checkpoint_minutes", "eval_every", "max_steps"):
            setattr(saved, k, getattr(args, k))  # how long this stretch runs is this call's business
        saved.out = args.resume
        args, argv = saved, resume["argv"]
    out_dir = args.out or args.work / "hf"

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    tok = Tokenizer.from_file(str(args.work / "tokenizer.json"))
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    data = tokenize_corpus(args.work)
    config = model_config(vocab_size, args.router_aux_coef, args.experts)
    clock0 = {"cpu": 0.0, "tokens": 0, "step": 0}
    if args.upcycle_from is not None:
        src = torch.load(args.upcycle_from / "checkpoint.pt", weights_only=False)
        base = SwitchTransformersForConditionalGeneration(
            model_config(vocab_size, args.router_aux_coef, src["config"]["num_experts"]))
        base.load_state_dict(src["model"])
        model = upcycle(base, args.upcycle_factor, args.upcycle_noise, args.data_seed)
        clock0 = {"cpu": src["cpu_seconds"], "tokens": src["tokens"], "step": src["step"]}
        config = model.config
    elif args.init_from is not None:
        if (args.init_from / "manifest.json").exists():
            from make_reference import shipped_model
            model = shipped_model(SwitchTransformersForConditionalGeneration(config), args.init_from)
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
    if resume is not None:
        model.load_state_dict(resume["model"])
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}; train chunks {len(data['train_chunks'])}", file=sys.stderr)

    rng = np.random.default_rng(args.data_seed)
    if args.task == "mix":
        pairs = tasks.load_pairs(args.work, tok, EOS_ID)
        print(f"pairs: {len(pairs['task'])} ({int(pairs['dropped'])} dropped)", file=sys.stderr)

        def span_fn(ids, r):
            return span_corrupt(ids, r, vocab_size, args.noise_density, args.mean_span)

        sampler = tasks.MixSampler(pairs, data["train_chunks"], span_fn, args.span_share, args.batch_tokens, rng)
        heldout = {t: heldout_translation(tok, t, HERE / "heldout" / f"{t}.tsv") for t in ("en-es", "es-en")}
        ex_tokens = args.batch_tokens * 0.6  # real tokens per batch, for the step estimate only
    else:
        sampler, heldout = None, {}
        ex_tokens = args.batch_size * RAW_LEN
    steps = math.ceil(args.tokens / (ex_tokens * args.accumulate))

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "layer_norm" in name else decay).append(p)
    if args.optimizer == "adamw":
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    elif args.optimizer == "adamw-rms":
        # one group per tensor: its learning rate is set every step to lr x max(1e-3, RMS(tensor))
        groups = [{"params": [p], "weight_decay": 0.01, "rms_scaled": True} for p in decay]
        groups += [{"params": [p], "weight_decay": 0.0, "rms_scaled": True} for p in no_decay]
        opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    else:
        from transformers.optimization import Adafactor
        opt = Adafactor(model.parameters(), lr=args.lr, scale_parameter=True, relative_step=False,
                        warmup_init=False, clip_threshold=1.0, weight_decay=0.0)

    def set_lr(lr: float) -> None:
        for g in opt.param_groups:
            if g.get("rms_scaled"):
                p = g["params"][0]
                g["lr"] = lr * max(1e-3, float(p.detach().pow(2).mean().sqrt()))
            else:
                g["lr"] = lr

    cooldown = {"start": args.cooldown_at or None, "len": args.cooldown_steps or None}

    def progress(step: int, cpu: float) -> float:  # 0 -> 1 over the run, after the warm-up
        if args.cpu_budget:
            return min(1.0, cpu / args.cpu_budget)
        return (step - args.warmup) / max(1, steps - args.warmup)

    def lr_at(step: int, cpu: float) -> float:  # linear warm-up, cosine decay to 10 % (or the cool-down)
        if cooldown["start"] is not None and step >= cooldown["start"]:
            t = min(1.0, (step - cooldown["start"] + 1) / cooldown["len"])
            return base_lr(cooldown["start"], cpu) * (1 - t) + args.lr * 0.1 * t
        return base_lr(step, cpu)

    def base_lr(step: int, cpu: float) -> float:
        if step - clock0["step"] < args.warmup:
            return args.lr * (step - clock0["step"] + 1) / args.warmup
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress(step, cpu))))

    order = rng.permutation(len(data["train_chunks"])) if sampler is None else None
    cursor = 0
    out_dir.mkdir(parents=True, exist_ok=True)
    header = ["step", "tokens", "cpu_seconds", "lr", "loss", "ce", "z_loss", "aux_loss", "split"]
    step, tokens, cpu_done, last = clock0["step"], clock0["tokens"], clock0["cpu"], {}
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        step, tokens, cpu_done, last = resume["step"], resume["tokens"], resume["cpu_seconds"], resume["last"]
        clock0 = resume["clock0"]
        cooldown = resume["cooldown"]
        torch.set_rng_state(resume["torch_rng"])
        if sampler is not None:
            sampler.restore(resume["sampler"])
        else:
            rng.bit_generator.state = resume["rng"]
            order, cursor = resume["order"], resume["cursor"]
        log_f = open(out_dir / "train_log.csv", "a", newline="")
        log = csv.writer(log_f)
    else:
        log_f = open(out_dir / "train_log.csv", "w", newline="")
        log = csv.writer(log_f)
        log.writerow(header)
    stretches = (resume or {}).get("stretches", []) + [{"started": time.time(), "from_step": step}]
    t_wall, t_cpu = time.time(), time.process_time()
    cpu_at_start = cpu_done
    last_ckpt = time.time()

    def cpu_now() -> float:
        return cpu_at_start + time.process_time() - t_cpu

    def checkpoint() -> None:
        state = {
            "argv": argv, "config": model.config.to_dict(), "model": model.state_dict(),
            "optimizer": opt.state_dict(), "step": step, "tokens": tokens, "cpu_seconds": cpu_now(),
            "last": last, "clock0": clock0, "cooldown": cooldown, "torch_rng": torch.get_rng_state(),
            "stretches": stretches,
        }
        if sampler is not None:
            state["sampler"] = sampler.state()
        else:
            state.update(rng=rng.bit_generator.state, order=order, cursor=cursor)
        save_checkpoint(out_dir / "checkpoint.pt", state)

    def log_eval() -> dict:
        ev = evaluate(model, data, vocab_size, 64, max_chunks=256)
        for t, prs in heldout.items():
            ev[f"ce_{t}"] = evaluate_pairs(model, prs)
        log.writerow([step, tokens, f"{cpu_now():.1f}", f"{lr_at(max(step - 1, 0), cpu_now()):.6g}"]
                     + [f"{ev[k]:.5f}" for k in ("loss", "ce", "z_loss", "aux_loss")] + ["eval"])
        for t in heldout:
            log.writerow([step, tokens, f"{cpu_now():.1f}", "", "", f"{ev[f'ce_{t}']:.5f}", "", "", f"eval-{t}"])
        log_f.flush()
        print(f"eval {ev}", file=sys.stderr, flush=True)
        return ev

    acc = {"loss": 0.0, "ce": 0.0, "z_loss": 0.0, "aux_loss": 0.0}
    acc_n = 0
    stopped_early, finished = None, False
    if cooldown["start"] is not None and cooldown["len"] is None:
        cooldown["len"] = max(100, cooldown["start"] // 8)
    while True:
        if args.cpu_budget and cpu_now() >= args.cpu_budget:
            finished = True
            break
        if not args.cpu_budget and step >= steps:
            finished = True
            break
        if args.max_steps and step >= args.max_steps:
            stopped_early = f"--max-steps {args.max_steps}"
            break
        if args.stop_at_cpu and cpu_now() >= args.stop_at_cpu:
            stopped_early = f"--stop-at-cpu {args.stop_at_cpu} (resumable)"
            break
        if args.stop_after_minutes and time.time() - t_wall > 60 * args.stop_after_minutes:
            stopped_early = f"--stop-after-minutes {args.stop_after_minutes} (resumable)"
            break
        if cooldown["start"] is not None and step >= cooldown["start"] + cooldown["len"]:
            stopped_early = (f"cool-down from step {cooldown['start']} over {cooldown['len']} steps "
                             f"(replay: --cooldown-at {cooldown['start']} --cooldown-steps {cooldown['len']})")
            finished = True
            break
        if args.deadline and time.time() > args.deadline + 300:
            stopped_early = f"hard stop 5 min after the deadline at step {step}"
            break
        if args.deadline and cooldown["start"] is None and step > args.warmup:
            per_step = (time.time() - t_wall) / max(1, step - stretches[-1]["from_step"])
            cd_len = max(100, step // 8)
            if time.time() + (cd_len + 10) * per_step * 1.2 > args.deadline:
                cooldown["start"], cooldown["len"] = step, cd_len
                print(f"deadline: cool-down from step {step} over {cd_len} steps", file=sys.stderr, flush=True)
        set_lr(lr_at(step, cpu_now()))
        opt.zero_grad(set_to_none=True)
        parts = []
        for _ in range(args.accumulate):
            if sampler is not None:
                batch = tasks.collate(sampler.next(), PAD_ID)
                tokens += int((batch["input_ids"] != PAD_ID).sum()) + int((batch["labels"] != -100).sum())
            else:
                if cursor + args.batch_size > len(order):
                    order = rng.permutation(len(data["train_chunks"]))
                    cursor = 0
                idx = order[cursor:cursor + args.batch_size]
                cursor += args.batch_size
                chunks = data["train_chunks"][idx]
                tokens += int((chunks >= 0).sum())
                batch = make_batch(chunks, rng, vocab_size, args.noise_density, args.mean_span)
            part = losses(model, batch, args.label_smoothing)
            (part["loss"] / args.accumulate).backward()
            parts.append({k: v.detach() for k, v in part.items()})
        ls = {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        for k, v in ls.items():
            acc[k] += float(v)
        acc_n += 1
        if step % 50 == 0:
            last = {k: v / acc_n for k, v in acc.items()}
            log.writerow([step, tokens, f"{cpu_now():.1f}", f"{lr_at(step - 1, cpu_now()):.6g}"]
                         + [f"{last[k]:.5f}" for k in acc] + ["train"])
            log_f.flush()
            el = time.time() - t_wall
            done_here = tokens - (resume or {}).get("tokens", clock0["tokens"])
            print(f"step {step} tok {tokens:,} cpu {cpu_now():.0f}s {done_here / el:.0f} tok/s "
                  + " ".join(f"{k} {v:.4f}" for k, v in last.items()), file=sys.stderr, flush=True)
            acc = {k: 0.0 for k in acc}
            acc_n = 0
        if step % args.eval_every == 0:
            log_eval()
        if time.time() - last_ckpt > 60 * args.checkpoint_minutes:
            checkpoint()
            last_ckpt = time.time()
    stretches[-1].update(ended=time.time(), to_step=step, wall_seconds=round(time.time() - t_wall, 1))
    checkpoint()
    if not finished:
        log_f.close()
        print(f"stopped at step {step}: {stopped_early}; continue with --resume {out_dir}", file=sys.stderr)
        return 0
    ev = log_eval() if sampler is not None else evaluate(model, data, vocab_size, 64)
    if sampler is None:
        log.writerow([step, tokens, f"{cpu_now():.1f}", f"{lr_at(step - 1, cpu_now()):.6g}"]
                     + [f"{ev[k]:.5f}" for k in acc] + ["eval"])
    log_f.close()
    print(f"final eval {ev}", file=sys.stderr)

    model.save_pretrained(out_dir, safe_serialization=True)
    shutil.copy(args.work / "tokenizer.json", out_dir / "tokenizer.json")
    info = {
        "command": "python tools/model/train.py " + " ".join(argv),
        "task": args.task,
        "experts": model.config.num_experts,
        "seed": SEED,
        "data_seed": args.data_seed,
        "init_from": str(args.init_from) if args.init_from else None,
        "upcycled_from": str(args.upcycle_from) if args.upcycle_from else None,
        "steps": step,
        "planned_steps": None if args.cpu_budget else steps,
        "cpu_budget": args.cpu_budget or None,
        "stopped_early": stopped_early,
        "stretches": stretches,
        "cooldown": cooldown if cooldown["start"] is not None else None,
        "batch": {"size": args.batch_size} if sampler is None else {"tokens": args.batch_tokens, "bucketed": True},
        "span_share": args.span_share if sampler is not None else 1.0,
        "label_smoothing": args.label_smoothing,
        "tokens_seen": tokens,
        **({"raw_tokens_seen": tokens} if sampler is None else {}),  # the first generation's name
        "noise_density": args.noise_density,
        "mean_span": args.mean_span,
        "cpu_seconds": round(cpu_now(), 1),
        "threads": args.threads,
        "lr": args.lr, "warmup": args.warmup,
        "schedule": "linear warm-up, cosine to 10 % over " + ("CPU seconds" if args.cpu_budget else "steps"),
        "optimizer": {
            "adamw": "AdamW(0.9, 0.98), wd 0.01, clip 1.0",
            "adamw-rms": "AdamW(0.9, 0.98), wd 0.01, clip 1.0, step of each tensor x max(1e-3, its RMS)",
            "adafactor": "Adafactor (transformers; parameter scaling, clip threshold 1.0), gradient clip 1.0",
        }[args.optimizer],
        "accumulate": args.accumulate,
        "final_train": last,
        "held_out": ev,
        "parameters": n_params,
        "router_init": f"normal, std sqrt({ROUTER_INIT_SCALE}/d_model)",
        "torch": torch.__version__,
    }
    (out_dir / "train_info.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
