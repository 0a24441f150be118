-- resilio circuit breaker: one step of the state machine, atomically.
--
-- The same rules as resilio/_core/breaker.py (BreakerCore), on integer
-- microseconds. Every quantity stays an integer below 2^53, so doubles hold
-- it exactly; numbers that go into strings go through string.format('%d'),
-- because tostring() keeps only 14 digits.
--
-- KEYS[1]: the state hash: s state, g generation, o opened at, d open duration,
--          f consecutive failures, ps probe successes, t last token,
--          wn/wc/wf the window's next slot, calls and failures, h time-window head
-- KEYS[2]: the probes in flight while half-open: a zset token -> lease end
-- KEYS[3]: closed-state calls in flight, with slow-call detection: token -> start
-- KEYS[4]: the window's outcomes: a bit string (count window) or a hash
--          c<slot>/x<slot> of calls/failures per bucket (time window)
-- ARGV[1]: now in microseconds, or '' to read the server's clock (TIME)
-- ARGV[2]: the step: a admit, l look, c complete, i isolate, r reset
-- ARGV[3..15]: the settings (see the names below); '' means unset
-- ARGV[16..19]: for c: the permit's generation, token, start, and the verdict
--
-- Returns {admitted, state, generation, token, started, retry_after, failures,
-- notice...}: retry_after is in microseconds (-1 for never); each notice is
-- "kind state previous own" with '-' for no previous state.

local state_key, probes_key, calls_key, window_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local now
if ARGV[1] == '' then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
else
  now = tonumber(ARGV[1])
end
local step = ARGV[2]
local threshold = tonumber(ARGV[3])
local rate = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local width = tonumber(ARGV[6])
local minimum_calls = tonumber(ARGV[7])
local slow = tonumber(ARGV[8])
local max_probes = tonumber(ARGV[9])
local success_threshold = tonumber(ARGV[10])
local recovery = tonumber(ARGV[11])
local max_recovery = tonumber(ARGV[12])
local multiplier = tonumber(ARGV[13])
local probe_timeout = tonumber(ARGV[14])
local keep = tonumber(ARGV[15])

local BUCKETS = 10

local function int(value)
  return string.format('%d', value)
end

local fields = redis.call('HMGET', state_key, 's', 'g', 'o', 'd', 'f', 'ps', 't', 'wn', 'wc', 'wf', 'h')
local s = fields[1] or 'closed'
local g = tonumber(fields[2] or 0)
local o = tonumber(fields[3] or 0)
local d = tonumber(fields[4] or recovery)
local f = tonumber(fields[5] or 0)
local ps = tonumber(fields[6] or 0)
local t = tonumber(fields[7] or 0)
local wn = tonumber(fields[8] or 0)
local wc = tonumber(fields[9] or 0)
local wf = tonumber(fields[10] or 0)
local h = tonumber(fields[11] or -1)
local dirty = false
local notices = {}

local function notice(kind, state, previous, own)
  notices[#notices + 1] = kind .. ' ' .. state .. ' ' .. (previous or '-') .. ' ' .. (own and '1' or '0')
end

local function take_token()
  t = t + 1
  dirty = true
  return t
end

-- The window ----------------------------------------------------------------

local function roll()
  local bucket = math.floor(now / width)
  if h < 0 then
    h = bucket
  elseif bucket > h then
    for number = h + 1, math.min(bucket, h + BUCKETS) do
      local slot = number % BUCKETS
      local counts = redis.call('HMGET', window_key, 'c' .. slot, 'x' .. slot)
      wc = wc - tonumber(counts[1] or 0)
      wf = wf - tonumber(counts[2] or 0)
      redis.call('HDEL', window_key, 'c' .. slot, 'x' .. slot)
    end
    h = bucket
  end
  return bucket % BUCKETS
end

local function add(failed)
  local bit = failed and 1 or 0
  if window then
    if wc == window then
      wf = wf + bit - redis.call('GETBIT', window_key, wn)
    else
      wc = wc + 1
      wf = wf + bit
    end
    redis.call('SETBIT', window_key, wn, bit)
    wn = wn + 1
    if wn == window then
      wn = 0
    end
  else
    local slot = roll()
    redis.call('HINCRBY', window_key, 'c' .. slot, 1)
    wc = wc + 1
    if failed then
      redis.call('HINCRBY', window_key, 'x' .. slot, 1)
      wf = wf + 1
    end
  end
end

-- Transitions ---------------------------------------------------------------

local function enter(state)
  local previous = s
  s = state
  g = g + 1
  ps = 0
  dirty = true
  redis.call('DEL', probes_key, calls_key)
  if previous ~= state then
    notice('state', state, previous, false)
  end
end

local function open(at, grow)
  if grow and max_recovery then
    d = math.min(math.floor(d * multiplier), max_recovery)
  end
  o = at
  enter('open')
end

local function close()
  enter('closed')
  f = 0
  if window or width then
    redis.call('DEL', window_key)
    wn, wc, wf, h = 0, 0, 0, -1
  end
  d = recovery
end

local function count(failed, own)
  dirty = true
  local trips
  if not (window or width) then
    if not failed then
      f = 0
      notice('success', 'closed', nil, own)
      return
    end
    f = f + 1
    trips = f >= threshold
  else
    add(failed)
    if not failed then
      notice('success', 'closed', nil, own)
      return
    end
    if width then
      roll()
    end
    trips = wc >= minimum_calls and wf / wc >= rate
  end
  notice('failure', trips and 'open' or 'closed', nil, own)
  if trips then
    open(now, false)
  end
end

local function judge_slow_in_flight()
  local overdue = redis.call('ZRANGEBYSCORE', calls_key, '-inf', '(' .. int(now - slow))
  for _, token in ipairs(overdue) do
    if s ~= 'closed' then
      return
    end
    redis.call('ZREM', calls_key, token)
    count(true, false)
  end
end

local function advance()
  if s == 'half_open' then
    local first = redis.call('ZRANGE', probes_key, 0, 0, 'WITHSCORES')
    if first[2] and tonumber(first[2]) < now then
      open(tonumber(first[2]), true)
    end
  end
  if s == 'open' then
    if now >= o + d then
      enter('half_open')
    end
  elseif s == 'closed' and slow then
    judge_slow_in_flight()
  end
end

local function retry_after()
  if s == 'open' then
    return math.max(0, o + d - now)
  elseif s == 'half_open' then
    if redis.call('ZCARD', probes_key) < max_probes then
      return 0
    end
    local first = redis.call('ZRANGE', probes_key, 0, 0, 'WITHSCORES')
    return math.max(0, tonumber(first[2]) - now)
  elseif s == 'isolated' then
    return -1
  end
  return 0
end

-- Steps ---------------------------------------------------------------------

local admitted, token, started, wait = 0, 0, 0, 0

local function complete()
  local generation, permit, since, verdict = tonumber(ARGV[16]), ARGV[17], tonumber(ARGV[18]), ARGV[19]
  if verdict == 'ignored' then
    notice('ignored', s, nil, true)
  end
  if generation ~= g then
    return
  end
  if s == 'half_open' then
    if redis.call('ZREM', probes_key, permit) == 0 or verdict == 'ignored' or verdict == 'released' then
      return
    end
    if verdict == 'success' and slow and now - since > slow then
      verdict = 'failure'
    end
    if verdict == 'failure' then
      notice('failure', 'open', nil, true)
      open(now, true)
      return
    end
    ps = ps + 1
    dirty = true
    local closing = ps >= success_threshold
    notice('success', closing and 'closed' or 'half_open', nil, true)
    if closing then
      close()
    end
    return
  end
  if s ~= 'closed' then
    return
  end
  if slow then
    if redis.call('ZREM', calls_key, permit) == 0 then
      return -- already counted as slow while in flight
    end
    if verdict == 'success' and now - since > slow then
      verdict = 'failure'
    end
  end
  if verdict == 'success' or verdict == 'failure' then
    count(verdict == 'failure', true)
  end
end

-- Isolating and resetting do not depend on what time changed (as in the core).
if step ~= 'i' and step ~= 'r' then
  advance()
end
if step == 'a' then
  if s == 'closed' then
    admitted = 1
    if slow then
      token = take_token()
      started = now
      redis.call('ZADD', calls_key, now, token)
    end
  elseif s == 'half_open' and redis.call('ZCARD', probes_key) < max_probes then
    admitted = 1
    token = take_token()
    started = now
    redis.call('ZADD', probes_key, now + probe_timeout, token)
  else
    wait = retry_after()
  end
elseif step == 'c' then
  complete()
elseif step == 'i' then
  if s ~= 'isolated' then
    enter('isolated')
  end
elseif step == 'r' then
  close()
end
if step ~= 'a' then
  wait = retry_after()
end

if dirty then
  redis.call('HSET', state_key, 's', s, 'g', g, 'o', int(o), 'd', int(d), 'f', f, 'ps', ps, 't', t,
    'wn', wn, 'wc', wc, 'wf', wf, 'h', int(h))
end
if dirty or token ~= 0 then
  -- Every key outlives the state it holds by `keep`: an open period, a
  -- probe's lease or a slow call's deadline, however long.
  local ttl = keep
  if s == 'open' then
    ttl = ttl + math.max(0, o + d - now)
  end
  ttl = int(math.floor(ttl / 1000) + 1)
  redis.call('PEXPIRE', state_key, ttl)
  redis.call('PEXPIRE', probes_key, ttl)
  redis.call('PEXPIRE', calls_key, ttl)
  redis.call('PEXPIRE', window_key, ttl)
end

local reply = {admitted, s, g, token, started, wait, f}
for _, item in ipairs(notices) do
  reply[#reply + 1] = item
end
return reply
