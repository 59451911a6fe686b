-- Whole objects picked uniformly at random among COUNT ids made from a printf pattern:
-- GET /o/<id>, no Range, every answer 200 with the whole object.
--
-- wrk -s objects.lua URL -- ids=s%03d.m4s count=200 seed=1

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local pool = {}

setup = common.setup
done = common.done

function init(args)
   local opts = common.options(args)
   common.seed(opts)
   local pattern = assert(opts.ids, "ids= missing")
   local count = assert(tonumber(opts.count), "count= missing")
   for i = 1, count do
      pool[i] = wrk.format("GET", "/o/" .. string.format(pattern, i - 1))
   end
end

function request()
   return pool[math.random(1, #pool)]
end
