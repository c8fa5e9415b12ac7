#!/usr/bin/env python3
"""Draws Switchscope's app icons (PNG) for the web app manifest.

    python tools/icons/make_icons.py      (needs Pillow; writes public/icons/*.png)

The motif is public/icon.svg's: one token (left) routed to one of three experts (right), the
chosen route in blue. Maskable icons keep the motif inside the central 80 % safe zone.
"""

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[2] / "public" / "icons"
BG = (21, 23, 26, 255)
FG = (232, 234, 237, 255)
MUTED = (154, 163, 173, 255)
BLUE = (0, 114, 178, 255)
EXPERTS = [(230, 159, 0, 255), BLUE, (0, 158, 115, 255)]


def draw(size: int, maskable: bool) -> Image.Image:
    scale = 4  # draw large, then downsample for smooth edges
    s = size * scale
    img = Image.new("RGBA", (s, s), BG if maskable else (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    if not maskable:
        d.rounded_rectangle([0, 0, s - 1, s - 1], radius=s * 12 // 64, fill=BG)
    # The 64-unit drawing of icon.svg, shrunk into the safe zone when maskable.
    k = s / 64 * (0.72 if maskable else 1.0)
    o = (s - 64 * k) / 2

    def p(x, y):
        return (o + x * k, o + y * k)

    def dot(x, y, r, colour):
        (cx, cy) = p(x, y)
        d.ellipse([cx - r * k, cy - r * k, cx + r * k, cy + r * k], fill=colour)

    for y in (14, 50):
        pts = [p(20 + t * 26, 32 + (y - 32) * (3 * (t**2) - 2 * (t**3))) for t in [i / 24 for i in range(25)]]
        d.line(pts, fill=MUTED, width=max(1, int(2.5 * k)))
    d.line([p(20, 32), p(46, 32)], fill=BLUE, width=max(1, int(4 * k)))
    dot(14, 32, 6, FG)
    for y, colour in zip((14, 32, 50), EXPERTS):
        dot(50, y, 5, colour)
    return img.resize((size, size), Image.LANCZOS)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for size in (192, 512):
        draw(size, False).save(OUT / f"icon-{size}.png", optimize=True)
        draw(size, True).save(OUT / f"maskable-{size}.png", optimize=True)
    draw(180, True).save(OUT / "apple-touch-icon.png", optimize=True)
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
