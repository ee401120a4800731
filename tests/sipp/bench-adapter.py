#!/usr/bin/env python3
"""A minimal CPIM adapter for bench-gateway.sh; not a test. Serves, on
127.0.0.1, POST {base}/subscribe with
{"status": "success", "transID": <echo>, "duration": DURATION} and
{base}/notify, {base}/unsubscribe with 200 {"status": "success"}; HTTP/1.1
keep-alive, one thread per connection. Writes its port to --port-file once
listening; on SIGTERM prints the request counts (JSON) to --counts-file."""
import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    duration = 600

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        op = self.path.rstrip("/").rsplit("/", 1)[-1]
        with lock:
            counts[op] = counts.get(op, 0) + 1
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            req = {}
        if op == "subscribe":
            body = {"status": "success", "transID": req.get("transID") or "bench",
                    "duration": self.duration}
        elif op in ("notify", "unsubscribe"):
            body = {"status": "success", "transID": req.get("transID") or "bench"}
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        out = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--counts-file")
    ap.add_argument("--duration", type=int, default=600)
    a = ap.parse_args()
    Handler.duration = a.duration
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(a.port_file, "w") as f:
        f.write(str(srv.server_address[1]))

    def stop(*_):
        if a.counts_file:
            with open(a.counts_file, "w") as f:
                json.dump(counts, f)
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    srv.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
