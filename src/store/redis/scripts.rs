//! The Lua scripts of the Redis store: one per operation of the semantics table in
//! [`crate::store`], each reading and writing only `KEYS[1]`, so that it is atomic on one Redis
//! and stays within one slot on a cluster.

/// Reply codes shared by the reserve and hold scripts.
pub(super) const ACQUIRED: i64 = 0;
pub(super) const PREEMPTED: i64 = 1;
pub(super) const DUP_IN_FLIGHT: i64 = 2;
pub(super) const DUP_DELIVERED: i64 = 3;
pub(super) const DUP_HELD: i64 = 4;
pub(super) const DUP_HELD_IN_FLIGHT: i64 = 5;

/// `reserve`: absent → `R:owner`; held → `R:owner` (preempted); reserved/held-delivering/committed
/// → duplicate.
pub(super) const RESERVE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'R:' .. ARGV[1], 'PX', ARGV[2])
  return 0
end
local t = string.sub(v, 1, 1)
if t == 'H' then
  redis.call('SET', KEYS[1], 'R:' .. ARGV[1], 'PX', ARGV[2])
  return 1
elseif t == 'R' then
  return 2
elseif t == 'D' then
  return 5
end
return 3
";

/// `hold`: absent → `H:owner`; anything live → duplicate.
pub(super) const HOLD: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'H:' .. ARGV[1], 'PX', ARGV[2])
  return 0
end
local t = string.sub(v, 1, 1)
if t == 'H' then
  return 4
elseif t == 'R' then
  return 2
elseif t == 'D' then
  return 5
end
return 3
";

/// `claim_held`: `H:owner` → `D:owner` with a fresh lease; 1 if claimed.
pub(super) const CLAIM_HELD: &str = r"
if redis.call('GET', KEYS[1]) == 'H:' .. ARGV[1] then
  redis.call('SET', KEYS[1], 'D:' .. ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// `renew`: reserved or held-delivering by the caller → a fresh lease; 1 if renewed.
pub(super) const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == 'R:' .. ARGV[1] or v == 'D:' .. ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// `commit`: owned (held, reserved or held-delivering) by the caller → `C` for the TTL; 1 if
/// committed.
pub(super) const COMMIT: &str = r"
local v = redis.call('GET', KEYS[1])
if v == 'R:' .. ARGV[1] or v == 'H:' .. ARGV[1] or v == 'D:' .. ARGV[1] then
  redis.call('SET', KEYS[1], 'C', 'PX', ARGV[2])
  return 1
end
return 0
";

/// `release`: owned (held, reserved or held-delivering) by the caller → absent; 1 if released.
pub(super) const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v == 'R:' .. ARGV[1] or v == 'H:' .. ARGV[1] or v == 'D:' .. ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// `confirm` (cluster): re-applies a commit that no replica confirmed. The event was delivered,
/// so absent, held (by anyone: a held copy of a delivered identity is a duplicate) and the
/// caller's own entry become `C` for the TTL; a reservation or held delivery of somebody else is
/// left alone (that copy is being delivered already and commits itself). 1 if it wrote.
pub(super) const CONFIRM: &str = r"
local v = redis.call('GET', KEYS[1])
if v == 'C' then
  return 0
end
if not v or string.sub(v, 1, 1) == 'H' or v == 'R:' .. ARGV[1] or v == 'D:' .. ARGV[1] then
  redis.call('SET', KEYS[1], 'C', 'PX', ARGV[2])
  return 1
end
return 0
";
