#!/usr/bin/env python3
"""HTTP load client for bench-gateway.sh; not a test. POSTs JSON requests to
the gateway's CPIM API over persistent HTTP/1.1 connections (--concurrency
of them, each with one request outstanding), --count requests in all, and
prints a JSON summary: answers by HTTP status and CPIM status, requests per
second, latency percentiles (ms).

  --kind notify:    POST /cpim/v1/notify, watcher = --watcher-fmt {i % watchers},
                    target = --target-fmt {i % watchers}, a small PIDF body
                    (its <note> carries i, so every notify is a change)
  --kind subscribe: POST /cpim/v1/subscribe with distinct watcher/target
                    pairs (--watcher-fmt, --target-fmt with {i}), --duration
"""
import argparse
import asyncio
import json
import sys
import time


def pct(v, p):
    if not v:
        return None
    k = max(0, -(-len(v) * p // 100) - 1)
    return round(v[int(k)], 2)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--kind", choices=["notify", "subscribe"], required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--watcher-fmt", required=True)
    ap.add_argument("--target-fmt", required=True)
    ap.add_argument("--duration", type=int, default=3600)
    ap.add_argument("--timeout", type=float, default=120, help="overall bound, s")
    ap.add_argument("--offset", type=int, default=0, help="first index")
    a = ap.parse_args()
    if not (1 <= a.count <= 1_000_000 and 1 <= a.concurrency <= 1024):
        sys.exit("count 1..1000000, concurrency 1..1024")

    def body(i):
        if a.kind == "notify":
            k = i % a.watchers
            w, t = a.watcher_fmt.format(i=k), a.target_fmt.format(i=k)
            pidf = ('<?xml version="1.0" encoding="UTF-8"?>'
                    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="%s">'
                    '<tuple id="x"><status><basic>open</basic></status><note>n%d</note></tuple>'
                    '</presence>' % (t, i))
            return "/cpim/v1/notify", {"watcher": w, "target": t, "presence": {
                "content_type": "application/pidf+xml", "body": pidf}}
        return "/cpim/v1/subscribe", {"watcher": a.watcher_fmt.format(i=i),
                                      "target": a.target_fmt.format(i=i),
                                      "duration": a.duration}

    next_i = [a.offset]
    end_i = a.offset + a.count
    lat = []
    answers = {}
    errors = {}

    async def worker():
        reader = writer = None
        while next_i[0] < end_i:
            i = next_i[0]
            next_i[0] += 1
            path, obj = body(i)
            data = json.dumps(obj).encode()
            req = (b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % (path.encode(), a.host.encode(), a.port, len(data))) + data
            for attempt in (1, 2):
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(a.host, a.port)
                    t0 = time.perf_counter()
                    writer.write(req)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head.split(b" ", 2)[1])
                    clen = 0
                    close = False
                    for line in head.split(b"\r\n")[1:]:
                        k, _, v = line.partition(b":")
                        k = k.strip().lower()
                        if k == b"content-length":
                            clen = int(v)
                        elif k == b"connection" and v.strip().lower() == b"close":
                            close = True
                    resp = await reader.readexactly(clen) if clen else b""
                    lat.append((time.perf_counter() - t0) * 1000)
                    try:
                        j = json.loads(resp)
                        cpim = j.get("status") or (j.get("error") or {}).get("code")
                        if j.get("code"):
                            cpim = "%s %s" % (cpim, j["code"])
                    except ValueError:
                        cpim = "?"
                    key = "%d %s" % (status, cpim)
                    answers[key] = answers.get(key, 0) + 1
                    if close:
                        writer.close()
                        writer = None
                    break
                except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                    if writer is not None:
                        writer.close()
                    writer = None
                    if attempt == 2:
                        k = type(e).__name__
                        errors[k] = errors.get(k, 0) + 1
        if writer is not None:
            writer.close()

    t_start = time.time_ns()
    p0 = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(a.concurrency))), a.timeout)
        timed_out = False
    except asyncio.TimeoutError:
        timed_out = True
    elapsed = time.perf_counter() - p0
    t_end = time.time_ns()
    lat.sort()
    ok = sum(v for k, v in answers.items() if k.startswith("200 success") or k.startswith("200 indeterminate"))
    print(json.dumps({
        "kind": a.kind, "count": a.count, "concurrency": a.concurrency,
        "answered": len(lat), "ok": ok, "answers": answers, "errors": errors,
        "timed_out": timed_out, "elapsed_s": round(elapsed, 3),
        "rate": round(len(lat) / elapsed, 1) if elapsed else None,
        "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
        "max_ms": round(lat[-1], 2) if lat else None,
        "start_ns": t_start, "end_ns": t_end,
    }, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
