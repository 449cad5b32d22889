from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from trackrelay.events import Event, event_id_for, rfc3339


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

    ev = Event("o:0", "o", "sku", 2, 0.5, "2026-01-01T00:00:00.000Z", lines=3)
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
