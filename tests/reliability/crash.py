#!/usr/bin/env python3
"""Crash consistency under SIGKILL: load generator, killer and checker.

Run by tests/reliability/crash.sh, which picks the ports and writes the
gateway's configuration; docs/reliability.md ("Crash consistency under
SIGKILL") describes the method. Python 3 standard library only; everything
on 127.0.0.1.

One process plays every party the gateway talks to, so that the ledger of
acknowledged operations is exact:

- SIP watchers and publishers (one UDP socket): REGISTER, PUBLISH (initial
  and modify), SUBSCRIBE to local presentities, SUBSCRIBE to CPIM
  presentities (seed §7.1); every NOTIFY is answered 200 at once.
- A SIP presentity's UA (a second UDP socket, the static route of
  sip.example.net): answers the gateway's SUBSCRIBEs (seed §7.2) 200 and
  sends NOTIFYs in those dialogs.
- The CPIM adapter (an HTTP server): answers subscribe/unsubscribe/notify
  `success` and records every POST.
- A CPIM client: POST /cpim/v1/subscribe (seed §7.2) and /cpim/v1/notify
  (to the §7.1 dialogs).

Each round: load for a random time, SIGKILL the gateway, stop the load
(what was not answered before the kill is "unanswered"), restart on the same
store, wait for /readyz, then check every operation of the round (and, at
the end, everything acknowledged in any round). Results go to --json-out
and a markdown report to --report.
"""

import argparse
import http.client
import itertools
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCAL = "example.com"
XMPP = "xmpp.example.org"
SIPNET = "sip.example.net"
KINDS = ["register", "publish", "publish-modify", "subscribe-local", "subscribe-gw",
         "cpim-notify", "cpim-subscribe", "ua-notify"]
KIND_TEXT = {
    "register": "REGISTER (binding listed)",
    "publish": "PUBLISH initial (ETag refreshable)",
    "publish-modify": "PUBLISH modify (ETag refreshable, body held)",
    "subscribe-local": "SUBSCRIBE local (refresh 2xx, NOTIFY CSeq up)",
    "subscribe-gw": "SUBSCRIBE §7.1 (refresh 2xx, NOTIFY CSeq up)",
    "cpim-notify": "CPIM notify §7.1 (state reaches the watcher)",
    "cpim-subscribe": "CPIM subscribe §7.2 (dialog kept, in-dialog refresh)",
    "ua-notify": "NOTIFY §7.2 (queued CPIM notify delivered)",
}
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
           "l": "content-length", "c": "content-type", "o": "event"}
TAG_RE = re.compile(r";\s*tag=([^;,\s>]+)", re.I)
BRANCH_RE = re.compile(r";\s*branch=([^;,\s]+)", re.I)
URI_RE = re.compile(r"<([^>]*)>")
NOTE_RE = re.compile(r"<note>([^<]*)</note>")
TOKEN = "%06x" % random.SystemRandom().getrandbits(24)
T1, T2 = 0.5, 4.0


def mono():
    return time.monotonic()


def log(msg):
    print("[crash] " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- SIP text

def parse(data):
    """(first line, {lower-case name: [values]}, body as str)."""
    i = data.find(b"\r\n\r\n")
    head = data if i < 0 else data[:i]
    body = b"" if i < 0 else data[i + 4:]
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if not sep:
            continue
        k = k.strip().lower()
        hdrs.setdefault(COMPACT.get(k, k), []).append(v.strip())
    return lines[0], hdrs, body.decode("utf-8", "replace")


def h1(h, name, default=""):
    v = h.get(name)
    return v[0] if v else default


def tag_of(v):
    part = v.rsplit(">", 1)[-1] if "<" in v else v
    m = TAG_RE.search(part)
    return m.group(1) if m else None


def uri_of(v):
    m = URI_RE.search(v)
    return m.group(1) if m else v.split(";")[0].strip()


def user_host(uri):
    """sip:a@b;x=y -> a@b (pres:/sip:/im: alike)."""
    return uri.split(":", 1)[-1].split(";")[0].split("?")[0]


def note_of(body):
    m = NOTE_RE.search(body or "")
    return m.group(1) if m else None


def branch_of(h):
    m = BRANCH_RE.search(h1(h, "via"))
    return m.group(1) if m else ""


def cseq_of(h):
    try:
        return int(h1(h, "cseq", "0").split()[0])
    except ValueError:
        return 0


def pidf(entity, tid, note):
    return ('<?xml version="1.0" encoding="UTF-8"?>\r\n'
            '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="%s">'
            '<tuple id="%s"><status><basic>open</basic></status><note>%s</note></tuple>'
            '</presence>\r\n' % (entity, tid, note))


def build_request(method, ruri, frm, to, callid, cseq, branch, port, extra=(), body="",
                  ctype="application/pidf+xml"):
    lines = ["%s %s SIP/2.0" % (method, ruri),
             "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=%s;rport" % (port, branch),
             "Max-Forwards: 70", "From: " + frm, "To: " + to, "Call-ID: " + callid,
             "CSeq: %d %s" % (cseq, method)]
    lines.extend(extra)
    b = body.encode()
    if b:
        lines.append("Content-Type: " + ctype)
    lines.append("Content-Length: %d" % len(b))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + b


def build_reply(h, code, reason, to_tag=None, extra=()):
    lines = ["SIP/2.0 %d %s" % (code, reason)]
    lines.extend("Via: " + v for v in h.get("via", []))
    lines.append("From: " + h1(h, "from"))
    to = h1(h, "to")
    if to_tag and tag_of(to) is None:
        to += ";tag=" + to_tag
    lines.append("To: " + to)
    lines.append("Call-ID: " + h1(h, "call-id"))
    lines.append("CSeq: " + h1(h, "cseq"))
    lines.extend(extra)
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Resp:
    __slots__ = ("code", "h", "raw")

    def __init__(self, code, h, raw):
        self.code, self.h, self.raw = code, h, raw


def short(raw, n=900):
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    return raw if len(raw) <= n else raw[:n] + "..."


# ---------------------------------------------------------------- SIP engine

class Txn:
    __slots__ = ("branch", "data", "sock", "t_next", "iv", "deadline", "resp", "done", "cb")


class UaDialog:
    """The SIP presentity's side of a §7.2 dialog (we are the notifier)."""

    def __init__(self, callid, gw_tag, ua_tag, frm_uri, to_uri, contact, cseq, branch):
        self.callid, self.gw_tag, self.ua_tag = callid, gw_tag, ua_tag
        self.watcher_uri, self.target_uri, self.gw_contact = frm_uri, to_uri, contact
        self.subs = [(cseq, branch, mono())]  # SUBSCRIBEs received: (CSeq, branch, time)
        self.last_reply = {}  # branch -> 200 bytes (retransmissions)
        self.notify_cseq = 0
        self.busy = False
        self.ended = False
        self.csub = None  # the CSub object of this (watcher, target)


class Sip(threading.Thread):
    def __init__(self, gw_port, ua_port, world):
        super().__init__(daemon=True, name="sip")
        self.gw = ("127.0.0.1", gw_port)
        self.world = world
        self.w = self._sock(0)
        self.wport = self.w.getsockname()[1]
        self.u = self._sock(ua_port)
        self.uport = ua_port
        self.lock = threading.Lock()
        self.txns = {}
        self.closed = True
        self.seq = itertools.count(1)
        self.cond = threading.Condition()
        self.notifies = {}  # Call-ID -> [ {cseq, branch, note, state, t} ] (watcher side)
        self.seen_notes = set()  # every note a watcher was sent
        self.nbranch = {}  # (Call-ID, CSeq) -> branch of the NOTIFY
        self.ua = {}  # Call-ID -> UaDialog
        self.ua_by_pair = {}  # (watcher user@host, target user@host) -> [Call-ID]
        self.anomalies = []
        self.stopping = False
        self.barrier_req = None
        self.counts = {"notifies": 0, "notify_retrans": 0, "ua_subscribes": 0, "retransmissions": 0}

    @staticmethod
    def _sock(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 16 << 20)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        s.bind(("127.0.0.1", port))
        s.setblocking(False)
        return s

    def branch(self):
        return "z9hG4bK%s.%d" % (TOKEN, next(self.seq))

    # -- client transactions
    def send(self, sock, data, branch, timeout=32.0, cb=None):
        t = Txn()
        t.branch, t.data, t.sock, t.cb, t.resp = branch, data, sock, cb, None
        t.iv = T1
        now = mono()
        t.t_next, t.deadline = now + T1, now + timeout
        t.done = threading.Event()
        with self.lock:
            closed = self.closed
            if not closed:
                self.txns[branch] = t
        if closed:
            self._complete(t, None)
            return t
        try:
            sock.sendto(data, self.gw)
        except OSError:
            pass
        return t

    def transact(self, sock, data, branch, timeout=32.0):
        t = self.send(sock, data, branch, timeout)
        t.done.wait(timeout + 5)
        return t.resp

    def _complete(self, t, resp):
        t.resp = resp
        if t.cb:
            try:
                t.cb(resp)
            except Exception as e:  # a bug here must not stop the engine
                log("callback error: %r" % (e,))
        t.done.set()

    def open(self):
        with self.lock:
            self.closed = False

    def barrier(self):
        """After the gateway died: read every datagram already received (the
        gateway sent it before dying), then end every pending transaction as
        unanswered and refuse new ones until open()."""
        ev = threading.Event()
        self.barrier_req = ev
        if not ev.wait(30):
            raise RuntimeError("SIP engine did not reach the barrier")

    # -- the loop
    def run(self):
        socks = [self.w, self.u]
        last_timers = 0.0
        while not self.stopping:
            b = self.barrier_req
            if b is not None:
                for s in socks:
                    self._drain(s, 1 << 30)
                with self.lock:
                    pend = list(self.txns.values())
                    self.txns.clear()
                    self.closed = True
                for t in pend:
                    self._complete(t, None)
                self.barrier_req = None
                b.set()
                continue
            try:
                r, _, _ = select.select(socks, [], [], 0.01)
            except InterruptedError:
                r = []
            for s in r:
                self._drain(s, 2000)
            now = mono()
            if now - last_timers >= 0.02:
                last_timers = now
                self._timers(now)

    def _timers(self, now):
        due, dead = [], []
        with self.lock:
            for t in self.txns.values():
                if now >= t.deadline:
                    dead.append(t)
                elif now >= t.t_next:
                    t.iv = min(t.iv * 2, T2)
                    t.t_next = now + t.iv
                    due.append(t)
            for t in dead:
                self.txns.pop(t.branch, None)
        for t in due:
            self.counts["retransmissions"] += 1
            try:
                t.sock.sendto(t.data, self.gw)
            except OSError:
                pass
        for t in dead:
            self._complete(t, None)

    def _drain(self, sock, limit):
        for _ in range(limit):
            try:
                data, src = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            try:
                self._handle(sock, data, src)
            except Exception as e:
                log("bad datagram (%r): %s" % (e, short(data, 200)))

    def _handle(self, sock, data, src):
        first, h, body = parse(data)
        if first.startswith("SIP/2.0 "):
            code = int(first[8:11])
            if code < 200:
                return
            br = branch_of(h)
            with self.lock:
                t = self.txns.pop(br, None)
            if t is not None:
                self._complete(t, Resp(code, h, data))
            return
        method = first.split(" ", 1)[0]
        if sock is self.w:
            if method == "NOTIFY":
                self._watcher_notify(h, body, src)
            else:
                sock.sendto(build_reply(h, 405, "Method Not Allowed"), src)
        elif method == "SUBSCRIBE":
            self._ua_subscribe(h, src)
        else:
            sock.sendto(build_reply(h, 481, "Call/Transaction Does Not Exist"), src)

    def _watcher_notify(self, h, body, src):
        self.w.sendto(build_reply(h, 200, "OK"), src)
        callid = h1(h, "call-id")
        cseq = cseq_of(h)
        br = branch_of(h)
        with self.cond:
            key = (callid, cseq)
            prev = self.nbranch.get(key)
            if prev == br:
                self.counts["notify_retrans"] += 1
                return
            lst = self.notifies.setdefault(callid, [])
            if lst and cseq <= max(e["cseq"] for e in lst[-4:]):
                self.anomalies.append({
                    "what": "NOTIFY CSeq did not increase (a CSeq reused or lower after a restart)",
                    "call_id": callid, "cseq": cseq, "previous": [e["cseq"] for e in lst[-4:]],
                    "round": self.world.round})
            self.nbranch[key] = br
            note = note_of(body)
            if note:
                self.seen_notes.add(note)
            lst.append({"cseq": cseq, "branch": br, "note": note,
                        "state": h1(h, "subscription-state").split(";")[0].strip(),
                        "t": mono(), "round": self.world.round})
            self.counts["notifies"] += 1
            self.cond.notify_all()

    def _ua_subscribe(self, h, src):
        callid = h1(h, "call-id")
        frm, to = h1(h, "from"), h1(h, "to")
        cseq, br = cseq_of(h), branch_of(h)
        try:
            expires = int(h1(h, "expires", "3600"))
        except ValueError:
            expires = 3600
        ua_tag = tag_of(to)
        send_notify = None
        with self.cond:
            self.counts["ua_subscribes"] += 1
            d = self.ua.get(callid)
            if d is not None and br in d.last_reply:
                self.u.sendto(d.last_reply[br], src)  # a retransmission
                return
            if ua_tag is None:
                if d is not None:
                    self.u.sendto(build_reply(h, 482, "Loop Detected"), src)
                    return
                if user_host(uri_of(to)).startswith("deny"):
                    self.u.sendto(build_reply(h, 403, "Forbidden", to_tag="deny%s" % TOKEN), src)
                    return
                d = UaDialog(callid, tag_of(frm), "ua%s%d" % (TOKEN, next(self.seq)),
                             uri_of(frm), uri_of(to), uri_of(h1(h, "contact")), cseq, br)
                pair = (user_host(d.watcher_uri), user_host(d.target_uri))
                earlier = self.ua_by_pair.setdefault(pair, [])
                if earlier:
                    self.anomalies.append({
                        "what": "the gateway opened a second §7.2 dialog for one (watcher, target)",
                        "pair": pair, "call_ids": earlier + [callid], "round": self.world.round})
                earlier.append(callid)
                self.ua[callid] = d
                d.csub = self.world.csub_for_pair(pair)
                d.busy = True
                send_notify = d
            else:
                if d is None or ua_tag != d.ua_tag or tag_of(frm) != d.gw_tag:
                    self.u.sendto(build_reply(h, 481, "Call/Transaction Does Not Exist"), src)
                    return
                if cseq <= d.subs[-1][0]:
                    self.anomalies.append({
                        "what": "in-dialog SUBSCRIBE (§7.2) with a CSeq not above the last one",
                        "call_id": callid, "cseq": cseq, "previous": d.subs[-1][0],
                        "round": self.world.round})
                d.subs.append((cseq, br, mono()))
                if expires == 0:
                    d.ended = True
            reply = build_reply(h, 200, "OK", to_tag=d.ua_tag, extra=(
                "Contact: <sip:%s@127.0.0.1:%d>" % (user_host(d.target_uri).split("@")[0], self.uport),
                "Expires: %d" % expires))
            d.last_reply[br] = reply
            self.cond.notify_all()
        self.u.sendto(reply, src)
        if send_notify is not None:
            # The notifier's first NOTIFY right after its 2xx (RFC 6665).
            self.world.ua_notify(send_notify, phase="load", release=True)

    def ua_notify_request(self, d, note, bad=False):
        with self.cond:
            d.notify_cseq += 1
            cseq = d.notify_cseq
        br = self.branch()
        body = pidf("pres:" + user_host(d.target_uri), "ua", note)
        msg = build_request(
            "NOTIFY", d.gw_contact, "<%s>;tag=%s" % (d.target_uri, d.ua_tag),
            "<%s>;tag=%s" % (d.watcher_uri, "bogus" + d.gw_tag[:8] if bad else d.gw_tag),
            d.callid, cseq, br, self.uport,
            extra=("Contact: <sip:%s@127.0.0.1:%d>" % (user_host(d.target_uri).split("@")[0], self.uport),
                   "Event: presence", "Subscription-State: active;expires=3600"),
            body=body)
        return msg, br, cseq

    # -- waiting helpers (checker threads)
    def wait_notify(self, callid, above, timeout):
        end = mono() + timeout
        with self.cond:
            while True:
                for e in self.notifies.get(callid, ()):
                    if e["cseq"] > above:
                        return e
                rem = end - mono()
                if rem <= 0:
                    return None
                self.cond.wait(min(rem, 0.5))

    def max_notify_cseq(self, callid):
        with self.cond:
            lst = self.notifies.get(callid)
            return max(e["cseq"] for e in lst) if lst else 0

    def notify_entries(self, callid):
        with self.cond:
            return list(self.notifies.get(callid, ()))

    def was_seen(self, note):
        with self.cond:
            return note in self.seen_notes

    def any_notify(self, callid):
        with self.cond:
            return bool(self.notifies.get(callid))

    def notes_seen(self, callid):
        with self.cond:
            return [e["note"] for e in self.notifies.get(callid, ())]

    def wait_ua_subscribe(self, callid, above, timeout):
        end = mono() + timeout
        with self.cond:
            while True:
                d = self.ua.get(callid)
                if d is not None:
                    for s in d.subs:
                        if s[0] > above:
                            return s
                rem = end - mono()
                if rem <= 0:
                    return None
                self.cond.wait(min(rem, 0.5))


# ---------------------------------------------------------------- adapter

class Adapter:
    """The CPIM adapter: `success` to everything, every POST recorded."""

    def __init__(self, port):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.notes = {}  # note -> [(watcher, target, state)]
        self.first_t = {}  # note -> when it first arrived (monotonic)
        self.calls = {"subscribe": 0, "unsubscribe": 0, "notify": 0, "other": 0}
        self.unsubscribes = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n > 0 else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                op = self.path.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
                tid = body.get("transID")
                with outer.cond:
                    outer.calls[op if op in outer.calls else "other"] += 1
                    if op == "notify":
                        pres = body.get("presence") or {}
                        note = note_of(pres.get("body") or "")
                        if note is not None:
                            outer.first_t.setdefault(note, mono())
                            outer.notes.setdefault(note, []).append(
                                (body.get("watcher"), body.get("target"), body.get("state")))
                        outer.cond.notify_all()
                    elif op == "unsubscribe":
                        outer.unsubscribes.append(body)
                if op == "subscribe":
                    d = body.get("duration")
                    ans = {"status": "success", "transID": tid,
                           "duration": min(d, 3600) if isinstance(d, int) else 3600}
                else:
                    ans = {"status": "success", "transID": tid}
                data = json.dumps(ans).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Srv(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                # The gateway's connections die with it at each SIGKILL.
                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self.srv = Srv(("127.0.0.1", port), H)
        self.srv.daemon_threads = True
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.2},
                                       daemon=True, name="adapter")

    def start(self):
        self.thread.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()

    def has(self, note):
        with self.lock:
            return note in self.notes

    def wait_all(self, notes, timeout):
        end = mono() + timeout
        with self.cond:
            while True:
                missing = [n for n in notes if n not in self.notes]
                rem = end - mono()
                if not missing or rem <= 0:
                    return missing
                self.cond.wait(min(rem, 0.5))


# ---------------------------------------------------------------- HTTP client

class Http:
    def __init__(self, port):
        self.port = port
        self.local = threading.local()

    def _conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=40)
            self.local.c = c
        return c

    def drop(self):
        c = getattr(self.local, "c", None)
        if c is not None:
            c.close()
        self.local.c = None

    def call(self, method, path, obj=None, retry=False):
        """(status, parsed JSON or text); raises OSError/HTTPException when
        the request got no answer."""
        body = json.dumps(obj).encode() if obj is not None else None
        for attempt in (0, 1):
            c = self._conn()
            try:
                c.request(method, path, body=body,
                          headers={"Content-Type": "application/json"} if body else {})
                r = c.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException):
                self.drop()
                if retry and attempt == 0:
                    continue
                raise
            if r.getheader("Connection", "").lower() == "close":
                self.drop()
            try:
                return r.status, json.loads(data, object_pairs_hook=_pairs)
            except ValueError:
                return r.status, data.decode("utf-8", "replace")
        raise OSError("unreachable")


def _pairs(pairs):
    # The presentity view repeats "registrations"/"publications" (a count,
    # then the list): keep the list.
    d = {}
    for k, v in pairs:
        if k in d and not isinstance(v, list) and isinstance(d[k], list):
            continue
        d[k] = v
    return d


def q(s):
    return urllib.parse.quote(s, safe="")


# ---------------------------------------------------------------- gateway

class Gateway:
    def __init__(self, a):
        self.a = a
        self.proc = None
        self.starts = 0
        self.logf = open(a.gateway_log, "ab")
        self.env = dict(os.environ, NO_COLOR="1", RUST_LOG=os.environ.get("RUST_LOG") or "warn")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        """Starts the gateway; returns seconds until /readyz answered 200."""
        for attempt in range(3):
            self.starts += 1
            self.logf.write(b"=== start %d\n" % self.starts)
            self.logf.flush()
            t0 = mono()
            self.proc = subprocess.Popen([self.a.bin, "run", "--config", self.a.config],
                                         stdout=self.logf, stderr=subprocess.STDOUT, env=self.env)
            with open(self.a.pid_file, "w") as f:
                f.write("%d\n" % self.proc.pid)
            while mono() - t0 < 60:
                if self.proc.poll() is not None:
                    break
                try:
                    c = http.client.HTTPConnection("127.0.0.1", self.a.http_port, timeout=1)
                    c.request("GET", "/readyz")
                    st = c.getresponse().status
                    c.close()
                    if st == 200:
                        return mono() - t0
                except (OSError, http.client.HTTPException):
                    pass
                time.sleep(0.01)
            if self.proc.poll() is None:
                self.kill()
                raise RuntimeError("gateway not ready within 60 s (log %s)" % self.a.gateway_log)
            log("gateway exited at start (status %s, attempt %d); retrying" % (self.proc.returncode, attempt + 1))
            time.sleep(0.5)
        raise RuntimeError("gateway did not start (log %s)" % self.a.gateway_log)

    def kill(self):
        if self.proc is None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.proc = None

    def stop(self):
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            rc = "killed"
        self.proc = None
        return rc

    def export(self, store, out):
        env = dict(self.env, GATEWAY__STORE__PATH=store)
        r = subprocess.run([self.a.bin, "export", "--config", self.a.config, "--output", out],
                           env=env, capture_output=True, timeout=120)
        return r.returncode, (r.stderr or b"").decode("utf-8", "replace").strip()


# ---------------------------------------------------------------- objects

class Op:
    __slots__ = ("id", "kind", "round", "phase", "state", "code", "obj", "note", "seq",
                 "req", "resp", "t_sent", "t_done", "extra", "bad")

    def __init__(self, kind, rnd, phase, obj=None):
        self.kind, self.round, self.phase, self.obj = kind, rnd, phase, obj
        self.state, self.code, self.note, self.seq = "pending", None, None, None
        self.req = self.resp = None
        self.t_sent, self.t_done, self.extra = mono(), None, None
        self.bad = False  # sent to be refused (a request the gateway must not take)

    def brief(self):
        return {"kind": self.kind, "round": self.round, "phase": self.phase,
                "state": self.state, "code": self.code, "note": self.note, "deliberately_bad": self.bad,
                "request": short(self.req or ""), "response": short(self.resp or "")}


class Pub:
    def __init__(self, n):
        self.n = n
        self.aor = "sip:p%d@%s" % (n, LOCAL)
        self.etag = None  # last acknowledged SIP-ETag
        self.note = None  # its body's note
        self.acked_ops = []
        self.uncertain = []  # notes of unanswered PUBLISHes after the last acked one
        self.refused = []  # notes of refused PUBLISHes
        self.busy = True
        self.dead = False  # never acknowledged, and found absent
        self.k = 0
        self.check_ack = None  # the last refresh of a check that got 200


class Dlg:
    """A SIP watcher's dialog (local or §7.1)."""

    def __init__(self, kind, n, watcher, target, callid, ftag):
        self.kind, self.n, self.watcher, self.target = kind, n, watcher, target
        self.callid, self.ftag = callid, ftag
        self.ttag = None
        self.rtarget = None
        self.cseq = 1
        self.op = None
        self.busy = True
        self.pub = None  # local: the presentity's Pub
        self.k = 0  # §7.1: CPIM notify sequence
        self.notify_ops = []  # §7.1: CPIM notify ops


class CSub:
    def __init__(self, n, deny=False):
        self.n = n
        self.watcher = "pres:a%d@%s" % (n, XMPP)
        # The SIP presentity answers 403 to a target named deny*.
        self.target = "pres:%s%d@%s" % ("deny" if deny else "s", n, SIPNET)
        self.op = None
        self.ua = None  # UaDialog
        self.notify_ops = []
        self.k = 0


# ---------------------------------------------------------------- world

class World:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.L = threading.Lock()
        self.round = 0
        self.kill_t = {}  # round -> when its SIGKILL was sent (monotonic)
        self.ops = []
        self.pubs, self.live_pubs = [], []
        self.lsubs, self.gsubs, self.csubs = [], [], []
        self.live_gsubs, self.live_csubs = [], []
        self.csub_pairs = {}
        self.regs = []
        self.ids = itertools.count(1)
        self.stop = threading.Event()
        self.sip = None
        self.http = None
        self.adapter = None

    def bad(self):
        """True for the fraction of operations sent in a form the gateway must
        refuse, so that "refused means absent" is checked on every kind."""
        return self.rng.random() < self.a.refuse_fraction

    def new_op(self, kind, phase="load", obj=None):
        op = Op(kind, self.round, phase, obj)
        with self.L:
            self.ops.append(op)
        return op

    def csub_for_pair(self, pair):
        with self.L:
            return self.csub_pairs.get(pair)

    @staticmethod
    def finish_sip(op, resp):
        op.t_done = mono()
        if resp is None:
            op.state = "unanswered"
        else:
            op.code = resp.code
            op.resp = short(resp.raw)
            op.state = "acked" if 200 <= resp.code < 300 else "refused"

    # -- load operations (one call = one operation; worker threads)
    def op_register(self):
        n = next(self.ids)
        aor = "sip:r%d@%s" % (n, LOCAL)
        contact = "sip:r%d@127.0.0.1:%d;line=%s" % (n, self.sip.wport, TOKEN)
        op = self.new_op("register")
        op.extra = {"aor": aor, "contact": contact}
        op.bad = self.bad()  # Expires below min_expires: 423
        with self.L:
            self.regs.append(op)
        br = self.sip.branch()
        msg = build_request("REGISTER", "sip:" + LOCAL, "<%s>;tag=f%d" % (aor, n), "<%s>" % aor,
                            "reg-%s-%d" % (TOKEN, n), 1, br, self.sip.wport,
                            extra=("Contact: <%s>" % contact, "Expires: %d" % (10 if op.bad else 3600)))
        op.req = msg.decode()
        self.finish_sip(op, self.sip.transact(self.sip.w, msg, br))

    def op_publish(self):
        n = next(self.ids)
        p = Pub(n)
        with self.L:
            self.pubs.append(p)
        note = "pn%d-0" % n
        op = self.new_op("publish", obj=p)
        op.note = note
        op.bad = self.bad()  # Expires below min_expires: 423
        br = self.sip.branch()
        msg = build_request("PUBLISH", p.aor, "<%s>;tag=f%d" % (p.aor, n), "<%s>" % p.aor,
                            "pub-%s-%d" % (TOKEN, n), 1, br, self.sip.wport,
                            extra=("Event: presence", "Expires: %d" % (10 if op.bad else 3600)),
                            body=pidf("pres:p%d@%s" % (n, LOCAL), "t%d" % n, note))
        op.req = msg.decode()
        resp = self.sip.transact(self.sip.w, msg, br)
        self.finish_sip(op, resp)
        self._publish_outcome(p, op, resp)

    def _publish_outcome(self, p, op, resp):
        with self.L:
            if op.state == "acked":
                p.etag = h1(resp.h, "sip-etag") or None
                p.note = op.note
                p.acked_ops.append(op)
                p.uncertain = []
                if p.etag and op.kind == "publish":
                    self.live_pubs.append(p)
                p.busy = False
            elif op.state == "refused":
                p.refused.append(op)
                p.busy = False
            else:
                p.uncertain.append(op)
                # busy until the check resolves what the store holds

    def _pick(self, pool):
        with self.L:
            for _ in range(8):
                if not pool:
                    return None
                o = pool[self.rng.randrange(len(pool))]
                if not o.busy:
                    o.busy = True
                    return o
        return None

    def op_publish_modify(self):
        p = self._pick(self.live_pubs)
        if p is None:
            time.sleep(0.01)
            return
        p.k += 1
        note = "pn%d-%d" % (p.n, p.k)
        op = self.new_op("publish-modify", obj=p)
        op.note = note
        op.bad = self.bad()  # an entity-tag the gateway never issued: 412
        br = self.sip.branch()
        msg = build_request("PUBLISH", p.aor, "<%s>;tag=m%d.%d" % (p.aor, p.n, p.k), "<%s>" % p.aor,
                            "pubm-%s-%d-%d" % (TOKEN, p.n, p.k), 1, br, self.sip.wport,
                            extra=("Event: presence", "Expires: 3600",
                                   "SIP-If-Match: " + ("bogus%s%d" % (TOKEN, p.k) if op.bad else p.etag)),
                            body=pidf("pres:p%d@%s" % (p.n, LOCAL), "t%d" % p.n, note))
        op.req = msg.decode()
        resp = self.sip.transact(self.sip.w, msg, br)
        self.finish_sip(op, resp)
        self._publish_outcome(p, op, resp)

    def _subscribe(self, d, ruri, op):
        br = self.sip.branch()
        msg = build_request("SUBSCRIBE", ruri, "<%s>;tag=%s" % (d.watcher, d.ftag), "<%s>" % ruri,
                            d.callid, 1, br, self.sip.wport,
                            extra=("Contact: <sip:%s@127.0.0.1:%d>" % (user_host(d.watcher).split("@")[0], self.sip.wport),
                                   "Event: presence", "Accept: application/pidf+xml",
                                   "Expires: %d" % (10 if op.bad else 3600)))
        op.req = msg.decode()
        resp = self.sip.transact(self.sip.w, msg, br)
        self.finish_sip(op, resp)
        if op.state == "acked":
            d.ttag = tag_of(h1(resp.h, "to"))
            d.rtarget = uri_of(h1(resp.h, "contact")) or ruri
        with self.L:
            if op.state == "acked" and d.kind == "subscribe-gw":
                self.live_gsubs.append(d)
            if op.state != "unanswered":
                d.busy = False

    def op_subscribe_local(self):
        with self.L:
            if not self.live_pubs:
                p = None
            else:
                p = self.live_pubs[self.rng.randrange(len(self.live_pubs))]
        if p is None:
            time.sleep(0.01)
            return
        n = next(self.ids)
        d = Dlg("subscribe-local", n, "sip:w%d@%s" % (n, LOCAL), p.aor, "sl-%s-%d" % (TOKEN, n), "w%d" % n)
        d.pub = p
        op = self.new_op("subscribe-local", obj=d)
        op.bad = self.bad()  # Expires below min_expires: 423
        d.op = op
        with self.L:
            self.lsubs.append(d)
        self._subscribe(d, p.aor, op)

    def op_subscribe_gw(self):
        n = next(self.ids)
        d = Dlg("subscribe-gw", n, "sip:x%d@%s" % (n, LOCAL), "sip:c%d@%s" % (n, XMPP),
                "sg-%s-%d" % (TOKEN, n), "x%d" % n)
        op = self.new_op("subscribe-gw", obj=d)
        op.bad = self.bad()  # Expires below min_expires: 423
        d.op = op
        with self.L:
            self.gsubs.append(d)
        self._subscribe(d, d.target, op)

    def _http_op(self, op, path, obj):
        op.req = "POST %s %s" % (path, json.dumps(obj))
        try:
            st, body = self.http.call("POST", path, obj)
        except (OSError, http.client.HTTPException) as e:
            op.state, op.resp, op.t_done = "unanswered", repr(e), mono()
            return None
        op.t_done = mono()
        op.code = st
        op.resp = short(json.dumps(body) if not isinstance(body, str) else body)
        ok = st == 200 and isinstance(body, dict) and body.get("status") in ("success", "indeterminate")
        op.state = "acked" if ok else "refused"
        if st == 200 and not ok and isinstance(body, dict):
            op.code = "CPIM %s %s" % (body.get("status"), body.get("code"))
        return body

    def op_cpim_notify(self, phase="load", d=None):
        if d is None:
            d = self._pick(self.live_gsubs)
            if d is None:
                time.sleep(0.01)
                return None
        d.k += 1
        note = "gn%d-%d" % (d.n, d.k)
        op = self.new_op("cpim-notify", phase=phase, obj=d)
        op.note, op.seq = note, d.k
        op.bad = phase == "load" and self.bad()  # a document that does not parse: 400
        d.notify_ops.append(op)
        body = pidf("pres:" + user_host(d.target), "c%d" % d.n, note)
        if op.bad:
            body = body.replace("</presence>", "")
        self._http_op(op, "/cpim/v1/notify", {
            "watcher": "pres:" + user_host(d.watcher), "target": "pres:" + user_host(d.target),
            "presence": {"content_type": "application/pidf+xml", "body": body}})
        if op.state != "unanswered":
            d.busy = False
        return op

    def op_cpim_subscribe(self):
        n = next(self.ids)
        bad = self.bad()  # the SIP presentity refuses (403): failure
        c = CSub(n, deny=bad)
        with self.L:
            self.csubs.append(c)
            self.csub_pairs[(user_host(c.watcher), user_host(c.target))] = c
        op = self.new_op("cpim-subscribe", obj=c)
        op.bad = bad
        c.op = op
        self._http_op(op, "/cpim/v1/subscribe", {"watcher": c.watcher, "target": c.target, "duration": 3600})
        with self.L:
            if op.state == "acked":
                self.live_csubs.append(c)

    def ua_notify(self, d, phase="load", release=False):
        """The UA's NOTIFY in a §7.2 dialog (non-blocking; from any thread)."""
        c = d.csub
        k = (c.k + 1) if c is not None else 1
        if c is not None:
            c.k = k
        note = "un%s-%d" % (c.n if c is not None else d.callid, k)
        op = self.new_op("ua-notify", phase=phase, obj=c)
        op.note, op.seq = note, k
        op.bad = phase == "load" and not release and self.bad()  # a To tag of no dialog: 481
        if c is not None:
            c.ua = d
            c.notify_ops.append(op)
        msg, br, _ = self.sip.ua_notify_request(d, note, bad=op.bad)
        op.req = msg.decode()

        def done(resp):
            self.finish_sip(op, resp)
            if release and op.state != "unanswered":
                d.busy = False

        return op, self.sip.send(self.sip.u, msg, br, cb=done)

    def op_ua_notify(self):
        c = None
        with self.L:
            for _ in range(8):
                if not self.live_csubs:
                    break
                x = self.live_csubs[self.rng.randrange(len(self.live_csubs))]
                if x.ua is not None and not x.ua.busy and not x.ua.ended:
                    x.ua.busy = True
                    c = x
                    break
        if c is None:
            time.sleep(0.01)
            return
        op, t = self.ua_notify(c.ua)
        t.done.wait(40)
        if op.state != "unanswered":
            c.ua.busy = False


# ---------------------------------------------------------------- load

class Pacer:
    def __init__(self, rate):
        self.iv = 1.0 / rate
        self.next = mono()
        self.lock = threading.Lock()

    def wait(self, stop):
        with self.lock:
            now = mono()
            t = max(self.next, now)
            self.next = t + self.iv
        d = t - mono()
        if d > 0:
            stop.wait(d)


def run_load(world, duration, rates, workers):
    stop = world.stop
    stop.clear()
    fns = {"register": world.op_register, "publish": world.op_publish,
           "publish-modify": world.op_publish_modify, "subscribe-local": world.op_subscribe_local,
           "subscribe-gw": world.op_subscribe_gw, "cpim-notify": world.op_cpim_notify,
           "cpim-subscribe": world.op_cpim_subscribe, "ua-notify": world.op_ua_notify}
    threads = []
    errors = []

    def loop(fn, pacer, limit):
        try:
            for _ in range(limit):
                pacer.wait(stop)
                if stop.is_set():
                    return
                fn()
        except Exception as e:
            errors.append(repr(e))
            log("load worker error: %r" % (e,))

    for kind, fn in fns.items():
        rate = rates[kind]
        if rate <= 0:
            continue
        pacer = Pacer(rate)
        limit = int(rate * (duration + 5)) + 10  # bounded
        for _ in range(workers[kind]):
            th = threading.Thread(target=loop, args=(fn, pacer, limit), daemon=True, name="load-" + kind)
            th.start()
            threads.append(th)
    return threads, errors


# ---------------------------------------------------------------- checks

def obj_key(op):
    """What names an operation's state in an export: the start of its key
    (registrations: the contact after the AOR)."""
    if op is None:
        return None
    o = op.obj
    if op.kind == "register":
        return op.extra["contact"]
    if isinstance(o, Pub):
        return o.aor + "\n"
    if isinstance(o, Dlg):
        return o.callid + ";"
    if isinstance(o, CSub) and o.ua is not None:
        return o.ua.callid + ";"
    return None


class Checker:
    def __init__(self, world, sip, http_, adapter, gw):
        self.w, self.sip, self.http, self.adapter, self.gw = world, sip, http_, adapter, gw
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.checked = {k: 0 for k in KINDS}
        self.losses = {k: 0 for k in KINDS}
        self.rbp = {k: 0 for k in KINDS}  # refused but present
        self.ua_present = {k: 0 for k in KINDS}  # unanswered, found present
        self.ua_absent = {k: 0 for k in KINDS}
        self.refused_absent = {k: 0 for k in KINDS}  # refused, verified absent
        self.late = {k: 0 for k in KINDS}  # acknowledged before the kill, delivered after the restart
        self.findings = []
        self.errors = []

    def ok(self, kind, n=1):
        with self.lock:
            self.checked[kind] += n

    def lose(self, kind, op, why, **ev):
        key = ev.pop("obj_key", None) or obj_key(op)
        with self.lock:
            self.losses[kind] += 1
            self.findings.append(dict({"type": "loss", "kind": kind, "why": why, "obj_key": key,
                                       "op": op.brief() if op else None}, **ev))

    def refused_present(self, kind, op, why, **ev):
        with self.lock:
            self.rbp[kind] += 1
            self.findings.append(dict({"type": "refused-but-present", "kind": kind, "why": why,
                                       "op": op.brief()}, **ev))

    def absent_ok(self, kind):
        with self.lock:
            self.refused_absent[kind] += 1

    def delivered_late(self, kind):
        with self.lock:
            self.late[kind] += 1

    def unanswered(self, kind, present):
        with self.lock:
            (self.ua_present if present else self.ua_absent)[kind] += 1

    def parallel(self, fn, items, workers=12):
        items = list(items)
        it = iter(items)
        lk = threading.Lock()

        def run():
            while True:
                with lk:
                    x = next(it, None)
                if x is None:
                    return
                try:
                    fn(x)
                except Exception as e:
                    import traceback
                    with self.lock:
                        self.errors.append("%s: %r" % (fn.__name__, e))
                    traceback.print_exc()
        ths = [threading.Thread(target=run, daemon=True) for _ in range(min(workers, max(1, len(items))))]
        for t in ths:
            t.start()
        for t in ths:
            t.join(600)

    # -- helpers
    def check_transact(self, build, tries=8):
        """A check's SIP request; a 503 (shed by overload control: nothing
        changed) is retried, boundedly. Returns (request bytes, response)."""
        for i in range(tries):
            br, msg = build()
            resp = self.sip.transact(self.sip.w, msg, br, timeout=10)
            if resp is None or resp.code != 503:
                break
            time.sleep(min(2.0, 0.25 * (i + 1)))
        return msg, resp

    def http_check(self, method, path, obj=None, tries=8):
        """A check's HTTP request; 503 is retried, boundedly."""
        for i in range(tries):
            st, body = self.http.call(method, path, obj, retry=method == "GET")
            if st != 503:
                break
            time.sleep(min(2.0, 0.25 * (i + 1)))
        return st, body

    def admin_presentity(self, aor):
        st, body = self.http_check("GET", "/admin/v1/presentities/" + q(aor))
        if st == 404:
            return {"publications": [], "registrations": [], "subscriptions": []}
        if st != 200 or not isinstance(body, dict):
            raise RuntimeError("admin presentity %s: %s %s" % (aor, st, body))
        return body

    def admin_subs(self, **flt):
        qs = urllib.parse.urlencode(dict(flt, limit=10000))
        st, body = self.http_check("GET", "/admin/v1/subscriptions?" + qs)
        if st != 200:
            raise RuntimeError("admin subscriptions %s: %s %s" % (qs, st, body))
        return body.get("subscriptions", [])

    # -- PUBLISH
    def check_pub(self, p, final):
        w = self.w
        view = self.admin_presentity(p.aor)
        pubs = view.get("publications") or []
        if not isinstance(pubs, list):
            pubs = []
        found = None
        resolved_by = None
        if p.etag is not None:
            for x in pubs:
                if x.get("etag") == p.etag and p.note and ("<note>%s</note>" % p.note) in (x.get("body") or ""):
                    found, resolved_by = x, "acked"
        if found is None:
            for op in p.uncertain:
                for x in pubs:
                    if ("<note>%s</note>" % op.note) in (x.get("body") or ""):
                        found, resolved_by = x, op
        for op in p.refused:
            if any(("<note>%s</note>" % op.note) in (x.get("body") or "") for x in pubs):
                self.refused_present(op.kind, op, "a refused PUBLISH's body is held", presentity=view)
            elif final or op.round == w.round:
                self.absent_ok(op.kind)
        last_acked = p.acked_ops[-1] if p.acked_ops else None
        in_scope = [o for o in p.acked_ops if final or o.round == w.round]
        for op in p.uncertain:
            self.unanswered(op.kind, resolved_by is op)
            if resolved_by is not op and self.sip.was_seen(op.note):
                # Watchers are sent a change only once it is durable.
                self.lose(op.kind, op, "no answer before the kill, but watchers were sent its state; "
                          "after the restart the store does not hold it", presentity=view)
        if found is None:
            with w.L:
                p.uncertain = []
            if last_acked is not None or p.check_ack is not None:
                self.lose(last_acked.kind if last_acked else "publish", last_acked,
                          "no publication with the acknowledged SIP-ETag and body", obj_key=p.aor + "\n",
                          expected={"etag": p.etag, "note": p.note}, presentity=view,
                          last_check_refresh=p.check_ack)
                self.ok_many(in_scope[:-1])
            else:
                p.dead = True
            return
        if resolved_by is not None and resolved_by != "acked":
            # An unanswered PUBLISH was applied: its state is now the one to keep.
            with w.L:
                p.etag, p.note = found.get("etag"), resolved_by.note
                if resolved_by.kind == "publish" and p not in w.live_pubs:
                    w.live_pubs.append(p)
        with w.L:
            p.uncertain = []
        # The refresh: SIP-If-Match of the ETag held must be 200, not 412.
        def build():
            br = self.sip.branch()
            return br, build_request("PUBLISH", p.aor, "<%s>;tag=chk%d" % (p.aor, p.n), "<%s>" % p.aor,
                                     "pubr-%s-%d-%d" % (TOKEN, p.n, w.round), 1, br, self.sip.wport,
                                     extra=("Event: presence", "Expires: 3600", "SIP-If-Match: " + p.etag))
        msg, resp = self.check_transact(build)
        if resp is None or resp.code != 200:
            if last_acked is not None or p.check_ack is not None:
                self.lose(last_acked.kind if last_acked else "publish", last_acked, obj_key=p.aor + "\n",
                          why="refresh with the acknowledged SIP-ETag answered %s"
                          % (resp.code if resp else "nothing"), refresh=msg.decode(),
                          refresh_response=short(resp.raw) if resp else None, presentity=view)
                self.ok_many(in_scope[:-1])
            return
        with w.L:
            p.etag = h1(resp.h, "sip-etag") or p.etag
            p.check_ack = {"request": msg.decode(), "response": short(resp.raw)}
            p.busy = False
        self.ok_many(in_scope)

    def ok_many(self, ops):
        for op in ops:
            if op.phase == "load":
                self.ok(op.kind)

    # -- REGISTER
    def check_reg(self, op):
        aor, contact = op.extra["aor"], op.extra["contact"]
        def build():
            br = self.sip.branch()
            return br, build_request("REGISTER", "sip:" + LOCAL, "<%s>;tag=q%d" % (aor, self.w.round),
                                     "<%s>" % aor, "regq-%s-%s-%d" % (TOKEN, aor, self.w.round), 1, br,
                                     self.sip.wport)
        msg, resp = self.check_transact(build)
        if resp is None or resp.code != 200:
            raise RuntimeError("REGISTER query for %s answered %s" % (aor, resp.code if resp else "nothing"))
        present = any(contact in c for c in resp.h.get("contact", []))
        if op.state == "acked":
            if present:
                self.ok("register")
            else:
                self.lose("register", op, "binding not listed by a REGISTER query",
                          query_response=short(resp.raw))
        elif op.state == "refused":
            if present:
                self.refused_present("register", op, "binding of a refused REGISTER is listed",
                                     query_response=short(resp.raw))
            else:
                self.absent_ok("register")
        else:
            self.unanswered("register", present)

    # -- SIP watcher dialogs (local and §7.1)
    def check_dlg(self, d, final):
        w = self.w
        op = d.op
        if op.state == "refused":
            kind = "local" if d.kind == "subscribe-local" else "sip-to-cpim"
            subs = self.admin_subs(watcher=d.watcher, kind=kind)
            if subs:
                self.refused_present(d.kind, op, "a subscription of a refused SUBSCRIBE exists", admin=subs)
            else:
                self.absent_ok(d.kind)
            return
        if op.state == "unanswered":
            seen = self.sip.any_notify(d.callid)
            if (op.round == w.round and not final) or seen:
                kind = "local" if d.kind == "subscribe-local" else "sip-to-cpim"
                present = bool(self.admin_subs(watcher=d.watcher, kind=kind))
                if op.round == w.round and not final:
                    self.unanswered(d.kind, present)
                if seen and not present:
                    # No NOTIFY goes out in a dialog that is not durable.
                    self.lose(d.kind, op, "no 2xx before the kill, but a NOTIFY in its dialog arrived; "
                              "after the restart the subscription is gone")
            return
        if op.state != "acked" or d.ttag is None:
            return
        before = self.sip.max_notify_cseq(d.callid)
        seen_before = [int(n.rsplit("-", 1)[1]) for n in self.sip.notes_seen(d.callid)
                       if n and n.startswith("gn%d-" % d.n)]
        def build():
            d.cseq += 1
            br = self.sip.branch()
            return br, build_request(
                "SUBSCRIBE", d.rtarget, "<%s>;tag=%s" % (d.watcher, d.ftag),
                "<%s>;tag=%s" % (d.target, d.ttag), d.callid, d.cseq, br, self.sip.wport,
                extra=("Contact: <sip:%s@127.0.0.1:%d>" % (user_host(d.watcher).split("@")[0], self.sip.wport),
                       "Event: presence", "Accept: application/pidf+xml", "Expires: 3600"))
        msg, resp = self.check_transact(build)
        notify_ops = [o for o in d.notify_ops if o.state == "acked"]
        scope_notifies = [o for o in notify_ops if final or o.round == w.round]
        if resp is None or not 200 <= resp.code < 300:
            ev = {"refresh": msg.decode(), "refresh_response": short(resp.raw) if resp else None}
            if final or op.round == w.round:
                self.lose(d.kind, op, "in-dialog refresh answered %s" % (resp.code if resp else "nothing"), **ev)
            else:
                self.lose(d.kind, op, "in-dialog refresh of an earlier round's subscription answered %s"
                          % (resp.code if resp else "nothing"), **ev)
            for o in scope_notifies:
                self.lose("cpim-notify", o, "its dialog is gone")
            return
        e = self.sip.wait_notify(d.callid, before, 10)
        if e is None:
            self.lose(d.kind, op, "no NOTIFY with a CSeq above %d after the refresh" % before,
                      refresh=msg.decode(), refresh_response=short(resp.raw))
            return
        if final or op.round == w.round:
            self.ok(d.kind)
        if d.kind == "subscribe-local":
            p = d.pub
            if p.note is not None and e["note"] != p.note:
                # Not an op of this dialog: the presentity's state it carries.
                self.lose("publish-modify" if p.acked_ops and p.acked_ops[-1].kind == "publish-modify" else "publish",
                          p.acked_ops[-1] if p.acked_ops else None,
                          "NOTIFY after the refresh carries note %r, the presentity's acknowledged state is %r"
                          % (e["note"], p.note), call_id=d.callid, notify=e)
            return
        # §7.1: every acknowledged CPIM notify reached the watcher: a NOTIFY
        # carried its state, or a later one (NOTIFYs carry the latest state).
        seqs = []
        for note in self.sip.notes_seen(d.callid):
            if note and note.startswith("gn%d-" % d.n):
                seqs.append(int(note.rsplit("-", 1)[1]))
        top = max(seqs) if seqs else 0
        cur = note_of("<note>%s</note>" % e["note"]) if e["note"] else None
        cur_seq = int(cur.rsplit("-", 1)[1]) if cur and cur.startswith("gn%d-" % d.n) else 0
        acked_max = max((o.seq for o in notify_ops), default=0)
        if cur_seq < acked_max:
            self.lose("cpim-notify", [o for o in notify_ops if o.seq == acked_max][0],
                      "the NOTIFY after the refresh carries state %d, the last acknowledged is %d"
                      % (cur_seq, acked_max), call_id=d.callid, notify=e)
        elif seen_before and cur_seq < max(seen_before):
            # A NOTIFY leaves only once its state is durable.
            shown = [o for o in d.notify_ops if o.seq == max(seen_before)]
            self.lose("cpim-notify", shown[0] if shown else None,
                      "the watcher was sent state %d before the kill; after the restart the dialog's "
                      "state is %d" % (max(seen_before), cur_seq), call_id=d.callid, notify=e,
                      obj_key=d.callid + ";")
        entries = self.sip.notify_entries(d.callid)
        for o in scope_notifies:
            if o.seq <= top:
                self.ok("cpim-notify")
                kill = w.kill_t.get(o.round)
                if o.phase == "load" and kill is not None and not any(
                        x["t"] < kill and x["note"] and x["note"].startswith("gn%d-" % d.n)
                        and int(x["note"].rsplit("-", 1)[1]) >= o.seq for x in entries):
                    self.delivered_late("cpim-notify")
            else:
                self.lose("cpim-notify", o, "no NOTIFY ever carried this state or a later one", seen=seqs)
        for o in d.notify_ops:
            if o.state == "refused" and o.seq in seqs:
                self.refused_present("cpim-notify", o, "a refused CPIM notify's state reached the watcher")
            elif o.state == "refused" and (final or o.round == w.round):
                self.absent_ok("cpim-notify")
            elif o.state == "unanswered" and o.round == w.round and not final:
                self.unanswered("cpim-notify", o.seq in seqs)
        with w.L:
            d.busy = False

    # -- §7.2
    def check_csub(self, c, final):
        w = self.w
        op = c.op
        acked_notifies = [o for o in c.notify_ops if o.state == "acked"]
        must = op.state == "acked" or bool(acked_notifies)
        d = c.ua
        if op.state == "refused" and not acked_notifies:
            subs = self.admin_subs(watcher=c.watcher, kind="cpim-to-sip")
            if subs:
                self.refused_present("cpim-subscribe", op, "the dialog of a refused CPIM subscribe exists", admin=subs)
            else:
                self.absent_ok("cpim-subscribe")
            return
        if not must:
            if op.state == "unanswered" and op.round == w.round and not final:
                self.unanswered("cpim-subscribe", bool(self.admin_subs(watcher=c.watcher, kind="cpim-to-sip")))
            return
        if d is None:
            self.lose("cpim-subscribe", op, "acknowledged, yet the SIP presentity never saw its SUBSCRIBE")
            return
        did = "%s;%s;%s" % (d.callid, d.gw_tag, d.ua_tag)
        st, view = self.http_check("GET", "/admin/v1/dialogs/" + q(did))
        in_scope = final or op.round == w.round
        if st != 200 or not isinstance(view, dict) or (view.get("subscription") or {}).get("kind") != "cpim-to-sip":
            self.lose("cpim-subscribe", op, "the gateway does not hold the §7.2 dialog %s (admin %s)" % (did, st),
                      admin=view)
            return
        # A CPIM refresh must be an in-dialog SUBSCRIBE with a higher CSeq.
        last = d.subs[-1][0]
        n_dialogs = len(self.sip.ua_by_pair.get((user_host(c.watcher), user_host(c.target)), []))
        try:
            st, body = self.http_check("POST", "/cpim/v1/subscribe",
                                       {"watcher": c.watcher, "target": c.target, "duration": 3600})
        except (OSError, http.client.HTTPException) as e:
            st, body = None, repr(e)
        s = self.sip.wait_ua_subscribe(d.callid, last, 5)
        n_after = len(self.sip.ua_by_pair.get((user_host(c.watcher), user_host(c.target)), []))
        if st != 200 or not isinstance(body, dict) or body.get("status") != "success" or s is None or n_after != n_dialogs:
            self.lose("cpim-subscribe", op, "CPIM refresh: answer %s %s, in-dialog SUBSCRIBE %s, new dialogs %d"
                      % (st, body, "seen" if s else "not seen", n_after - n_dialogs), admin=view)
            return
        if op.state == "acked" and in_scope:
            self.ok("cpim-subscribe")
        # Its state is intact: a NOTIFY in the dialog is taken (200) and
        # passed on (checked with the deliveries).
        with w.L:
            d.busy = True
        for i in range(8):
            nop, t = w.ua_notify(d, phase="check")
            t.done.wait(40)
            if nop.code != 503:  # 503: shed, nothing changed; again
                break
            time.sleep(min(2.0, 0.25 * (i + 1)))
        if nop.state != "acked":
            self.lose("cpim-subscribe", op, "a NOTIFY in the dialog after the restart answered %s" % nop.code,
                      notify=nop.brief())
        with w.L:
            d.busy = False

    def check_deliveries(self, ops, final, timeout):
        acked = [o for o in ops if o.state == "acked"]
        missing = set(self.adapter.wait_all([o.note for o in acked], timeout))
        for o in acked:
            if o.note in missing:
                self.lose("ua-notify", o, "the adapter never received this NOTIFY's state")
            elif o.phase == "load" and (final or o.round == self.w.round):
                self.ok("ua-notify")
                kill = self.w.kill_t.get(o.round)
                if kill is not None and self.adapter.first_t.get(o.note, 0) > kill:
                    self.delivered_late("ua-notify")
        for o in ops:
            if o.state == "refused" and self.adapter.has(o.note):
                self.refused_present("ua-notify", o, "the adapter received a refused NOTIFY's state")
            elif o.state == "refused":
                self.absent_ok("ua-notify")
            elif o.state == "unanswered" and o.round == self.w.round and not final:
                self.unanswered("ua-notify", self.adapter.has(o.note))

    def check(self, final):
        """Checks the objects touched in this round (final: every object)."""
        w = self.w
        r = w.round
        with w.L:
            ops = list(w.ops)
            pubs = list(w.pubs)
            regs = list(w.regs)
            lsubs, gsubs, csubs = list(w.lsubs), list(w.gsubs), list(w.csubs)

        def touched(objs, get_ops):
            return [o for o in objs if final or any(x.round == r for x in get_ops(o))]

        pub_ops = {}
        for op in ops:
            if op.kind in ("publish", "publish-modify"):
                pub_ops.setdefault(id(op.obj), []).append(op)
        self.parallel(lambda p: self.check_pub(p, final),
                      [p for p in touched(pubs, lambda p: pub_ops.get(id(p), [])) if not p.dead])
        self.parallel(self.check_reg, [o for o in regs
                                       if (final and o.state in ("acked", "refused")) or o.round == r])
        self.parallel(lambda d: self.check_dlg(d, final),
                      touched(lsubs, lambda d: [d.op]) + touched(gsubs, lambda d: [d.op] + d.notify_ops))
        self.parallel(lambda c: self.check_csub(c, final), touched(csubs, lambda c: [c.op] + c.notify_ops))
        ua_ops = [o for o in ops if o.kind == "ua-notify" and (final or o.round == r)]
        self.check_deliveries(ua_ops, final, timeout=30)
        self.probe(lsubs, gsubs, csubs)

    def probe(self, lsubs, gsubs, csubs):
        """The absence checks of refused SUBSCRIBEs rely on the admin
        filter: it must find a subscription known to exist."""
        rng = random.Random(self.w.round)
        for objs, kind, watcher in ((lsubs, "local", lambda d: d.watcher),
                                    (gsubs, "sip-to-cpim", lambda d: d.watcher),
                                    (csubs, "cpim-to-sip", lambda c: c.watcher)):
            good = [o for o in objs if o.op.state == "acked" and not o.op.bad]
            if good:
                o = rng.choice(good)
                if not self.admin_subs(watcher=watcher(o), kind=kind):
                    with self.lock:
                        self.errors.append("probe: /admin/v1/subscriptions?watcher=%s&kind=%s finds nothing"
                                           % (watcher(o), kind))


# ---------------------------------------------------------------- self-test

def sabotage(a, gw, world):
    """The checker's self-test, at the last kill: drop acknowledged records
    from the store (one registration, publication, local subscription, §7.1
    dialog and §7.2 dialog, through export/import) or empty it. Returns what
    was dropped, each with the obj_key a loss finding must name."""
    if a.sabotage == "wipe":
        shutil.rmtree(a.store)
        os.makedirs(a.store)
        return [{"tree": "*", "key": "*", "obj_key": None}]
    dump = os.path.join(a.work, "sabotage-before.jsonl")
    rc, msg = gw.export(a.store, dump)
    if rc != 0:
        raise RuntimeError("sabotage: export failed: " + msg)
    with world.L:
        want = {
            ("registrations", "reg"): {o.extra["contact"] for o in world.regs if o.state == "acked"},
            ("publications", "pub"): {p.aor + "\n" for p in world.pubs if p.acked_ops and not p.dead},
            ("subscriptions", "local"): {d.callid + ";" for d in world.lsubs if d.op.state == "acked"},
            ("dialogs", "sip-to-cpim"): {d.callid + ";" for d in world.gsubs if d.op.state == "acked"},
            ("dialogs", "cpim-to-sip"): {c.ua.callid + ";" for c in world.csubs
                                         if c.op.state == "acked" and c.ua is not None},
        }
    with open(dump, encoding="utf-8") as f:
        lines = f.read().splitlines()
    found = {k: [] for k in want}
    for i, line in enumerate(lines[1:], 1):
        rec = json.loads(line)
        # The delivery queue's keys are binary and exported as "key_hex";
        # none of the trees sabotaged here is keyed that way.
        key = rec.get("key")
        if key is None:
            continue
        ok = (key.split("\n", 1)[-1] if rec["tree"] == "registrations"
              else key.split("\n", 1)[0] + "\n" if rec["tree"] == "publications"
              else key.split(";", 1)[0] + ";")
        for (tree, what), keys in want.items():
            if rec["tree"] == tree and ok in keys:
                found[(tree, what)].append((i, key, ok))
    dropped, skip = [], set()
    for (tree, what), cands in found.items():
        if cands:
            i, key, ok = world.rng.choice(cands)
            skip.add(i)
            dropped.append({"tree": tree, "what": what, "key": key, "obj_key": ok})
    out = os.path.join(a.work, "sabotage-after.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        for i, line in enumerate(lines):
            if i not in skip:
                f.write(line + "\n")
    shutil.rmtree(a.store)
    r = subprocess.run([a.bin, "import", "--config", a.config, "--input", out],
                       env=gw.env, capture_output=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("sabotage: import failed: " + r.stderr.decode("utf-8", "replace"))
    return dropped


# ---------------------------------------------------------------- main

def parse_rates(spec, default):
    out = dict(default)
    for part in filter(None, (spec or "").split(",")):
        k, _, v = part.partition("=")
        if k.strip() not in out:
            sys.exit("unknown kind in rates: %s (kinds: %s)" % (k, ", ".join(KINDS)))
        out[k.strip()] = float(v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--store", required=True, help="the store directory of the config")
    ap.add_argument("--sip-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--ua-port", type=int, required=True)
    ap.add_argument("--adapter-port", type=int, required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--load-min", type=float, default=0.5)
    ap.add_argument("--load-max", type=float, default=3.0)
    ap.add_argument("--rates", default="", help="KIND=PER_SECOND,... (kinds: %s)" % ", ".join(KINDS))
    ap.add_argument("--workers", type=int, default=6,
                    help="threads per kind: operations of a kind at most in flight at once")
    ap.add_argument("--no-final-check", action="store_true")
    ap.add_argument("--refuse-fraction", type=float, default=0.05,
                    help="share of each kind sent in a form the gateway must refuse")
    ap.add_argument("--sabotage", choices=["drop", "wipe"],
                    help="self-test of the checker: at the last kill, drop one acknowledged record "
                         "per tree from the store (drop) or empty it (wipe); the run then passes only "
                         "if every dropped record is reported as a loss")
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--report", required=True)
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    if not 1 <= a.kills <= 1000 or not 0 < a.load_min <= a.load_max <= 60:
        sys.exit("kills must be 1..1000 and 0 < load-min <= load-max <= 60")
    if a.sabotage and a.no_final_check:
        sys.exit("--sabotage needs the final check")
    a.gateway_log = os.path.join(a.work, "gateway.log")
    a.pid_file = os.path.join(a.work, "gateway.pid")
    # About 1,100 operations/s offered in all (each kind at most --workers
    # in flight): near what this 2-core machine serves with the checker on it.
    rates = parse_rates(a.rates, {"register": 160, "publish": 160, "publish-modify": 160,
                                  "subscribe-local": 120, "subscribe-gw": 120, "cpim-notify": 160,
                                  "cpim-subscribe": 100, "ua-notify": 120})
    workers = {k: a.workers for k in KINDS}
    # SIGTERM (crash.sh's cleanup): leave through the finally below, which
    # SIGKILLs the gateway.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log("seed %d, %d kills, load %.1f..%.1f s per round" % (a.seed, a.kills, a.load_min, a.load_max))

    world = World(a)
    sip = Sip(a.sip_port, a.ua_port, world)
    adapter = Adapter(a.adapter_port)
    world.sip, world.http, world.adapter = sip, Http(a.http_port), adapter
    gw = Gateway(a)
    checker = Checker(world, sip, Http(a.http_port), adapter, gw)
    sip.start()
    adapter.start()
    t_start = mono()
    rounds = []
    evidence = []
    dropped = None
    try:
        ready0 = gw.start()
        log("gateway pid %d ready in %.0f ms" % (gw.proc.pid, ready0 * 1000))
        for r in range(1, a.kills + 1):
            world.round = r
            checker.reset()
            sip.open()
            load_s = world.rng.uniform(a.load_min, a.load_max)
            n_ops0 = len(world.ops)
            threads, errors = run_load(world, load_s, rates, workers)
            t0 = mono()
            world.stop.wait(load_s)
            gw_pid = gw.proc.pid
            world.kill_t[r] = mono()
            gw.kill()  # SIGKILL, then reaped
            t_kill = mono() - t0
            world.stop.set()
            sip.barrier()
            for th in threads:
                th.join(60)
            stuck = [th.name for th in threads if th.is_alive()]
            if stuck:
                raise RuntimeError("load workers did not stop: %s" % stuck)
            for op in world.ops[n_ops0:]:
                if op.state == "pending" and op.phase == "load":
                    op.state = "unanswered"
            # The store as the kill left it, for the evidence of a loss.
            snap = os.path.join(a.work, "store-at-kill")
            shutil.rmtree(snap, ignore_errors=True)
            shutil.copytree(a.store, snap)
            if a.sabotage and r == a.kills:
                dropped = sabotage(a, gw, world)
                log("SELF-TEST: dropped from the store before the restart: %s"
                    % "; ".join("%s %s" % (d["tree"], d["key"].replace("\n", " ")) for d in dropped))
            ready = gw.start()
            sip.open()
            t_c = mono()
            checker.check(final=False)
            check_s = mono() - t_c
            round_ops = [o for o in world.ops[n_ops0:] if o.phase == "load"]
            row = {"round": r, "load_s": round(t_kill, 3), "gateway_pid": gw_pid,
                   "ready_ms": round(ready * 1000), "check_s": round(check_s, 2),
                   "ops": {k: {s: sum(1 for o in round_ops if o.kind == k and o.state == s)
                               for s in ("acked", "refused", "unanswered")} for k in KINDS},
                   "refused_codes": sorted({str(o.code) for o in round_ops if o.state == "refused"}),
                   "checked": dict(checker.checked), "losses": dict(checker.losses),
                   "refused_present": dict(checker.rbp), "unanswered_present": dict(checker.ua_present),
                   "refused_absent": dict(checker.refused_absent), "late": dict(checker.late),
                   "unanswered_absent": dict(checker.ua_absent), "findings": checker.findings,
                   "check_errors": checker.errors, "load_errors": errors}
            rounds.append(row)
            nl, nr = sum(checker.losses.values()), sum(checker.rbp.values())
            acked = sum(v["acked"] for v in row["ops"].values())
            log("round %d/%d: killed after %.2f s; %d ops (%d acked, %d refused, %d unanswered); ready in %d ms; "
                "checked %d in %.1f s; losses %d, refused-but-present %d%s"
                % (r, a.kills, t_kill, len(round_ops), acked,
                   sum(v["refused"] for v in row["ops"].values()),
                   sum(v["unanswered"] for v in row["ops"].values()), row["ready_ms"],
                   sum(checker.checked.values()), check_s, nl, nr,
                   ("; CHECK ERRORS %d" % len(checker.errors)) if checker.errors else ""))
            if nl or nr or checker.errors:
                keep = os.path.join(a.work, "store-at-kill-round-%d" % r)
                shutil.rmtree(keep, ignore_errors=True)
                os.rename(snap, keep)
                rc, msg = gw.export(keep, keep + ".jsonl")
                evidence.append({"round": r, "store": keep, "export": keep + ".jsonl",
                                 "export_status": rc, "export_message": msg})
                for f in checker.findings[:5]:
                    log("  finding: %s" % json.dumps(f)[:1500])
        final = None
        if not a.no_final_check:
            checker.reset()
            world.round = a.kills + 1
            t_c = mono()
            checker.check(final=True)
            final = {"checked": dict(checker.checked), "losses": dict(checker.losses),
                     "refused_present": dict(checker.rbp), "findings": checker.findings,
                     "check_errors": checker.errors, "check_s": round(mono() - t_c, 2)}
            log("final check of every acknowledged operation: checked %d in %.1f s, losses %d, "
                "refused-but-present %d" % (sum(checker.checked.values()), final["check_s"],
                                            sum(checker.losses.values()), sum(checker.rbp.values())))
        # End-of-run audit of the adapter queue: its depth when SIGTERM is
        # sent, and what a graceful stop leaves in the store (at least once:
        # a record the adapter already took may stay and be sent again).
        try:
            st, text = checker.http.call("GET", "/metrics", retry=True)
            m = re.search(r"^sipgw_adapter_queue_depth (\d+)", text if isinstance(text, str) else "", re.M)
            depth_at_stop = int(m.group(1)) if m else None
        except (OSError, http.client.HTTPException):
            depth_at_stop = None
        stop_rc = gw.stop()
        dump = os.path.join(a.work, "final-export.jsonl")
        erc, emsg = gw.export(a.store, dump)
        left, left_delivered, records = 0, 0, 0
        if erc == 0:
            with open(dump, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if i == 0:
                        continue
                    records += 1
                    rec = json.loads(line)
                    if rec.get("tree") == "deliveries":
                        left += 1
                        body = ((rec.get("record") or {}).get("payload") or {}).get("presence") or {}
                        if adapter.has(note_of(body.get("body") or "")):
                            left_delivered += 1
        queue_audit = {"depth_at_sigterm": depth_at_stop, "left_in_store": left,
                       "left_already_delivered": left_delivered, "export": emsg, "records": records}
        gw.logf.flush()
        levels = {"ERROR": 0, "WARN": 0}
        first = {}
        with open(a.gateway_log, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "replace")
                for lv in levels:
                    if " %s " % lv in line:
                        levels[lv] += 1
                        msg = re.sub(r"^\S+\s+%s\s+" % lv, "", line.strip())[:200]
                        first.setdefault(lv, [])
                        if len(first[lv]) < 3 and msg not in first[lv]:
                            first[lv].append(msg)
        size = 0
        for root, _, files in os.walk(a.store):
            size += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        result = {
            "seed": a.seed, "kills": a.kills, "rounds": rounds, "final": final,
            "evidence": evidence, "anomalies": sip.anomalies, "sip_counts": sip.counts,
            "adapter_calls": adapter.calls, "adapter_unsubscribes": len(adapter.unsubscribes),
            "gateway_exit_on_sigterm": stop_rc, "store_bytes": size,
            "elapsed_s": round(mono() - t_start, 1), "rates": rates,
            "refuse_fraction": a.refuse_fraction, "sabotage": a.sabotage, "dropped": dropped,
            "gateway_log": {"levels": levels, "first": first}, "queue_audit": queue_audit,
        }
    finally:
        world.stop.set()
        gw.kill()
        sip.stopping = True
        adapter.stop()
    with open(a.json_out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    report = render(result)
    with open(a.report, "w") as f:
        f.write(report)
    if a.sabotage:
        # Self-test: pass only if every dropped record was reported lost.
        finds = [f for r in rounds for f in r["findings"]] + (final["findings"] if final else [])
        losses = [f for f in finds if f["type"] == "loss"]
        missed = [d for d in dropped or [] if d["obj_key"] is not None
                  and not any(f.get("obj_key") == d["obj_key"] for f in losses)]
        passed = bool(dropped) and bool(losses) and not missed
        line = ("SELF-TEST %s: sabotage %s dropped %d record(s); %d loss finding(s); not detected: %s"
                % ("PASSED" if passed else "FAILED", a.sabotage, len(dropped or []), len(losses),
                   json.dumps(missed) if missed else "none"))
        log(line)
        with open(a.report, "a") as f:
            f.write("\n" + line + "\n")
        return 0 if passed else 1
    bad = (sum(sum(r["losses"].values()) + sum(r["refused_present"].values()) for r in rounds)
           + (sum(final["losses"].values()) + sum(final["refused_present"].values()) if final else 0)
           + len(sip.anomalies)
           + sum(len(r["check_errors"]) for r in rounds) + (len(final["check_errors"]) if final else 0))
    return 1 if bad else 0


def render(res):
    rounds = res["rounds"]
    out = []
    tot = lambda key, k: sum(r[key][k] for r in rounds)
    st = lambda k, s: sum(r["ops"][k][s] for r in rounds)
    readies = sorted(r["ready_ms"] for r in rounds)
    med = readies[len(readies) // 2] if readies else 0
    fin = res["final"]
    out.append("Kills: %d (seed %d), elapsed %.0f s; restart to /readyz: min %d ms, median %d ms, max %d ms; "
               "store at the end %.1f MB; gateway exit status on the last SIGTERM: %s."
               % (res["kills"], res["seed"], res["elapsed_s"], readies[0] if readies else 0, med,
                  readies[-1] if readies else 0, res["store_bytes"] / 1e6, res["gateway_exit_on_sigterm"]))
    out.append("")
    out.append("| operation (check) | sent | acked | refused (verified absent) "
               "| unanswered (present/absent after restart) | checked after its kill "
               "| of which delivered only after the restart | checked at the end | losses | refused but present |")
    out.append("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for k in KINDS:
        sent = st(k, "acked") + st(k, "refused") + st(k, "unanswered")
        out.append("| %s | %d | %d | %d (%d) | %d (%d/%d) | %d | %s | %s | %d | %d |" % (
            KIND_TEXT[k], sent, st(k, "acked"), st(k, "refused"), tot("refused_absent", k),
            st(k, "unanswered"), tot("unanswered_present", k), tot("unanswered_absent", k), tot("checked", k),
            tot("late", k) if k in ("cpim-notify", "ua-notify") else "-",
            fin["checked"][k] if fin else "-",
            tot("losses", k) + (fin["losses"][k] if fin else 0),
            tot("refused_present", k) + (fin["refused_present"][k] if fin else 0)))
    all_sent = sum(st(k, s) for k in KINDS for s in ("acked", "refused", "unanswered"))
    out.append("| **all** | %d | %d | %d (%d) | %d | %d | %d | %s | %d | %d |" % (
        all_sent, sum(st(k, "acked") for k in KINDS), sum(st(k, "refused") for k in KINDS),
        sum(tot("refused_absent", k) for k in KINDS),
        sum(st(k, "unanswered") for k in KINDS), sum(tot("checked", k) for k in KINDS),
        sum(tot("late", k) for k in KINDS),
        sum(fin["checked"].values()) if fin else "-",
        sum(tot("losses", k) for k in KINDS) + (sum(fin["losses"].values()) if fin else 0),
        sum(tot("refused_present", k) for k in KINDS) + (sum(fin["refused_present"].values()) if fin else 0)))
    out.append("")
    out.append("| kill | load before SIGKILL (s) | ops sent | acked | refused (codes) | unanswered | restart to ready (ms) "
               "| checked | check time (s) | losses | refused but present |")
    out.append("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rounds:
        a = sum(v["acked"] for v in r["ops"].values())
        f = sum(v["refused"] for v in r["ops"].values())
        u = sum(v["unanswered"] for v in r["ops"].values())
        out.append("| %d | %.2f | %d | %d | %d%s | %d | %d | %d | %.1f | %d | %d |" % (
            r["round"], r["load_s"], a + f + u, a, f,
            (" (%s)" % ", ".join(r["refused_codes"])) if r["refused_codes"] else "", u, r["ready_ms"],
            sum(r["checked"].values()), r["check_s"], sum(r["losses"].values()),
            sum(r["refused_present"].values())))
    out.append("")
    notes = []
    if res["anomalies"]:
        notes.append("SIP anomalies (CSeq order, duplicate dialogs): %d, first: %s"
                     % (len(res["anomalies"]), json.dumps(res["anomalies"][0])))
    errs = sum(len(r["check_errors"]) for r in rounds) + (len(fin["check_errors"]) if fin else 0)
    if errs:
        notes.append("check errors: %d" % errs)
    for e in res["evidence"]:
        notes.append("round %d: store at the kill kept in %s, exported to %s (%s)"
                     % (e["round"], e["store"], e["export"], e["export_message"]))
    notes.append("SIP: %d NOTIFYs received by watchers (%d retransmissions), %d SUBSCRIBEs received by the "
                 "SIP presentity, %d client retransmissions; adapter: %s, %d unsubscribes"
                 % (res["sip_counts"]["notifies"], res["sip_counts"]["notify_retrans"],
                    res["sip_counts"]["ua_subscribes"], res["sip_counts"]["retransmissions"],
                    json.dumps(res["adapter_calls"]), res["adapter_unsubscribes"]))
    qa = res["queue_audit"]
    notes.append("store after the final SIGTERM: %d records; adapter queue depth when SIGTERM was sent: %s; "
                 "deliveries left in the store: %d, of which the adapter had already received %d "
                 "(sent again at the next start: at least once)"
                 % (qa["records"], qa["depth_at_sigterm"], qa["left_in_store"], qa["left_already_delivered"]))
    gl = res["gateway_log"]
    notes.append("gateway log: %d ERROR, %d WARN lines%s" % (
        gl["levels"]["ERROR"], gl["levels"]["WARN"],
        "".join("; first %s: %s" % (lv, " | ".join(m)) for lv, m in gl["first"].items())))
    out.extend("- " + n for n in notes)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
