"""The operator's parts without a cluster: the spec, conditions, Events by kind, liveness, memo."""

from __future__ import annotations

import copy
import re
import time
from typing import Any, cast

import kopf
import pytest
import yaml

from tests.cluster.test_operator import MANIFESTS
from trackrelay.control.analytics_health import SIMULATOR_QUERIES, PrometheusSpec, Signal, Verdict
from trackrelay.control.controller import (
    Decision,
    ForwarderView,
    Health,
    Observation,
    Reason,
    ReasonKind,
    Spec,
)
from trackrelay.control.shedding import Shedding
from trackrelay.loop.shell import ControlLoop
from trackrelay_operator import status
from trackrelay_operator.correlation import COMBINED, EventCorrelator, Write
from trackrelay_operator.destinations import DEFAULT_ALLOWED, DestinationRefused, admits, refusal
from trackrelay_operator.handlers import handle_liveness, handle_reconcile, handle_startup
from trackrelay_operator.kube import Kube
from trackrelay_operator.memo import OperatorMemo
from trackrelay_operator.observing import PipelineObserver
from trackrelay_operator.reporting import Reporter
from trackrelay_operator.runner import RETRY_SECONDS, PipelineRunner
from trackrelay_operator.spec import parse


def example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((MANIFESTS / f"examples/{name}.yaml").read_text())
    return dict(body["spec"])


def test_the_minimal_example_means_the_crd_defaults() -> None:
    p = parse(example("minimal"))
    assert (p.deployment, p.configmap, p.redis_secret, p.redis_key) == (
        "trackrelay-forwarder",
        "trackrelay-live",
        "trackrelay-redis",
        "url",
    )
    c = p.controller
    assert (c.budget_min, c.budget_max, c.budget_initial) == (20, 5000, 1000)
    assert (c.replicas_min, c.replicas_max, c.shedding) == (1, 4, "auto")
    assert p.queue_quota is None and p.interval == 2.0 and p.health_url is None


def test_the_full_example_is_read_field_by_field() -> None:
    p = parse(example("full"))
    assert p.queue_quota == 64 * 1024 * 1024
    assert p.health_url == "http://analytics.shop.svc:8100/healthz"
    assert p.controller.thresholds.evict_at == 0.9 and p.controller.p99_target == 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"budget": {"min": 100, "max": 10, "initial": 50}}, "spec.budget: need 0 < min <= max"),
        ({"replicas": {"min": 3, "max": 2}}, "spec.replicas: need 0 < min <= max"),
        ({"budget": {"min": "lots"}}, "spec.budget.min: must be a number"),
        ({"queue": {"shedding": {"policy": "shred"}}}, "spec.queue.shedding.policy"),
        ({"queue": {"quota": "lots"}}, "spec.queue.quota"),
        ({"reconcileIntervalSeconds": 0.1}, "spec.reconcileIntervalSeconds"),
        ({"configMap": ""}, "spec.configMap: required"),
        ({"forwarders": {}}, "spec.forwarders.deployment: required"),
    ],
)
def test_a_bad_spec_admitted_anyway_names_its_field(change: dict[str, Any], message: str) -> None:
    spec = {**example("minimal"), **change}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse(spec)


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    same = status.condition(old, "Ready", True, "Reconciled", "ok")
    assert same["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = status.condition(old, "Ready", False, "Holding", "redis down")
    assert flipped["lastTransitionTime"] != "2026-01-01T00:00:00Z"
    assert flipped["status"] == "False" and flipped["reason"] == "Holding"


EVENT_CLASSES = {
    ReasonKind.BUDGET_RAISED: ("BudgetChanged", "Normal"),
    ReasonKind.BUDGET_CUT: ("BudgetChanged", "Normal"),
    ReasonKind.SCALED_UP: ("ReplicasChanged", "Normal"),
    ReasonKind.SCALED_DOWN: ("ReplicasChanged", "Normal"),
    ReasonKind.SHEDDING_CHANGED: ("SheddingChanged", "Normal"),
    ReasonKind.HOLDING: ("Holding", "Warning"),
    ReasonKind.OBSERVING: ("Observing", "Normal"),
    ReasonKind.ACTION_FAILED: ("ActionFailed", "Warning"),
}


def test_each_reason_kind_has_its_event_reason_and_type() -> None:
    assert set(EVENT_CLASSES) == set(ReasonKind)
    assert {kind: tuple(status.event_class(kind)) for kind in ReasonKind} == EVENT_CLASSES


class FakeKube:
    """The calls a Reporter makes, recorded."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        """Each Event created: reason, type, message."""
        self.bumps: list[tuple[str, str, int]] = []
        """Each Event bumped: its name, message and count."""

    def patch_status(self, namespace: str, name: str, st: dict[str, Any]) -> None:
        self.statuses.append(st)

    def event(self, owner: dict[str, Any], reason: str, message: str, kind: str = "Normal") -> str:
        self.events.append((reason, kind, message))
        return f"shop.{len(self.events)}"

    def bump_event(self, namespace: str, name: str, message: str, count: int) -> bool:
        self.bumps.append((name, message, count))
        return True


BODY = kopf.Body(
    cast(
        kopf.RawBody,
        {
            "kind": "AnalyticsPipeline",
            "metadata": {"namespace": "ns", "name": "shop", "uid": "u-1", "generation": 1},
            "spec": {},
        },
    )
)


async def test_the_reporter_posts_each_new_reason_once_its_event_chosen_by_kind() -> None:
    sick = ForwarderView("f0", pushes=10, throttled=5)
    failing = {"observe": False, "act": True}

    async def observe() -> Observation:
        if failing["observe"]:
            raise ConnectionRefusedError("redis away")
        return Observation(at=time.time(), lag=100, pending=0, forwarders=(sick,))

    async def act(_: Decision) -> None:
        if failing["act"]:
            raise RuntimeError("API server away")

    kube = FakeKube()
    reporter = Reporter(cast(Kube, kube), BODY)
    loop = ControlLoop(Spec(budget_initial=800), observe, act)
    await reporter.decision(await loop.tick(), loop, None, 0)  # budget cut, act fails
    failing.update(observe=True, act=False)
    await reporter.decision(await loop.tick(), loop, None, 0)  # holding
    await reporter.decision(await loop.tick(), loop, None, 0)  # still holding: nothing new
    texts = [r.text for _, r in loop.reasons]
    assert [r.kind for _, r in loop.reasons] == [
        ReasonKind.BUDGET_CUT,
        ReasonKind.ACTION_FAILED,
        ReasonKind.HOLDING,
    ]
    # The Event's message is the reason's text, as in the status; its reason and type, the kind's.
    assert kube.events == [
        ("BudgetChanged", "Normal", texts[0]),
        ("ActionFailed", "Warning", texts[1]),
        ("Holding", "Warning", texts[2]),
    ]
    assert kube.statuses[-1]["lastReasons"] == texts


async def test_the_kind_not_the_text_decides_the_event_reason() -> None:
    async def never() -> Observation:
        raise AssertionError("not called")

    async def nothing(_: Decision) -> None:
        return None

    kube = FakeKube()
    reporter = Reporter(cast(Kube, kube), BODY)
    loop = ControlLoop(Spec(), never, nothing)
    # Texts that read like other kinds: prefix matching would pick the wrong Event.
    misleading = [
        Reason(ReasonKind.BUDGET_CUT, "replicas 1 -> 2: budget cut, worded oddly"),
        Reason(ReasonKind.SCALED_UP, "holding nothing back: one more forwarder"),
        Reason(ReasonKind.HOLDING, "budget unchanged while observations fail"),
    ]
    loop.reasons.extend((0.0, r) for r in misleading)  # as the runner carries history over
    loop.recorded += len(misleading)
    held = Decision(
        budget=800,
        replicas=1,
        shedding=Shedding(),
        health=Health(None, "redis away"),
        backlog=None,
        per_replica=200,
        usable_replicas=4,
        held=True,
        reasons=(misleading[2],),
    )
    await reporter.decision(held, loop, None, 0)
    assert [(reason, kind) for reason, kind, _ in kube.events] == [
        ("BudgetChanged", "Normal"),
        ("ReplicasChanged", "Normal"),
        ("Holding", "Warning"),
    ]


async def test_liveness_fails_when_a_write_does_not_come_back_or_a_loop_stops() -> None:
    memo = OperatorMemo()
    handle_startup.fill(memo, cast(Kube, FakeKube()))
    memo.liveness.last_event = time.monotonic() - 3600
    assert handle_liveness.probe(memo)["pipelines"] == 0  # nothing to watch: alive
    runner = PipelineRunner(cast(Kube, FakeKube()), BODY, liveness=memo.liveness)
    memo.runners[("ns", "shop")] = runner
    try:
        # An idle pipeline writes nothing for minutes: a silent watch is no sign then.
        assert handle_liveness.probe(memo)["pipelines"] == 1
        memo.liveness.wrote(now=time.monotonic() - 61)  # a write a minute ago, no event
        with pytest.raises(kopf.PermanentError, match="watch looks frozen"):
            handle_liveness.probe(memo)
        resource_memo = copy.copy(memo)  # what kopf gives a resource's handlers
        handle_liveness.seen(resource_memo)  # what the event handler does
        assert memo.liveness is resource_memo.liveness
        report = memo.liveness.report(len(memo.runners), now=memo.liveness.last_event + 0.5)
        assert report == {"pipelines": 1, "last_event_seconds": 0.5}
        assert handle_liveness.probe(memo)["pipelines"] == 1
        runner.ticked_at = time.monotonic() - 3600  # its loop stopped turning
        with pytest.raises(kopf.PermanentError, match="loop is frozen"):
            handle_liveness.probe(memo)
    finally:
        await runner.observer.aclose()


# -- spec.analytics.prometheus ---------------------------------------------------------


def test_the_full_examples_prometheus_is_read_query_by_query() -> None:
    p = parse(example("full"))
    assert p.prometheus is not None
    assert p.prometheus.address == "http://prometheus-operated.monitoring.svc:9090"
    assert [(q.name, q.min, q.max) for q in p.prometheus.queries] == [
        ("analytics_p99", None, 0.5),
        ("analytics_throttled_share", 0.0, 0.05),
    ]
    assert (p.prometheus.timeout, p.prometheus.staleness) == (1.0, 30.0)
    assert parse(example("minimal")).prometheus is None


def test_an_address_alone_means_the_simulators_queries_and_the_default_numbers() -> None:
    spec = {**example("minimal"), "analytics": {"prometheus": {"address": "http://prom:9090"}}}
    assert parse(spec).prometheus == PrometheusSpec("http://prom:9090")
    assert PrometheusSpec("http://prom:9090").queries == SIMULATOR_QUERIES


P = "spec.analytics.prometheus"


@pytest.mark.parametrize(
    ("prometheus", "message"),
    [
        ("http://prom", f"{P}: must be an object"),
        ({}, f"{P}.address: required"),
        ({"address": "prom:9090"}, f"{P}.address: 'prom:9090' must be an http"),
        ({"address": "http://p", "queries": {}}, f"{P}.queries: must be a list"),
        ({"address": "http://p", "queries": []}, f"{P}.queries: needs at least one query"),
        ({"address": "http://p", "queries": ["up"]}, f"{P}.queries[0]: must be an object"),
        ({"address": "http://p", "queries": [{"name": "a", "max": 1}]}, f"{P}.queries[0].query"),
        (
            {"address": "http://p", "queries": [{"name": "a", "query": "up"}]},
            f"{P}.queries[0].range: needs a min, a max or both",
        ),
        (
            {"address": "http://p", "queries": [{"name": "a", "query": "up", "max": "1"}]},
            f"{P}.queries[0].max: must be a number",
        ),
        (
            {"address": "http://p", "queries": [{"name": "a", "query": "up", "min": 2, "max": 1}]},
            f"{P}.queries[0].range: min 2 is above max 1",
        ),
        (
            {
                "address": "http://p",
                "queries": [{"name": "a", "query": "up", "max": 1}] * 2,
            },
            f"{P}.queries[1].name: 'a' is named twice",
        ),
        ({"address": "http://p", "timeoutSeconds": 0}, f"{P}.timeoutSeconds: must be in (0, 60]"),
        ({"address": "http://p", "stalenessSeconds": "long"}, f"{P}.stalenessSeconds: must be a"),
    ],
)
def test_a_bad_prometheus_spec_names_its_field(prometheus: Any, message: str) -> None:
    spec = {**example("minimal"), "analytics": {"prometheus": prometheus}}
    with pytest.raises(ValueError, match=re.escape(message)):
        parse(spec)


def decision(healthy: bool | None = True) -> Decision:
    return Decision(
        budget=800,
        replicas=1,
        shedding=Shedding(),
        health=Health(healthy, "ok"),
        backlog=0,
        per_replica=200,
        usable_replicas=4,
        held=False,
        reasons=(),
    )


def test_the_status_carries_the_metrics_verdict_and_the_query_that_decided() -> None:
    verdict = Verdict(Signal.UNHEALTHY, "analytics_p99 1.8 outside [0, 0.5]", "analytics_p99", 0)
    o = Observation(at=0, lag=0, pending=0, analytics=verdict)
    kw: dict[str, Any] = {"old": [], "reasons": [], "generation": 1, "hpa": None, "hpa_replicas": 0}
    st = status.pipeline_status(decision(), o, prometheus=True, **kw)
    assert st["analyticsHealth"] == {
        "state": "unhealthy",
        "query": "analytics_p99",
        "why": "analytics_p99 1.8 outside [0, 0.5]",
        "readTime": "1970-01-01T00:00:00Z",
    }
    # no observation this tick: left as it was (absent from the merge patch)
    assert "analyticsHealth" not in status.pipeline_status(decision(), None, prometheus=True, **kw)
    # no Prometheus in the spec: removed (null in the merge patch)
    assert status.pipeline_status(decision(), o, **kw)["analyticsHealth"] is None


async def test_the_reporter_posts_one_event_per_change_of_the_metrics_verdict() -> None:
    verdicts = iter(
        [
            Verdict(Signal.HEALTHY, "analytics_p99 0.1 within [0, 0.5]", None, 1),
            Verdict(Signal.HEALTHY, "analytics_p99 0.2 within [0, 0.5]", None, 2),
            Verdict(Signal.UNHEALTHY, "analytics_p99 1.8 outside [0, 0.5]", "analytics_p99", 3),
            Verdict(Signal.UNHEALTHY, "share 0.3 outside [0, 0.05]", "share", 4),
            Verdict(Signal.UNKNOWN, "analytics_p99: Prometheus unreachable", "analytics_p99", 5),
        ]
    )

    async def observe() -> Observation:
        return Observation(at=time.time(), lag=0, pending=0, analytics=next(verdicts))

    async def act(_: Decision) -> None:
        return None

    kube = FakeKube()
    reporter = Reporter(cast(Kube, kube), BODY)
    loop = ControlLoop(Spec(), observe, act)
    for _ in range(5):
        await reporter.decision(await loop.tick(), loop, None, 0, prometheus=True)
    shown = [(kind, text) for reason, kind, text in kube.events if reason == "AnalyticsHealth"]
    assert shown == [
        ("Normal", "analytics' metrics say healthy: analytics_p99 0.1 within [0, 0.5]"),
        ("Warning", "analytics' metrics say unhealthy: analytics_p99 1.8 outside [0, 0.5]"),
        ("Warning", "analytics' metrics say unhealthy: share 0.3 outside [0, 0.05]"),
        ("Warning", "analytics' metrics say unknown: analytics_p99: Prometheus unreachable"),
    ]
    assert kube.statuses[-1]["analyticsHealth"]["state"] == "unknown"


def test_a_repeated_event_is_bumped_and_similar_ones_combine_after_ten() -> None:
    events = EventCorrelator(window=600, similar_max=10)
    made: dict[str, list[Any]] = {}

    def tell(message: str, now: float, reason: str = "BudgetChanged") -> Write:
        write = events.write(reason, "Normal", message, now)
        if write.name is None:
            name = f"e{len(made)}"
            made[name] = [write.message, 1]
        else:
            name = write.name
            assert made[name][1] + 1 == write.count  # a bump counts on from the Event's count
            made[name] = [write.message, write.count]
        events.written(write, name, now)
        return write

    assert tell("budget 100 -> 200", 0).name is None
    assert tell("budget 100 -> 200", 1).count == 2  # the same words: the same Event, bumped
    assert tell("budget 100 -> 200", 2).count == 3
    assert len(made) == 1
    for i in range(8):  # other words of the same reason: an Event each, up to nine
        assert tell(f"budget cut to {i}", 10 + i).name is None
    assert len(made) == 9
    first = tell("budget cut to 99", 20)  # the tenth distinct message: combined from here on
    assert first.name is None and first.message == COMBINED + "budget cut to 99"
    later = tell("budget cut to 100", 21)
    assert later.name == "e9" and later.count == 2
    assert made["e9"] == [COMBINED + "budget cut to 100", 2]
    assert tell("replicas 1 -> 2", 22, reason="ReplicasChanged").name is None  # other reason
    # past the window nothing is combined or bumped: the next is an Event of its own
    fresh = tell("budget 100 -> 200", 700)
    assert fresh.name is None and fresh.message == "budget 100 -> 200"
    # an Event that expired in the API server is told afresh
    gone = events.write("BudgetChanged", "Normal", "budget 100 -> 200", 701)
    assert gone.name is not None
    events.lost(gone)
    assert events.write("BudgetChanged", "Normal", "budget 100 -> 200", 702).name is None


async def test_the_reporter_bumps_the_event_of_a_repeated_problem() -> None:
    kube = FakeKube()
    clock = iter(float(t) for t in range(100))
    reporter = Reporter(cast(Kube, kube), BODY, clock=lambda: next(clock))
    await reporter.degraded("InvalidSpec", "spec.budget.min: must be at least 1")
    await reporter.degraded("InvalidSpec", "spec.budget.min: must be at least 1")  # not new
    await reporter.degraded("InvalidSpec", "spec.replicas.max: below min")
    await reporter.degraded("InvalidSpec", "spec.budget.min: must be at least 1")  # again
    assert kube.events == [
        ("InvalidSpec", "Warning", "spec.budget.min: must be at least 1"),
        ("InvalidSpec", "Warning", "spec.replicas.max: below min"),
    ]
    assert kube.bumps == [("shop.1", "spec.budget.min: must be at least 1", 2)]


def test_a_secret_the_operator_may_not_read_is_named_with_the_value_that_allows_it() -> None:
    from kubernetes.client.exceptions import ApiException

    class Forbidden:
        def read_namespaced_secret(self, name: str, namespace: str) -> None:
            raise ApiException(status=403, reason="Forbidden")

    kube = Kube(api_client=object())
    kube.core = cast(Any, Forbidden())
    with pytest.raises(
        LookupError, match=r"Secret shop/queue-b: 403 Forbidden.*operator\.secretNames"
    ):
        kube.redis_url("shop", "queue-b", "url")


# -- destinations (the operator is no confused deputy) ---------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://analytics.shop.svc:8100/healthz", True),
        ("http://prometheus-operated.monitoring.svc:9090", True),
        ("http://analytics.shop.svc.cluster.local/healthz", True),
        ("http://ANALYTICS.Shop.SVC./healthz", True),  # case and a trailing dot do not count
        ("http://analytics:8100/healthz", False),  # resolved by the operator pod's search path
        ("http://metadata/computeMetadata/v1/", False),  # GKE's metadata server, so
        ("http://169.254.169.254/latest/meta-data/", False),  # a cloud metadata service
        ("http://2852039166/", False),  # the same, as one number
        ("http://0x7f000001/", False),  # loopback in hex
        ("http://0:8080/", False),
        ("http://[fd00:ec2::254]/", False),  # AWS' metadata over IPv6
        ("http://[::ffff:a9fe:a9fe]/", False),
        ("redis://:p@2130706433:6379", False),
        ("redis://169\uff0e254\uff0e169\uff0e254:6379", False),  # full-width dots (IDNA)
        ("http://allowed.shop.svc@evil.example.com/", False),  # userinfo is not the host
        ("http://1abc.shop.svc/", False),  # not a DNS label: * never matches it
        ("http://kubernetes.default/api", False),
        ("https://evil.example.com/", False),
        ("http://a.b.c.svc/", False),  # a label more than *.*.svc
        ("http:///nohost", False),
    ],
)
def test_the_default_destinations_are_the_clusters_services(url: str, allowed: bool) -> None:
    why = refusal("spec.analytics.healthURL", url, DEFAULT_ALLOWED)
    assert (why is None) is allowed, why
    if why is not None:
        assert why.startswith("spec.analytics.healthURL: ")


def test_named_hosts_and_the_opt_out_admit_what_they_say() -> None:
    assert admits("10.0.0.7", "10.0.0.7") and not admits("10.0.0.7", "10.0.0.70")
    assert admits("127.0.0.1", "2130706433")  # an address, however it is written
    assert not admits("*", "127.0.0.1") and not admits("*.*.*.*", "10.0.0.7")
    assert admits("*.example.com", "analytics.example.com")
    assert not admits("*.example.com", "a.analytics.example.com")
    assert admits("**", "anything.at.all") and not admits("*", "")


async def test_a_spec_naming_a_host_not_allowed_is_refused_and_nothing_is_connected() -> None:
    kube = FakeKube()
    spec = {
        **example("minimal"),
        "analytics": {
            "healthURL": "http://169.254.169.254/latest/meta-data/",
            "prometheus": {"address": "http://prometheus.monitoring.svc:9090"},
        },
    }
    body = kopf.Body(cast(kopf.RawBody, {**BODY, "spec": spec}))
    runner = PipelineRunner(cast(Kube, kube), body, allowed_hosts=DEFAULT_ALLOWED)
    try:
        assert await runner.tick() == RETRY_SECONDS
        assert runner.loop is None  # no loop: nothing observed, nothing connected
        (status,) = kube.statuses
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] == "DestinationRefused"
        assert "'169.254.169.254' is not an allowed destination" in degraded["message"]
        assert "operator.allowedHosts" in degraded["message"]
        assert "prometheus" not in degraded["message"]  # the allowed one is not named
        assert kube.events == [("DestinationRefused", "Warning", degraded["message"])]
    finally:
        await runner.observer.aclose()


async def test_a_redis_secret_naming_a_host_not_allowed_is_never_connected() -> None:
    class SecretKube(FakeKube):
        def redis_url(self, namespace: str, name: str, key: str) -> str:
            return "redis://:pw@10.1.2.3:6379/0"

    observer = PipelineObserver(cast(Kube, SecretKube()), "ns", DEFAULT_ALLOWED)
    try:
        with pytest.raises(
            DestinationRefused, match=re.escape("Secret trackrelay-redis key url: host '10.1.2.3'")
        ):
            await observer.connect(parse(example("minimal")))
        assert observer.redis is None
    finally:
        await observer.aclose()


@pytest.mark.parametrize(
    ("reason", "kept"),
    [
        (kopf.DaemonStoppingReason.OPERATOR_PAUSING, False),  # another replica steers now
        (kopf.DaemonStoppingReason.OPERATOR_EXITING, True),  # released at exit
    ],
)
async def test_a_paused_replica_does_not_release_what_the_leader_now_steers(
    reason: kopf.DaemonStoppingReason, kept: bool
) -> None:
    class Stopped:
        def __init__(self) -> None:
            self.reason = reason

        def __bool__(self) -> bool:
            return True  # stopped already: the runner's loop does not turn

        async def wait(self, timeout: float | None = None) -> None:
            return None

    memo = OperatorMemo()
    handle_startup.fill(memo, cast(Kube, FakeKube()))
    await handle_reconcile.reconcile(BODY, cast(kopf.DaemonStopped, Stopped()), memo)
    assert (("ns", "shop") in memo.steered) is kept
    assert memo.runners == {}
