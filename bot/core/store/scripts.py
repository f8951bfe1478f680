"""The store's Lua scripts: each write that must be all-or-nothing runs as one script.

Keys are always passed in KEYS (an empty string stands for "no such key"); errors the Python
side translates start with an upper-case code (UNKNOWN_EXCHANGE, ACTIVE_CHANGED, NO_HISTORY).
"""

# An index of exchanges (a zset: exchange id -> when it expires, +inf once kept) that lives as
# long as its longest-lived exchange: entries past their expiry are pruned as it is written.
_INDEX = """
local function index(key, id, now, ttl)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
  if ttl > 0 then redis.call('ZADD', key, now + ttl, id)
  else redis.call('ZADD', key, 'inf', id) end
  if redis.call('ZCOUNT', key, '+inf', '+inf') > 0 then redis.call('PERSIST', key)
  else redis.call('EXPIRE', key, ttl) end
end
"""

# Store an exchange, index it for each message of its reply, its user, the user messages whose
# text it holds, the authors of its context and its channel (and a thread's parent), count it
# for its tenant and put it among the tenant's recent exchanges (pruned past a window and a
# count). An exchange already stored is left as it is (returns 0), so a write retried after a
# lost reply counts once.
# KEYS: exchange, tenant stats | '', tenants, tenant recent | '', then N message index keys
#       (one per piece of the reply), then the zset indexes (user, text of a message, context
#       of an author, channel)
# ARGV: exchange JSON, ttl seconds (0 = kept), exchange id, now, adapter version, tenant | '', N,
#       recent window seconds, recent count
ADD_EXCHANGE = _INDEX + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ttl, id, now = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
else redis.call('SET', KEYS[1], ARGV[1]) end
local n = tonumber(ARGV[7])
for i = 5, 4 + n do
  if ttl > 0 then redis.call('SET', KEYS[i], id, 'EX', ttl)
  else redis.call('SET', KEYS[i], id) end
end
for i = 5 + n, #KEYS do index(KEYS[i], id, now, ttl) end
if KEYS[2] ~= '' then
  redis.call('HINCRBY', KEYS[2], 'exchanges', 1)
  redis.call('HINCRBY', KEYS[2], ARGV[5] .. ':exchanges', 1)
  redis.call('SADD', KEYS[3], ARGV[6])
end
if KEYS[4] ~= '' then
  local window = tonumber(ARGV[8])
  redis.call('ZADD', KEYS[4], now, id)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. (now - window))
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -1 - tonumber(ARGV[9]))
  if ttl > 0 and ttl < window then window = ttl end
  redis.call('EXPIRE', KEYS[4], math.ceil(window))
end
return 1
"""

# Keep an exchange and everything that finds it from expiring: shared by rating and
# correcting. KEYS[first ..] are its N message index keys, then its zset indexes.
_KEEP = """
local function keep(exchange, id, first, n)
  redis.call('PERSIST', exchange)
  for i = first, first + n - 1 do redis.call('PERSIST', KEYS[i]) end
  for i = first + n, #KEYS do
    if redis.call('ZSCORE', KEYS[i], id) then
      redis.call('ZADD', KEYS[i], 'inf', id)
      redis.call('PERSIST', KEYS[i])
    end
  end
end
"""

# The score (sum) and number of the ratings in a ratings hash.
_TALLY = """
local function tally(ratings)
  local total, count = 0, 0
  for _, v in ipairs(redis.call('HVALS', ratings)) do
    total = total + tonumber(v)
    count = count + 1
  end
  return total, count
end
local function flag(b) if b then return 1 else return 0 end end
"""

# One moderator's rating: refuse unknown exchanges, set (or with value 0 remove) this
# moderator's field, keep the exchange, log the event, keep the counters; returns the score.
# KEYS: exchange, ratings, rated, rating events, stats, the moderator's exchanges, then the
#       exchange's N message index keys and its zset indexes
# ARGV: moderator hash, value (1, -1, 0), now, exchange id, event kind, stream maxlen, version, N
RATE = _KEEP + _TALLY + """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('UNKNOWN_EXCHANGE') end
local old_total, old_count = tally(KEYS[2])
if ARGV[2] == '0' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[6], ARGV[4])
  keep(KEYS[1], ARGV[4], 7, tonumber(ARGV[8]))
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'exchange', ARGV[4], 'kind', ARGV[5],
           'moderator', ARGV[1])
local total, count = tally(KEYS[2])
local rated = flag(count > 0) - flag(old_count > 0)
local positive = flag(total > 0) - flag(old_total > 0)
if rated ~= 0 then redis.call('HINCRBY', KEYS[5], ARGV[7] .. ':rated', rated) end
if positive ~= 0 then redis.call('HINCRBY', KEYS[5], ARGV[7] .. ':positive', positive) end
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
# KEYS: exchange, corrections, rated, rating events, stats, the moderator's exchanges, then the
#       exchange's N message index keys and its zset indexes
# ARGV: moderator hash, correction JSON, now, exchange id, stream maxlen, N
CORRECT = _KEEP + """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('UNKNOWN_EXCHANGE') end
if redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[5], 'corrections', 1)
end
redis.call('SADD', KEYS[6], ARGV[4])
keep(KEYS[1], ARGV[4], 7, tonumber(ARGV[6]))
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'exchange', ARGV[4], 'kind', 'correct',
           'moderator', ARGV[1])
return 1
"""

# Delete one exchange with its ratings and corrections, take its share out of the counters
# (read here, so a rating that raced in is counted out too) and take it out of every index.
# An index key of a message is deleted only while it still names this exchange. Returns 1 when
# the exchange existed (its counters moved), else 0 (its leftovers are cleaned all the same).
# KEYS: exchange, ratings, corrections, rated | '', stats | '', then N message index keys,
#       then M zset indexes, then the sets of the moderators who rated or corrected it
# ARGV: exchange id, adapter version, N, M
FORGET_EXCHANGE = _TALLY + """
local id, n, m = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local existed = redis.call('EXISTS', KEYS[1]) == 1
if existed and KEYS[5] ~= '' then
  local total, count = tally(KEYS[2])
  redis.call('HINCRBY', KEYS[5], 'exchanges', -1)
  redis.call('HINCRBY', KEYS[5], ARGV[2] .. ':exchanges', -1)
  -- (0 - x, not -x: Lua writes a negated 0 as "-0", which HINCRBY refuses)
  redis.call('HINCRBY', KEYS[5], ARGV[2] .. ':rated', 0 - flag(count > 0))
  redis.call('HINCRBY', KEYS[5], ARGV[2] .. ':positive', 0 - flag(total > 0))
  redis.call('HINCRBY', KEYS[5], 'corrections', 0 - redis.call('HLEN', KEYS[3]))
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if KEYS[4] ~= '' then redis.call('ZREM', KEYS[4], id) end
for i = 6, 5 + n do
  if redis.call('GET', KEYS[i]) == id then redis.call('DEL', KEYS[i]) end
end
for i = 6 + n, 5 + n + m do redis.call('ZREM', KEYS[i], id) end
for i = 6 + n + m, #KEYS do redis.call('SREM', KEYS[i], id) end
if existed then return 1 end
return 0
"""

# Take one moderator's rating and correction off an exchange, with the counters (no event is
# logged: the point is that no trace of them stays). Returns {ratings removed, corrections
# removed}.
# KEYS: ratings, corrections, stats | ''
# ARGV: moderator hash, adapter version
FORGET_MODERATOR = _TALLY + """
local old_total, old_count = tally(KEYS[1])
local ratings = redis.call('HDEL', KEYS[1], ARGV[1])
local corrections = redis.call('HDEL', KEYS[2], ARGV[1])
if KEYS[3] ~= '' then
  local total, count = tally(KEYS[1])
  local rated = flag(count > 0) - flag(old_count > 0)
  local positive = flag(total > 0) - flag(old_total > 0)
  if rated ~= 0 then redis.call('HINCRBY', KEYS[3], ARGV[2] .. ':rated', rated) end
  if positive ~= 0 then redis.call('HINCRBY', KEYS[3], ARGV[2] .. ':positive', positive) end
  if corrections > 0 then redis.call('HINCRBY', KEYS[3], 'corrections', 0 - corrections) end
end
return {ratings, corrections}
"""

# Replace a stored JSON value only while it is still the one the caller read (its expiry is
# kept): a compare-and-set for rewriting an exchange. Returns 1 when replaced.
# KEYS: the key; ARGV: the JSON read, the new JSON
REPLACE_IF_SAME = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
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

# Hold items for review: each item not held before (in any status) is stored and queued; an
# item already pending, approved or rejected stays as it is. Returns how many were queued.
# KEYS: review items, review pending
# ARGV: per item: id, HeldItem JSON, held_at
HOLD = """
local queued = 0
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
    queued = queued + 1
  end
end
return queued
"""

# An admin's decision on a held item, only while it is pending (so two admins deciding at
# once decide it once). Returns 1 when decided, 0 when it was not pending.
# KEYS: review items, review pending
# ARGV: id, the decided HeldItem JSON
DECIDE = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
