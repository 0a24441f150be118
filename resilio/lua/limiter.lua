-- resilio rate limiter: one decision over one or more limits, all or nothing.
--
-- The same algorithms as resilio/_core/limiters.py, on the same integer
-- microseconds, giving the same answers. Lua numbers are doubles: integers
-- below 2^53 are exact, so every quantity stays an integer below 2^53; the
-- few products that could pass it go through muldiv, and every division
-- through idiv, which are exact.
--
-- KEYS: the state of each limit, in the order of the limits (a sliding log
--       takes two keys: its entries and their total).
-- ARGV[1]: now in microseconds, or '' to read the server's clock (TIME);
--          '*' for a batch of decisions (see the end of the script)
-- ARGV[2]: the cost of the request
-- ARGV[3]: '1' to consume when every limit allows, '0' to only look (peek)
-- ARGV[4]: the limits, three words each: the kind (g gcra, l leaky, f fixed
--          window, s sliding window, o sliding log) and its two parameters,
--          as in Algorithm.params; for example 'g 100000 20 f 1000 3600000000'
--
-- Returns one string of four integers per limit, separated by spaces (one
-- bulk reply is cheaper for the client to read than an array): allowed (1 or
-- 0), remaining, retry_after (us) and reset_after (us). When some limit rejects, nothing is
-- consumed anywhere, and the limits that would have admitted report their
-- state as it is (Algorithm.rest): what remains and when it is full again.
-- Every key written gets a TTL of at least 1 ms, ending when its state is
-- back to the initial one (so an idle key expires, a limited one never).
-- When the caller gives the time (a test's fake clock, which need not move
-- with real time), TTLs get one more second, so that a key still limited in
-- the caller's time does not expire in real time while a test pauses.

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

local function fmt(n)
  return string.format('%.0f', n)
end

-- One decision; its keys are KEYS[base + 1 ...].
local function decide(base, now_arg, cost_arg, mode_arg, spec)
  local now
  local slack = 0
  if now_arg == '' then
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1000000 + tonumber(time[2])
  else
    now = tonumber(now_arg)
    slack = 1000
  end

  -- A TTL in whole milliseconds, rounded up, never below 1.
  local function ttl_ms(us)
    local ms = idiv(us + 999, 1000)
    if ms < 1 then
      ms = 1
    end
    return ms + slack
  end

  local cost = tonumber(cost_arg)
  local commit = mode_arg == '1'

  local result = {}
  local rests = {}
  local writes = {}
  local allowed_all = true
  local k = base + 1

  for kind, first, second in string.gmatch(spec, '(%a) (%d+) (%d+)') do
    local p1 = tonumber(first)
    local p2 = tonumber(second)
    local key = KEYS[k]
    local ok, remaining, retry, reset

    if kind == 'g' then
      -- GCRA: the state is the theoretical arrival time.
      local interval, tolerance = p1, p1 * p2
      local tat = tonumber(redis.call('GET', key))
      if tat == nil or tat < now then
        tat = now
      end
      local new_tat = tat + cost * interval
      local allow_at = new_tat - tolerance
      if allow_at <= now then
        ok, remaining, retry, reset = 1, idiv(now - allow_at, interval), 0, new_tat - now
        writes[#writes + 1] = {'g', key, new_tat}
        rests[#result / 4 + 1] = {idiv(now + tolerance - tat, interval), tat - now}
      else
        ok, remaining, retry, reset = 0, idiv(now + tolerance - tat, interval), allow_at - now, tat - now
      end
      k = k + 1

    elseif kind == 'l' then
      -- Leaky bucket: the state is the time the bucket is empty again.
      local interval = p1
      local drained = tonumber(redis.call('GET', key))
      if drained == nil or drained <= now then
        ok, remaining, retry, reset = 1, 0, 0, cost * interval
        writes[#writes + 1] = {'g', key, now + cost * interval}
        rests[#result / 4 + 1] = {0, 0}
      else
        ok, remaining, retry, reset = 0, 0, drained - now, drained - now
      end
      k = k + 1

    elseif kind == 'f' then
      -- Fixed window: the state is 'index used'.
      local limit, window = p1, p2
      local index = idiv(now, window)
      local state = redis.call('GET', key)
      local s_index, used = index, 0
      if state then
        local i, u = string.match(state, '^(%S+) (%S+)$')
        if tonumber(i) >= index then
          s_index, used = tonumber(i), tonumber(u)
        end
      end
      local left = (index + 1) * window - now
      if used + cost <= limit then
        ok, remaining, retry, reset = 1, limit - used - cost, 0, left
        writes[#writes + 1] = {'f', key, s_index, used + cost, (s_index + 1) * window - now}
        if used > 0 then
          rests[#result / 4 + 1] = {limit - used, left}
        else
          rests[#result / 4 + 1] = {limit, 0}
        end
      else
        ok, remaining, retry, reset = 0, limit - used, left, left
      end
      k = k + 1

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
      remaining = limit - after - weighted
      if remaining < 0 then
        remaining = 0
      end
      if after > 0 then
        reset = 2 * window - elapsed
      elseif previous > 0 then
        reset = window - elapsed
      else
        reset = 0
      end
      if after ~= current then
        ok, retry = 1, 0
        writes[#writes + 1] = {'s', key, s_index, after, previous, (s_index + 2) * window - now}
        local rest_remaining = limit - current - weighted
        if rest_remaining < 0 then
          rest_remaining = 0
        end
        if current > 0 then
          rests[#result / 4 + 1] = {rest_remaining, 2 * window - elapsed}
        elseif previous > 0 then
          rests[#result / 4 + 1] = {rest_remaining, window - elapsed}
        else
          rests[#result / 4 + 1] = {rest_remaining, 0}
        end
      elseif room >= 0 then
        -- The previous window's weight decays enough within this window.
        ok, retry = 0, window - muldiv(room, window, previous) - elapsed
      else
        -- Only in the next window, where this window's count is the previous one.
        ok, retry = 0, 2 * window - muldiv(limit - cost, window, current) - elapsed
      end
      k = k + 1

    elseif kind == 'o' then
      -- Sliding log: a list of (stamp, cost) pairs, oldest first, and their total.
      local limit, window = p1, p2
      local total_key = KEYS[k + 1]
      local total = tonumber(redis.call('GET', total_key))
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
      reset = window
      if live + cost <= limit then
        ok, remaining, retry = 1, limit - live - cost, 0
        writes[#writes + 1] = {'o', key, total_key, expired, live + cost, window}
        if #stamps == 0 then
          rests[#result / 4 + 1] = {limit, 0}
        else
          local last = tonumber(redis.call('LINDEX', key, -2))
          rests[#result / 4 + 1] = {limit - live, last + window - now}
        end
      else
        ok, remaining = 0, limit - live
        local last = tonumber(redis.call('LINDEX', key, -2))
        reset = last + window - now
        local need = live + cost - limit
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
            retry = stamps[j] + window - now
            break
          end
          j = j + 1
        end
      end
      k = k + 2

    else
      error({err = 'resilio: unknown limit kind ' .. tostring(kind)})
    end

    if ok == 0 then
      allowed_all = false
    end
    result[#result + 1] = ok
    result[#result + 1] = remaining
    result[#result + 1] = retry
    result[#result + 1] = reset
  end

  if not allowed_all then
    -- Nothing is consumed: the parts that would admit report their state as it is.
    for i, rest in pairs(rests) do
      result[4 * i - 2] = rest[1]
      result[4 * i] = rest[2]
    end
  elseif commit then
    for _, w in ipairs(writes) do
      local kind, key = w[1], w[2]
      if kind == 'g' then
        redis.call('SET', key, fmt(w[3]), 'PX', ttl_ms(w[3] - now))
      elseif kind == 'f' then
        redis.call('SET', key, fmt(w[3]) .. ' ' .. fmt(w[4]), 'PX', ttl_ms(w[5]))
      elseif kind == 's' then
        redis.call('SET', key, fmt(w[3]) .. ' ' .. fmt(w[4]) .. ' ' .. fmt(w[5]), 'PX', ttl_ms(w[6]))
      else
        local total_key, expired, total, window = w[3], w[4], w[5], w[6]
        if expired > 0 then
          redis.call('LTRIM', key, 2 * expired, -1)
        end
        local last = tonumber(redis.call('LINDEX', key, -2))
        local newest = now
        if last and last >= now then
          newest = last
          local used = tonumber(redis.call('LINDEX', key, -1))
          redis.call('LSET', key, -1, fmt(used + cost))
        else
          redis.call('RPUSH', key, fmt(now), fmt(cost))
        end
        local ttl = ttl_ms(newest + window - now)
        redis.call('PEXPIRE', key, ttl)
        redis.call('SET', total_key, fmt(total), 'PX', ttl)
      end
    end
  end

  for i = 1, #result do
    result[i] = fmt(result[i])
  end
  return table.concat(result, ' ')
end

if ARGV[1] ~= '*' then
  return decide(0, ARGV[1], ARGV[2], ARGV[3], ARGV[4])
end

-- A batch of decisions, one after the other (ARGV[1] is '*'): five words per
-- decision in ARGV (its number of keys, then its ARGV[1..4] as above), its keys
-- in order in KEYS. The replies are joined by commas.
local replies = {}
local base = 0
for i = 2, #ARGV, 5 do
  replies[#replies + 1] = decide(base, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
  base = base + tonumber(ARGV[i])
end
return table.concat(replies, ',')
