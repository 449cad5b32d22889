"""The chart's reference from its commented ``values.yaml``: README table and schema annotations.

``values.yaml`` is the one place a chart value is explained: the ``# --`` comment
right above a key (continued by the ``#`` lines that follow it, as helm-docs reads
them) is that key's description. From it this module writes

- ``charts/trackrelay/README.md``: per top-level key, a table of key, type,
  default and description;
- the ``description`` and ``default`` annotations of ``values.schema.json`` (a
  default on every documented value that is not a group of documented keys),
  leaving every constraint as it is: the annotations are stripped and written
  again, so the committed schema is exactly what a run produces. Values the
  schema leaves free-form (``securityContext``, ``resources``) get property
  nodes that carry only annotations, which validate anything.

Every leaf value must be documented; an undocumented one stops the run naming it.
``make chart-docs`` writes both files; ``--check`` only compares (a unit test runs
the same comparison, so a values.yaml changed without regenerating fails it).

    python -m tests.support.chart_docs [--check]
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "trackrelay"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
_DOC = re.compile(r"^ *# -- ?(?P<text>.*)$")
_MORE = re.compile(r"^ *#(?: (?P<text>.*))?$")
ANNOTATIONS = ("description", "default")

Path_ = tuple[str, ...]


@dataclass(frozen=True)
class Value:
    """One documented key of values.yaml."""

    path: Path_
    description: str
    value: Any
    leaf: bool

    @property
    def key(self) -> str:
        return ".".join(self.path)


def descriptions(text: str) -> dict[Path_, str]:
    """The ``# --`` description of each key, by its path, read from the file's lines."""
    found: dict[Path_, str] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] | None = None
    for line in text.splitlines():
        if not line.strip():
            block = None
            continue
        doc = _DOC.match(line)
        if doc:
            block = [doc["text"].strip()]
            continue
        more = _MORE.match(line)
        if more:
            if block is not None:
                block.append((more["text"] or "").strip())
            continue
        key = _KEY.match(line)
        if key is None:
            raise ValueError(f"values.yaml: cannot read {line!r} (block mappings only)")
        indent = len(key["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key["key"]))
        if block is not None:
            found[tuple(k for _, k in stack)] = " ".join(part for part in block if part)
        block = None
    return found


def _leaves(value: Any, path: Path_ = ()) -> list[Path_]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, str(k)))]
    return [path]


def _at(data: Any, path: Path_) -> Any:
    for key in path:
        data = data[key]
    return data


def read_values(text: str) -> list[Value]:
    """Every documented key in file order; ``ValueError`` naming each undocumented leaf.

    A documented mapping none of whose keys has a description of its own (labels, say)
    is one value, its whole mapping the default; otherwise its keys are the values.
    """
    data = yaml.safe_load(text)
    docs = descriptions(text)
    unknown = [".".join(p) for p in docs if not _exists(data, p)]
    if unknown:
        raise ValueError("values.yaml: descriptions of no value: " + ", ".join(unknown))
    parents = {p[:i] for p in docs for i in range(len(p))}
    rows = {p for p in docs if p not in parents}
    missing = [
        ".".join(leaf)
        for leaf in _leaves(data)
        if not any(leaf[:i] in rows for i in range(1, len(leaf) + 1))
    ]
    if missing:
        raise ValueError("values.yaml: no '# --' description for " + ", ".join(missing))
    return [Value(p, d, _at(data, p), p in rows) for p, d in docs.items()]


def _exists(data: Any, path: Path_) -> bool:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


# -- the schema ----------------------------------------------------------------------


_SUBSCHEMAS = ("additionalProperties", "items", "not", "if", "then", "else")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "definitions", "$defs")


def strip(schema: Any) -> Any:
    """The schema without the annotations this module writes (its constraints alone).

    Only schema keywords are walked: a property named ``default``, or an enum
    holding objects, is data and stays as it is.
    """
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ANNOTATIONS:
            continue
        if key in _SUBSCHEMAS:
            out[key] = strip(value)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [strip(x) for x in value]
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            kept = {name: strip(sub) for name, sub in value.items()}
            kept = {name: sub for name, sub in kept.items() if sub != {}}
            if kept or key != "properties":
                out[key] = kept
        else:
            out[key] = value
    return out


def _node(schema: dict[str, Any], path: Path_) -> dict[str, Any]:
    node = schema
    for key in path:
        props = node.setdefault("properties", {})
        node = props.setdefault(key, {})
    return node


def annotate(schema: dict[str, Any], values: list[Value]) -> dict[str, Any]:
    """``schema``'s constraints with each documented value's description (and default)."""
    out: dict[str, Any] = strip(copy.deepcopy(schema))
    for v in values:
        node = _node(out, v.path)
        notes: dict[str, Any] = {"description": v.description}
        if v.leaf:
            notes["default"] = v.value
        rest = dict(node)
        node.clear()
        node.update(notes)
        node.update(rest)
    return out


# -- the README ----------------------------------------------------------------------

HEADER = """\
# trackrelay chart: values

<!-- Generated by `make chart-docs` (tests/support/chart_docs.py) from the comments in
values.yaml; edit those, not this file. A unit test fails when the two disagree. -->

Every value the chart takes, with its default. `values.schema.json` refuses
what would not work, naming the value. Installing, upgrading and what the chart
deploys: [docs/chart.md](../../docs/chart.md).

```sh
helm install shop charts/trackrelay --namespace shop --create-namespace \\
  --set analytics.url=http://analytics.example:8100     # or --set simulator.enabled=true
```
"""


def _type(value: Any, node: dict[str, Any]) -> str:
    given = node.get("type")
    if isinstance(given, str):
        return given
    if isinstance(given, list):
        return " or ".join(str(t) for t in given)
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _text(text: str) -> str:
    """Markdown for a comment: ``<`` outside code spans is text, not the start of HTML."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;")
    return "`".join(parts)


def _cell(text: str) -> str:
    return _text(text).replace("|", "\\|")


def find(schema: dict[str, Any], path: Path_) -> dict[str, Any]:
    """The schema node of a value (``{}`` where the schema says nothing about it)."""
    node = schema
    for key in path:
        node = node.get("properties", {}).get(key, {})
    return node


def readme(values: list[Value], schema: dict[str, Any]) -> str:
    """The chart README: a section per top-level key, a row per documented value."""
    sections: dict[str, tuple[str, list[Value]]] = {}
    loose: list[Value] = []
    for v in values:
        if len(v.path) > 1 or not v.leaf:
            title = f"`{v.path[0]}`"
            intro, rows = sections.setdefault(title, ("", []))
            if len(v.path) == 1:
                sections[title] = (v.description, rows)
            else:
                rows.append(v)
        else:
            loose.append(v)
    if loose:
        sections["Other top-level values"] = ("", loose)
    out = [HEADER]
    for title, (intro, rows) in sections.items():
        out.append(f"\n## {title}\n")
        if intro:
            out.append(f"\n{_text(intro)}\n")
        out.append("\n| Key | Type | Default | Description |\n| --- | --- | --- | --- |\n")
        for v in rows:
            default = f"`{json.dumps(v.value)}`" if v.leaf else ""
            kind = _type(v.value, find(schema, v.path))
            out.append(f"| `{v.key}` | {kind} | {_cell(default)} | {_cell(v.description)} |\n")
    return "".join(out)


# -- the files -----------------------------------------------------------------------


def generate(chart: Path = CHART) -> dict[Path, str]:
    """The README and schema the chart's values.yaml calls for, by path."""
    values = read_values((chart / "values.yaml").read_text())
    schema = annotate(json.loads((chart / "values.schema.json").read_text()), values)
    return {
        chart / "README.md": readme(values, schema),
        chart / "values.schema.json": json.dumps(schema, indent=2, ensure_ascii=False) + "\n",
    }


def stale(chart: Path = CHART) -> list[Path]:
    """The generated files whose committed text differs from what values.yaml calls for."""
    return [p for p, text in generate(chart).items() if not p.exists() or p.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    if args.check:
        behind = stale(args.chart)
        for path in behind:
            print(f"{path} is stale: run make chart-docs", file=sys.stderr)
        return 1 if behind else 0
    for path, text in generate(args.chart).items():
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
