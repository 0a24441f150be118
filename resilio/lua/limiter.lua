-- resilio rate limiter: one decision over one or more limits, all or nothing.
--
-- The same algorithms as resilio/_core/limiters.py, on the same integer
-- microseconds, giving the same answers. Lua numbers are doubles: integers
-- below 2^53 are exact, so every quantity stays an integer below 2^53; the
-- few products that could pass it go through muldiv, and every division
-- through idiv, which are exact. Numbers that go into strings go through
-- string.format('%d') (a C long, 64 bits), because tostring() keeps only 14
-- digits and '%.0f' costs twice as much.
--
-- KEYS: the state of each limit, in the order of the limits (a sliding log
--       takes two keys: its entries and their total).
-- ARGV[1]: the request, in words: its cost; '1' to consume when every limit
--          allows or '0' to only look (peek); then three words per limit:
--          the kind (g gcra, l leaky, f fixed window, s sliding window,
--          o sliding log) and its two parameters, as in Algorithm.params. For
--          example '1 1 g 100000 20 f 1000 3600000000'. One argument, not
--          several: each argument costs the client more to encode than the
--          script to parse. '*' for a batch of decisions (see the end).
-- ARGV[2]: now in microseconds; absent (or '') to read the server's clock (TIME)
--
-- Returns four integers per limit, separated by spaces, as a status reply:
-- the client reads it as one line, while a bulk string costs it a second
-- read (about 10 us for redis.asyncio here) and an array one read per item.
-- The integers: allowed (1 or 0), remaining, retry_after (us) and
-- reset_after (us). When some limit rejects, nothing is consumed anywhere,
-- and the limits that would have admitted report their state as it is
-- (Algorithm.rest): what remains and when it is full again.
-- Every key written gets a TTL of at least 1 ms, ending when its state is
-- back to the initial one (so an idle key expires, a limited one never).
-- When the caller gives the time (a test's fake clock, which need not move
-- with real time), TTLs get one more second, so that a key still limited in
-- the caller's time does not expire in real time while a test pauses.
--
-- Cost. Beyond the redis.call's, what a call costs Redis is the Lua around
-- them: Redis runs this whole body on every call, so each `local function`
-- is a new closure per call (about 0.1 us), and every table, string.format
-- or pattern match costs a few tenths of a microsecond more. So a decision
-- on one limit, by far the most common, takes a path of its own through the
-- same code: no table, one string.match for its arguments, TIME, GET and one
-- SET ... PX, one string.format for its reply. Decisions on several limits
-- go through the general loop, which calls the same functions.

local TWO53 = 9007199254740992

-- floor(a / b), exact for integers below 2^53.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- floor(a * b / c) for 0 <= a, b and 0 < c below 2^53, exact when the result is.
local function muldiv(a, b, c)
  if a * b < TWO53 then
    return idiv(a * b, c)
  end
  local qa = idiv(a, c)
  local qb = idiv(b, c)
  local ra = a - qa * c
  local rb = b - qb * c
  local q = qa * qb * c + qa * rb + ra * qb
  if ra * rb < TWO53 then
    return q + idiv(ra * rb, c)
  end
  -- ra * rb = hi * c + lo by binary long multiplication; every step stays below c.
  local bits = {}
  while rb > 0 do
    local bit = rb % 2
    bits[#bits + 1] = bit
    rb = (rb - bit) / 2
  end
  local hi, lo = 0, 0
  for i = #bits, 1, -1 do
    hi = hi * 2
    if lo >= c - lo then
      lo = lo - (c - lo)
      hi = hi + 1
    else
      lo = lo + lo
    end
    if bits[i] == 1 then
      if lo >= c - ra then
        lo = lo - (c - ra)
        hi = hi + 1
      else
        lo = lo + ra
      end
    end
  end
  return q + hi
end

-- The verdict of one limit, reading its state and writing nothing. The
-- arguments: the limit's kind, its key(s), its two parameters, now, the cost,
-- and (for the sliding log, where it costs a LINDEX) whether to report the
-- state as it is. Returns
--   allowed (1 or 0), remaining, retry_after, reset_after: the verdict;
-- and when allowed, also
--   the state as it is (Algorithm.rest: remaining, reset_after), which a
--   decision on several limits reports when another limit rejects,
--   and two values for `commit`.
-- One function with a branch per kind, not one function per kind: the script
-- body runs on every call, and each function is one more closure to build.
local function evaluate(kind, key, total_key, p1, p2, now, cost, rest)
  if kind == 'g' then
    -- GCRA: the state is the theoretical arrival time.
    local interval, tolerance = p1, p1 * p2
    local tat = tonumber(redis.call('GET', key))
    if tat == nil or tat < now then
      tat = now
    end
    local new_tat = tat + cost * interval
    local allow_at = new_tat - tolerance
    -- What remains of the state as it is; the request takes exactly `cost` of it.
    local left = idiv(now + tolerance - tat, interval)
    if allow_at <= now then
      return 1, left - cost, 0, new_tat - now, left, tat - now,
        string.format('%d', new_tat), new_tat - now
    end
    return 0, left, allow_at - now, tat - now

  elseif kind == 'f' then
    -- Fixed window: the state is 'index used'.
    local limit, window = p1, p2
    local index = idiv(now, window)
    local state = redis.call('GET', key)
    local s_index, used = index, 0
    if state then
      local i, u = string.match(state, '^(%S+) (%S+)$')
      i = tonumber(i)
      if i >= index then
        s_index, used = i, tonumber(u)
      end
    end
    local left = (index + 1) * window - now
    if used + cost <= limit then
      local rest_reset = 0
      if used > 0 then
        rest_reset = left
      end
      return 1, limit - used - cost, 0, left, limit - used, rest_reset,
        string.format('%d %d', s_index, used + cost), (s_index + 1) * window - now
    end
    return 0, limit - used, left, left

  elseif kind == 's' then
    -- Sliding-window counter: the state is 'index current previous'.
    local limit, window = p1, p2
    local index = idiv(now, window)
    local elapsed = now - index * window
    local state = redis.call('GET', key)
    local s_index, current, previous = index, 0, 0
    if state then
      local i, c, p = string.match(state, '^(%S+) (%S+) (%S+)$')
      i = tonumber(i)
      if i >= index then
        s_index, current, previous = i, tonumber(c), tonumber(p)
      elseif i == index - 1 then
        previous = tonumber(c)
      end
    end
    -- ceil(previous * (window - elapsed) / window), the weighted previous count
    local weighted = previous - muldiv(previous, elapsed, window)
    local room = limit - current - cost
    local after = current
    if room >= 0 and weighted <= room then
      after = current + cost
    end
    -- What remains, and when the key is back to its initial state, with `count`
    -- in this window: after the request, or as it is (Algorithm.rest).
    local function standing(count)
      local left = limit - count - weighted
      if left < 0 then
        left = 0
      end
      if count > 0 then
        return left, 2 * window - elapsed
      elseif previous > 0 then
        return left, window - elapsed
      end
      return left, 0
    end
    local remaining, reset = standing(after)
    if after ~= current then
      local rest_remaining, rest_reset = standing(current)
      return 1, remaining, 0, reset, rest_remaining, rest_reset,
        string.format('%d %d %d', s_index, after, previous), (s_index + 2) * window - now
    elseif room >= 0 then
      -- The previous window's weight decays enough within this window.
      return 0, remaining, window - muldiv(room, window, previous) - elapsed, reset
    end
    -- Only in the next window, where this window's count is the previous one.
    return 0, remaining, 2 * window - muldiv(limit - cost, window, current) - elapsed, reset

  elseif kind == 'l' then
    -- Leaky bucket: the state is the time the bucket is empty again.
    local interval = p1
    local drained = tonumber(redis.call('GET', key))
    if drained == nil or drained <= now then
      local busy = cost * interval
      return 1, 0, 0, busy, 0, 0, string.format('%d', now + busy), busy
    end
    return 0, 0, drained - now, drained - now

  elseif kind == 'o' then
    -- Sliding log: a list of (stamp, cost) pairs, oldest first, and their
    -- total. `commit` gets the number of entries that left the window and
    -- the new total.
    local limit, window = p1, p2
    local total = tonumber(redis.call('GET', total_key))
    if total == nil and redis.call('LLEN', key) > 0 then
      -- A list without its total (kept under another key by an older version of
      -- this script, or lost): count it again. LLEN also reads the list before
      -- any write, so a key of another type fails the decision before it writes.
      total = 0
      local all = redis.call('LRANGE', key, 0, -1)
      for j = 2, #all, 2 do
        total = total + tonumber(all[j])
      end
    end
    local expired, live = 0, 0
    local stamps = {}
    local costs = {}
    if total then
      -- Skip the entries that left the window; keep the first chunk of the others.
      local horizon = now - window
      local offset = 0
      local size = 2 -- the oldest entry first: usually it is still in the window
      local done = false
      while not done do
        local chunk = redis.call('LRANGE', key, offset, offset + size - 1)
        size = 128
        if #chunk == 0 then
          break
        end
        for j = 1, #chunk, 2 do
          local stamp, used = tonumber(chunk[j]), tonumber(chunk[j + 1])
          if stamp <= horizon and not done then
            expired = expired + 1
            total = total - used
          else
            done = true
            stamps[#stamps + 1] = stamp
            costs[#costs + 1] = used
          end
        end
        offset = offset + #chunk
      end
      live = total
    end
    if cost <= limit - live then
      local rest_remaining, rest_reset = limit, 0
      if rest and #stamps > 0 then
        rest_remaining = limit - live
        rest_reset = tonumber(redis.call('LINDEX', key, -2)) + window - now
      end
      return 1, limit - live - cost, 0, window, rest_remaining, rest_reset, expired, live + cost
    end
    local reset = tonumber(redis.call('LINDEX', key, -2)) + window - now
    -- What must leave the window, as cost minus the room left: live + cost may pass 2^53.
    local need = cost - (limit - live)
    local freed = 0
    local j = 1
    local offset = 2 * (expired + #stamps)
    while true do
      if j > #stamps then
        local chunk = redis.call('LRANGE', key, offset, offset + 127)
        offset = offset + #chunk
        for c = 1, #chunk, 2 do
          stamps[#stamps + 1] = tonumber(chunk[c])
          costs[#costs + 1] = tonumber(chunk[c + 1])
        end
      end
      freed = freed + costs[j]
      if freed >= need then
        return 0, limit - live, stamps[j] + window - now, reset
      end
      j = j + 1
    end
  end
  error({err = 'resilio: unknown limit kind ' .. tostring(kind)})
end

-- Consume what `evaluate` allowed: `first` and `second` are its last two values.
local function commit(kind, key, total_key, first, second, window, now, cost, slack)
  local ttl_us = second
  if kind == 'o' then
    -- The sliding log: drop the expired entries, add this one (or add its cost
    -- to the newest entry when that one has the same time), keep the total.
    if first > 0 then
      redis.call('LTRIM', key, 2 * first, -1)
    end
    local last = tonumber(redis.call('LINDEX', key, -2))
    local newest = now
    if last and last >= now then
      newest = last
      local used = tonumber(redis.call('LINDEX', key, -1))
      redis.call('LSET', key, -1, string.format('%d', used + cost))
    else
      redis.call('RPUSH', key, string.format('%d', now), string.format('%d', cost))
    end
    ttl_us = newest + window - now
  end
  -- The TTL in whole milliseconds, rounded up, never below 1.
  local ttl = idiv(ttl_us + 999, 1000)
  if ttl < 1 then
    ttl = 1
  end
  -- As a string: a number argument to redis.call costs about 0.4 us more
  -- (measured with INFO commandstats) than formatting it here.
  local px = string.format('%d', ttl + slack)
  if kind == 'o' then
    redis.call('PEXPIRE', key, px)
    redis.call('SET', total_key, string.format('%d', second), 'PX', px)
  else
    redis.call('SET', key, first, 'PX', px)
  end
end

local REPLY = '%d %d %d %d'

-- One decision; its keys are KEYS[base + 1 ...].
local function decide(base, spec, now_arg)
  local now
  local slack = 0
  if now_arg == nil or now_arg == '' then
    local time = redis.call('TIME')
    now = time[1] * 1000000 + time[2]
  else
    now = tonumber(now_arg)
    slack = 1000
  end

  local cost_word, mode, kind, first, second =
    string.match(spec, '^(%d+) (%d) (%a) (%d+) (%d+)$')
  if cost_word then
    -- One limit: its verdict is the decision.
    local cost = tonumber(cost_word)
    local key, total_key, p2 = KEYS[base + 1], KEYS[base + 2], tonumber(second)
    local ok, remaining, retry, reset, _, _, w1, w2 =
      evaluate(kind, key, total_key, tonumber(first), p2, now, cost, false)
    if ok == 1 and mode == '1' then
      commit(kind, key, total_key, w1, w2, p2, now, cost, slack)
    end
    return string.format(REPLY, ok, remaining, retry, reset)
  end

  -- Several limits: every verdict first, then the writes only if all allow.
  cost_word, mode = string.match(spec, '^(%d+) (%d) ')
  local cost = tonumber(cost_word)
  local replies = {}
  local rests = {}
  local writes = {}
  local allowed_all = true
  local k = base + 1
  for kind_word, p1_word, p2_word in string.gmatch(spec, '(%a) (%d+) (%d+)') do
    local key, total_key, p2 = KEYS[k], KEYS[k + 1], tonumber(p2_word)
    local ok, remaining, retry, reset, rest_remaining, rest_reset, w1, w2 =
      evaluate(kind_word, key, total_key, tonumber(p1_word), p2, now, cost, true)
    if ok == 1 then
      rests[#replies + 1] = {rest_remaining, rest_reset}
      writes[#writes + 1] = {kind_word, key, total_key, w1, w2, p2}
    else
      allowed_all = false
    end
    replies[#replies + 1] = string.format(REPLY, ok, remaining, retry, reset)
    if kind_word == 'o' then
      k = k + 2
    else
      k = k + 1
    end
  end

  if not allowed_all then
    -- Nothing is consumed: the parts that would admit report their state as it is.
    for i, rest in pairs(rests) do
      replies[i] = string.format(REPLY, 1, rest[1], 0, rest[2])
    end
  elseif mode == '1' then
    for _, w in ipairs(writes) do
      commit(w[1], w[2], w[3], w[4], w[5], w[6], now, cost, slack)
    end
  end
  return table.concat(replies, ' ')
end

if ARGV[1] ~= '*' then
  return {ok = decide(0, ARGV[1], ARGV[2])}
end

-- A batch of decisions, one after the other (ARGV[1] is '*'): three words
-- per decision in ARGV (its number of keys, then its ARGV[1..2] as above, the
-- time '' for the server's), its keys in order in KEYS. The replies are
-- joined by commas.
--
-- A decision that fails on its own keys (a key of another type, written by
-- another program, or a value this script cannot read) answers '!' and the
-- error, commas dropped, and the batch goes on: the others are not its
-- callers' business. It wrote nothing, since a decision reads every key
-- before it writes any. Any other error (a refused write, out of memory)
-- fails the whole call, as it fails a lone decision.
local function own_failure(err)
  if type(err) == 'table' then
    err = err.err
  end
  if type(err) ~= 'string' then
    return nil
  end
  -- WRONGTYPE from redis.call, or this script's own runtime error on a value it
  -- cannot read ('user_script:<line>: attempt to ...'); not a refused write.
  if string.find(err, 'WRONGTYPE', 1, true) or string.find(err, '^user_script:%d+: ') then
    return '!' .. string.gsub(err, ',', ' ')
  end
  return nil
end

local replies = {}
local base = 0
for i = 2, #ARGV, 3 do
  local ok, reply = pcall(decide, base, ARGV[i + 1], ARGV[i + 2])
  if not ok then
    local failure = own_failure(reply)
    if failure == nil then
      error(reply, 0)
    end
    reply = failure
  end
  replies[#replies + 1] = reply
  base = base + tonumber(ARGV[i])
end
return {ok = table.concat(replies, ',')}
