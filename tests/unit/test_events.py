from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import cast

import pytest
from prometheus_client import CollectorRegistry

from trackrelay.config.settings import ForwarderSettings
from trackrelay.events import Event, ForwarderStats, PushSpan, event_id_for, rfc3339, shard_of
from trackrelay.forwarder.metrics import ForwarderMetrics
from trackrelay.forwarder.pacer import Pacer
from trackrelay.loop.observe import forwarder_views
from trackrelay.queue.client import Queue


def test_event_ids_are_stable_and_distinct_per_line() -> None:
    assert event_id_for("o1", 0) == event_id_for("o1", 0)
    ids = {event_id_for(o, n) for o in ("o1", "o2") for n in range(3)}
    assert len(ids) == 6
    with pytest.raises(ValueError):
        event_id_for("o1", -1)


def test_rfc3339_is_utc_with_z() -> None:
    moment = datetime(2026, 1, 2, 5, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(moment) == "2026-01-02T03:04:05.123Z"
    with pytest.raises(ValueError):
        rfc3339(datetime(2026, 1, 1))  # naive


def test_event_round_trip_and_clear_errors() -> None:
    ev = Event("o:0", "o", "sku", 2, 1.0, rfc3339(datetime.now(UTC)))
    assert Event.from_json(ev.to_json()) == ev
    with pytest.raises(ValueError, match="not JSON"):
        Event.from_json("{")
    with pytest.raises(ValueError, match="'sku'"):
        Event.from_json('{"event_id": "a", "order_id": "o", "qty": 1, "occurred_at": "t"}')
    with pytest.raises(ValueError, match="wrong type"):
        Event.from_json('{"event_id":"a","order_id":"o","sku":"s","qty":"x","occurred_at":"t"}')


def test_to_dict_names_every_field() -> None:
    from dataclasses import asdict, fields

    from trackrelay.events import Event

    ev = Event(
        "o:0", "o", "sku", 2, 0.5, "2026-01-01T00:00:00.000Z", lines=3, error=0.25, floor=0.5
    )
    assert ev.to_dict() == asdict(ev)
    assert list(ev.to_dict()) == [f.name for f in fields(Event)]
    assert Event.from_json(ev.to_json()) == ev


def test_an_order_line_event_leaves_lines_out_and_reads_back_as_one() -> None:
    from trackrelay.events import Event

    ev = Event("o:0", "o", "sku", 2, 1.0, "2026-01-01T00:00:00.000Z")
    assert "lines" not in ev.to_dict()
    assert Event.from_json(ev.to_json()).lines == 1
    assert ev.problem() is None
    assert "lines" in (Event.from_json(ev.to_json().replace("}", ',"lines":0}')).problem() or "")


def test_only_countable_events_are_decoded_for_shedding() -> None:
    from trackrelay.events import Event, countable

    ev = Event("o:0", "o", "sku", 2, 1.0, "2026-01-01T00:00:00.000Z")
    assert countable(ev.to_json()) == ev
    assert countable("not json") is None
    assert countable(ev.to_json().replace('"qty":2', '"qty":0')) is None


def _span(seconds: float, **outcomes: int) -> PushSpan:
    return PushSpan(
        span_seconds=seconds,
        pushes=sum(outcomes.values()),
        latency_p50=0.1,
        latency_p99=None,
        outcomes=dict(outcomes),
        events_per_second=12.5,
        rate_seconds=seconds,
    )


STATS = ForwarderStats(
    at=1.0,
    adaptive=True,
    limit_events=40.0,
    in_flight_events=3,
    push_size=20,
    breaker="closed",
    budget=None,
    overall=_span(30.0, accepted=9, failed=1),
    latency_p90=0.2,
    recent=_span(5.0, accepted=2, failed=1, expired=1, overloaded=4),
)


def test_forwarder_stats_read_back_as_written() -> None:
    wire = json.loads(json.dumps(STATS.to_json()))
    assert ForwarderStats.from_json(wire) == STATS
    assert wire["limit_events"] == 40.0 and wire["recent"]["outcomes"]["overloaded"] == 4


def test_a_pacers_snapshot_is_a_forwarder_stats_record() -> None:
    pacer = Pacer(
        ForwarderSettings(), cast(Queue, None), ForwarderMetrics(CollectorRegistry()), lambda: 100.0
    )
    snapshot = pacer.snapshot()
    assert ForwarderStats.from_json(json.loads(json.dumps(snapshot.to_json()))) == snapshot
    assert snapshot.recent.span_seconds < snapshot.overall.span_seconds


@pytest.mark.parametrize("drop", ["limit_events", "recent", "breaker"])
def test_another_shape_is_refused_not_guessed(drop: str) -> None:
    wire = STATS.to_json()
    del wire[drop]
    with pytest.raises(ValueError, match="not a forwarder's statistics"):
        ForwarderStats.from_json(wire)


def test_the_controller_reads_the_recent_span_and_skips_what_does_not_parse() -> None:
    views = forwarder_views({"a": STATS.to_json(), "b": {"breaker": "open"}})
    assert [v.name for v in views] == ["a"]
    (a,) = views
    assert (a.pushes, a.errors, a.throttled, a.limit) == (8, 2, 4, 40.0)
    assert a.latency_p50 == 0.1 and a.events_per_second == 12.5


def test_the_previous_wire_names_still_read() -> None:
    """Forwarders of 0.1.0 publish ``window_seconds`` and no ``rate_seconds``: a controller
    of this version still counts them during a rolling upgrade."""
    wire = STATS.to_json()
    for span in (wire, wire["recent"]):
        span["window_seconds"] = span.pop("span_seconds")
        del span["rate_seconds"]
    back = ForwarderStats.from_json(wire)
    assert back.recent.span_seconds == 5.0 and back.recent.rate_seconds == 5.0
    assert back.overall.span_seconds == 30.0


def test_an_orders_events_share_a_shard_and_orders_spread_over_the_shards() -> None:
    assert {shard_of(f"o1:{n}", 4) for n in range(10)} == {shard_of("o1:0", 4)}
    assert shard_of("o1:0", 4) == 1  # stable (CRC-32, no seed): the same in every process
    assert {shard_of(f"o{n}:0", 1) for n in range(100)} == {0}
    per_shard = [0] * 4
    for n in range(4000):
        per_shard[shard_of(f"order-{n}:0", 4)] += 1
    assert min(per_shard) > 900, per_shard  # about 1,000 each
    assert shard_of("no-line-number", 4) in range(4)
