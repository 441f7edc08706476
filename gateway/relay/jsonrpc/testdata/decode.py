# Reads messages (one base64 line each) as a Python MCP server does (bytes
# as strict UTF-8, then json.loads) and writes what it read, one JSON line
# each (see reading in differential_test.go and decode.js).
import base64, json, sys

def s(v):
    if v is None or v == "":
        return ""
    if isinstance(v, bool):
        return "t:boolean"
    if isinstance(v, str):
        return "s:" + ",".join(str(ord(c)) for c in v)
    if isinstance(v, (int, float)):
        return "n:" + repr(v)
    return "t:" + ("array" if isinstance(v, list) else "object")

for line in sys.stdin.read().split("\n"):
    if not line:
        continue
    try:
        msg = json.loads(base64.b64decode(line).decode("utf-8"))
    except (ValueError, RecursionError) as e:
        print(json.dumps({"parsed": False, "err": str(e)[:200]}))
        continue
    if not isinstance(msg, dict):
        print(json.dumps({"parsed": False, "err": "not an object"}))
        continue
    p = msg.get("params") if isinstance(msg.get("params"), dict) else {}
    meta = p.get("_meta") if isinstance(p.get("_meta"), dict) else {}
    print(json.dumps({
        "parsed": True,
        "method": s(msg.get("method")),
        "name": s(p.get("name")),
        "uri": s(p.get("uri")),
        "taskId": s(p.get("taskId")),
        "metaKeys": " ".join(sorted(s(k) for k in meta)),
        "token": s(meta.get("progressToken")),
    }))
