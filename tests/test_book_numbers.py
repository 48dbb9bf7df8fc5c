"""Every number in a chapter's prose is computed: glued from a cell, or a quoted constant with a source.

The prose is the Markdown outside code cells. A number in it must be one of:
- a {glue} role (the value comes from a cell that computed it);
- a constant in QUOTED below, each with its source (the paper, the RSNA challenge, a standard);
  a key with words ("7 carpals", "batch of 8", "256 pixels") quotes its number only inside that
  phrase, a bare key anywhere. Bare keys are only the definitions 0, 1 and 95 and figures too
  distinctive to occur by chance (a decimal such as 9.3, a count with a thousands separator such
  as 10,088): a bare "8" would let any 8 through (CLAHE's 8 x 8 tiles, a preset's size, a ratio);
- a year (1900-2039), a chapter, exercise, table, figure, equation or stage number, a
  numbered-list marker, or the reading time of an objectives box ("about 30 minutes to read",
  an editor's estimate; the run time beside it is glued).
Numbers inside code spans, math (inline, $$ and {math} blocks), directive options and a
citation's volume, issue and pages ("2019;290(2):498-503") are not prose.

Typed numbers that were in the chapters before this test were listed in
tests/book_numbers_pending.txt, one per line with the words around them; the list may only
shrink (a number not in it fails, and an entry that no longer matches fails too), and it is
empty now: every number in the chapters' prose is glued or quoted.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import book  # noqa: E402  (tools/book.py)

PENDING = ROOT / "tests" / "book_numbers_pending.txt"
PAPER = "Sirati-Amsheh et al. 2025 (../shared/PAPER.md)"
RSNA = "Halabi et al., Radiology 2019 (the RSNA challenge)"
TW = "Tanner, Whitehouse et al., TW2, Academic Press 1975; Tanner, Healy, Goldstein, Cameron, TW3, Saunders 2001"
QUOTED = {
    "9.3": f"headline test MAE, months: {PAPER}",
    "12,611": f"RSNA training images: {PAPER}; {RSNA}",
    "10,088": f"training split: {PAPER}", "2,323": f"validation split: {PAPER}",
    **{phrase: f"the test set, 200 images (AE-BoNet's random split and RSNA's official test set alike): {PAPER}; {RSNA}"
       for phrase in ("200 test images", "200-image test", "200 for testing", "10,088 / 2,323 / 200", "200 images",
                      "200 children")},
    "1,425": f"official validation images: {RSNA}",
    "14,236": f"radiographs released in all (training, validation, test): {RSNA}",
    "127.3": "mean bone age of the RSNA training labels, months (boneage-training-dataset.csv)",
    "41.2": "SD of the RSNA training labels, months (boneage-training-dataset.csv)",
    "54 % boys": "per cent boys among the RSNA training labels (boneage-training-dataset.csv)",
    "5,778": f"girls: {PAPER}", "6,833": f"boys: {PAPER}",
    **{phrase: f"oldest bone age, months: {PAPER}" for phrase in ("228 months", "1 to 228", "1-228 months")},
    **{phrase: f"autoencoder epochs (Table 2's five stages): {PAPER}" for phrase in (
        "900 epochs", "900 autoencoder epochs", "paper's 900")},
    **{phrase: f"image size (Table 1): {PAPER}" for phrase in ("256 x 256", "256 pixels", "256-pixel", "256 px")},
    "450 pixels": f"Table 5's larger image size: {PAPER}",
    **{phrase: f"filters of the four blocks and the bottleneck: {PAPER}" for phrase in (
        "64 to 512 filters", "fifth filter count, 1024", "1024 channels", "1024 features",
        "1 to 64, 64 to 128, 128 to 256, 256 to 512 and 512 to 1024 channels")},
    **{phrase: f"learning rate (Tables 1 and 3): {PAPER}" for phrase in ("learning rate of 0.001", "paper's 0.001")},
    "14.78": f"Wibisono et al. 2019 in Table 4: {PAPER}", "9.997": f"Gao et al. 2020 in Table 4: {PAPER}",
    "9.9": f"AE-BoNet at 450 px, Table 5: {PAPER}",
    **{value: f"Table 2 (per-stage MSE, accuracy): {PAPER}" for value in (
        "0.000206", "0.000172", "0.000166", "0.000156", "0.000148",
        "0.4866", "0.6169", "0.6819", "0.6830", "0.6839")},
    **{value: f"Table 5 (MAE and MSE of the ImageNet backbones at 450 and 256 px): {PAPER}" for value in (
        "14.7", "352.8", "16.1", "413.6", "15.8", "427.6", "19.1", "661.2", "13.6", "295.5",
        "416.3", "12.5", "268.8", "12.9", "296.8", "161.1", "144.6")},
    **{phrase: f"autoencoder batch size (Table 1): {PAPER}" for phrase in ("batch 8", "batch of 8", "paper's 8")},
    **{phrase: f"regressor batch size (Table 3): {PAPER}" for phrase in ("batch 16", "batches of 16")},
    "Dense(10": f"units of the head's Dense layer (Table 3): {PAPER}",
    **{phrase: "the width of float16 (IEEE 754-2008 binary16) and bfloat16 (Google Brain's format), mixed precision's types"
       for phrase in ("16 bits", "16-bit")},
    "10-bit mantissa": "TF32's mantissa (8-bit exponent, 10-bit mantissa): NVIDIA A100 Tensor Core GPU Architecture whitepaper, 2020",
    **{phrase: f"{what}: {TW}" for phrase, what in (
        ("20 bones", "the bones TW2 stages (13 RUS and 7 carpals)"), ("13 RUS bones", "radius, ulna, short bones"),
        ("11 short bones", "metacarpals and phalanges of the thumb, middle and little fingers"),
        ("7 carpals", "the carpals TW stages, all but the pisiform"))},
    "rounded at 0.5": "the threshold of Keras's binary accuracy (keras.metrics.BinaryAccuracy, threshold=0.5)",
    "4.2 to 4.5 months": f"MAD of the five best challenge entries (4.2, 4.4, 4.4, 4.5, 4.5): {RSNA}",
    "3.35 against 4.8 TB/s": "memory bandwidth, NVIDIA H100 SXM datasheet (3.35 TB/s) and H200 datasheet (4.8 TB/s)",
    "65 TFLOP/s": "mixed-precision (FP16/FP32) tensor-core peak, NVIDIA T4 datasheet",
    "at most 12 hours": "the longest a free Colab notebook runs (Google Colaboratory FAQ)",
    "0": "zero: a definition (an interval that excludes 0, a label 0 for girls), not a measurement",
    "1": "one: a definition (Dense(1), a label 1 for boys), not a measurement",
    "95": "the confidence level of every interval in the course, a convention",
}
CONTEXT_OK = re.compile(r"(?:[Cc]hapters?|[Ee]xercises?|[Tt]ables?|[Ff]igures?|[Ee]quations?|[Ss]tages?|TW|Keras|Python|"
                        r"Jupyter Book)\s+(?:\d+(?:\s+and|\s+to|,)\s+)*$")
NUMBER = re.compile(r"(?<![\w.\-+/])[-+−]?\d+(?:[,.]\d+)*(?![\w])")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """Return (line number, text) of the lines outside code cells and literal code blocks."""
    hidden = set()
    for token in MarkdownIt("commonmark").parse(text):
        if token.type in ("fence", "code_block") and token.map and (
                token.info.startswith(("{code-cell}", "{math}")) or not token.info.startswith("{")):
            hidden.update(range(token.map[0], token.map[1]))
    front = text.split("\n---\n", 1)[0].count("\n") + 2 if text.startswith("---") else 0
    return [(i + 1, line) for i, line in enumerate(text.splitlines()) if i not in hidden and i >= front]


def strip_non_prose(line: str) -> str:
    """Blank out what is not prose: glue and other roles, code spans, math, link targets, directive lines."""
    line = re.sub(r"\{[\w:-]+\}`[^`]*`", " ", line)
    line = re.sub(r"`[^`]*`", " ", line)
    line = re.sub(r"\$\$.*?\$\$|\$[^$]*\$", " ", line)
    line = re.sub(r"\]\([^)]*\)", "]", line)
    line = re.sub(r"\b(?:19|20)\d\d;\d+\(\d+\):\d+(?:-\d+)?", " ", line)   # a citation: year;volume(issue):pages
    line = re.sub(r"^\s*:\w+:.*", " ", line)
    line = re.sub(r"^\s*(?:[`:]{3,}.*|\(\S+\)=\s*)$", " ", line)
    return re.sub(r"^\s*\d+\.\s", " ", line)            # an ordered list's marker


PHRASES = [re.compile(r"(?<![\w.])" + r"[\s*_]+".join(map(re.escape, key.split())) + r"(?!\w)")
           for key in QUOTED if not NUMBER.fullmatch(key)]


def quoted(text: str, match: re.Match) -> bool:
    """Say whether a number is a quoted constant: a bare key, or inside one of the quoted phrases."""
    if match.group(0).lstrip("+-−") in QUOTED:
        return True
    return any(m.start() <= match.start() and match.end() <= m.end()
               for phrase in PHRASES for m in phrase.finditer(text))


def typed_numbers(source: Path) -> list[tuple[int, str, str]]:
    """Return (line, number, the line's prose) for each number a chapter's prose types."""
    found = []
    for number, line in prose_lines(source.read_text()):
        text = strip_non_prose(line)
        for match in NUMBER.finditer(text):
            value = match.group(0).lstrip("+-−")
            if quoted(text, match) or (len(value) == 4 and value.isdigit() and 1900 <= int(value) < 2040):
                continue
            if CONTEXT_OK.search(text[:match.start()]) or re.match(r"\.\d", text[match.end():]):
                continue
            if re.match(r"\s+minutes to read", text[match.end():]):   # an editor's reading-time estimate
                continue
            found.append((number, value, " ".join(text.split())))
    return found


def pending_entries() -> set[tuple[str, str, str]]:
    """Return the (chapter, number, prose) entries of the pending list."""
    entries = set()
    for line in PENDING.read_text().splitlines() if PENDING.exists() else []:
        if line.strip() and not line.startswith("#"):
            chapter, number, prose = line.split("\t", 2)
            entries.add((chapter, number, prose))
    return entries


CHAPTERS = [s for s in book.chapter_sources() if book.chapter_number(s)]


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.stem)
def test_prose_numbers_are_glued_or_quoted(source):
    pending = pending_entries()
    new = [(line, number, prose) for line, number, prose in typed_numbers(source)
           if (source.stem, number, prose) not in pending]
    assert not new, (f"{source.name}: numbers typed in prose; compute them in a cell and glue them "
                     "({glue:text}`name`), or quote a sourced constant in tests/test_book_numbers.py:\n"
                     + "\n".join(f"  line {line}: {number!r} in: {prose[:140]}" for line, number, prose in new))


def test_pending_list_only_shrinks():
    current = {(s.stem, number, prose) for s in CHAPTERS for _, number, prose in typed_numbers(s)}
    stale = sorted(pending_entries() - current)
    assert not stale, ("these entries of tests/book_numbers_pending.txt no longer occur; delete them:\n"
                       + "\n".join("\t".join(e)[:160] for e in stale[:20]))


def test_a_typed_number_is_caught(tmp_path):
    """A quoted phrase covers its number only in that phrase; a citation and a glue role are not prose."""
    source = tmp_path / "ch9_example.md"
    source.write_text("TW3 scores 7 carpals in 7 epochs (Halabi et al., Radiology 2019;290(2):498-503);\n"
                      "the MAE is {glue:text}`mae` months, not 4.2 months, and 4.2 to 4.5 months is quoted.\n"
                      "CLAHE cuts 8 x 8 tiles; the paper trains at batch 8 on 256 x 256 images, 16 times more pixels;\n"
                      "200 different seeds move the mean of the paper's 200 test images.\n"
                      "```{math}\nx = 12.5\n```\n")
    assert [number for _, number, _ in typed_numbers(source)] == ["7", "4.2", "8", "8", "16", "200"]


def test_quoted_constants_have_sources():
    assert all(source.strip() for source in QUOTED.values())
    assert all(NUMBER.search(key) for key in QUOTED), "a quoted phrase must hold the number it quotes"
    loose = [key for key in QUOTED if NUMBER.fullmatch(key) and key not in ("0", "1", "95")
             and not re.search(r"\d[.,]\d", key)]
    assert not loose, f"bare keys quote every occurrence of a number; give these a phrase: {loose}"


if __name__ == "__main__":   # python tests/test_book_numbers.py > tests/book_numbers_pending.txt
    print("# Numbers still typed in the chapters' prose, to be glued from cells: chapter<TAB>number<TAB>prose.")
    print("# The list may only shrink (tests/test_book_numbers.py).")
    for source in CHAPTERS:
        for entry in sorted({(source.stem, number, prose) for _, number, prose in typed_numbers(source)}):
            print("\t".join(entry))
