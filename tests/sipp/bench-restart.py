#!/usr/bin/env python3
"""Helpers of bench-restart.sh (a benchmark, not a test). Standard library
only; everything on 127.0.0.1; every wait bounded.

  subscribe  one real subscription through the running gateway over UDP:
             SUBSCRIBE (retransmitted on T1 doubling), its 2xx, the first
             NOTIFY answered 200; prints what the watcher learnt (JSON).
  generate   from the one subscription of an `export` dump, N records that
             differ from it only in their identity (id, Call-ID, tags,
             presentity, watcher, contact user) and expiry, streamed as a
             dump `import` reads; also a random sample of them (JSON).
  ready      once the gateway is launched (--pid-file), polls GET /readyz
             every 50 ms until 200 (or the process exits, or the timeout);
             reports the time since its launch and VmRSS/VmHWM then.
  probe      for each sampled subscription: an in-dialog SUBSCRIBE refresh
             from the watcher's socket; checks its 2xx and the NOTIFY that
             follows (RFC 6665 §4.2.1.2), whose CSeq must be above the stored
             one; then one new out-of-dialog SUBSCRIBE (2xx + NOTIFY).
             Latencies from the kernel's receive timestamps (JSON).
"""
import argparse
import http.client
import json
import os
import random
import select
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = getattr(socket, "SCM_TIMESTAMPNS", SO_TIMESTAMPNS)
ANSWER_HEADERS = {b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"}
FAR_FUTURE_MS = 365 * 86400 * 1000


def log(msg):
    print("   [bench-restart] " + msg, file=sys.stderr, flush=True)


def parse(data):
    """(first line, {lower name: [values]}, [raw lines to copy into a 200])."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    lines = head.split(b"\r\n")
    headers, copy = {}, []
    for line in lines[1:]:
        i = line.find(b":")
        if i <= 0:
            continue
        name = line[:i].strip().lower()
        headers.setdefault(name, []).append(line[i + 1:].strip())
        if name in ANSWER_HEADERS:
            copy.append(line)
    return lines[0], headers, copy


def hdr(headers, long, short=None):
    v = headers.get(long)
    if v is None and short:
        v = headers.get(short)
    return v[0].decode("latin-1") if v else ""


def param(value, name):
    """The value of ;name=... in a header value ("" when absent)."""
    for p in value.split(";")[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == name:
            return v.strip()
    return ""


class Ua:
    """One UDP socket on 127.0.0.1:port playing the watchers: sends
    requests, answers every NOTIFY 200, hands out what arrives with the
    kernel's receive time."""

    def __init__(self, port, gw):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.gw = gw
        self.anc = socket.CMSG_SPACE(16)

    def send(self, msg):
        self.sock.sendto(msg.encode(), self.gw)
        return time.time_ns()

    def recv(self, timeout):
        """(kernel ns, first line, headers) of the next datagram, NOTIFYs
        answered 200 first; None after timeout seconds."""
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return None
        data, ancdata, _, src = self.sock.recvmsg(65536, self.anc)
        ts = time.time_ns()
        for level, typ, cdata in ancdata:
            if level == socket.SOL_SOCKET and typ == SCM_TIMESTAMPNS:
                s, ns = struct.unpack("qq", cdata[:16])
                ts = s * 1_000_000_000 + ns
        first, headers, copy = parse(data)
        if first.startswith(b"NOTIFY "):
            self.sock.sendto(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(copy)
                             + b"\r\nContent-Length: 0\r\n\r\n", src)
        return ts, first.decode("latin-1"), headers

    def transact(self, msg, call_id, notify_cseq_above, timeout):
        """Sends a SUBSCRIBE (retransmitted on T1 = 0.5 s doubling, at most
        4 s apart) and waits for its final response and for a NOTIFY of
        the same Call-ID with CSeq > notify_cseq_above (either order).
        Returns a dict: code, ms to the final response, ms to the NOTIFY,
        the NOTIFY's CSeq and Subscription-State, the 2xx's To tag and
        Contact, error (None when both came and the response is 2xx)."""
        t0 = self.send(msg)
        deadline = time.monotonic() + timeout
        retrans_at, interval = time.monotonic() + 0.5, 0.5
        out = {"code": None, "final_ms": None, "notify_ms": None, "notify_cseq": None,
               "notify_state": None, "to_tag": None, "contact": None, "retransmissions": 0,
               "error": None}
        while time.monotonic() < deadline:
            now = time.monotonic()
            if out["code"] is None and now >= retrans_at:
                self.send(msg)
                out["retransmissions"] += 1
                interval = min(interval * 2, 4.0)
                retrans_at = now + interval
            got = self.recv(min(deadline, retrans_at if out["code"] is None else deadline) - now)
            if got is None:
                continue
            ts, first, headers = got
            if hdr(headers, b"call-id", b"i") != call_id:
                continue  # a late retransmission of an earlier exchange
            cseq = hdr(headers, b"cseq").split()
            if first.startswith("SIP/2.0 "):
                code = int(first[8:11])
                if code < 200 or out["code"] is not None or len(cseq) < 2 or cseq[1] != "SUBSCRIBE":
                    continue
                out["code"], out["final_ms"] = code, (ts - t0) / 1e6
                out["to_tag"] = param(hdr(headers, b"to", b"t"), "tag")
                out["contact"] = hdr(headers, b"contact", b"m")
                if code >= 300:
                    out["error"] = "answered %s" % first[8:].strip()
                    return out
            elif first.startswith("NOTIFY ") and out["notify_ms"] is None:
                n = int(cseq[0]) if cseq and cseq[0].isdigit() else -1
                if n > notify_cseq_above:
                    out["notify_ms"], out["notify_cseq"] = (ts - t0) / 1e6, n
                    out["notify_state"] = hdr(headers, b"subscription-state")
            if out["code"] is not None and out["notify_ms"] is not None:
                return out
        out["error"] = "no %s within %g s" % (
            "final response" if out["code"] is None else
            "NOTIFY with CSeq > %d" % notify_cseq_above, timeout)
        return out


def subscribe_msg(ua, ruri, from_uri, from_tag, to_uri, to_tag, call_id, cseq, contact_user,
                  branch, expires):
    return (
        "SUBSCRIBE %s SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s;rport\r\n"
        "From: %s;tag=%s\r\n"
        "To: %s%s\r\n"
        "Call-ID: %s\r\n"
        "CSeq: %d SUBSCRIBE\r\n"
        "Max-Forwards: 70\r\n"
        "Contact: <sip:%s@127.0.0.1:%d>\r\n"
        "Event: presence\r\n"
        "Accept: application/pidf+xml\r\n"
        "Expires: %d\r\n"
        "Content-Length: 0\r\n\r\n"
        % (ruri, ua.port, branch, from_uri, from_tag, to_uri,
           ";tag=%s" % to_tag if to_tag else "", call_id, cseq, contact_user, ua.port, expires))


def gw_addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def cmd_subscribe(a):
    ua = Ua(a.port, gw_addr(a.gw))
    tag = "%x" % (os.getpid() ^ time.time_ns() & 0xffffffff)
    call_id = "real-%s" % tag
    msg = subscribe_msg(ua, a.presentity, "<%s>" % a.watcher, "f" + tag, "<%s>" % a.presentity,
                        None, call_id, 1, a.contact_user, "real" + tag, a.expires)
    r = ua.transact(msg, call_id, 0, a.timeout)
    if r["error"] or r["code"] >= 300:
        log("the real SUBSCRIBE failed: %s" % json.dumps(r))
        sys.exit(1)
    # Answer what else comes (a retransmitted NOTIFY) before the gateway stops.
    end = time.monotonic() + a.settle
    while time.monotonic() < end:
        ua.recv(end - time.monotonic())
    out = {"call_id": call_id, "from_tag": "f" + tag, "to_tag": r["to_tag"],
           "gateway_contact": r["contact"], "code": r["code"], "final_ms": r["final_ms"],
           "notify_ms": r["notify_ms"], "notify_cseq": r["notify_cseq"],
           "notify_state": r["notify_state"], "port": ua.port}
    print(json.dumps(out))


def split_uri(uri):
    """sip:user@host -> ("sip:", "user", "@host")."""
    scheme, _, rest = uri.partition(":")
    user, at, host = rest.partition("@")
    if not at or not user:
        sys.exit("generate: %r is not scheme:user@host" % uri)
    return scheme + ":", user, "@" + host


def cmd_generate(a):
    with open(a.real) as f:
        lines = [line for line in f if line.strip()]
    header = json.loads(lines[0])
    subs = [json.loads(line) for line in lines[1:] if json.loads(line)["tree"] == "subscriptions"]
    other = [line for line in lines[1:] if json.loads(line)["tree"] != "subscriptions"]
    if header.get("format") != "sip-cpim-gateway-export" or len(subs) != 1:
        sys.exit("generate: expected an export with exactly one subscription, got %d" % len(subs))
    real = subs[0]
    rec, dlg = real["record"], real["record"]["dialog"]
    # Identity as the gateway builds it (dialog.rs dialog_id): refuse to
    # generate from a record that does not follow it.
    if real["key"] != rec["id"] or rec["id"] != "%s;%s;%s" % (
            dlg["call_id"], dlg["local_tag"], dlg["remote_tag"]):
        sys.exit("generate: the real record's id is not Call-ID;local-tag;remote-tag")
    for name, uri, field in (("presentity", rec["presentity"], "local_uri"),
                             ("watcher", rec["watcher"], "remote_uri")):
        if dlg[field] != "<%s>" % uri:
            sys.exit("generate: dialog %s %r is not <%s>" % (field, dlg[field], uri))
    p_scheme, p_user, p_host = split_uri(rec["presentity"])
    w_scheme, w_user, w_host = split_uri(rec["watcher"])
    t_scheme, t_user, t_host = split_uri(dlg["remote_target"])
    expires_at = int(time.time() * 1000) + FAR_FUTURE_MS
    n, pres = a.count, min(a.presentities, a.count)
    rng = random.Random(a.seed)
    sample_ids = set(rng.sample(range(n), min(a.sample, n)))
    sample_ids.update({0, n - 1})
    sample = []
    with open(a.out, "w") as out:
        # The dump's header and any other record (e.g. meta) as exported.
        out.write(lines[0] if lines[0].endswith("\n") else lines[0] + "\n")
        for line in other:
            out.write(line if line.endswith("\n") else line + "\n")
        for i in range(n):
            k = i % pres
            presentity = "%s%s%d%s" % (p_scheme, p_user, k, p_host)
            watcher = "%s%s%d%s" % (w_scheme, w_user, i, w_host)
            d = dict(dlg)
            d["call_id"] = "%s-%d" % (dlg["call_id"], i)
            d["local_tag"] = "%s-%x" % (dlg["local_tag"], i)
            d["remote_tag"] = "%s-%x" % (dlg["remote_tag"], i)
            d["local_uri"] = "<%s>" % presentity
            d["remote_uri"] = "<%s>" % watcher
            d["remote_target"] = "%s%s%d%s" % (t_scheme, t_user, i, t_host)
            r = dict(rec)
            r["id"] = "%s;%s;%s" % (d["call_id"], d["local_tag"], d["remote_tag"])
            r["presentity"], r["watcher"], r["dialog"] = presentity, watcher, d
            r["expires_at"] = expires_at
            out.write(json.dumps({"tree": "subscriptions", "key": r["id"], "record": r},
                                 separators=(",", ":")))
            out.write("\n")
            if i in sample_ids:
                sample.append({"i": i, "id": r["id"], "call_id": d["call_id"],
                               "local_tag": d["local_tag"], "remote_tag": d["remote_tag"],
                               "local_uri": d["local_uri"], "remote_uri": d["remote_uri"],
                               "contact_user": "%s%d" % (t_user, i),
                               "local_cseq": d["local_cseq"],
                               "remote_cseq": d["remote_cseq"] or 0,
                               "presentity": presentity})
            if a.progress and i and i % 200000 == 0:
                log("generated %d of %d" % (i, n))
    rng.shuffle(sample)
    with open(a.sample_out, "w") as f:
        json.dump({"count": n, "presentities": pres, "expires_at": expires_at,
                   "real_id": rec["id"], "sample": sample}, f)


def proc_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_s(path):
    """utime + stime of a /proc/.../stat file, seconds (None if gone)."""
    try:
        with open(path) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def cmd_ready(a):
    # Armed before the gateway is launched, so this script's own start-up
    # is not counted: the caller launches the gateway once --armed exists,
    # then writes "PID T0_NS" to --pid-file.
    with open(a.armed, "w"):
        pass
    deadline = time.monotonic() + a.timeout
    while not os.path.exists(a.pid_file):
        if time.monotonic() > deadline:
            print(json.dumps({"ready": False, "error": "no gateway launched"}))
            sys.exit(1)
        time.sleep(0.002)
    while True:
        with open(a.pid_file) as f:
            parts = f.read().split()
        if len(parts) == 2:
            break
        time.sleep(0.002)
    a.pid, a.t0_ns = int(parts[0]), int(parts[1])
    polls = 0
    while time.monotonic() < deadline:
        if not os.path.exists("/proc/%d" % a.pid):
            print(json.dumps({"ready": False, "error": "the gateway exited", "polls": polls}))
            sys.exit(1)
        polls += 1
        try:
            c = http.client.HTTPConnection("127.0.0.1", a.http, timeout=1)
            c.request("GET", "/readyz")
            status = c.getresponse().status
            c.close()
        except OSError:
            status = None
        if status == 200:
            t = time.time_ns()
            print(json.dumps({"ready": True, "ready_ms": round((t - a.t0_ns) / 1e6, 1),
                              "ready_epoch_ns": t, "polls": polls,
                              "rss_kb": proc_kb(a.pid, "VmRSS"),
                              "hwm_kb": proc_kb(a.pid, "VmHWM"),
                              # CPU used until ready: all threads, and the
                              # main thread (where the state is loaded).
                              "cpu_s": cpu_s("/proc/%d/stat" % a.pid),
                              "main_cpu_s": cpu_s("/proc/%d/task/%d/stat" % (a.pid, a.pid)),
                              "load1": open("/proc/loadavg").read().split()[0]}))
            return
        time.sleep(0.05)
    print(json.dumps({"ready": False, "error": "not ready within %g s" % a.timeout, "polls": polls}))
    sys.exit(1)


def cmd_probe(a):
    with open(a.sample) as f:
        s = json.load(f)
    ua = Ua(a.port, gw_addr(a.gw))
    ruri = a.contact.strip()
    if ruri.startswith("<"):
        ruri = ruri[1:ruri.index(">")]
    results = []
    for j, x in enumerate(s["sample"]):
        cseq = x["remote_cseq"] + 1
        msg = subscribe_msg(ua, ruri, x["remote_uri"], x["remote_tag"], x["local_uri"],
                            x["local_tag"], x["call_id"], cseq, x["contact_user"],
                            "rf%d-%d" % (os.getpid(), j), a.expires)
        r = ua.transact(msg, x["call_id"], x["local_cseq"], a.timeout)
        if not r["error"] and not r["notify_state"].startswith("active"):
            r["error"] = "NOTIFY Subscription-State %r" % r["notify_state"]
        r.update({"kind": "refresh", "i": x["i"], "stored_local_cseq": x["local_cseq"]})
        results.append(r)
        # What the store holds now, for the next round: the CSeq sent (the
        # gateway keeps the highest it saw) and the NOTIFY's.
        x["remote_cseq"] = cseq
        if r["notify_cseq"] is not None:
            x["local_cseq"] = max(x["local_cseq"], r["notify_cseq"])
        if r["error"]:
            log("refresh of record %d (%s) FAILED: %s" % (x["i"], x["id"], r["error"]))
    # One new subscription (out of dialog) to a presentity that has 1/P of
    # the watchers.
    target = s["sample"][0]["presentity"]
    tag = "%x" % (os.getpid() ^ time.time_ns() & 0xffffffff)
    call_id = "new-%s" % tag
    msg = subscribe_msg(ua, target, "<sip:newwatcher-%s@example.com>" % tag, "n" + tag,
                        "<%s>" % target, None, call_id, 1, "newwatcher", "new" + tag, a.expires)
    r = ua.transact(msg, call_id, 0, a.timeout)
    if not r["error"] and not r["notify_state"].startswith("active"):
        r["error"] = "NOTIFY Subscription-State %r" % r["notify_state"]
    r.update({"kind": "new", "i": None})
    results.append(r)
    if r["error"]:
        log("new SUBSCRIBE to %s FAILED: %s" % (target, r["error"]))
    end = time.monotonic() + a.settle
    while time.monotonic() < end:
        ua.recv(end - time.monotonic())

    with open(a.sample + ".tmp", "w") as f:
        json.dump(s, f)
    os.replace(a.sample + ".tmp", a.sample)

    def med(v):
        v = sorted(v)
        return round(v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2, 2) \
            if v else None

    ref = [r for r in results if r["kind"] == "refresh"]
    ok = [r for r in ref if not r["error"]]
    new = results[-1]
    print(json.dumps({
        "refresh_ok": len(ok), "refresh_failed": len(ref) - len(ok),
        "refresh_final_ms_median": med([r["final_ms"] for r in ok]),
        "refresh_notify_ms_median": med([r["notify_ms"] for r in ok]),
        "refresh_final_ms_max": round(max(r["final_ms"] for r in ok), 2) if ok else None,
        "refresh_notify_ms_max": round(max(r["notify_ms"] for r in ok), 2) if ok else None,
        "new_ok": not new["error"], "new_code": new["code"], "new_final_ms": new["final_ms"],
        "new_notify_ms": new["notify_ms"], "results": results}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("subscribe")
    p.add_argument("--gw", required=True)
    p.add_argument("--port", type=int, required=True, help="the watcher's UDP port")
    p.add_argument("--presentity", required=True)
    p.add_argument("--watcher", required=True)
    p.add_argument("--contact-user", default="w")
    p.add_argument("--expires", type=int, default=3600)
    p.add_argument("--timeout", type=float, default=20)
    p.add_argument("--settle", type=float, default=1.0)
    p = sub.add_parser("generate")
    p.add_argument("--real", required=True, help="the export dump with the real subscription")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--presentities", type=int, default=1000)
    p.add_argument("--out", required=True)
    p.add_argument("--sample", type=int, default=20)
    p.add_argument("--sample-out", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--progress", action="store_true")
    p = sub.add_parser("ready")
    p.add_argument("--pid-file", required=True, help='"PID T0_NS", written once launched')
    p.add_argument("--armed", required=True, help="created once this poller runs")
    p.add_argument("--http", type=int, required=True)
    p.add_argument("--timeout", type=float, default=120)
    p = sub.add_parser("probe")
    p.add_argument("--gw", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--sample", required=True)
    p.add_argument("--contact", required=True, help="the gateway's Contact (Request-URI)")
    p.add_argument("--expires", type=int, default=3600)
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--settle", type=float, default=0.5)
    a = ap.parse_args()
    if a.cmd == "generate" and not 1 <= a.count <= 10_000_000:
        sys.exit("count must be 1..10000000")
    {"subscribe": cmd_subscribe, "generate": cmd_generate, "ready": cmd_ready,
     "probe": cmd_probe}[a.cmd](a)


if __name__ == "__main__":
    main()
