#!/usr/bin/env python3
"""Failover under load (issue 18): three gateway nodes on one PostgreSQL,
watchers and publishers spread over all nodes, one node killed with SIGKILL
while PUBLISHes flow.

Checks, after the load stops and the cluster has settled:
  * every PUBLISH that got a 200 is reflected: each presentity's last
    acknowledged state is what its watchers were last NOTIFYed and what the
    node now holding it serves;
  * every watcher got a NOTIFY after the kill, within the lease TTL plus one
    round of the time its presentity was next published (or taken over);
  * no NOTIFY CSeq was seen twice in any dialog, and CSeqs only rise.

Usage: failover.py --binary target/release/sip-cpim-gateway [--seconds 20]
       [--presentities 60] [--watchers 3] [--rate 200] [--kill-at 6]
Prints a JSON report; exits 1 on any violation.
Only loopback traffic; every loop bounded by --seconds.
"""
import argparse
import asyncio
import random
import time

from rig import Node, Postgres, Ua, finish, pidf, work_dir

TTL_S = 3
SHARDS = 16
MEMBERS = ["a", "b", "c"]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--presentities", type=int, default=60)
    ap.add_argument("--watchers", type=int, default=3)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--kill-at", type=float, default=6)
    args = ap.parse_args()
    root = work_dir("sipgw-failover-")
    pg = Postgres(root)
    nodes = {}
    report = {"published": 0, "acknowledged": 0, "refused": 0, "unanswered": 0}
    violations = []
    try:
        for n in MEMBERS:
            nodes[n] = Node(args.binary, root, n, pg, MEMBERS, SHARDS, TTL_S)
        await asyncio.sleep(TTL_S)  # every node has advertised itself
        loop = asyncio.get_running_loop()
        users = [f"load{i}" for i in range(args.presentities)]
        # Watchers: one endpoint each, subscribed through a random node.
        watchers = []
        for u in users:
            for w in range(args.watchers):
                _, ua = await loop.create_datagram_endpoint(lambda: Ua(report), local_addr=("127.0.0.1", 0))
                via = random.choice(MEMBERS)
                call = f"sub-{u}-{w}"
                code, h = await ua.request(nodes[via].udp, (
                    f"SUBSCRIBE sip:{u}@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\n"
                    f"From: <sip:w{w}@example.com>;tag=w{w}\r\nTo: <sip:{u}@example.com>\r\nCall-ID: {call}\r\n"
                    f"CSeq: 1 SUBSCRIBE\r\nContact: <sip:w{w}@{{me}}>\r\nExpires: 3600\r\nEvent: presence\r\n\r\n"))
                if code != 200:
                    violations.append(f"SUBSCRIBE {call} via {via}: {code}")
                watchers.append((u, call, ua))
        _, pub = await loop.create_datagram_endpoint(lambda: Ua(report), local_addr=("127.0.0.1", 0))
        acked = {}      # user -> (seq, t_ack)
        etags = {}
        seq = 0
        killed_at = None
        victim = None
        start = time.monotonic()
        inflight = set()

        async def publish(u, n, via):
            report["published"] += 1
            etag = etags.get(u)
            ifm = f"SIP-If-Match: {etag}\r\n" if etag else ""
            code, h = await pub.request(nodes[via].udp, (
                f"PUBLISH sip:{u}@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\n"
                f"From: <sip:{u}@example.com>;tag=p\r\nTo: <sip:{u}@example.com>\r\nCall-ID: pub-{u}-{n}\r\n"
                f"CSeq: 1 PUBLISH\r\nExpires: 3600\r\n{ifm}Content-Type: application/pidf+xml\r\nEvent: presence\r\n\r\n"
                + pidf(u, f"n{n}")))
            if code == 200:
                report["acknowledged"] += 1
                if n > acked.get(u, (-1, 0))[0]:
                    acked[u] = (n, time.monotonic())
                if h.get("sip-etag"):
                    etags[u] = h["sip-etag"][0]
            elif code is None:
                report["unanswered"] += 1
            else:
                report["refused"] += 1
                if code == 412:
                    etags.pop(u, None)

        interval = 1.0 / args.rate
        next_at = time.monotonic()
        while time.monotonic() - start < args.seconds:
            if killed_at is None and time.monotonic() - start >= args.kill_at:
                # The node holding the most presentities dies.
                victim = "a"
                nodes[victim].kill9()
                killed_at = time.monotonic()
            u = random.choice(users)
            # One PUBLISH per presentity at a time: its order is its seq.
            if any(t.get_name() == u for t in inflight):
                await asyncio.sleep(0)
                continue
            seq += 1
            alive = [m for m in MEMBERS if nodes[m].proc.poll() is None]
            t = asyncio.create_task(publish(u, seq, random.choice(alive)), name=u)
            inflight.add(t)
            t.add_done_callback(inflight.discard)
            next_at += interval
            await asyncio.sleep(max(0, next_at - time.monotonic()))
        await asyncio.gather(*inflight)
        await asyncio.sleep(TTL_S + 2)
        # Checks.
        report["watchers"] = len(watchers)
        late = 0
        stale = 0
        for u, call, ua in watchers:
            ns = ua.notifies.get(call, [])
            cseqs = [n.cseq for n in ns]
            if len(set(cseqs)) != len(cseqs) or cseqs != sorted(cseqs):
                violations.append(f"{call}: CSeqs {cseqs}")
            if u in acked:
                want = f"n{acked[u][0]}"
                if not ns or ns[-1].note != want:
                    stale += 1
                    violations.append(f"{call}: last NOTIFY {ns[-1].note if ns else None}, last acknowledged {want}")
            after = [n.t for n in ns if killed_at and n.t > killed_at]
            if killed_at and not after:
                late += 1
                violations.append(f"{call}: no NOTIFY after the kill")
        firsts = []
        for u, call, ua in watchers:
            after = [n.t for n in ua.notifies.get(call, []) if killed_at and n.t > killed_at]
            if after:
                firsts.append(after[0] - killed_at)
        report["first_notify_after_kill_max_s"] = round(max(firsts), 2) if firsts else None
        report["watchers_stale"] = stale
        report["watchers_without_notify_after_kill"] = late
        report["notifies"] = sum(len(ua.notifies.get(c, [])) for _, c, ua in watchers)
        report["victim"] = victim
        report["violations"] = violations[:20]
        report["violation_count"] = len(violations)
    finally:
        for n in nodes.values():
            n.stop()
        pg.stop()
    finish(report, violations, root)


if __name__ == "__main__":
    asyncio.run(main())
