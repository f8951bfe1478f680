"""The store's Lua scripts: each write that must be all-or-nothing runs as one script.

Keys are always passed in KEYS (an empty string stands for "no such key"); errors the Python
side translates start with an upper-case code (UNKNOWN_EXCHANGE, ACTIVE_CHANGED, NO_HISTORY).
"""

# Store an exchange, index it for its message and its user, and count it for its tenant. An
# exchange already stored is left as it is (returns 0), so a write retried after a lost reply
# counts once.
# KEYS: exchange, message index | '', user index | '', tenant stats | '', tenants
# ARGV: exchange JSON, ttl seconds (0 = kept), exchange id, now, adapter version, tenant | ''
ADD_EXCHANGE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
else redis.call('SET', KEYS[1], ARGV[1]) end
if KEYS[2] ~= '' then
  if ttl > 0 then redis.call('SET', KEYS[2], ARGV[3], 'EX', ttl)
  else redis.call('SET', KEYS[2], ARGV[3]) end
end
if KEYS[3] ~= '' then
  local now = tonumber(ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. now)
  if ttl > 0 then redis.call('ZADD', KEYS[3], now + ttl, ARGV[3])
  else redis.call('ZADD', KEYS[3], 'inf', ARGV[3]) end
  -- The index lives as long as its longest-lived exchange: forever once one is kept.
  if redis.call('ZCOUNT', KEYS[3], '+inf', '+inf') > 0 then redis.call('PERSIST', KEYS[3])
  else redis.call('EXPIRE', KEYS[3], ttl) end
end
if KEYS[4] ~= '' then
  redis.call('HINCRBY', KEYS[4], 'exchanges', 1)
  redis.call('HINCRBY', KEYS[4], ARGV[5] .. ':exchanges', 1)
  redis.call('SADD', KEYS[5], ARGV[6])
end
return 1
"""

# Keep an exchange (and its indexes) from expiring: shared by rating and correcting.
_KEEP = """
local function keep(exchange, message, user, exchange_id)
  redis.call('PERSIST', exchange)
  if message ~= '' then redis.call('PERSIST', message) end
  if user ~= '' and redis.call('ZSCORE', user, exchange_id) then
    redis.call('ZADD', user, 'inf', exchange_id)
    redis.call('PERSIST', user)
  end
end
"""

# One moderator's rating: refuse unknown exchanges, set (or with value 0 remove) this
# moderator's field, keep the exchange, log the event, keep the counters; returns the score.
# KEYS: exchange, ratings, rated, rating events, message index | '', user index | '', stats
# ARGV: moderator hash, value (1, -1, 0), now, exchange id, event kind, stream maxlen, version
RATE = _KEEP + """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('UNKNOWN_EXCHANGE') end
local function tally()
  local total, count = 0, 0
  for _, v in ipairs(redis.call('HVALS', KEYS[2])) do
    total = total + tonumber(v)
    count = count + 1
  end
  return total, count
end
local old_total, old_count = tally()
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  keep(KEYS[1], KEYS[5], KEYS[6], ARGV[4])
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'exchange', ARGV[4], 'kind', ARGV[5],
           'moderator', ARGV[1])
local total, count = tally()
local function flag(b) if b then return 1 else return 0 end end
local rated = flag(count > 0) - flag(old_count > 0)
local positive = flag(total > 0) - flag(old_total > 0)
if rated ~= 0 then redis.call('HINCRBY', KEYS[7], ARGV[7] .. ':rated', rated) end
if positive ~= 0 then redis.call('HINCRBY', KEYS[7], ARGV[7] .. ':positive', positive) end
return total
"""

# Imported pairs: each exchange (kept forever) with one moderator's +1, all in one script, so
# a failure stores nothing and no exchange is ever left without its rating. An exchange that
# holds that moderator's rating already is a duplicate (0); one stored without it (by an older
# import cut short) gets its rating now. Returns 1 (stored) or 0 (duplicate) per row.
# KEYS: rated, rating events, stats, then per row: exchange, ratings
# ARGV: moderator hash, now, stream maxlen, then per row: exchange id, exchange JSON, version
IMPORT_RATED = """
local result = {}
for i = 1, (#KEYS - 3) / 2 do
  local exchange, ratings = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local id, json, version = ARGV[1 + 3 * i], ARGV[2 + 3 * i], ARGV[3 + 3 * i]
  local exists = redis.call('EXISTS', exchange) == 1
  if exists and redis.call('HEXISTS', ratings, ARGV[1]) == 1 then
    result[i] = 0
  else
    if exists then
      redis.call('PERSIST', exchange)
    else
      redis.call('SET', exchange, json)
      redis.call('HINCRBY', KEYS[3], 'exchanges', 1)
      redis.call('HINCRBY', KEYS[3], version .. ':exchanges', 1)
    end
    local before = 0
    for _, v in ipairs(redis.call('HVALS', ratings)) do before = before + tonumber(v) end
    local was_rated = redis.call('HLEN', ratings) > 0
    redis.call('HSET', ratings, ARGV[1], '1')
    if not was_rated then redis.call('HINCRBY', KEYS[3], version .. ':rated', 1) end
    if before <= 0 and before + 1 > 0 then
      redis.call('HINCRBY', KEYS[3], version .. ':positive', 1)
    end
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'exchange', id, 'kind', 'up',
               'moderator', ARGV[1])
    result[i] = 1
  end
end
return result
"""

# A moderator's better reply (one per moderator, the newer replaces the older).
# KEYS: exchange, corrections, rated, rating events, message index | '', user index | '', stats
# ARGV: moderator hash, correction JSON, now, exchange id, stream maxlen
CORRECT = _KEEP + """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('UNKNOWN_EXCHANGE') end
if redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[7], 'corrections', 1)
end
keep(KEYS[1], KEYS[5], KEYS[6], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'exchange', ARGV[4], 'kind', 'correct',
           'moderator', ARGV[1])
return 1
"""

# Move the active pointer, optionally only from an expected version (compare-and-set), and
# announce it. Returns the version that was active before.
# KEYS: active, history, adapter events channel
# ARGV: version, expected | '', event JSON with __PREVIOUS__ to fill in
ACTIVATE = """
local current = redis.call('GET', KEYS[1]) or 'base'
if ARGV[2] ~= '' and ARGV[2] ~= current then
  return redis.error_reply('ACTIVE_CHANGED ' .. current)
end
if ARGV[1] == current then return current end
redis.call('LPUSH', KEYS[2], current)
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[3], (ARGV[3]:gsub('__PREVIOUS__', current)))
return current
"""

# Go back to the previously active version and announce it; returns {now active, was active}
# as read inside the script, so the event and the answer name the same versions. With the
# expected versions given, it moves only if the history still starts with that target and the
# pointer still holds that current version (the caller checked that exact target loads).
# KEYS: active, history, adapter events channel
# ARGV: event JSON with __VERSION__ and __PREVIOUS__ to fill in, expected target | '',
#       expected current | ''
ROLLBACK = """
local previous = redis.call('LINDEX', KEYS[2], 0)
if not previous then return redis.error_reply('NO_HISTORY') end
local current = redis.call('GET', KEYS[1]) or 'base'
if (ARGV[2] ~= '' and ARGV[2] ~= previous) or (ARGV[3] ~= '' and ARGV[3] ~= current) then
  return redis.error_reply('ACTIVE_CHANGED ' .. current)
end
redis.call('LPOP', KEYS[2])
redis.call('SET', KEYS[1], previous)
redis.call('PUBLISH', KEYS[3],
           (ARGV[1]:gsub('__VERSION__', previous):gsub('__PREVIOUS__', current)))
return {previous, current}
"""

# The training lock: renew or release only while this token holds it.
# KEYS: lock; ARGV: token, ttl ms (renew only)
RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# One consistent read of where training stands.
# KEYS: rating events, cursor, request; returns {newest event id, cursor, new events, request}
SNAPSHOT = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local newest_id = '0-0'
if #newest > 0 then newest_id = newest[1][1] end
local cursor = redis.call('GET', KEYS[2]) or '0-0'
local count = 0
if newest_id ~= '0-0' then
  count = #redis.call('XRANGE', KEYS[1], '(' .. cursor, newest_id)
end
return {newest_id, cursor, count, redis.call('GET', KEYS[3]) or ''}
"""

# Settle a "train now" request once a cycle that saw it ends: delete it (ARGV[2] == '') or
# rewrite it (a failed cycle counts an attempt), only if it is still the request the cycle saw,
# so one made meanwhile is kept for the next cycle.
# KEYS: request; ARGV: the request JSON the cycle saw, the new JSON | ''
SETTLE_REQUEST = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""
