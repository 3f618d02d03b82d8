-- wrk script: POST a 140-byte JSON body.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"event":"push","repository":"cwm","ref":"refs/heads/main","sender":{"login":"octocat","id":583231},"commits":3,"forced":false,"ok":1,"n":1}'
