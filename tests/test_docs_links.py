"""Every relative link in the Markdown files of the repository root and docs/ points at a file
that exists, and a link's #anchor at a heading of the file it names (GitHub's heading ids).

The README links into docs/ and docs/ back into the README and docs/sweeps/; a file moved or a
heading renamed would leave a dead link that nothing else notices.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`[^`]*`")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
EXTERNAL = ("http://", "https://", "mailto:")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def anchors(text: str) -> set[str]:
    """GitHub's ids for the headings of a Markdown text: the heading's text lowercased, every
    character that is not a letter, digit, '_', '-' or space dropped, spaces turned into '-';
    a repeated id gets -1, -2, ... appended."""
    seen: dict[str, int] = {}
    ids = set()
    for line in prose_lines(text):
        m = HEADING.match(line)
        if not m:
            continue
        title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1)).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids


def broken_links(md: Path) -> list[str]:
    """'file: link (why)' for each relative link of ``md`` that does not resolve."""
    problems = []
    for line in prose_lines(md.read_text(encoding="utf-8")):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if target.startswith(EXTERNAL):
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / unquote(path)).resolve() if path else md
            if not dest.exists():
                problems.append(f"{md.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{md.relative_to(ROOT)}: {target} (no heading with that id)")
    return problems


def markdown_files() -> list[Path]:
    return sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").glob("*.md"))


def test_every_relative_link_resolves():
    files = markdown_files()
    assert ROOT / "README.md" in files and ROOT / "docs" / "experiments.md" in files
    problems = [p for md in files for p in broken_links(md)]
    assert not problems, "dead links:\n" + "\n".join(problems)


def test_the_check_sees_a_dead_file_and_a_dead_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A title: with `code` and λ\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    md = tmp_path / "README.md"
    md.write_text("[ok](docs/a.md#a-title-with-code-and-λ) [ok](docs/a.md#twice-1) [ok](#top)\n"
                  "# Top\n"
                  "`[in code](docs/none.md)`\n```\n[in a fence](docs/none.md)\n```\n"
                  "[bad](docs/none.md) ![bad](docs/a.md#nowhere) [ext](https://example.com/x.md)\n",
                  encoding="utf-8")
    assert broken_links(md) == ["README.md: docs/none.md (no such file)",
                                "README.md: docs/a.md#nowhere (no heading with that id)"]
