"""The cluster rig shared by the scripts in tests/cluster: a throw-away
PostgreSQL, gateway nodes, and a small asyncio SIP UA (UDP, loopback only).
"""
import asyncio
import collections
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


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def stop(proc, sig=signal.SIGTERM):
    """Stops a child process by its PID: `sig`, then SIGKILL if it has not
    exited 10 s later."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def finish(report, violations, root, keep=False):
    """Prints the JSON report. With violations: exits 1, the logs left in
    `root`; else `root` is removed unless `keep`."""
    print(json.dumps(report, indent=2))
    if violations:
        print(f"FAILED: {len(violations)} violations; logs in {root}", file=sys.stderr)
        sys.exit(1)
    if keep:
        print(f"logs in {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)


def work_dir(prefix):
    """A temporary directory for a run's PostgreSQL, configurations and
    logs; open to the postgres user when running as root (initdb runs as
    that user)."""
    root = tempfile.mkdtemp(prefix=prefix)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        os.chmod(root, 0o777)
    return root


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
        stop(self.proc, signal.SIGINT)  # fast shutdown


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

    def metric(self, name):
        """The sum of a counter's samples (every label set) on /metrics;
        0 while the counter has not been incremented (not yet exported)."""
        with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                   if l.startswith(name) and l[len(name):len(name) + 1] in (" ", "{"))

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        stop(self.proc)


class Kamailio:
    """Kamailio running `cfg` on a loopback UDP port (`self.addr`),
    advertised as `advertise` (a host name) when given, with `defines` as
    extra -A options (the LISTEN define is set here); its log in
    `root`/`name`.log. Stopped by PID."""

    def __init__(self, root, cfg, defines=(), name="kamailio", advertise=None):
        self.port = free_port(socket.SOCK_DGRAM)
        self.addr = ("127.0.0.1", self.port)
        self.log_path = os.path.join(root, f"{name}.log")
        self.log = open(self.log_path, "w")
        listen = f"udp:127.0.0.1:{self.port}" + (f" advertise {advertise}:{self.port}" if advertise else "")
        args = ["kamailio", "-f", cfg, "-DD", "-E", "-Y", root, "-A", f"LISTEN={listen}"]
        for d in defines:
            args += ["-A", d]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        # Ready when it answers an OPTIONS addressed to itself.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(0.2)
        me = probe.getsockname()
        req = (f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\nVia: SIP/2.0/UDP {me[0]}:{me[1]};branch=z9hG4bKready\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:rig@example.com>;tag=r\r\nTo: <sip:127.0.0.1:{self.port}>\r\n"
               f"Call-ID: ready\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        try:
            for _ in range(50):
                if self.proc.poll() is not None:
                    break
                probe.sendto(req, self.addr)
                try:
                    if probe.recv(65535).startswith(b"SIP/2.0 200"):
                        return
                except socket.timeout:
                    pass
        finally:
            probe.close()
        stop(self.proc)
        raise SystemExit(f"kamailio did not start; see {self.log_path}")

    def lines(self, pattern):
        """The log lines matching the regular expression `pattern`."""
        with open(self.log_path) as f:
            return [l for l in f if re.search(pattern, l)]

    def stop(self):
        stop(self.proc)


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


# A NOTIFY as received: when (monotonic), its CSeq number, the <note> of
# its PIDF body (None without one), its Contact URI and its top Via's
# sent-by ("host:port": the element that sent it to us).
Notify = collections.namedtuple("Notify", "t cseq note contact via")


def answer(transport, h, peer, status, extra=""):
    """Answers the request whose headers are `h`, received from `peer`,
    with `status` ("200 OK") and `extra` header lines, at its top Via's
    sent-by (RFC 3261 §18.2.2)."""
    m = re.search(r"SIP/2.0/UDP ([^:;]+):(\d+)", h["via"][0])
    resp = f"SIP/2.0 {status}\r\n" + "".join(
        f"{k}: {v}\r\n" for k in ("via", "from", "to", "call-id", "cseq") for v in h[k]) + extra + "Content-Length: 0\r\n\r\n"
    transport.sendto(resp.encode(), (m.group(1), int(m.group(2))) if m else peer)


class Ua(asyncio.DatagramProtocol):
    """One UDP endpoint: sends requests, matches responses by branch,
    answers NOTIFYs 200 to their top Via (RFC 3261 §18.2.2) and records
    them per dialog."""

    def __init__(self, report):
        self.pending = {}
        self.report = report
        self.notifies = {}  # call-id -> [Notify]
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
            answer(self.t, h, peer, "200 OK")
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
            contact = re.search(r"<([^>]*)>", h.get("contact", [""])[0])
            self.notifies.setdefault(call, []).append(Notify(
                time.monotonic(), cseq, note.group(1) if note else None,
                contact.group(1) if contact else None, f"{m.group(1)}:{m.group(2)}" if m else None))

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
