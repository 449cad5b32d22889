"""The queue quota in Redis: measure what trackrelay keeps, admit, fold and flush within it.

Every write that grows the queue goes through one of three Lua scripts, each
atomic, so the quota holds however many relays run at once:

- ``admit``: XADD events while they fit; at the cap, make room by evicting the
  oldest entries no forwarder has read yet (``evict``: never an entry a
  forwarder holds, those lie at or before the group's last-delivered id),
  refuse the rest (``drop``) or leave them in the outbox (``hold``);
- ``fold``: add a batch's per-SKU totals to the one open aggregation window
  (``SHARDS`` small hashes per window), once per outbox batch (its token is
  remembered until the relay has deleted the rows, so a fold retried after a
  crash never counts twice);
- ``flush``: move SKUs of a closed window into the stream as one event each,
  with a stable id, HDEL-ing each SKU as its event is added: exactly once.

What the quota covers: MEMORY USAGE summed over the stream, the DLQ, the window
hashes and the bookkeeping keys (``Shard.quota_keys``), one shard at a time: a
sharded queue gives each shard its share of the quota. MEMORY USAGE samples
five stream nodes (cheap at any size); it is taken at most every
``sample_interval``, and on every call once the estimate is near the cap, where
it counts every node (SAMPLES 0, exact, about a microsecond per node); between
samples the estimate adds what the scripts wrote (entry sizes plus a per-entry
overhead), which only errs high while forwarders delete. Admission stops at
``limit``, a little under the quota, as room for what sampling cannot see.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from trackrelay.queue.handle import Queue
from trackrelay.queue.keys import CONSUMER_GROUP, EVENT_FIELD, SHARD0, Shard
from trackrelay.queue.replicas import Replication

ENTRY_OVERHEAD = 48
"""Bytes a stream entry costs beyond its payload (listpack entry, id delta, node share)."""
FIELD_OVERHEAD = 80
"""Bytes a new SKU costs in a window hash beyond its name (entry, value, table slot)."""
SHARDS = 128
"""Hashes per aggregation window: a SKU's counter lives in one, chosen by a hash of its name."""
PEL_COST = 1280
"""The most MEMORY USAGE (Redis 7.0) counts for one more pending entry: its estimate of
the group's and the consumer's radix trees charges 30 children for every node, and one
entry can add several nodes. Measured at 560-990 bytes, varying with how the entries' ids
and the consumers share prefixes (tests/integration/test_quota.py sweeps the shapes); an
average (640 bytes, before) let forwarders reading twenty entries take the queue past its
quota by a few hundred bytes."""
STEP = 4096 + 1024
"""A new stream node: Redis allocates ``stream-node-max-bytes`` (4096 by default) at once."""
SLACK = 1.2
"""Estimates between samples count each entry this much above its measured cost, so they err
high; before refusing an entry the script counts memory exactly, so this costs no room."""
NEAR_CAP = 0.9
"""Above this share of the limit, every call samples memory afresh."""
FLUSH_MIN = 16
"""SKUs the smallest flush moves: the room folds leave free is enough for it."""
AGGREGATE_ENTRY = 128 + 260
"""The largest aggregate event's payload (a 128-character SKU and the other fields)."""
SEAL_FIELD = "\0sealed"
"""Set in a window's base key once its flush begins."""
SKETCH_SCORES = ":sk"
"""Suffix of a window's sketch: a sorted set of SKU -> total (the smallest is replaced)."""
SKETCH_VALUES = ":skv"
"""Suffix of a window's sketch values: SKU -> ``total lines error``."""
SKETCH_SHARE = 0.04
"""Share of the quota one window's sketch may use (two may exist: one flushing, one open)."""
SKETCH_COUNTER = int((2 * 128 + 200) * SLACK)
"""Bytes one sketch counter may cost (a 128-character SKU in both keys, and their entries)."""
SKETCH_MIN = 16
"""Fewest counters a sketch has, however small the quota."""
STALE_RETRIES = 8
"""Times a script is given the windows afresh before the caller is told to try later."""
STALE_WINDOWS = "STALE the aggregation windows changed since they were listed"
"""What a script answers when the windows it was given are not those listed any more."""
FLUSH_RESERVE = int(FLUSH_MIN * (AGGREGATE_ENTRY + ENTRY_OVERHEAD + PEL_COST) * SLACK)
"""Bytes a fold leaves free, so the smallest flush always fits (with the entries
forwarders will hold): no input can fill the quota with windows that cannot drain."""

_GAUGE = """
-- Every key the script may touch is declared: the fixed keys, then each listed window's
-- keys (WINDOW_KEYS each, in the order the windows' sorted set lists them), then FRESH
-- more windows' (a window a fold may open). A list that no longer matches (another relay
-- opened or flushed a window meanwhile) is refused before anything is written.
local declared = {}
for j = 1, (#KEYS - FIXED_KEYS) / WINDOW_KEYS - FRESH do
  declared[j] = KEYS[FIXED_KEYS + (j - 1) * WINDOW_KEYS + 1]
end
local listed = redis.call('ZRANGE', KEYS[3], 0, -1)
local same = #listed == #declared
for j = 1, #listed do if listed[j] ~= declared[j] then same = false end end
if not same then return redis.error_reply(STALE_WINDOWS) end
local function usage(key, samples)
  return redis.call('MEMORY', 'USAGE', key, 'SAMPLES', samples) or 0
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local step = STEP
local interval = tonumber(ARGV[2])
local read_ahead = tonumber(ARGV[3])
local g = redis.call('HMGET', KEYS[4], 'bytes', 'at', 'added', 'per')
local bytes, at = tonumber(g[1]), tonumber(g[2])
local added, per = tonumber(g[3]) or 0, tonumber(g[4]) or 0
local function measure(samples)
  local stream = usage(KEYS[1], samples)
  local total = stream
  for i = 2, FIXED_KEYS do total = total + usage(KEYS[i], samples) end
  for _, w in ipairs(declared) do
    total = total + usage(w, samples)
    for i = 0, SHARDS - 1 do total = total + usage(w .. ':' .. i, samples) end
    total = total + usage(w .. SKETCH_SCORES, samples) + usage(w .. SKETCH_VALUES, samples)
  end
  -- What one more entry really costs, learned once the stream's fixed part is spread thin.
  local n = redis.call('XLEN', KEYS[1])
  if n >= 100 then per = stream / n else per = 0 end
  return total
end
local exact_now = false
local function sample(exact)
  -- Far from the cap five sampled nodes per key will do; near it, count every node.
  local samples = 5
  if exact or (bytes and bytes + added > limit * NEAR_CAP) then samples = 0 end
  bytes = measure(samples)
  if samples > 0 and bytes > limit * NEAR_CAP then bytes = measure(0) end
  at = now_ms
  added = 0
  exact_now = samples == 0
end
local function pending_reserve(extra)
  -- Entries forwarders will read next become pending, and MEMORY USAGE counts each
  -- pending entry at about PEL_COST: keep room for up to read_ahead of them.
  if read_ahead <= 0 then return 0 end
  local pending = 0
  local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], 'GROUP_NAME')
  if ok and p[1] then pending = tonumber(p[1]) end
  local unread = redis.call('XLEN', KEYS[1]) - pending + extra
  local room = read_ahead - pending
  if room <= 0 or unread <= 0 then return 0 end
  return PEL_COST * math.min(unread, room)
end
local function short_by(need, extra)
  -- Bytes missing for ``need`` more (``extra`` entries). Memory grows in steps
  -- (a stream node, a hash table), so a step's worth must be free too.
  return bytes + added + need + step + pending_reserve(extra) - limit
end
local function fits(need, extra)
  -- Judged on the estimate far from the cap; near it (within 1 - NEAR_CAP of the limit
  -- once ``need`` is added: the reserves folds keep are a large share of a small quota,
  -- and estimates between samples run low for hashes) on an exact count.
  if short_by(need, extra) <= -limit * (1 - NEAR_CAP) then return true end
  if not exact_now then sample(true) end
  return short_by(need, extra) <= 0
end
if not bytes or now_ms - at >= interval or bytes + added > limit * NEAR_CAP then sample(false) end
local function used()
  -- What admission counts: bytes held plus the room it keeps for what comes next (a
  -- stream node, the entries forwarders will hold). One figure for every reader.
  return bytes + added + step + pending_reserve(0)
end
local function shard_of(sku)
  -- A string hash, then Knuth's multiplicative scramble, whose high bits pick the shard.
  local h = 0
  for i = 1, #sku do h = (h * 31 + string.byte(sku, i)) % 1000003 end
  h = (h * 2654435761) % 4294967296
  return math.floor(h * SHARDS / 4294967296)
end
local function cost(payload, overhead) return math.max(#payload + overhead, per) * SLACK end
local function save()
  redis.call('HSET', KEYS[4], 'bytes', bytes, 'at', at, 'added', added, 'per', per,
    'reserve', step + pending_reserve(0))
end
"""
_CONSTANTS = {
    "NEAR_CAP": repr(NEAR_CAP),
    "SLACK": repr(SLACK),
    "STEP": str(STEP),
    "PEL_COST": str(PEL_COST),
    "GROUP_NAME": CONSUMER_GROUP,
    "SEAL": "'\\0sealed'",  # SEAL_FIELD as a Lua literal (Lua 5.1 has no \\x escapes)
    "SHARDS": str(SHARDS),
    "FLUSH_RESERVE": str(FLUSH_RESERVE),
    "SKETCH_SCORES": repr(SKETCH_SCORES),
    "SKETCH_VALUES": repr(SKETCH_VALUES),
    "FIXED_KEYS": str(len(SHARD0.quota_keys)),
    "WINDOW_KEYS": str(SHARDS + 3),
    "STALE_WINDOWS": repr(STALE_WINDOWS),
}


def _script(body: str, fresh: int = 0) -> str:
    """A script: the gauge, then ``body``, with the constants above written in; ``fresh``:
    how many windows it may open beyond those listed (their keys declared last)."""
    text = _GAUGE.replace("FRESH", str(fresh)) + body
    for name, value in _CONSTANTS.items():
        text = text.replace(name, value)
    return text


_MEASURE = _script(
    """
if ARGV[4] == '1' then sample() end
save()
return used()
"""
)

_ADMIT = _script(
    """
local mode, overhead, group, field = ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
local last = nil
local evicted = 0
local function undelivered_from()
  local from = '0-0'
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
  if ok then
    for _, g in ipairs(groups) do
      local name, ldi
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] end
        if g[i] == 'last-delivered-id' then ldi = g[i + 1] end
      end
      if name == group then from = ldi end
    end
  end
  return from
end
local function evict(bytes_needed)
  -- Delete the oldest entries no forwarder has read, then count memory afresh:
  -- XDEL frees a stream node only once all its entries are gone.
  if not last then last = undelivered_from() end
  local k = math.max(1, math.ceil(bytes_needed / math.max(per, 64)))
  local e = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', k)
  if #e == 0 then return false end
  for _, entry in ipairs(e) do
    redis.call('XDEL', KEYS[1], entry[1])
    -- Count order lines: an aggregate stands for many.
    local ok, ev = pcall(cjson.decode, entry[2][2] or '')
    local lines = 1
    if ok and type(ev) == 'table' and tonumber(ev.lines) then lines = tonumber(ev.lines) end
    evicted = evicted + lines
  end
  sample(true)
  return true
end
local status = {}
local full = false
for i = 8, #ARGV do
  local need = cost(ARGV[i], overhead)
  if not full and mode == 'evict' and short_by(need, 1) > 0 then
    local rest = 0
    for j = i, #ARGV do rest = rest + cost(ARGV[j], overhead) end
    -- Room for the rest of the batch at once: one count per batch, not per entry.
    while short_by(need, 1) > 0 and evict(short_by(rest, #ARGV - i + 1)) do end
  end
  if not full and fits(need, 1) then
    redis.call('XADD', KEYS[1], '*', field, ARGV[i])
    added = added + need
    exact_now = false
    status[#status + 1] = 1
  else
    full = true
    status[#status + 1] = (mode == 'drop') and -1 or 0
  end
end
save()
return {status, evicted, used()}
"""
)

_FOLD = _script(
    """
local overhead, window_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local token, ttl_ms = ARGV[6], tonumber(ARGV[7])
local deadline, cap, counter = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local FIRST = 11
if redis.call('HEXISTS', KEYS[5], token) == 1 then save(); return {2, used()} end
-- Fenced: past its lease the relay's rows may be another relay's (which may have folded
-- them and forgotten the token): a late fold must not count them again.
if deadline > 0 and now_ms >= deadline then save(); return {4, used()} end
local cur = redis.call('ZREVRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local key, start
if cur[1] and redis.call('HEXISTS', cur[1], SEAL) == 0 then
  -- One window is open at a time, until its flush begins: at least window_ms, and
  -- for as long as the stream or an older window's flush keeps analytics busy. The
  -- longer it stays open, the more lines each of its counters stands for.
  key = cur[1]
end
if not key then
  -- a window opened here is the one declared last (its name chosen by the caller)
  start = now_ms
  key = KEYS[#KEYS - WINDOW_KEYS + 1]
end
-- A window is SHARDS small hashes (base:0 .. base:N-1): each stays a compact listpack
-- up to 128 SKUs, where one big hash table would cost three to four times as much.
local zk, vk = key .. SKETCH_SCORES, key .. SKETCH_VALUES
local need = #token + 32
local fresh = {}
local present = {}
local sketched = {}
for i = FIRST, #ARGV, 3 do
  local shard = key .. ':' .. shard_of(ARGV[i])
  if redis.call('HEXISTS', shard, ARGV[i]) == 1 then
    present[i] = true
  elseif cap > 0 and redis.call('HEXISTS', vk, ARGV[i]) == 1 then
    sketched[i] = true  -- one counter per SKU and window: it stays in the sketch
  else
    fresh[shard] = (fresh[shard] or 0) + 1
    need = need + (#ARGV[i] + 32) * SLACK
  end
end
-- Past 128 fields a shard turns into a hash table (about FIELD bytes a field, and a
-- bucket array that doubles: 8 bytes a bucket, both arrays while rehashing).
local function buckets(n) local b = 4 while b < n do b = b * 2 end return b end
for shard, k in pairs(fresh) do
  local n0 = redis.call('HLEN', shard)
  if n0 + k > 128 then
    local converted = n0 + k  -- the whole shard moves into a table, once
    if n0 > 128 then converted = k end
    need = need + converted * overhead
    if n0 <= 128 or buckets(n0 + k) > buckets(n0) then need = need + 16 * buckets(n0 + k) end
  end
end
local function exact(i)
  local shard = key .. ':' .. shard_of(ARGV[i])
  local q, n = 0, 0
  local v = redis.call('HGET', shard, ARGV[i])
  if v then
    local sp = string.find(v, ' ')
    q, n = tonumber(string.sub(v, 1, sp - 1)), tonumber(string.sub(v, sp + 1))
  end
  q = q + tonumber(ARGV[i + 1])
  n = n + tonumber(ARGV[i + 2])
  redis.call('HSET', shard, ARGV[i], string.format('%.17g %d', q, n))
end
-- Room is left for the flushes that drain windows (a fold that took the last bytes
-- would leave windows no flush can move: a wedge) and for two windows' sketches.
local function sketch(i)
  local sku, q, n = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local v = redis.call('HGET', vk, sku)
  local total, lines, err = q, n, 0
  if v then
    local a, b, c = string.match(v, '^(%S+) (%S+) (%S+)$')
    total, lines, err = tonumber(a) + q, tonumber(b) + n, tonumber(c)
  elseif redis.call('ZCARD', zk) >= cap then
    local low = redis.call('ZRANGE', zk, 0, 0)[1]
    local a, b = string.match(redis.call('HGET', vk, low), '^(%S+) (%S+) ')
    redis.call('ZREM', zk, low)
    redis.call('HDEL', vk, low)
    total, lines, err = tonumber(a) + q, tonumber(b) + n, tonumber(a)
  end
  redis.call('ZADD', zk, total, sku)
  redis.call('HSET', vk, sku, string.format('%.17g %d %.17g', total, lines, err))
end
if fits(need + FLUSH_RESERVE + 2 * cap * counter, 0) then
  if start then redis.call('ZADD', KEYS[3], start, key) end
  for i = FIRST, #ARGV, 3 do
    if sketched[i] then sketch(i) else exact(i) end
  end
  redis.call('HSET', KEYS[5], token, now_ms + ttl_ms)
  added = added + need
  save()
  return {1, used()}
end
if cap <= 0 then save(); return {0, used()} end
-- Exact counters no longer fit: SKUs the window does not count yet go into its
-- sketch, at most ``cap`` counters (Space-Saving): a SKU that finds no free counter
-- takes over the smallest, inherits its total and lines, and that total becomes its
-- error bound. SKUs the window counts exactly stay exact.
local worst = math.max(0, cap * counter - usage(zk, 0) - usage(vk, 0))
local grow = #token + 32
for i, _ in pairs(present) do grow = grow + 16 end
if not fits(grow + worst + FLUSH_RESERVE, 0) then save(); return {0, used()} end
if start then redis.call('ZADD', KEYS[3], start, key) end
for i = FIRST, #ARGV, 3 do
  if present[i] then exact(i) else sketch(i) end
end
redis.call('HSET', KEYS[5], token, now_ms + ttl_ms)
added = added + grow + worst
save()
return {5, used()}
""",
    fresh=1,
)

_FLUSH = _script(
    """
local overhead, window_ms, key, field = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local keep = tonumber(ARGV[8])
local score = redis.call('ZSCORE', KEYS[3], key)
if not score then save(); return {2, 0, used()} end
if now_ms - tonumber(score) < window_ms then save(); return {3, 0, used()} end
local need = 0
for i = 10, #ARGV, 3 do need = need + cost(ARGV[i + 2], overhead) end
-- While forwarders have entries to read, a flush leaves the room folds keep free (so
-- they go on while analytics catches up); with none, it may use it: the wedge's way out.
local pending = 0
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], 'GROUP_NAME')
if ok and p[1] then pending = tonumber(p[1]) end
if redis.call('XLEN', KEYS[1]) - pending <= 0 then keep = 0 end
if not fits(need + keep, (#ARGV - 9) / 3) then save(); return {0, 0, used()} end
local zk, vk = key .. SKETCH_SCORES, key .. SKETCH_VALUES
-- Sealed: no fold adds to this window again, so no SKU's id is ever flushed twice. The
-- sketch's smallest total then is the window's floor: a SKU it does not list had at most
-- that much in the window (every count the sketch let go was no larger).
if redis.call('HEXISTS', key, SEAL) == 0 then
  redis.call('HSET', key, SEAL, 1)
  local low = redis.call('ZRANGE', zk, 0, 0, 'WITHSCORES')
  if low[2] and redis.call('ZCARD', zk) >= tonumber(ARGV[9]) then
    redis.call('HSET', key, 'floor', low[2])
  end
end
local moved = 0
for i = 10, #ARGV, 3 do
  local sku, raw = ARGV[i], ARGV[i + 1]
  if string.sub(raw, 1, 2) == 's ' then
    -- A sketch counter: moved once, as an exact counter is.
    if redis.call('HGET', vk, sku) == string.sub(raw, 3) then
      redis.call('XADD', KEYS[1], '*', field, ARGV[i + 2])
      redis.call('HDEL', vk, sku)
      redis.call('ZREM', zk, sku)
      added = added + cost(ARGV[i + 2], overhead)
      moved = moved + 1
    end
  else
    local shard = key .. ':' .. shard_of(sku)
    if redis.call('HGET', shard, sku) == raw then
      redis.call('XADD', KEYS[1], '*', field, ARGV[i + 2])
      redis.call('HDEL', shard, sku)
      added = added + cost(ARGV[i + 2], overhead)
      moved = moved + 1
    end
  end
end
local left = redis.call('EXISTS', zk) + redis.call('EXISTS', vk)
for i = 0, SHARDS - 1 do left = left + redis.call('EXISTS', key .. ':' .. i) end
if left == 0 then
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[3], key)
end
local marks = redis.call('HGETALL', KEYS[5])
for i = 1, #marks, 2 do
  if tonumber(marks[i + 1]) < now_ms then redis.call('HDEL', KEYS[5], marks[i]) end
end
save()
return {1, moved, used()}
"""
)


class QuotaBusy(RedisError):
    """Other relays kept opening and flushing windows: try again on the next round (a
    queue error like any other to the relay, which retries)."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """Per payload: 1 added, 0 held back (left in the outbox), -1 refused (dropped)."""

    status: list[int]
    evicted: int
    """Order lines evicted to make room (an evicted aggregate counts its ``lines``)."""
    used: int


@dataclass(frozen=True, slots=True)
class Window:
    """An aggregation window as read for flushing: SKU -> (raw value, total, lines)."""

    key: str
    start_ms: int
    skus: dict[str, tuple[str, float, int]]
    errors: dict[str, float] = field(default_factory=dict)
    """SKU -> how far its total may overstate the truth (sketch counters only)."""
    sealed: bool = False
    """Its flush has begun: no fold adds to it any more."""
    floor: float = 0.0
    """A full sketch's smallest total when the window was sealed: a SKU the sketch does not
    list had at most this much in the window (0: no full sketch, every SKU listed)."""


class QueueQuota:
    """The quota's scripts, bound to one Redis client and one shard of the queue."""

    def __init__(
        self,
        redis: Queue,
        quota: int,
        *,
        shard: Shard = SHARD0,
        replication: Replication | None = None,
        headroom: float = 0.02,
        sample_interval: float = 0.1,
        read_ahead: int = 0,
    ) -> None:
        if quota <= 0:
            raise ValueError("quota must be > 0 bytes")
        self.redis = redis
        self.shard = shard
        self.replication = replication
        """Waited for after every script that adds to the queue (``queue.replicas``)."""
        self.quota = quota
        self.limit = int(quota * (1 - headroom))
        self.interval_ms = max(1, int(sample_interval * 1000))
        self.read_ahead = read_ahead
        self.sketch_counters = max(SKETCH_MIN, int(quota * SKETCH_SHARE) // SKETCH_COUNTER)
        """Counters of a window's sketch, where SKUs go once exact counters no longer fit."""
        self._listed: list[str] = []
        """The windows as last listed: whose keys the scripts are given."""
        self._declared: list[str] = list(shard.quota_keys)
        """The fixed keys and every listed window's: built once a listing, not a call."""
        self._measure = redis.register_script(_MEASURE)
        self._admit = redis.register_script(_ADMIT)
        self._fold = redis.register_script(_FOLD)
        self._flush = redis.register_script(_FLUSH)

    def _args(self, *rest: Any) -> list[Any]:
        return [self.limit, self.interval_ms, self.read_ahead, *rest]

    async def _run(
        self, script: AsyncScript, args: list[Any], fresh: str | None = None, adds: bool = True
    ) -> Any:
        """Run a quota script given every key it may touch: the fixed keys, every window
        listed (as last listed here: no read on the common path), and ``fresh``'s, a
        window it may open. A list another relay changed meanwhile is read again."""
        for _ in range(STALE_RETRIES):
            keys = self._declared if fresh is None else [*self._declared, *window_keys(fresh)]
            try:
                reply = await script(keys=keys, args=args)
            except ResponseError as exc:
                if not str(exc).startswith(STALE_WINDOWS.split()[0]):
                    raise
            else:
                if adds and self.replication is not None:
                    await self.replication.wait(self.redis, self.shard)
                return reply
            await self.windows()
        raise QuotaBusy(f"the aggregation windows changed {STALE_RETRIES} times in a row")

    async def used(self, fresh: bool = False) -> int:
        """The gauge's estimate of bytes used (``fresh``: sample now)."""
        return int(await self._run(self._measure, self._args("1" if fresh else "0"), adds=False))

    async def admit(self, payloads: Sequence[str], mode: str) -> Admitted:
        """XADD what fits; ``mode`` is ``hold``, ``evict`` or ``drop`` for what does not."""
        if mode not in ("hold", "evict", "drop"):
            raise ValueError(f"unknown admit mode {mode!r}")
        if not payloads:
            return Admitted([], 0, await self.used())
        status, evicted, used = await self._run(
            self._admit,
            self._args(mode, ENTRY_OVERHEAD, CONSUMER_GROUP, EVENT_FIELD, *payloads),
        )
        return Admitted([int(s) for s in status], int(evicted), int(used))

    async def fold(
        self,
        token: str,
        totals: dict[str, tuple[float, int]],
        window_s: float,
        ttl_s: float,
        deadline: float | None = None,
    ) -> tuple[int, int]:
        """Add per-SKU ``(qty * weight, lines)`` to the open window, once per ``token``.

        ``deadline``: Unix time after which the caller's claim on the rows may have
        passed to another relay; Redis' clock past it refuses the fold.

        Returns (1 folded | 5 folded, new SKUs into the window's sketch | 2 already folded
        | 0 no room | 4 past the deadline, bytes used).
        """
        args: list[Any] = [
            FIELD_OVERHEAD,
            int(window_s * 1000),
            token,
            int(ttl_s * 1000),
            0 if deadline is None else int(deadline * 1000),
            self.sketch_counters,
            SKETCH_COUNTER,
        ]
        for sku, (total, lines) in totals.items():
            args += [sku, repr(float(total)), lines]
        fresh = self.shard.window_prefix + secrets.token_hex(8)
        code, used = await self._run(self._fold, self._args(*args), fresh)
        return int(code), int(used)

    async def forget_fold(self, token: str) -> None:
        """The folded rows are gone from the outbox: the token need not be remembered."""
        await self.redis.hdel(self.shard.folds, token)

    async def windows(self) -> list[tuple[str, int]]:
        """Windows not yet flushed, oldest first: (hash key, start ms)."""
        rows: Any = await self.redis.zrange(self.shard.windows, 0, -1, withscores=True)
        listed = [(_text(key), int(score)) for key, score in rows]
        self._listed = [key for key, _ in listed]
        self._declared = list(self.shard.quota_keys) + [
            k for w in self._listed for k in window_keys(w)
        ]
        return listed

    async def read_window(self, key: str, start_ms: int, limit: int) -> Window:
        """Up to about ``limit`` SKUs of a window: its sketch's first, then whole shards in
        shard order. A sketch counter's raw value is marked ``s `` for ``flush``."""
        skus: dict[str, tuple[str, float, int]] = {}
        errors: dict[str, float] = {}
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(key, [SEAL_FIELD, "floor"])
        pipe.hgetall(key + SKETCH_VALUES)
        for shard in range(SHARDS):
            pipe.hgetall(f"{key}:{shard}")
        (sealed, floor), sketch, *shards = await pipe.execute()
        for sku, value in sketch.items():
            text = _text(value)
            total, lines, error = text.split(" ")
            skus[_text(sku)] = ("s " + text, float(total), int(lines))
            errors[_text(sku)] = float(error)
        for raw in shards:
            if len(skus) >= limit:
                break
            for sku, value in raw.items():
                text = _text(value)
                total, _, lines = text.partition(" ")
                skus[_text(sku)] = (text, float(total), int(lines))
        return Window(
            key,
            start_ms,
            skus,
            errors,
            sealed=sealed is not None,
            floor=0.0 if floor is None else float(floor),
        )

    async def flush(
        self, key: str, window_s: float, items: Sequence[tuple[str, str, str]]
    ) -> tuple[int, int, int]:
        """Move ``(sku, raw value read, event payload)`` into the stream, each exactly once.

        Returns (1 done | 2 window gone | 3 window still open | 0 no room, moved, used).
        """
        keep = FLUSH_RESERVE + 2 * self.sketch_counters * SKETCH_COUNTER
        args: list[Any] = [
            ENTRY_OVERHEAD,
            int(window_s * 1000),
            key,
            EVENT_FIELD,
            keep,
            self.sketch_counters,
        ]
        for sku, value, payload in items:
            args += [sku, value, payload]
        code, moved, used = await self._run(self._flush, self._args(*args))
        return int(code), int(moved), int(used)


def window_keys(window: str) -> list[str]:
    """Every key of one aggregation window: its base, its shards and its sketch."""
    shards = [f"{window}:{shard}" for shard in range(SHARDS)]
    return [window, *shards, window + SKETCH_SCORES, window + SKETCH_VALUES]


async def exact_usage(redis: Queue, shard: Shard = SHARD0) -> int:
    """MEMORY USAGE of every key the quota covers in ``shard``, counted exactly (SAMPLES 0)."""
    keys = list(shard.quota_keys)
    for window in await redis.zrange(shard.windows, 0, -1):
        keys += window_keys(_text(window))
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    return sum(int(n or 0) for n in await pipe.execute())


async def pressure_usage(redis: Queue, shards: Sequence[Shard] = (SHARD0,)) -> int:
    """Bytes as admission counts them, summed over ``shards``: every covered key counted
    exactly, plus the room the relays' scripts last kept for what comes next (a stream
    node, the entries forwarders will hold). What the controller, the relay and the status
    line share as "queue at N % of quota"; the raw bytes alone read low, and shedding
    would start only after the relay had begun to hold events back."""
    total = 0
    for shard in shards:
        total += await exact_usage(redis, shard)
        reserve: Any = await redis.hget(shard.gauge, "reserve")
        total += int(float(reserve)) if reserve is not None else STEP
    return total


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def window_count(redis: Queue, shards: Sequence[Shard] = (SHARD0,)) -> int:
    """Aggregation windows not yet flushed into the stream, over ``shards``."""
    return sum([int(await redis.zcard(shard.windows)) for shard in shards])
