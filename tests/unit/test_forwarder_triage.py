"""Which entries a forwarder sends and which go straight to the DLQ (pure)."""

from __future__ import annotations

from trackrelay.forwarder.worker import triage
from trackrelay.queue.streams import Entry

GOOD = b'{"event_id": "o:0", "order_id": "o", "sku": "s", "qty": 1}'


def test_triage_keeps_good_entries_in_order() -> None:
    entries = [Entry("1-0", GOOD), Entry("2-0", GOOD)]
    dead, sendable = triage(entries, {}, max_deliveries=3)
    assert dead == []
    assert sendable == entries


def test_triage_dead_letters_undecodable_and_over_delivered_entries() -> None:
    entries = [
        Entry("1-0", b"{nope"),
        Entry("2-0", None),
        Entry("3-0", b"[1]"),
        Entry("4-0", GOOD),
        Entry("5-0", GOOD),
    ]
    dead, sendable = triage(entries, {"4-0": 4, "5-0": 3}, max_deliveries=3)
    assert [e.id for e in sendable] == ["5-0"]
    reasons = {e.id: (reason, n) for e, reason, n in dead}
    assert reasons["1-0"][0].startswith("event is not JSON")
    assert reasons["2-0"][0] == "entry has no event field"
    assert reasons["3-0"][0] == "event is not a JSON object"
    assert reasons["4-0"] == ("delivered 4 times (max 3)", 4)
