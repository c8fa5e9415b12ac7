#!/usr/bin/env python3
"""The Switch Transformer's headline at small scale: held-out loss of a dense model, 8 experts and
32 experts per sparse layer (upcycled from the 8-expert run at its branch point), same data, same
CPU-second budget, against CPU seconds and against tokens.

    python tools/model/plot_switch.py --runs tools/model/work/switch --out DIR

RUNS holds one training directory per model (`dense`, `e8`, `e32`; train.py's train_log.csv). The
upcycled run's log starts where it branched off; its curve is drawn from the 8-expert run's
points up to there. Writes DIR/switch-scaling.png and DIR/switch-scaling.json (final held-out
losses per run).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

RUNS = [("dense", "dense (1 expert)"), ("e8", "8 experts"), ("e32", "32 experts (upcycled from 8)")]
SPLITS = [("eval-en-es", "English → Spanish"), ("eval-es-en", "Spanish → English"), ("eval", "span corruption")]


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def series(rows: list[dict], split: str) -> list[tuple[float, int, float]]:
    return [(float(r["cpu_seconds"]), int(r["tokens"]), float(r["ce"])) for r in rows if r["split"] == split]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {name: read(args.runs / name / "train_log.csv") for name, _ in RUNS if (args.runs / name).exists()}
    if "e32" in logs and "e8" in logs:  # the upcycled run continues the 8-expert run's first part
        start = min(float(r["cpu_seconds"]) for r in logs["e32"])
        logs["e32"] = [r for r in logs["e8"] if float(r["cpu_seconds"]) < start] + logs["e32"]
    fig, axes = plt.subplots(2, len(SPLITS), figsize=(5 * len(SPLITS), 7.5))
    summary = {}
    for col, (split, title) in enumerate(SPLITS):
        for name, label in RUNS:
            if name not in logs:
                continue
            pts = series(logs[name], split)
            if not pts:
                continue
            axes[0, col].plot([p[0] / 60 for p in pts], [p[2] for p in pts], marker=".", label=label)
            axes[1, col].plot([p[1] / 1e6 for p in pts], [p[2] for p in pts], marker=".", label=label)
            summary.setdefault(name, {})[split] = {"cpu_seconds": pts[-1][0], "tokens": pts[-1][1], "ce": pts[-1][2]}
        axes[0, col].set_title(f"held-out {title}")
        axes[0, col].set_xlabel("CPU minutes (one thread)")
        axes[1, col].set_xlabel("tokens (millions, inputs + targets)")
        for row in (0, 1):
            axes[row, col].set_ylabel("cross-entropy (nats/token)")
            axes[row, col].grid(alpha=0.3)
            axes[row, col].legend()
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "switch-scaling.png", dpi=90)
    (args.out / "switch-scaling.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
