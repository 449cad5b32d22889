"""One source per fact: the controller's ``Spec`` holds its defaults and bounds,
``control.analytics_health.PrometheusSpec`` those of analytics' metrics, and
``control.shedding.MODES`` the shedding modes. Settings and the operator's parser derive
theirs from them; the CRD and the chart's values state them again for their users, and
these tests hold every copy to the source."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from trackrelay.config.settings import (
    SPEC_NAMES,
    ControllerSettings,
    ForwarderSettings,
    OrderSettings,
    RelaySettings,
    read_ahead,
)
from trackrelay.control.analytics_health import LIMITS, NAME, PrometheusSpec
from trackrelay.control.controller import BOUNDS, Bound, Spec
from trackrelay.control.shedding import MODES, Thresholds
from trackrelay_operator.spec import (
    DEFAULT,
    NUMBERS,
    PROMETHEUS_NUMBERS,
    QUERY_BOUNDS,
    QUERY_TEXTS,
    RECONCILE_BOUND,
    RECONCILE_INTERVAL,
    SHEDDING_NUMBERS,
    parse,
)

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "manifests" / "crds" / "analyticspipelines.trackrelay.io.yaml"
VALUES = REPO / "charts" / "trackrelay" / "values.yaml"
SCHEMA = REPO / "charts" / "trackrelay" / "values.schema.json"

NOT_IN_SETTINGS = {"stale_after", "sample_p"}
"""``Spec`` fields local mode takes from elsewhere (a constant; the relay's settings)."""


def crd_spec() -> dict[str, Any]:
    doc = yaml.safe_load(CRD.read_text())
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    props: dict[str, Any] = schema["properties"]["spec"]["properties"]
    return props


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(VALUES.read_text())
    return loaded


def bound_of(prop: dict[str, Any]) -> Bound:
    """The interval an OpenAPI (v3.0, boolean exclusive*) property admits."""
    return Bound(
        low=prop.get("minimum"),
        high=prop.get("maximum"),
        low_open=bool(prop.get("exclusiveMinimum")),
        high_open=bool(prop.get("exclusiveMaximum")),
    )


def test_settings_take_their_defaults_from_the_spec() -> None:
    assert ControllerSettings.model_construct().spec() == Spec()
    relay = RelaySettings.model_construct()
    spec = ControllerSettings.model_construct().spec(relay)
    assert spec == Spec(thresholds=relay.thresholds())
    assert relay.thresholds() == Thresholds()
    assert relay.shedding == Spec().shedding and relay.sample_p == Spec().sample_p


@pytest.mark.parametrize("name", sorted(set(BOUNDS) - NOT_IN_SETTINGS))
def test_settings_refuse_what_the_spec_bounds_refuse(name: str) -> None:
    bound = BOUNDS[name]
    outside = (bound.high + 1) if bound.high is not None else (bound.low or 0) - 1
    field = SPEC_NAMES.get(name, name)
    with pytest.raises(ValidationError, match="must be"):
        ControllerSettings.model_validate({field: outside})
    ControllerSettings.model_validate({field: getattr(Spec(), name)})


MINIMAL = {
    "forwarders": {"deployment": "f"},
    "configMap": "c",
    "redis": {"secretRef": {"name": "s"}},
}


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_a_bound_admits_its_closed_ends_refuses_its_open_ones_and_nan(name: str) -> None:
    bound = BOUNDS[name]
    for end, is_open in ((bound.low, bound.low_open), (bound.high, bound.high_open)):
        if end is not None:
            assert bound.admits(end) is not is_open, (name, end)
    assert not bound.admits(math.nan)
    changes: dict[str, Any] = {name: math.nan}
    assert replace(Spec(), **changes).problems(), name


def test_the_operator_parses_an_empty_spec_to_the_specs_defaults() -> None:
    assert Spec() == DEFAULT
    pipeline = parse(MINIMAL)
    assert pipeline.controller == Spec()
    assert pipeline.interval == RECONCILE_INTERVAL
    names = {attr for _, _, attr in NUMBERS} | {"replicas_min", "replicas_max"}
    assert names | {"shedding", "sample_p", "thresholds"} | NOT_IN_SETTINGS | {
        "in_use",
        "drain_seconds",
        "replica_rate",
    } == set(Spec.__dataclass_fields__)


@pytest.mark.parametrize(("section", "name", "attr"), NUMBERS)
def test_the_crd_states_the_specs_default_and_bounds(section: str, name: str, attr: str) -> None:
    prop = crd_spec()[section]["properties"][name]
    assert prop["default"] == getattr(Spec(), attr)
    assert bound_of(prop) == BOUNDS[attr]


def test_the_crd_replicas_and_shedding_are_the_specs() -> None:
    crd = crd_spec()
    spec = Spec()
    replicas = crd["replicas"]["properties"]
    assert replicas["min"]["default"] == spec.replicas_min
    assert replicas["max"]["default"] == spec.replicas_max
    assert bound_of(replicas["min"]) == BOUNDS["replicas_min"]
    assert bound_of(replicas["max"]) == BOUNDS["replicas_max"]
    shedding = crd["queue"]["properties"]["shedding"]
    props = shedding["properties"]
    assert props["policy"]["enum"] == list(MODES)
    assert props["policy"]["default"] == spec.shedding
    assert props["sampleP"]["default"] == spec.sample_p
    assert bound_of(props["sampleP"]) == BOUNDS["sample_p"]
    for name, attr in SHEDDING_NUMBERS:
        assert props[name]["default"] == getattr(spec.thresholds, attr), name
    assert crd["reconcileIntervalSeconds"]["default"] == RECONCILE_INTERVAL
    assert bound_of(crd["reconcileIntervalSeconds"]) == RECONCILE_BOUND


def test_the_crd_object_defaults_repeat_the_field_defaults() -> None:
    """An omitted section gets the same values as an empty one (the section default)."""
    crd = crd_spec()
    for section in ("budget", "replicas"):
        fields = crd[section]["properties"]
        assert crd[section]["default"] == {k: v["default"] for k, v in fields.items()}, section
    shedding = crd["queue"]["properties"]["shedding"]
    fields = {k: v["default"] for k, v in shedding["properties"].items()}
    assert shedding["default"] == fields


def test_the_charts_pipeline_values_are_the_specs_defaults() -> None:
    pipeline = values()["pipeline"]
    spec = Spec()
    assert pipeline["budget"] == {
        "min": spec.budget_min,
        "max": spec.budget_max,
        "initial": spec.budget_initial,
    }
    assert pipeline["replicas"] == {"min": spec.replicas_min, "max": spec.replicas_max}
    assert pipeline["latencyTargetSeconds"] == spec.p99_target
    assert pipeline["shedding"] == {"policy": spec.shedding}
    assert pipeline["reconcileIntervalSeconds"] == RECONCILE_INTERVAL
    schema = json.loads(SCHEMA.read_text())
    props = schema["properties"]["pipeline"]["properties"]
    assert props["shedding"]["properties"]["policy"]["enum"] == list(MODES)
    replicas = props["replicas"]["properties"]
    assert bound_of(replicas["min"]) == BOUNDS["replicas_min"]
    assert bound_of(replicas["max"]) == BOUNDS["replicas_max"]
    assert bound_of(props["reconcileIntervalSeconds"]) == RECONCILE_BOUND


def test_the_charts_forwarders_start_as_local_modes() -> None:
    forwarder = values()["forwarder"]
    defaults = ForwarderSettings.model_construct()
    assert forwarder["batchSize"] == defaults.batch_size
    assert forwarder["concurrency"] == defaults.concurrency
    assert forwarder["pushLatencyLimit"] == defaults.push_latency_limit


def test_the_relays_default_read_ahead_is_one_forwarders_hold() -> None:
    defaults = ForwarderSettings.model_construct()
    expected = read_ahead(1, defaults.concurrency, defaults.batch_size)
    assert RelaySettings.model_construct().queue_read_ahead == expected


def test_the_charts_order_service_starts_as_local_modes() -> None:
    orders = values()["orders"]
    defaults = OrderSettings.model_construct()
    assert orders["port"] == defaults.port and orders["workers"] == defaults.workers
    assert orders["maxItems"] == defaults.max_items
    assert orders["maxBodyBytes"] == defaults.max_body_bytes


# -- analytics' metrics: PrometheusSpec holds their defaults and bounds --------------------


def test_prometheus_defaults_and_bounds_are_the_specs_in_settings_crd_and_chart() -> None:
    source = PrometheusSpec("http://p")
    settings = ControllerSettings.model_construct()
    assert (settings.prometheus_timeout, settings.prometheus_staleness) == (
        source.timeout,
        source.staleness,
    )
    crd = crd_spec()["analytics"]["properties"]["prometheus"]
    props = crd["properties"]
    chart = values()["pipeline"]["analytics"]["prometheus"]
    schema = json.loads(SCHEMA.read_text())
    chart_props = schema["properties"]["pipeline"]["properties"]["analytics"]["properties"][
        "prometheus"
    ]["properties"]
    for name, attr in PROMETHEUS_NUMBERS:
        low, high = LIMITS[attr]
        assert props[name]["default"] == getattr(source, attr) == chart[name], name
        assert bound_of(props[name]) == Bound(low, high, low_open=True), name
        assert chart_props[name]["exclusiveMinimum"] == low, name
        assert chart_props[name]["maximum"] == high, name
    item = props["queries"]["items"]["properties"]
    assert item["name"]["pattern"] == f"^{NAME.pattern}$"
    assert chart_props["queries"]["items"]["properties"]["name"]["pattern"] == f"^{NAME.pattern}$"
    assert {name for name, _ in QUERY_TEXTS + QUERY_BOUNDS} == set(item)
    assert chart["address"] == "" and chart["queries"] == []  # off unless asked for
