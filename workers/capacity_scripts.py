"""The Redis scripts behind workers/capacity.py's shared limits: each runs atomically, so
concurrent workers on any host never race between reading a limiter's state and booking it."""

from __future__ import annotations

# KEYS: one state hash per limiter in scope. ARGV: now, tokens, safety, ttl, then per key its
# configured rpm and tpm (0 = none: the learned one, if any). Returns the booked slot (a string:
# Lua numbers lose their fraction on the way back).
ADMIT = """
local now = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local safety = tonumber(ARGV[3])
local slot = now
local rpms, tpms = {}, {}
for i, key in ipairs(KEYS) do
  local st = redis.call('HMGET', key, 'tat_r', 'tat_t', 'paused', 'rpm_l', 'tpm_l')
  local rpm = tonumber(ARGV[3 + 2 * i])
  local tpm = tonumber(ARGV[4 + 2 * i])
  if rpm <= 0 then rpm = tonumber(st[4]) or 0 end
  if tpm <= 0 then tpm = tonumber(st[5]) or 0 end
  rpm, tpm = rpm * safety, tpm * safety
  rpms[i], tpms[i] = rpm, tpm
  slot = math.max(slot, tonumber(st[3]) or 0)
  if rpm > 0 then slot = math.max(slot, tonumber(st[1]) or 0) end
  if tpm > 0 then slot = math.max(slot, tonumber(st[2]) or 0) end
end
for i, key in ipairs(KEYS) do
  if rpms[i] > 0 then redis.call('HSET', key, 'tat_r', tostring(slot + 60 / rpms[i])) end
  if tpms[i] > 0 then redis.call('HSET', key, 'tat_t', tostring(slot + tokens * 60 / tpms[i])) end
  local queued = tonumber(redis.call('HGET', key, 'queued') or '0')
  if queued > 0 then redis.call('HINCRBY', key, 'queued', -1) end
  local bucket = key .. ':n:' .. math.floor(slot)
  redis.call('INCR', bucket)
  redis.call('EXPIRE', bucket, 130)
  redis.call('EXPIRE', key, ARGV[4])
end
return tostring(slot)
"""

# KEYS[1]: a state hash. ARGV: tokens booked, tokens used, tpm (0 = the learned one), safety.
GIVE_BACK = """
local tpm = tonumber(ARGV[3])
if tpm <= 0 then tpm = tonumber(redis.call('HGET', KEYS[1], 'tpm_l') or '0') end
tpm = tpm * tonumber(ARGV[4])
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat_t') or '0')
if tpm > 0 and tat > 0 then
  local back = (tonumber(ARGV[1]) - tonumber(ARGV[2])) * 60 / tpm
  redis.call('HSET', KEYS[1], 'tat_t', tostring(tat - back))
end
return 1
"""

# KEYS: state hashes. ARGV: per key, how many calls sent to it started without a booking.
UNQUEUE = """
for i, key in ipairs(KEYS) do
  local queued = tonumber(redis.call('HGET', key, 'queued') or '0')
  if queued > 0 then redis.call('HSET', key, 'queued', math.max(0, queued - tonumber(ARGV[i]))) end
end
return 1
"""

# KEYS[1]: in-flight set. ARGV: now, call id, expiry, max. Returns 1 when taken, else 0.
ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  redis.call('EXPIRE', KEYS[1], 3600)
  return 1
end
return 0
"""
