"""skaffold.yaml against skaffold's own JSON schema, and against the chart it deploys.

The schema (``docs-v2/content/en/schemas/v4beta13.json``) ships in skaffold's Go
module, fetched once from the Go module proxy into the module cache; building
skaffold itself is not needed to validate its configuration.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SKAFFOLD_MODULE = "github.com/GoogleContainerTools/skaffold/v2@v2.16.1"
SCHEMA_PATH = "docs-v2/content/en/schemas/v4beta13.json"

pytestmark = pytest.mark.needs("go")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    done = subprocess.run(
        ["go", "mod", "download", "-json", SKAFFOLD_MODULE],
        capture_output=True, text=True, timeout=600, env={**os.environ, "GOFLAGS": "-mod=mod"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    module = Path(json.loads(done.stdout)["Dir"])
    loaded: dict[str, Any] = json.loads((module / SCHEMA_PATH).read_text())
    return loaded


@pytest.fixture
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    return loaded


def test_skaffold_yaml_matches_the_schema_of_its_api_version(
    schema: dict[str, Any], config: dict[str, Any]
) -> None:
    assert config["apiVersion"] == "skaffold/v4beta13"
    jsonschema.validate(config, schema)


def test_the_schema_refuses_a_misspelt_field(
    schema: dict[str, Any], config: dict[str, Any]
) -> None:
    broken = copy.deepcopy(config)
    release = broken["deploy"]["helm"]["releases"][0]
    release["setValueTemplate"] = release.pop("setValueTemplates")
    with pytest.raises(jsonschema.ValidationError, match="setValueTemplate"):
        jsonschema.validate(broken, schema)


def test_it_builds_the_dockerfile_and_deploys_the_chart_with_that_image(
    config: dict[str, Any],
) -> None:
    values = yaml.safe_load((REPO / "charts/trackrelay/values.yaml").read_text())
    configs = [config] + config["profiles"]
    releases = [r for c in configs if "deploy" in c for r in c["deploy"]["helm"]["releases"]]
    assert {c["name"] for c in config["profiles"]} == {"dev", "ci"}
    for c in configs:
        for artifact in c.get("build", {}).get("artifacts", []):
            assert (REPO / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    for release in releases:
        assert (REPO / release["chartPath"] / "Chart.yaml").is_file()
        for key in release["setValueTemplates"]:
            section, field = key.split(".")
            assert field in values[section], key
        assert "IMAGE_REPO_trackrelay" in release["setValueTemplates"]["image.repository"]
    for patch in config["profiles"][0]["patches"]:
        section, field = patch["path"].rsplit("/", 1)[1].split(".", 1)
        node = values[section]
        for part in field.split("."):
            node = node[part]
