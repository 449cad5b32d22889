"""The retry allowance inside the pacer: bounded while analytics fails, and never a
deadlock once its tokens are spent."""

from __future__ import annotations

import asyncio
from typing import cast

from prometheus_client import CollectorRegistry

from trackrelay.config.settings import ForwarderSettings
from trackrelay.control.push_outcome import Outcome, PushResult
from trackrelay.forwarder.metrics import ForwarderMetrics
from trackrelay.forwarder.pacer import Pacer
from trackrelay.queue.client import Queue


def test_with_no_token_and_nothing_in_flight_one_retry_still_goes_each_breaker_interval() -> None:
    """Held batches that fill the window earn no token (only first attempts do, and none
    can start): without this, they would wait for ever after analytics came back."""

    async def scenario() -> list[bool]:
        now = [100.0]
        settings = ForwarderSettings(breaker_threshold=50, breaker_open_base=0.5)
        metrics = ForwarderMetrics(CollectorRegistry())
        pacer = Pacer(settings, cast(Queue, None), metrics, lambda: now[0])
        failed = PushResult(Outcome.FAILED, status=500, detail="HTTP 500")
        await pacer.record(pacer.begin(10), failed, 0.01)
        while pacer.retries.tokens >= 1.0:  # the allowance, spent by retries
            assert pacer.may_retry()
        seen = [pacer.may_retry(), pacer.may_retry()]  # one lone retry, not two
        now[0] += 0.6
        ticket = pacer.begin(5)  # a push in flight: it will tell; no lone retry
        seen.append(pacer.may_retry())
        await pacer.record(ticket, failed, 0.01)
        seen.append(pacer.may_retry())  # nothing in flight, an interval since the last
        now[0] += 0.1
        seen.append(pacer.may_retry())
        return seen

    assert asyncio.run(scenario()) == [True, False, False, True, False]
