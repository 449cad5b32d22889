"""The shared rate budget (Redis adapter).

One budget in events/s for all forwarder replicas, enforced in Redis with a
reservation form of GCRA (generic cell rate algorithm) in one Lua script that
reads Redis' own clock (``TIME``), so replicas on different machines agree.
A push of ``n`` events reserves ``n / budget`` seconds of the budget's time
line and is told when its slot begins; the slots never overlap and no credit
piles up while the budget is idle (no burst). When the budget changes, the time
already reserved is rescaled to the new budget's pace (the same events, reserved
again at the new rate): raised after a cut, pushes do not wait out the time their
events were given at the lower rate. So in any one-second window the
events whose pushes start in it add up to at most ``budget`` plus one push;
the forwarder keeps pushes small next to the budget (``Pacer.budget_push_cap``: a
share of a second's budget, or what its lanes need at analytics' latency), which
bounds the sum by the budget plus that one push.

Why not PyPI ``limits``: its Redis strategies answer "allowed or not" for a
hit; the forwarders need "when may this push go", so that every replica waits
its turn instead of polling, and that is a ten-line script.

A lane waiting for its slot looks at the budget again every second
(``worker.SLOT_RECHECK``) and rescales what is left of its wait the same way, so a
raised budget takes effect within that second, however far the slot was. Budgets
below one event per second (one event per controller tick) are refused everywhere
they are given (``controller.BUDGET_BOUND``).

The budget itself is live configuration (``trackrelay budget set 800``): the
script reads it on every reservation, so a change applies to the next push.
No budget key means no limit beyond each forwarder's adaptive window.

The script is flagged ``allow-oom``: at ``maxmemory`` Redis refuses new writes, but the
forwarders still drain the stream (XREADGROUP, XACK and XDEL are served), and their
pushes must stay within the budget. The one key it writes is a few dozen bytes.
"""

from __future__ import annotations

from trackrelay.control.controller import BUDGET_BOUND
from trackrelay.queue.client import set_small
from trackrelay.queue.handle import Queue
from trackrelay.queue.keys import BUDGET_CLOCK_KEY, BUDGET_KEY

_RESERVE = """#!lua flags=allow-oom
local rate = tonumber(ARGV[2]) or tonumber(redis.call('GET', KEYS[1]) or '')
if not rate or rate <= 0 then return {'-1', '0'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local clock = redis.call('GET', KEYS[2]) or ''
local free_at = tonumber(string.match(clock, '^[^ ]+') or '') or now
local at_rate = tonumber(string.match(clock, ' (.+)$') or '') or rate
if free_at < now then free_at = now end
if at_rate ~= rate then
  -- time reserved at another budget: the same events, at this budget's pace
  free_at = now + (free_at - now) * at_rate / rate
end
local next_free = free_at + tonumber(ARGV[1]) / rate
local ttl = math.ceil((next_free - now) * 1000) + 60000
redis.call('SET', KEYS[2], string.format('%.6f %.17g', next_free, rate), 'PX', ttl)
return {string.format('%.6f', free_at - now), tostring(rate)}
"""


async def reserve(
    redis: Queue, events: int, rate: float | None = None
) -> tuple[float, float | None]:
    """Reserve ``events`` of the shared budget: (seconds to wait, the budget) or (0, None).

    ``rate`` is the budget when it comes from elsewhere (a ConfigMap); without it
    the script reads ``BUDGET_KEY``. Either way every replica shares one clock.
    The budget is None when none is set: nothing was reserved and nothing limits.
    """
    given = "" if rate is None else f"{rate:g}"
    wait, rate_used = await redis.eval(
        _RESERVE, 2, BUDGET_KEY, BUDGET_CLOCK_KEY, str(events), given
    )
    rate = float(rate_used)
    if rate <= 0:
        return 0.0, None
    return max(0.0, float(wait)), rate


def parse_budget(text: str) -> float:
    """A budget from the command line: events/s > 0; ``ValueError`` saying what is wrong."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"budget must be a number of events per second, not {text!r}") from None
    if not BUDGET_BOUND.admits(value) or value == float("inf"):
        raise ValueError(
            f"budget must be a finite number of events per second, {BUDGET_BOUND.describe()} "
            f"(one event per controller tick), not {text}"
        )
    return value


async def set_budget(redis: Queue, events_per_second: float | None) -> None:
    """Set the shared budget (None removes it: no limit)."""
    if events_per_second is None:
        await redis.delete(BUDGET_KEY)
    else:
        await set_small(redis, BUDGET_KEY, f"{events_per_second:g}")


async def get_budget(redis: Queue) -> float | None:
    raw = await redis.get(BUDGET_KEY)
    return None if raw is None else float(raw)
