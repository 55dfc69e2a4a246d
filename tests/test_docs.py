"""The documentation holds together: every relative link in README.md, data/README.md and
docs/**/*.md reaches a file (and a `#anchor` a heading of that file), every docs page can be
reached from README, and README stays a short guide."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import ROOT

README_MAX_LINES = 260
"README.md is the first-ten-minutes guide; the rest lives under docs/"

LINK = re.compile(r"(?<!\\)!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text], one nested [..] allowed
                  r"\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # (target "title")
"an inline markdown link or image, ``[text](target)`` or ``[text](target \"title\")``"
FENCE = re.compile(r"^(```|~~~)")


def docs_pages() -> list[Path]:
    return sorted((ROOT / "docs").rglob("*.md"))


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "data" / "README.md", *docs_pages()]


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (links there are not links)."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", "\n".join(lines), flags=re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (inline markup and link targets dropped)
    lowercased, every character but letters, digits, spaces, '-' and '_' dropped, each space a
    '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text, not its target
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2, ... for repeats."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        match = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return LINK.findall(_prose(path.read_text(encoding="utf-8")))


def test_slug_follows_github() -> None:
    assert slug("Use your own data") == "use-your-own-data"
    assert slug("`pocketbert serve` under load and hostile input") == (
        "pocketbert-serve-under-load-and-hostile-input")
    assert slug("2026-11-30: A BERT-large-sized teacher (every stage under 16 GiB)") == (
        "2026-11-30-a-bert-large-sized-teacher-every-stage-under-16-gib")
    assert slug("A student of its own (`train_student.init`)") == (
        "a-student-of-its-own-train_studentinit")
    assert slug("Can it agree on 99% of sentences? (no)") == "can-it-agree-on-99-of-sentences-no"


def test_links_are_found_outside_code(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text('See [a](a.md#x) and ![b](img/b.png "t").\n`[c](c.md)`\n```\n[d](d.md)\n```\n',
                    encoding="utf-8")
    assert links(page) == ["a.md#x", "img/b.png"]
    page.write_text("# Title\n## Title\n```\n# not a heading\n```\n", encoding="utf-8")
    assert anchors(page) == {"title", "title-1"}


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # https:, mailto:, ...: not a file of this repository
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: {linked} does not exist")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


def test_docs_are_linked_from_readme() -> None:
    """Every docs page is reachable from README (directly or through another docs page)."""
    reached, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for target in links(page):
            file_part = target.partition("#")[0]
            if file_part.endswith(".md") and "://" not in file_part:
                linked = (page.parent / unquote(file_part)).resolve()
                if linked.is_file() and ROOT / "docs" in linked.parents:
                    todo.append(linked)
    missing = [str(p.relative_to(ROOT)) for p in docs_pages() if p.resolve() not in reached]
    assert not missing, f"not reachable from README.md: {missing}"


def test_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < README_MAX_LINES, (
        f"README.md has {lines} lines (limit {README_MAX_LINES}): move detail to docs/")


def test_the_layout_tree_names_every_module() -> None:
    """docs/design.md's tree lists each library and driver module once, and no module that
    is gone: the house as drawn is the house as built."""
    tree = (ROOT / "docs/design.md").read_text(encoding="utf-8").split("```text", 1)[1]
    tree = tree.split("```", 1)[0]
    drawn = re.findall(r"^\s+([a-z0-9_]+\.py)\s", tree, re.M)
    built = [p.name for folder in (ROOT / "src/pocketbert", ROOT / "runs")
             for p in folder.rglob("*.py") if p.name != "__init__.py"]
    assert sorted(drawn) == sorted(built)
