"""The chart's README and schema annotations are what its commented values.yaml says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support import chart_docs
from tests.support.chart_docs import CHART, find, read_values

VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text())
    return loaded


def leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict) and value:
        return [x for k, v in value.items() for x in leaves(v, (*path, k))]
    return [(path, value)]


def defaults(node: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every ``default`` in the schema's property tree, by value path."""
    found = [(path, node["default"])] if "default" in node else []
    for key, sub in node.get("properties", {}).items():
        found += defaults(sub, (*path, key))
    return found


def test_the_committed_chart_readme_and_schema_are_what_values_yaml_generates() -> None:
    assert chart_docs.stale() == [], "run make chart-docs and commit the result"


def test_every_schema_default_equals_the_value_in_values_yaml() -> None:
    values = yaml.safe_load(VALUES.read_text())
    found = defaults(schema())
    assert len(found) > 50
    for path, default in found:
        node: Any = values
        for key in path:
            assert isinstance(node, dict) and key in node, f"{'.'.join(path)} not in values.yaml"
            node = node[key]
        assert default == node, f"{'.'.join(path)}: schema default {default!r}, values {node!r}"
        assert type(default) is type(node), ".".join(path)


def test_every_value_the_chart_sets_has_a_description_and_a_default_in_the_schema() -> None:
    values = yaml.safe_load(VALUES.read_text())
    tree = schema()
    for path, _ in leaves(values):
        # the value's own node, or the documented mapping that holds it (labels)
        nodes = [find(tree, path[:i]) for i in range(len(path), 0, -1)]
        documented = [node for node in nodes if "default" in node]
        assert documented, f"{'.'.join(path)} has no default in the schema"
        assert documented[0]["description"].strip(), ".".join(path)
    for v in read_values(VALUES.read_text()):
        assert find(tree, v.path)["description"] == v.description


def test_the_annotated_schema_still_accepts_the_charts_values_and_refuses_bad_ones() -> None:
    tree = schema()
    jsonschema.Draft7Validator.check_schema(tree)
    check = jsonschema.Draft7Validator(tree)
    values = yaml.safe_load(VALUES.read_text())
    check.validate(values)
    for extra in sorted((CHART / "ci").glob("*.yaml")):
        check.validate(yaml.safe_load(extra.read_text()))
    with pytest.raises(jsonschema.ValidationError):
        check.validate(values | {"queue": {"quotaMiB": 0}})
    with pytest.raises(jsonschema.ValidationError):
        check.validate(values | {"orders": values["orders"] | {"replica": 2}})


def test_the_generator_leaves_every_constraint_as_it_was() -> None:
    tree = schema()
    bare = chart_docs.strip(tree)
    assert "description" not in json.dumps(bare)
    assert chart_docs.annotate(bare, read_values(VALUES.read_text())) == tree


def copy_chart(tmp_path: Path) -> Path:
    chart = tmp_path / "chart"
    chart.mkdir()
    for name in ("values.yaml", "values.schema.json", "README.md"):
        shutil.copy(CHART / name, chart / name)
    assert chart_docs.stale(chart) == []
    return chart


def test_a_values_yaml_changed_without_regenerating_is_caught(tmp_path: Path) -> None:
    chart = copy_chart(tmp_path)
    values = chart / "values.yaml"
    text = values.read_text()
    values.write_text(text.replace("  quotaMiB: 64\n", "  quotaMiB: 128\n"))
    assert sorted(p.name for p in chart_docs.stale(chart)) == ["README.md", "values.schema.json"]
    assert chart_docs.main(["--check", "--chart", str(chart)]) == 1

    values.write_text(text.replace("# -- events/s it accepts", "# -- events per second it takes"))
    assert [p.name for p in chart_docs.stale(chart)] == ["README.md", "values.schema.json"]

    assert chart_docs.main(["--chart", str(chart)]) == 0
    assert chart_docs.stale(chart) == []
    assert "events per second it takes" in (chart / "README.md").read_text()


def test_an_undocumented_value_stops_the_generator(tmp_path: Path) -> None:
    chart = copy_chart(tmp_path)
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("  # -- the simulator's port\n", ""))
    with pytest.raises(ValueError, match=r"simulator\.port"):
        chart_docs.generate(chart)


def test_comments_are_read_as_helm_docs_reads_them() -> None:
    text = """\
# a file header, not a description

# -- The group.
group:
  # -- first line
  # continued
  leaf: 1
  # a plain comment describes nothing
  # -- the labels, as one value
  labels:
    a: "1"
"""
    got = {v.key: (v.description, v.value, v.leaf) for v in read_values(text)}
    assert got == {
        "group": ("The group.", {"leaf": 1, "labels": {"a": "1"}}, False),
        "group.leaf": ("first line continued", 1, True),
        "group.labels": ("the labels, as one value", {"a": "1"}, True),
    }
