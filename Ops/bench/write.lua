-- wrk script for Ops/bench: KV v2 writes, each request a new secret.
-- POST /v1/secret/data/w<thread>-<counter> with {"data":{"v":"..."}}.
-- The token comes from wrk's -H "X-Vault-Token: ..." (merged by wrk.format).

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  -- A per-run salt keeps paths fresh if the script is reused against the same server.
  thread:set("salt", tostring(os.time()))
  next_id = next_id + 1
  table.insert(threads, thread)
end

local counter = 0
local prefix
local body = '{"data":{"v":"' .. string.rep("x", 64) .. '"}}'

function init(args)
  prefix = "/v1/secret/data/w" .. salt .. "-" .. tid .. "-"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  return wrk.format("POST", prefix .. counter, nil, body)
end
