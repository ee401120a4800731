"""The cluster rig shared by the scripts in tests/cluster: a throw-away
PostgreSQL, gateway nodes, and a small asyncio SIP UA (UDP, loopback only).
"""
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time


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
    """A throw-away PostgreSQL: initdb in `root`, a loopback port, stopped
    by PID (SIGINT: fast shutdown). `settings` are extra `-c` options."""

    def __init__(self, root, settings=()):
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
             "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=60"]
            + [a for s in settings for a in ("-c", s)],
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
    """One gateway process. `pg` None: the embedded sled store in `root`;
    otherwise that PostgreSQL, as cluster member `name` of `members`.
    `extra` is appended to the configuration (TOML)."""

    def __init__(self, binary, root, name, pg, members=(), shards=16, ttl_s=3, extra=""):
        cfg = os.path.join(root, f"{name}.toml")
        if pg is None:
            store = f'[store]\npath = "{os.path.join(root, name + ".store")}"\n'
        else:
            store = (f'[store]\nbackend = "postgres"\nurl = "{pg.url()}"\n'
                     f'[cluster]\nnode = "{name}"\nmembers = {json.dumps(list(members))}\n'
                     f'shards = {shards}\nlease_ttl_s = {ttl_s}\n')
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
{store}{extra}""")
        self.name = name
        self.log = open(os.path.join(root, f"{name}.log"), "w")
        self.proc = subprocess.Popen([binary, "run", "--config", cfg], stdout=subprocess.PIPE,
                                     stderr=self.log, env={**os.environ, "RUST_LOG": os.environ.get("SIPGW_NODE_LOG", "warn")},
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
