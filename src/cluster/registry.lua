-- The cluster's login registry (ARCHITECTURE §10), run atomically inside Redis: every node's
-- claims, releases and lease renewals go through this one script, so a login is held by
-- one node at a time whatever the timing.
--
-- ARGV[1] is the operation, ARGV[2] the calling node; the rest depend on the operation.
-- Keys (fixed names, all on one Redis; docs/CLUSTER.md says what Redis Cluster needs):
--   achat:nodes          sorted set: node -> lease expiry (ms, on Redis's clock)
--   achat:logins         hash: canonical form ("look") -> "node\nlogin as sent"
--   achat:looks:<node>   set: the looks a node holds, to free them when it goes
-- Every change is published on achat:directory for the other nodes' copies:
--   "L\nnode\nlook\nlogin", "U\nnode\nlook", "D\nnode" (the node and all its logins).
local NODES, LOGINS, DIR = 'achat:nodes', 'achat:logins', 'achat:directory'
local op, me = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function owner(entry)
  return string.match(entry, '^([^\n]*)')
end

-- Frees every login of `node` and forgets the node.
local function forget(node)
  local key = 'achat:looks:' .. node
  for _, look in ipairs(redis.call('SMEMBERS', key)) do
    local cur = redis.call('HGET', LOGINS, look)
    if cur and owner(cur) == node then
      redis.call('HDEL', LOGINS, look)
    end
  end
  local held = redis.call('DEL', key)
  local known = redis.call('ZREM', NODES, node)
  if held + known > 0 then
    redis.call('PUBLISH', DIR, 'D\n' .. node)
  end
end

-- A node whose lease ran out is gone, with its logins: whoever calls first frees them.
for _, node in ipairs(redis.call('ZRANGEBYSCORE', NODES, '-inf', now)) do
  forget(node)
end

if op == 'join' then
  -- ARGV[3]: lease in ms. Whatever an earlier life of this node held is freed first.
  forget(me)
  redis.call('ZADD', NODES, now + tonumber(ARGV[3]), me)
  return 1
elseif op == 'renew' then
  -- ARGV[3]: lease in ms. Returns the number of live nodes (this one included), or 0
  -- when this node's lease had already run out: its logins were freed, and the node must
  -- claim them again.
  local alive = redis.call('ZSCORE', NODES, me)
  redis.call('ZADD', NODES, now + tonumber(ARGV[3]), me)
  if alive then
    return redis.call('ZCOUNT', NODES, now, '+inf')
  end
  return 0
elseif op == 'claim' then
  -- ARGV[3..]: look, login pairs. Returns {alive, granted per pair (1 or 0)}; a node
  -- whose lease ran out claims nothing ({0}) and must join again.
  if not redis.call('ZSCORE', NODES, me) then
    return {0}
  end
  local result = {1}
  for i = 3, #ARGV, 2 do
    local look, login = ARGV[i], ARGV[i + 1]
    local cur = redis.call('HGET', LOGINS, look)
    if cur and owner(cur) ~= me then
      table.insert(result, 0)
    else
      redis.call('HSET', LOGINS, look, me .. '\n' .. login)
      redis.call('SADD', 'achat:looks:' .. me, look)
      redis.call('PUBLISH', DIR, 'L\n' .. me .. '\n' .. look .. '\n' .. login)
      table.insert(result, 1)
    end
  end
  return result
elseif op == 'release' then
  -- ARGV[3..]: looks this node no longer holds.
  for i = 3, #ARGV do
    local look = ARGV[i]
    local cur = redis.call('HGET', LOGINS, look)
    if cur and owner(cur) == me then
      redis.call('HDEL', LOGINS, look)
      redis.call('PUBLISH', DIR, 'U\n' .. me .. '\n' .. look)
    end
    redis.call('SREM', 'achat:looks:' .. me, look)
  end
  return 1
elseif op == 'leave' then
  forget(me)
  return 1
end
return redis.error_reply('a-chat registry: unknown operation ' .. tostring(op))
