"""The README and docs/ say what the code does, and stay usable: the README is a one-screen
front door, every link lands, the pages read as a reference rather than a work diary, and
what they draw or show as an example comes from the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from catalog.mermaid import flowchart
from contracts.orders import OrderRequested
from contracts.schemas import SCHEMA_DIR
from sagas.order import order_saga

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "architecture.md"
README_MAX_LINES = 250

# [text](target) or ![alt](target "title"); the text may hold one level of brackets.
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
# Words of a work diary: the first person, the session, the machine it ran on. "I/O" is an
# abbreviation, not the pronoun.
DIARY = [re.compile(p) for p in (
    r"\bI\b(?!/O)", r"\b[Ww]e\b", r"\b[Oo]ur\b", r"(?i)\bthis session\b", r"(?i)\b(?:I|we) tried\b",
    r"(?i)\bthere was no time\b", r"(?i)\bbuild (?:machine|host)s?\b")]


def pages() -> list[Path]:
    """The README and every markdown page of docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def _name(page: Path) -> str:
    """The page's path from the repository's root (its bare name outside the repository)."""
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name


def prose(text: str) -> str:
    """The text with fenced code blocks blanked (line numbers kept): what renders as prose."""
    out, fence = [], ""
    for line in text.split("\n"):
        marker = re.match(r"^\s*(`{3,}|~{3,})", line)
        if fence:
            if marker and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence):
                fence = ""
            out.append("")
        elif marker:
            fence = marker.group(1)
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (code spans and link targets dropped),
    lowercased, punctuation other than hyphens and spaces removed, spaces made hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(2).strip(), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown page; repeated headings get -1, -2, ... as on GitHub."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(page.read_text(encoding="utf-8")).split("\n"):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(page: Path) -> list[str]:
    """The targets of the page's markdown links and images, outside code."""
    text = INLINE_CODE.sub("code", prose(page.read_text(encoding="utf-8")))
    return LINK.findall(text)


def broken_links(page: Path) -> list[str]:
    """The page's relative links whose file, or whose heading in a markdown file, is missing."""
    broken = []
    for target in links(page):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {_name(dest)})")
    return broken


def diary_words(page: Path) -> list[str]:
    """Lines of prose (outside code) that read like a work diary."""
    text = INLINE_CODE.sub("code", prose(page.read_text(encoding="utf-8")))
    return [f"{_name(page)}:{n}: {line.strip()}"
            for n, line in enumerate(text.split("\n"), 1)
            if any(p.search(line) for p in DIARY)]


def test_the_readme_fits_on_one_screen() -> None:
    """The README is the front door: what the product is, how to run it and its tests, and
    where to read on. Long-form material belongs in docs/, so the README stays within
    README_MAX_LINES lines."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; move long-form material into docs/")


@pytest.mark.parametrize("page", pages(), ids=_name)
def test_every_relative_link_lands(page: Path) -> None:
    """Moving text between pages breaks links silently: every relative link of the README
    and of docs/*.md must reach an existing file and, for #anchors into markdown, an
    existing heading (by GitHub's slug rule)."""
    assert broken_links(page) == []


def test_the_readme_links_every_doc() -> None:
    """The README's links are the way into docs/: a page nobody links to is never read."""
    linked = {(README.parent / t.partition("#")[0]).resolve()
              for t in links(README) if not SCHEME.match(t) and not t.startswith("#")}
    unlinked = [_name(p) for p in sorted(DOCS.iterdir())
                if p.is_file() and p.suffix in {".md", ".yaml"} and p.resolve() not in linked]
    assert unlinked == []


@pytest.mark.parametrize("page", pages(), ids=_name)
def test_no_page_reads_like_a_work_diary(page: Path) -> None:
    """Documentation speaks about the product in the present tense; first-person notes of
    how a result was reached ("I", "this session", "we tried") age into confusion."""
    assert diary_words(page) == []


def test_the_architecture_flowchart_is_the_generated_one() -> None:
    """The ```mermaid block of docs/architecture.md is exactly `sagactl definitions show
    order --mermaid`: the flow is drawn from the definition, never by hand."""
    blocks = re.findall(r"```mermaid\n(.*?)```", ARCHITECTURE.read_text(encoding="utf-8"), re.S)
    assert blocks == [flowchart(order_saga())]


def test_the_readme_order_request_is_valid() -> None:
    """The README's example order is what a client copies first: it must pass both the
    published JSON Schema and the pydantic model the orchestrator validates with."""
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    bodies = [json.loads(b) for b in blocks]
    orders: list[dict[str, Any]] = [b for b in bodies if isinstance(b, dict) and "items" in b]
    assert orders, "README.md shows no example order request"
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / "order.requested.json").read_text())
    for body in orders:
        jsonschema.validate(body, schema)
        OrderRequested.model_validate(body)


# The checks above must be able to fail: the helpers, on a page written to fail them.

def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    """A missing file, a missing heading and a diary line are found; code blocks, inline
    code, "I/O", absolute URLs and GitHub's anchors for punctuated, code-bearing and repeated
    headings are left alone."""
    (tmp_path / "other.md").write_text(
        '# Known limits\n\n## The follow-up to "needs attention"\n'
        "## Run it locally: `sagactl up`\n## Same\n## Same\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "# Title",
        "[ok](other.md#known-limits) [ok](other.md#the-follow-up-to-needs-attention)",
        "[ok](other.md#run-it-locally-sagactl-up) [ok](other.md#same-1) [ok](#title)",
        "[gone](missing.md) [bad](other.md#known-limit) [ok](https://example.com/x)",
        "`[not a link](nowhere.md)` and no I/O here",
        "```sh",
        "echo [not a link](nowhere.md)   # I ran this",
        "```",
        "Then I tried again in this session.",
    ]), encoding="utf-8")
    assert broken_links(page) == ["missing.md (no such file)",
                                  "other.md#known-limit (no heading #known-limit in other.md)"]
    assert diary_words(page) == ["page.md:9: Then I tried again in this session."]
