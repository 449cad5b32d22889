"""Move what a Redis holds under the names before the hash tags to the names now.

trackrelay 0.x named its keys without hash tags (``trackrelay:events``...), so its
scripts could never run on a Redis Cluster. A Redis upgraded in place may still hold
events, dead letters, aggregation windows and the budget under those names; every
process that checks the queue at start (``client.check_queue_redis``) moves them,
in batches, each batch one script, so nothing is lost and nothing is counted twice:

- stream entries are added to the new stream and deleted from the old one in the
  same script (an entry an old forwarder was still pushing may reach analytics
  twice, which analytics' idempotency key absorbs; none is lost);
- aggregation windows are renamed, every key of each, and keep their start;
- fold tokens are merged; the budget is kept unless one is set under the new name;
- the gauge and the limiter's time line are dropped (both are rebuilt on first use).

Only a standalone Redis can hold the old names: 0.x never ran on a cluster.
"""

from __future__ import annotations

import logging

from trackrelay.queue.handle import Queue
from trackrelay.queue.keys import AGG_WINDOW_PREFIX, LEGACY_KEYS, LEGACY_WINDOW_PREFIX
from trackrelay.queue.quota import SHARDS

log = logging.getLogger(__name__)

BATCH = 500
"""Stream entries (or windows) one script moves: a short pause for Redis at most."""

_MOVE = """
local batch = tonumber(ARGV[#ARGV])
local old_prefix, new_prefix = ARGV[#ARGV - 2], ARGV[#ARGV - 1]
local moved = 0
local function window_suffixes(name)
  local out = {'', ':sk', ':skv'}
  for i = 0, SHARDS - 1 do out[#out + 1] = ':' .. i end
  return out
end
for i = 1, #ARGV - 3, 2 do
  local old, new = ARGV[i], ARGV[i + 1]
  local kind = redis.call('TYPE', old)['ok']
  if kind == 'stream' then
    local rows = redis.call('XRANGE', old, '-', '+', 'COUNT', batch)
    for _, row in ipairs(rows) do
      redis.call('XADD', new, '*', unpack(row[2]))
      redis.call('XDEL', old, row[1])
      moved = moved + 1
    end
    if #rows == 0 then redis.call('DEL', old) end
  elseif kind == 'zset' then
    local rows = redis.call('ZRANGE', old, 0, batch - 1, 'WITHSCORES')
    for j = 1, #rows, 2 do
      local w = rows[j]
      local renamed = new_prefix .. string.sub(w, #old_prefix + 1)
      for _, suffix in ipairs(window_suffixes(w)) do
        if redis.call('EXISTS', w .. suffix) == 1 then
          redis.call('RENAME', w .. suffix, renamed .. suffix)
        end
      end
      redis.call('ZADD', new, rows[j + 1], renamed)
      redis.call('ZREM', old, w)
      moved = moved + 1
    end
    if #rows == 0 then redis.call('DEL', old) end
  elseif kind == 'hash' and string.find(old, 'folds', 1, true) then
    local rows = redis.call('HGETALL', old)
    if #rows > 0 then redis.call('HSET', new, unpack(rows)) end
    redis.call('DEL', old)
    moved = moved + 1
  elseif kind == 'string' and string.sub(old, -4) ~= ':tat' then
    if redis.call('EXISTS', new) == 0 then redis.call('RENAME', old, new)
    else redis.call('DEL', old) end
    moved = moved + 1
  elseif kind ~= 'none' then
    redis.call('DEL', old)
    moved = moved + 1
  end
end
return moved
"""
"""One batch: what it moved (0 once nothing is left under an old name). No shebang: it
touches keys it cannot declare before it reads them, which only a standalone Redis allows,
and only a standalone Redis holds the old names."""


async def migrate(redis: Queue, batch: int = BATCH) -> int:
    """Move everything under the old names; returns how many entries and keys it moved."""
    script = _MOVE.replace("SHARDS", str(SHARDS))
    pairs = [name for old, new in LEGACY_KEYS.items() for name in (old, new)]
    args = [*pairs, LEGACY_WINDOW_PREFIX, AGG_WINDOW_PREFIX, str(batch)]
    if not await redis.exists(*LEGACY_KEYS):
        return 0
    total = 0
    while moved := int(await redis.eval(script, 0, *args)):
        total += moved
    if total:
        log.info("queue redis: moved %d entries and keys from the names before hash tags", total)
    return total
