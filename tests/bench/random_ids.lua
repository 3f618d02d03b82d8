-- wrk script: POST a small JSON body to a random webhook id (404s), as a scanner would.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"probe":1}'
math.randomseed(os.time())
request = function()
  return wrk.format(nil, "/webhook/r" .. math.random(1, 2000000000))
end
