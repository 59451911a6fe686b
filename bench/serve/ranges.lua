-- A player fetching segments: GET /o/<id> with `Range: bytes=FIRST-LAST`, LENGTH bytes
-- at a uniformly random byte offset (not aligned: segments sit anywhere in a file),
-- always inside the object, so every answer is 206 with exactly LENGTH bytes.
--
-- wrk -s ranges.lua URL -- id=big.mp4 size=268435456 length=1048576 seed=1

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

-- Requests are formatted once per thread; request() only picks one.
local POOL = 8192
local pool = {}

setup = common.setup
done = common.done

function init(args)
   local opts = common.options(args)
   common.seed(opts)
   local path = "/o/" .. assert(opts.id, "id= missing")
   local size = assert(tonumber(opts.size), "size= missing")
   local length = tonumber(opts.length) or 1048576
   assert(size >= length, "object smaller than one range")
   for i = 1, POOL do
      local first = math.random(0, size - length)
      pool[i] = wrk.format("GET", path,
         {["Range"] = "bytes=" .. first .. "-" .. (first + length - 1)})
   end
end

function request()
   return pool[math.random(1, POOL)]
end
