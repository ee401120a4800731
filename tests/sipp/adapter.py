#!/usr/bin/env python3
"""A tiny CPIM adapter for the SIPp cases (docs/cpim-api.md, "Outbound").

Serves POST {base}/subscribe, {base}/unsubscribe and {base}/notify on
127.0.0.1 (any base path: only the last path segment counts) and records
every request it receives as one JSON line in --log:

    {"seq": 1, "time": 1700000000.123, "method": "POST", "path": "/cpim/subscribe",
     "content_type": "application/json", "json": {...} or null, "raw": "..."}

/subscribe is answered according to --mode:
    success        200 {"status":"success","transID":<echo>,"duration":D}
    indeterminate  200 {"status":"indeterminate","transID":<echo>,"duration":D}
    failure        200 {"status":"failure","transID":<echo>,"code":403,"reason":"Forbidden"}
where D = min(the requested duration, --duration). /unsubscribe and /notify
get 200 {"status":"success","transID":<echo>}; anything else 404.
--delay-ms delays every /subscribe answer (to exercise adapter_timeout_ms).

On start it prints "adapter listening: 127.0.0.1:PORT" (port 0 = the kernel
picks one). SIGTERM or SIGINT stops it. Python 3 standard library only.
"""

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["success", "failure", "indeterminate"], default="success")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True, help="file receiving one JSON line per request")
    ap.add_argument("--duration", type=int, default=300, help="largest duration granted")
    ap.add_argument("--delay-ms", type=int, default=0, help="delay of each /subscribe answer")
    args = ap.parse_args()

    lock = threading.Lock()
    seq = [0]

    def record(handler, raw):
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        with lock:
            seq[0] += 1
            entry = {
                "seq": seq[0],
                "time": round(time.time(), 3),
                "method": handler.command,
                "path": handler.path,
                "content_type": handler.headers.get("Content-Type"),
                "json": parsed,
                "raw": raw,
            }
            with open(args.log, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")
        return parsed if isinstance(parsed, dict) else {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # keep stderr quiet
            pass

        def reply(self, code, obj):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n).decode("utf-8", "replace") if n > 0 else ""
            body = record(self, raw)
            op = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
            tid = body.get("transID")
            if op == "subscribe":
                if args.delay_ms:
                    time.sleep(args.delay_ms / 1000)
                if args.mode == "failure":
                    self.reply(200, {"status": "failure", "transID": tid,
                                     "code": 403, "reason": "Forbidden"})
                else:
                    req = body.get("duration")
                    d = args.duration if not isinstance(req, int) else min(req, args.duration)
                    self.reply(200, {"status": args.mode, "transID": tid, "duration": d})
            elif op in ("unsubscribe", "notify"):
                self.reply(200, {"status": "success", "transID": tid})
            else:
                self.reply(404, {"error": {"code": "not_found", "message": self.path}})

        def do_GET(self):
            record(self, "")
            self.reply(404, {"error": {"code": "not_found", "message": self.path}})

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True

    def stop(*_):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"adapter listening: 127.0.0.1:{srv.server_address[1]}", flush=True)
    srv.serve_forever(poll_interval=0.2)
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
