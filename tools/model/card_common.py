"""What the parts of the model card share: the paths of this directory, the names of the two
translation directions, and the helpers that write Markdown.

eval_and_card.py assembles the card from card_translation.py, card_training.py, card_span.py and
card_experts.py; they all import this module, and none of them imports eval_and_card.py.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DIRECTION_NAMES = {"en-es": "English → Spanish", "es-en": "Spanish → English"}


def md_escape(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", "⏎")


def tok_list(toks: list[str], n: int = 8) -> str:
    return " ".join(f"`{md_escape(t).replace('`', 'ˋ')}`" for t in toks[:n])


def fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})
