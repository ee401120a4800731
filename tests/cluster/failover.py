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
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TTL_S = 3
SHARDS = 16
MEMBERS = ["a", "b", "c"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pg_bin():
    for d in sorted(os.listdir("/usr/lib/postgresql"), reverse=True):
        b = f"/usr/lib/postgresql/{d}/bin"
        if os.path.exists(f"{b}/initdb"):
            return b
    raise SystemExit("PostgreSQL is not installed")


class Postgres:
    def __init__(self, root):
        self.dir = os.path.join(root, "pg")
        os.makedirs(self.dir)
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.dir, self.user, self.user)
        b = pg_bin()
        subprocess.run([f"{b}/initdb", "-D", f"{self.dir}/data", "-U", "gw", "-A", "trust",
                        "--no-sync", "-E", "UTF8"], check=True, user=self.user,
                       stdout=subprocess.DEVNULL)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [f"{b}/postgres", "-D", f"{self.dir}/data", "-p", str(self.port), "-k", self.dir,
             "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=60"],
            user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            if subprocess.run([f"{b}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-q"]).returncode == 0:
                return
            time.sleep(0.1)
        raise SystemExit("postgres did not start")

    def url(self):
        return f"host=127.0.0.1 port={self.port} user=gw dbname=postgres"

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Node:
    def __init__(self, binary, root, name, pg):
        cfg = os.path.join(root, f"{name}.toml")
        with open(cfg, "w") as f:
            f.write(f"""[sip]
listen = ["udp:127.0.0.1:0"]
local_domains = ["example.com"]
routes = []
[cpim]
listen = "127.0.0.1:0"
[presence]
min_expires = 1
default_policy = "allow"
notify_min_interval_ms = 0
max_subscriptions_per_watcher = 100000
[store]
backend = "postgres"
url = "{pg.url()}"
[cluster]
node = "{name}"
members = {json.dumps(MEMBERS)}
shards = {SHARDS}
lease_ttl_s = {TTL_S}
""")
        self.name = name
        self.log = open(os.path.join(root, f"{name}.log"), "w")
        self.proc = subprocess.Popen([binary, "run", "--config", cfg], stdout=subprocess.PIPE,
                                     stderr=self.log, env={**os.environ, "RUST_LOG": "warn"},
                                     text=True)
        self.udp = self.http = None
        while self.udp is None or self.http is None:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"node {name} exited at start")
            m = re.match(r"SIP listening: udp:(.+):(\d+)", line)
            if m:
                self.udp = (m.group(1), int(m.group(2)))
            m = re.match(r"CPIM HTTP listening: (.+)", line)
            if m:
                self.http = m.group(1).strip()

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def pidf(user, note):
    return (f'<?xml version="1.0" encoding="UTF-8"?>\r\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
            f'entity="pres:{user}@example.com">\r\n<tuple id="t"><status><basic>open</basic></status>'
            f'<note>{note}</note></tuple>\r\n</presence>\r\n')


def parse(data):
    text = data.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs.setdefault(k.strip().lower(), []).append(v.strip())
    return lines[0], hdrs, body


class Ua(asyncio.DatagramProtocol):
    """One UDP endpoint: sends requests, matches responses by branch,
    answers NOTIFYs 200 to their top Via (RFC 3261 §18.2.2) and records
    them per dialog."""

    def __init__(self, report):
        self.pending = {}
        self.report = report
        self.notifies = {}  # call-id -> [(time, cseq, note, contact_port)]
        self.seen = set()  # (call-id, Via branch) of NOTIFYs received

    def connection_made(self, t):
        self.t = t
        self.addr = t.get_extra_info("sockname")

    def datagram_received(self, data, peer):
        start, h, body = parse(data)
        if start.startswith("SIP/2.0"):
            branch = re.search(r"branch=([^;,\s]+)", h.get("via", [""])[0])
            fut = self.pending.pop(branch.group(1) if branch else "", None)
            code = int(start.split()[1])
            if fut and not fut.done() and code >= 200:
                fut.set_result((code, h))
            return
        if start.startswith("NOTIFY"):
            via = h["via"][0]
            m = re.search(r"SIP/2.0/UDP ([^:;]+):(\d+)", via)
            dest = (m.group(1), int(m.group(2))) if m else peer
            resp = "SIP/2.0 200 OK\r\n" + "".join(
                f"{k}: {v}\r\n" for k in ("via", "from", "to", "call-id", "cseq") for v in h[k]) + "Content-Length: 0\r\n\r\n"
            self.t.sendto(resp.encode(), dest)
            call = h["call-id"][0]
            cseq = int(h["cseq"][0].split()[0])
            branch = re.search(r"branch=([^;,\s]+)", via)
            key = (call, branch.group(1) if branch else "")
            if key in self.seen:
                # A retransmission of a NOTIFY already answered (RFC 3261
                # §17.1.2.2: our 200 crossed its Timer E): answered again,
                # not a second NOTIFY.
                self.report["notify_retransmissions"] = self.report.get("notify_retransmissions", 0) + 1
                return
            self.seen.add(key)
            note = re.search(r"<note>(.*?)</note>", body)
            cport = re.search(r":(\d+)[;>]", h.get("contact", [""])[0])
            self.notifies.setdefault(call, []).append(
                (time.monotonic(), cseq, note.group(1) if note else None, int(cport.group(1)) if cport else 0))

    async def request(self, dest, text, wait=6.0):
        branch = f"z9hG4bK{random.getrandbits(64):x}"
        me = f"{self.addr[0]}:{self.addr[1]}"
        text = text.replace("{via}", f"SIP/2.0/UDP {me};branch={branch}").replace("{me}", me)
        head, _, body = text.partition("\r\n\r\n")
        text = f"{head}\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}"
        fut = asyncio.get_running_loop().create_future()
        self.pending[branch] = fut
        deadline = time.monotonic() + wait
        delay = 0.5
        # RFC 3261 §17.1.2.2: retransmit until a final response or Timer F.
        while time.monotonic() < deadline:
            self.t.sendto(text.encode(), dest)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), min(delay, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                delay = min(delay * 2, 4.0)
        self.pending.pop(branch, None)
        return (None, {})


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--presentities", type=int, default=60)
    ap.add_argument("--watchers", type=int, default=3)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--kill-at", type=float, default=6)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="sipgw-failover-")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        os.chmod(root, 0o777)
    pg = Postgres(root)
    nodes = {}
    report = {"published": 0, "acknowledged": 0, "refused": 0, "unanswered": 0}
    violations = []
    try:
        for n in MEMBERS:
            nodes[n] = Node(args.binary, root, n, pg)
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
            cseqs = [c for _, c, _, _ in ns]
            if len(set(cseqs)) != len(cseqs) or cseqs != sorted(cseqs):
                violations.append(f"{call}: CSeqs {cseqs}")
            if u in acked:
                want = f"n{acked[u][0]}"
                if not ns or ns[-1][2] != want:
                    stale += 1
                    violations.append(f"{call}: last NOTIFY {ns[-1][2] if ns else None}, last acknowledged {want}")
            after = [t for t, _, _, _ in ns if killed_at and t > killed_at]
            if killed_at and not after:
                late += 1
                violations.append(f"{call}: no NOTIFY after the kill")
        firsts = []
        for u, call, ua in watchers:
            after = [t for t, _, _, _ in ua.notifies.get(call, []) if killed_at and t > killed_at]
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
    print(json.dumps(report, indent=2))
    if violations:
        print(f"FAILED: {len(violations)} violations; logs in {root}", file=sys.stderr)
        sys.exit(1)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
