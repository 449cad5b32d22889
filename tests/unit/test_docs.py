"""The documentation a newcomer walks: links resolve, the README stays short and true.

Every relative link in README.md, docs/*.md and the chart's README must name a file
or directory of the repository (and, for a Markdown file, a heading that exists);
README.md stays within 15 KiB (the pitch, the guarantees, the quick start, the map);
every path in its "Where to look" table exists, and every test its "Guarantees" table
names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PACKAGE = REPO / "services" / "trackrelay"
README_LIMIT = 15 * 1024

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def documents() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md")), REPO / "charts/trackrelay/README.md"]


def prose(text: str) -> str:
    """The text with code blocks removed (a link inside code is not a link)."""
    return _FENCE.sub("", text)


def links(text: str) -> list[str]:
    return _LINK.findall(_CODE.sub("", prose(text)))


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", plain.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {anchor(h) for h in _HEADING.findall(prose(path.read_text()))}


def broken_links(doc: Path, repo: Path = REPO) -> list[str]:
    """The relative links of ``doc`` that point at nothing, each with the reason."""
    bad = []
    for target in links(doc.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif not dest.is_relative_to(repo.resolve()):
            bad.append(f"{target}: outside the repository")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            bad.append(f"{target}: no heading #{fragment} in {dest.name}")
    return bad


_PATH_LINK = re.compile(r"\[`([^`]+)`\]\(([^)\s]+)\)")


def where_to_look(text: str) -> list[list[tuple[str, str]]]:
    """Each row of the README's "Where to look" table: its (path shown, link target) pairs."""
    section = text.split("## Where to look", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][2:]
    return [_PATH_LINK.findall(row.split("|", 2)[2]) for row in rows]


def missing_paths(rows: list[list[tuple[str, str]]], repo: Path = REPO) -> list[str]:
    """Paths of the table that do not exist, or whose link goes somewhere else.

    A path is shown relative to the repository or to ``services/trackrelay/``; its
    link is relative to the README.
    """
    bad = []
    for shown, target in (pair for row in rows for pair in row):
        dest = (repo / target).resolve()
        here = [p for p in (repo / shown, repo / "services" / "trackrelay" / shown) if p.exists()]
        if not here:
            bad.append(shown)
        elif not dest.exists() or dest != here[0].resolve():
            bad.append(f"{shown} -> {target}")
    return bad


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_at_something_in_the_repository(doc: Path) -> None:
    assert links(doc.read_text()), f"{doc} links nowhere: is the link pattern still right?"
    assert broken_links(doc) == []


def test_a_broken_link_is_reported(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "[ok](there.md) [ok too](there.md#a-heading) [gone](missing.md) "
        "[no anchor](there.md#elsewhere) [web](https://example.com/x.md)\n"
        "```\n[in code](nowhere.md)\n```\n`[inline](nowhere.md)` ![img](pic.png)\n"
    )
    assert broken_links(doc, tmp_path) == [
        "missing.md: no such file",
        "there.md#elsewhere: no heading #elsewhere in there.md",
        "pic.png: no such file",
    ]


def test_the_readme_stays_short() -> None:
    assert len(README.read_bytes()) <= README_LIMIT


def test_every_path_in_the_where_to_look_table_exists() -> None:
    rows = where_to_look(README.read_text())
    assert len(rows) >= 10
    assert all(row for row in rows), "a row names no path"
    assert missing_paths(rows) == []


def test_the_where_to_look_table_answers_the_four_questions() -> None:
    rows = {
        r.split("|")[1].strip(): r for r in README.read_text().splitlines() if r.startswith("| ")
    }
    for topic, paths in {
        "workers never take the same data": ["control/lease.py", "forwarder/worker.py"],
        "we push to analytics": ["forwarder/sink.py"],
        "rise and fall with analytics' health, one shared budget": [
            "control/limiter.py",
            "control/controller.py",
            "queue/rate_budget.py",
        ],
        "shed under the quota, never orders": ["control/shedding.py", "queue/quota.py"],
    }.items():
        assert topic in rows
        for path in paths:
            assert f"`{path}`" in rows[topic]


def test_a_missing_path_in_the_table_is_reported(tmp_path: Path) -> None:
    (tmp_path / "services" / "trackrelay" / "control").mkdir(parents=True)
    (tmp_path / "services" / "trackrelay" / "control" / "lease.py").write_text("")
    table = (
        "## Where to look\n\n| for | look in |\n| --- | --- |\n"
        "| leases | [`control/lease.py`](services/trackrelay/control/lease.py), `SKIP LOCKED`,"
        " [`control/gone.py`](services/trackrelay/control/gone.py),"
        " [`control/lease.py`](services/trackrelay/elsewhere.py) |\n\n## Next\n"
    )
    rows = where_to_look(table)
    assert [shown for shown, _ in rows[0]] == [
        "control/lease.py",
        "control/gone.py",
        "control/lease.py",
    ]
    assert missing_paths(rows, tmp_path) == [
        "control/gone.py",
        "control/lease.py -> services/trackrelay/elsewhere.py",
    ]


def test_every_crd_field_is_in_the_operator_reference() -> None:
    crd = yaml.safe_load(
        (REPO / "manifests/crds/analyticspipelines.trackrelay.io.yaml").read_text()
    )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def fields(node: dict[str, object], path: str) -> list[str]:
        props = node.get("properties")
        if not isinstance(props, dict):
            return [path]
        return [f for k, v in props.items() for f in fields(v, f"{path}.{k}")]

    reference = (REPO / "docs/operator.md").read_text()
    missing = [f for f in fields(schema, "spec") if f"`{f}`" not in reference]
    assert missing == []


def test_every_test_the_guarantees_name_exists() -> None:
    text = README.read_text()
    start = text.index("## Guarantees")
    named = re.findall(r"`(test_\w+\.py)(?:::(\w+))?`", text[start : text.index("\n## ", start)])
    assert len(named) >= 10
    for path, name in named:
        found = list((REPO / "tests").rglob(path))
        assert found, f"README names {path}, which is not under tests/"
        if name:  # a file name may be in two tiers (cluster/, e2e/): one must define it
            pattern = rf"^(async )?def {name}\("
            assert any(re.search(pattern, f.read_text(), re.M) for f in found), f"{path}::{name}"
