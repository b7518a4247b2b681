"""Lua scripts for the Redis broker: each task state change is one atomic script.

A change touches the task hash, its stream entry, the counters and the event channel together;
doing that in Lua means a crash or a concurrent worker can never leave a task counted twice,
acknowledged but not finished, or finished twice. Key layout (``P`` = the key prefix):

- ``P task:<id>``          hash: the task (fields of ``TaskRecord``, plus ``stream``/``entry``)
- ``P q:<cap>:<priority>`` stream per capability and priority; consumer group ``workers``
- ``P tasks``              sorted set id → created time (listing)
- ``P idem:<key>``         idempotency key → task id (``SET NX`` semantics, expires with results)
- ``P delayed``            sorted set id → time a retry is due
- ``P dead``               dead-letter stream
- ``P stats``              hash: ``<state>:<cap>`` live counters, ``total:<state>`` final counters
- ``P events``             pub/sub channel of task state changes (JSON)

Scripts build a few keys from the prefix at run time (a retry's stream): fine on one Redis
server (or a replicated pair), not on Redis Cluster.
"""

from __future__ import annotations

# Shared Lua helpers, prepended to the scripts that finish a task.
_COMMON = """
local function publish(channel, id, cap, state, agent, err)
  redis.call('PUBLISH', channel, cjson.encode({task_id=id, capability=cap, state=state,
    agent=agent or '', error=err or ''}))
end
local function finalize(task, stats, from, to, cap, id, now, ttl, err, channel, agent)
  redis.call('HSET', task, 'state', to, 'updated_at', now, 'finished_at', now, 'error', err)
  redis.call('HINCRBY', stats, from .. ':' .. cap, -1)
  redis.call('HINCRBY', stats, 'total:' .. to, 1)
  redis.call('PEXPIRE', task, ttl)
  -- The idempotency key lives as long as the task: its result TTL starts now.
  local idem = redis.call('HGET', task, 'idempotency_key')
  if idem and idem ~= '' then
    local prefix = string.sub(task, 1, #task - #id - #'task:')
    redis.call('PEXPIRE', prefix .. 'idem:' .. idem, ttl)
  end
  publish(channel, id, cap, to, agent, err)
end
local function ack(stream, group, entry)
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end
local function dead_letter(dead, id, cap, attempts, err, now, payload)
  redis.call('XADD', dead, 'MAXLEN', '~', 10000, '*', 'task_id', id, 'capability', cap,
    'attempts', attempts, 'error', err, 'at', now, 'payload', payload)
end
local FINAL = {succeeded=true, cancelled=true, dead=true, expired=true}
"""

# KEYS: idem, task, stream, tasks, stats
# ARGV: id, cap, priority, payload, now, deadline, idem key, (unused), group, channel
SUBMIT = """
if ARGV[7] ~= '' then
  local existing = redis.call('GET', KEYS[1])
  if existing and redis.call('EXISTS', KEYS[2]:sub(1, -1 - #ARGV[1]) .. existing) == 1 then
    return {0, existing}
  end
end
redis.pcall('XGROUP', 'CREATE', KEYS[3], ARGV[9], '0', 'MKSTREAM')
local entry = redis.call('XADD', KEYS[3], '*', 'task', ARGV[1])
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'capability', ARGV[2], 'priority', ARGV[3],
  'payload', ARGV[4], 'state', 'queued', 'created_at', ARGV[5], 'updated_at', ARGV[5],
  'deadline', ARGV[6], 'idempotency_key', ARGV[7], 'attempts', 0, 'agent', '',
  'error', '', 'stream', KEYS[3], 'entry', entry)
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('HINCRBY', KEYS[5], 'queued:' .. ARGV[2], 1)
-- No expiry while the task lives; finalize starts the result TTL on both.
if ARGV[7] ~= '' then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', ARGV[10], cjson.encode({task_id=ARGV[1], capability=ARGV[2],
  state='queued', agent='', error=''}))
return {1, ARGV[1]}
"""

# KEYS: task, stream, stats, dead
# ARGV: entry, group, agent, now, max deliveries, ttl ms, channel
BEGIN = (
    _COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then ack(KEYS[2], ARGV[2], ARGV[1]); return {'skip', 0} end
local t = redis.call('HMGET', KEYS[1], 'state', 'capability', 'attempts', 'deadline', 'entry',
  'payload', 'error', 'id', 'agent')
local state, cap, attempts, id = t[1], t[2], tonumber(t[3]), t[8]
if t[5] ~= ARGV[1] or (state ~= 'queued' and state ~= 'running') then
  ack(KEYS[2], ARGV[2], ARGV[1]); return {'skip', 0}
end
if t[4] ~= '' and tonumber(t[4]) < tonumber(ARGV[4]) then
  finalize(KEYS[1], KEYS[3], state, 'expired', cap, id, ARGV[4], ARGV[6],
    'the deadline passed before the task could start', ARGV[7], t[9])
  ack(KEYS[2], ARGV[2], ARGV[1]); return {'skip', 0}
end
if attempts >= tonumber(ARGV[5]) then
  local err = 'gave up after ' .. attempts .. ' deliveries; the worker stopped while running it'
  if t[7] ~= '' then err = err .. ' (earlier error: ' .. t[7] .. ')' end
  dead_letter(KEYS[4], id, cap, attempts, err, ARGV[4], t[6])
  finalize(KEYS[1], KEYS[3], state, 'dead', cap, id, ARGV[4], ARGV[6], err, ARGV[7], t[9])
  ack(KEYS[2], ARGV[2], ARGV[1]); return {'skip', 0}
end
redis.call('HSET', KEYS[1], 'state', 'running', 'attempts', attempts + 1, 'agent', ARGV[3],
  'started_at', ARGV[4], 'updated_at', ARGV[4])
if state == 'queued' then
  redis.call('HINCRBY', KEYS[3], 'queued:' .. cap, -1)
  redis.call('HINCRBY', KEYS[3], 'running:' .. cap, 1)
end
publish(ARGV[7], id, cap, 'running', ARGV[3], '')
return {'run', attempts + 1, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: task, stream, stats
# ARGV: entry, group, attempt, result json, now, ttl ms, channel
SUCCEED = (
    _COMMON
    + """
local t = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'capability', 'entry', 'id', 'agent')
if t[1] == 'running' and tonumber(t[2]) == tonumber(ARGV[3]) and t[4] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'result', ARGV[4])
  finalize(KEYS[1], KEYS[3], 'running', 'succeeded', t[3], t[5], ARGV[5], ARGV[6], '', ARGV[7],
    t[6])
  ack(KEYS[2], ARGV[2], ARGV[1])
  return 1
end
if t[1] == false or FINAL[t[1]] then ack(KEYS[2], ARGV[2], ARGV[1]) end
return 0
"""
)

# KEYS: task, stream, stats, delayed, dead
# ARGV: entry, group, attempt, error, now, retry at ('' = never), max deliveries, ttl ms, channel
FAIL = (
    _COMMON
    + """
local t = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'capability', 'entry', 'id', 'agent',
  'payload')
if not (t[1] == 'running' and tonumber(t[2]) == tonumber(ARGV[3]) and t[4] == ARGV[1]) then
  if t[1] == false or FINAL[t[1]] then ack(KEYS[2], ARGV[2], ARGV[1]) end
  return ''
end
local attempts = tonumber(t[2])
if ARGV[6] == '' or attempts >= tonumber(ARGV[7]) then
  dead_letter(KEYS[5], t[5], t[3], attempts, ARGV[4], ARGV[5], t[7])
  finalize(KEYS[1], KEYS[3], 'running', 'dead', t[3], t[5], ARGV[5], ARGV[8], ARGV[4], ARGV[9],
    t[6])
  ack(KEYS[2], ARGV[2], ARGV[1])
  return 'dead'
end
redis.call('HSET', KEYS[1], 'state', 'retrying', 'error', ARGV[4], 'updated_at', ARGV[5])
redis.call('HINCRBY', KEYS[3], 'running:' .. t[3], -1)
redis.call('HINCRBY', KEYS[3], 'retrying:' .. t[3], 1)
redis.call('ZADD', KEYS[4], ARGV[6], t[5])
ack(KEYS[2], ARGV[2], ARGV[1])
publish(ARGV[9], t[5], t[3], 'retrying', t[6], ARGV[4])
return 'retrying'
"""
)

# KEYS: delayed, stats
# ARGV: now, prefix, group, channel, limit
REQUEUE_DUE = (
    _COMMON
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[5])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local task = ARGV[2] .. 'task:' .. id
  local t = redis.call('HMGET', task, 'state', 'capability', 'priority', 'agent')
  if t[1] == 'retrying' then
    local stream = ARGV[2] .. 'q:' .. t[2] .. ':' .. t[3]
    redis.pcall('XGROUP', 'CREATE', stream, ARGV[3], '0', 'MKSTREAM')
    local entry = redis.call('XADD', stream, '*', 'task', id)
    redis.call('HSET', task, 'state', 'queued', 'stream', stream, 'entry', entry,
      'updated_at', ARGV[1])
    redis.call('HINCRBY', KEYS[2], 'retrying:' .. t[2], -1)
    redis.call('HINCRBY', KEYS[2], 'queued:' .. t[2], 1)
    publish(ARGV[4], id, t[2], 'queued', t[4], '')
  end
end
return #ids
"""
)

# KEYS: task, stats, delayed
# ARGV: now, ttl ms, channel, group
CANCEL = (
    _COMMON
    + """
local t = redis.call('HMGET', KEYS[1], 'state', 'capability', 'stream', 'entry', 'id', 'agent')
if t[1] == false then return '' end
if FINAL[t[1]] then return t[1] end
if t[1] == 'queued' then ack(t[3], ARGV[4], t[4]) end
if t[1] == 'retrying' then redis.call('ZREM', KEYS[3], t[5]) end
finalize(KEYS[1], KEYS[2], t[1], 'cancelled', t[2], t[5], ARGV[1], ARGV[2],
  'cancelled by request', ARGV[3], t[6])
return 'cancelled'
"""
)

# KEYS: task keys...   ARGV: group, consumer, then (stream, entry, attempt) per task
# Refreshes the idle time of entries this worker still owns (so XAUTOCLAIM leaves them alone)
# and returns the indexes (1-based) of tasks the worker should stop.
KEEPALIVE = """
local lost = {}
for i, task in ipairs(KEYS) do
  local base = 2 + (i - 1) * 3
  local stream, entry, attempt = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
  local t = redis.call('HMGET', task, 'state', 'attempts', 'entry')
  if t[1] == 'running' and tonumber(t[2]) == attempt and t[3] == entry then
    redis.call('XCLAIM', stream, ARGV[1], ARGV[2], 0, entry, 'JUSTID')
  else
    table.insert(lost, i)
  end
end
return lost
"""

# KEYS: the capability's streams, highest priority first   ARGV: group, consumer, count
# One round trip for "up to count new entries, high before normal before low" (non-blocking).
FETCH = """
local out = {}
local remaining = tonumber(ARGV[3])
for _, stream in ipairs(KEYS) do
  if remaining <= 0 then break end
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', remaining,
    'STREAMS', stream, '>')
  if reply then
    for _, entry in ipairs(reply[1][2]) do
      local fields = entry[2]
      for i = 1, #fields, 2 do
        if fields[i] == 'task' then table.insert(out, {stream, entry[1], fields[i + 1]}) end
      end
      remaining = remaining - 1
    end
  end
end
return out
"""
