#!/usr/bin/env python3
"""SIP presence watchers for the benchmarks (bench-fanout.sh, bench-memory.sh,
bench-gateway.sh); not a test. One UDP socket on 127.0.0.1 plays many
watchers: it creates N subscriptions (SUBSCRIBE, Expires E, distinct Call-ID,
From tag and watcher URI per dialog) at a bounded rate with a bounded number
outstanding, retransmits SUBSCRIBEs on T1 doubling (RFC 3261 §17.1.2), and
answers every NOTIFY 200 (copying Via, From, To, Call-ID, CSeq), so the
gateway never retransmits or drops a subscription for lack of an answer.

Datagram arrival times are the kernel's (SO_TIMESTAMPNS, CLOCK_REALTIME), so
time spent in this script before reading a datagram is not counted.

Phases:
  1. setup: every subscription has a 2xx and its first NOTIFY (answered), or
     failed (non-2xx, or no answer after 6 tries); bounded by --setup-timeout.
     Then --settle seconds of answering whatever else arrives, and the
     --ready-file is created.
  2a. --publish URI (fan-out): one PUBLISH (a PIDF document that changes the
     presentity from the neutral state to open) for URI; records when it was
     sent, its 200, and the first NOTIFY each subscription receives after it,
     until every subscription has one or --collect-timeout passes.
  2b. otherwise (hold): keep answering NOTIFYs, counting them, until
     --stop-file exists or --hold-max seconds pass.
A JSON summary goes to --json-out (or stdout); progress to stderr.
"""
import argparse
import json
import os
import select
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = getattr(socket, "SCM_TIMESTAMPNS", SO_TIMESTAMPNS)
ANSWER_HEADERS = {b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"}


def parse(data):
    """(first line, {lower name: [values]}, [raw lines to copy into a 200])."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    lines = head.split(b"\r\n")
    headers = {}
    copy = []
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
    return v[0] if v else b""


def udp_drops(port):
    """The kernel's drop counter of the 127.0.0.1 UDP socket bound to port."""
    key = "0100007F:%04X" % port
    try:
        with open("/proc/net/udp") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[1] == key:
                    return int(parts[-1])
    except OSError:
        pass
    return 0


def gw_cpu(pid):
    """CPU seconds (user + system) used by pid so far, or None."""
    if not pid:
        return None
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = max(0, -(-len(v) * p // 100) - 1)
    return v[int(k)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gw", required=True, help="gateway SIP address host:port (UDP)")
    ap.add_argument("--count", type=int, required=True, help="subscriptions to create")
    ap.add_argument("--presentity-fmt", default="sip:fan@example.com",
                    help="Request-URI; {k} = dialog index modulo --presentities")
    ap.add_argument("--presentities", type=int, default=1)
    ap.add_argument("--watcher-fmt", default="sip:w{i}@example.com",
                    help="From URI; {i} = dialog index")
    ap.add_argument("--rate", type=float, default=1000, help="SUBSCRIBEs per second")
    ap.add_argument("--outstanding", type=int, default=1000,
                    help="dialogs at most waiting for their 2xx or first NOTIFY")
    ap.add_argument("--expires", type=int, default=3600)
    ap.add_argument("--setup-timeout", type=float, default=300)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--ready-file")
    ap.add_argument("--publish", help="fan-out: PUBLISH this presentity after setup")
    ap.add_argument("--publishes", type=int, default=1, help="fan-outs, one after the other")
    ap.add_argument("--gap", type=float, default=2.0, help="seconds between fan-outs")
    ap.add_argument("--collect-timeout", type=float, default=60)
    ap.add_argument("--gw-pid", type=int, help="gateway PID, for its CPU use during fan-outs")
    ap.add_argument("--stop-file")
    ap.add_argument("--hold-max", type=float, default=600)
    ap.add_argument("--hold-times-file", help="hold: kernel arrival time (ns) of each new NOTIFY, one a line")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    if a.count < 1 or a.count > 1_000_000 or a.presentities < 1:
        sys.exit("count must be 1..1000000, presentities >= 1")

    host, port = a.gw.rsplit(":", 1)
    gw = (host, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # A fan-out delivers thousands of NOTIFYs at once: ask for a receive
    # buffer above net.core.rmem_max when allowed (SO_RCVBUFFORCE, root),
    # else the capped SO_RCVBUF. Drops are counted either way.
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 64 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    lport = sock.getsockname()[1]
    tag = "%x" % (os.getpid() ^ int(time.time()))
    n = a.count

    def log(msg):
        print("   [watchers] " + msg, file=sys.stderr, flush=True)

    # Per dialog: 0 = not sent, 1 = SUBSCRIBE sent, 2 = 2xx, 3 = 2xx and
    # first NOTIFY answered, -1 = failed. NOTIFYs can precede the 2xx.
    state = bytearray(n)
    notified = bytearray(n)
    failed_codes = {}
    pending = {}  # i -> (next retransmit time, interval, tries)
    next_i = 0
    done = 0  # dialogs in state 3 or failed
    stats = {"notifies": 0, "notify_retrans": 0, "subscribe_retrans": 0,
             "notify_states": {}, "other": 0}
    seen = set()  # (i, cseq) of NOTIFYs answered
    phase = {"name": "setup"}
    after = {}  # fan-out / hold: i -> kernel ns of the first NOTIFY after the mark
    after_count = [0]
    pub = {"sent_ns": None, "answer_ns": None, "code": None}

    def callid(i):
        return "bw%s-%d" % (tag, i)

    def subscribe(i):
        k = i % a.presentities
        ruri = a.presentity_fmt.format(k=k, i=i)
        watcher = a.watcher_fmt.format(i=i, k=k)
        msg = (
            "SUBSCRIBE %s SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s-%d;rport\r\n"
            "From: <%s>;tag=f%s-%d\r\n"
            "To: <%s>\r\n"
            "Call-ID: %s\r\n"
            "CSeq: 1 SUBSCRIBE\r\n"
            "Max-Forwards: 70\r\n"
            "Contact: <sip:w%d@127.0.0.1:%d>\r\n"
            "Event: presence\r\n"
            "Accept: application/pidf+xml\r\n"
            "Expires: %d\r\n"
            "Content-Length: 0\r\n\r\n"
            % (ruri, lport, tag, i, watcher, tag, i, ruri, callid(i), i, lport, a.expires)
        )
        sock.sendto(msg.encode(), gw)

    def finish(i):
        nonlocal done
        pending.pop(i, None)
        done += 1

    def handle(data, ts, src):
        nonlocal done
        first, headers, copy = parse(data)
        cid = hdr(headers, b"call-id", b"i").decode("latin-1")
        if first.startswith(b"SIP/2.0 "):
            code = int(first[8:11])
            if cid.startswith("pub-"):
                if code >= 200 and pub["answer_ns"] is None:
                    pub["answer_ns"], pub["code"] = ts, code
                return
            if code < 200 or not cid.startswith("bw%s-" % tag):
                return
            i = int(cid.rsplit("-", 1)[1])
            if state[i] != 1:
                return  # a retransmitted answer
            if code < 300:
                state[i] = 3 if notified[i] else 2
                if state[i] == 3:
                    finish(i)
            else:
                state[i] = 255  # failed
                failed_codes[code] = failed_codes.get(code, 0) + 1
                finish(i)
            return
        method = first.split(b" ", 1)[0]
        if method != b"NOTIFY":
            stats["other"] += 1
            sock.sendto(b"SIP/2.0 501 Not Implemented\r\n" + b"\r\n".join(copy)
                        + b"\r\nContent-Length: 0\r\n\r\n", src)
            return
        sock.sendto(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(copy)
                    + b"\r\nContent-Length: 0\r\n\r\n", src)
        if not cid.startswith("bw%s-" % tag):
            stats["other"] += 1
            return
        i = int(cid.rsplit("-", 1)[1])
        cseq = int(hdr(headers, b"cseq").split()[0])
        if (i, cseq) in seen:
            stats["notify_retrans"] += 1
            return
        seen.add((i, cseq))
        stats["notifies"] += 1
        st = hdr(headers, b"subscription-state").split(b";")[0].decode("latin-1")
        stats["notify_states"][st] = stats["notify_states"].get(st, 0) + 1
        if phase["name"] == "setup":
            if not notified[i]:
                notified[i] = 1
                if state[i] == 2:
                    state[i] = 3
                    finish(i)
        elif phase["name"] in ("collect", "hold"):
            if i not in after:
                after[i] = ts
                after_count[0] += 1
        if phase["name"] == "hold":
            phase.setdefault("hold_ns", []).append(ts)

    anc = socket.CMSG_SPACE(16)

    def pump(timeout):
        r, _, _ = select.select([sock], [], [], timeout)
        if not r:
            return
        for _ in range(4096):
            try:
                data, ancdata, _, src = sock.recvmsg(65536, anc)
            except BlockingIOError:
                return
            ts = None
            for level, typ, cdata in ancdata:
                if level == socket.SOL_SOCKET and typ == SCM_TIMESTAMPNS:
                    s, ns = struct.unpack("qq", cdata[:16])
                    ts = s * 1_000_000_000 + ns
            if ts is None:
                ts = time.time_ns()
            handle(data, ts, src)

    # ---- setup
    t0 = time.monotonic()
    deadline = t0 + a.setup_timeout
    last_report = t0
    last_scan = t0
    while done < n and time.monotonic() < deadline:
        now = time.monotonic()
        due = min(n, int((now - t0) * a.rate) + 1)
        while next_i < due and len(pending) < a.outstanding:
            i = next_i
            next_i += 1
            state[i] = 1
            pending[i] = (now + 0.5, 0.5, 1)
            subscribe(i)
        if now - last_scan > 0.1:
            last_scan = now
            for i, (t, iv, tries) in list(pending.items()):
                if state[i] == 1 and t <= now:
                    if tries >= 6:
                        state[i] = 255
                        failed_codes[408] = failed_codes.get(408, 0) + 1
                        finish(i)
                        continue
                    subscribe(i)
                    stats["subscribe_retrans"] += 1
                    iv = min(iv * 2, 4.0)
                    pending[i] = (now + iv, iv, tries + 1)
                elif state[i] == 2 and t + 32 <= now:
                    # 2xx but no NOTIFY within 32 s: count it as failed.
                    state[i] = 255
                    failed_codes["no-notify"] = failed_codes.get("no-notify", 0) + 1
                    finish(i)
        if now - last_report > 5:
            last_report = now
            log("setup: %d sent, %d complete, %d outstanding, %.0f s" % (next_i, done, len(pending), now - t0))
        pump(0.001 if next_i < n else 0.02)
    setup_s = time.monotonic() - t0
    active = sum(1 for s in state if s == 3)
    failed = sum(1 for s in state if s == 255)
    log("setup done: %d active, %d failed, %d unfinished in %.1f s (%.0f subscriptions/s)"
        % (active, failed, n - done, setup_s, active / setup_s if setup_s else 0))
    end = time.monotonic() + a.settle
    while time.monotonic() < end:
        pump(0.02)
    result = {
        "count": n, "active": active, "failed": failed, "unfinished": n - done,
        "failed_codes": {str(k): v for k, v in failed_codes.items()},
        "setup_s": round(setup_s, 3), "setup_rate": round(active / setup_s, 1) if setup_s else None,
        "local_port": lport,
        "rcvbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    }
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            json.dump(result, f)

    if a.publish:
        # ---- fan-out: PUBLISH, then the first NOTIFY of each dialog after it.
        result["fanouts"] = []
        for j in range(a.publishes):
            phase["name"] = "collect"
            after.clear()
            after_count[0] = 0
            pub.update({"sent_ns": None, "answer_ns": None, "code": None})
            retrans_before = stats["notify_retrans"]
            drops_before = udp_drops(gw[1]), udp_drops(lport)
            cpu_before = gw_cpu(a.gw_pid)
            body = ('<?xml version="1.0" encoding="UTF-8"?>\r\n'
                    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="%s">'
                    '<tuple id="fanout"><status><basic>open</basic></status>'
                    '<note>fan-out %d</note></tuple></presence>\r\n'
                    % (a.publish.replace("sip:", "pres:", 1), j))
            msg = ("PUBLISH %s SIP/2.0\r\n"
                   "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bKpub%s-%d;rport\r\n"
                   "From: <%s>;tag=pub%s-%d\r\n"
                   "To: <%s>\r\n"
                   "Call-ID: pub-%s-%d\r\n"
                   "CSeq: 1 PUBLISH\r\n"
                   "Max-Forwards: 70\r\n"
                   "Event: presence\r\n"
                   "Expires: 3600\r\n"
                   "Content-Type: application/pidf+xml\r\n"
                   "Content-Length: %d\r\n\r\n%s"
                   % (a.publish, lport, tag, j, a.publish, tag, j, a.publish, tag, j,
                      len(body), body)).encode()
            pub["sent_ns"] = time.time_ns()
            sock.sendto(msg, gw)
            end = time.monotonic() + a.collect_timeout
            retrans_at = time.monotonic() + 0.5
            while after_count[0] < active and time.monotonic() < end:
                if pub["answer_ns"] is None and time.monotonic() > retrans_at:
                    sock.sendto(msg, gw)
                    retrans_at = time.monotonic() + 1.0
                pump(0.02)
            cpu_after = gw_cpu(a.gw_pid)
            wall = (time.time_ns() - pub["sent_ns"]) / 1e9
            lat = [(ts - pub["sent_ns"]) / 1e6 for ts in after.values()]
            # Answer stragglers' retransmissions, then count what was lost.
            end2 = time.monotonic() + a.gap
            while time.monotonic() < end2:
                pump(0.02)
            r = {
                "publish_code": pub["code"],
                "publish_200_ms": round((pub["answer_ns"] - pub["sent_ns"]) / 1e6, 2) if pub["answer_ns"] else None,
                "notified": len(after),
                "first_notify_ms": round(min(lat), 2) if lat else None,
                "p50_ms": round(pct(lat, 50), 2) if lat else None,
                "p90_ms": round(pct(lat, 90), 2) if lat else None,
                "p99_ms": round(pct(lat, 99), 2) if lat else None,
                "last_notify_ms": round(max(lat), 2) if lat else None,
                "notify_retransmissions": stats["notify_retrans"] - retrans_before,
                "udp_drops_gateway": udp_drops(gw[1]) - drops_before[0],
                "udp_drops_watchers": udp_drops(lport) - drops_before[1],
                "gateway_cpu_pct": round(100 * (cpu_after - cpu_before) / wall, 1)
                if cpu_before is not None and cpu_after is not None and wall > 0 else None,
            }
            log("fan-out %d: %s" % (j + 1, json.dumps(r)))
            result["fanouts"].append(r)
    else:
        # ---- hold: answer NOTIFYs until told to stop.
        phase["name"] = "hold"
        before = stats["notifies"]
        end = time.monotonic() + a.hold_max
        while time.monotonic() < end and not (a.stop_file and os.path.exists(a.stop_file)):
            pump(0.05)
        hold = phase.get("hold_ns", [])
        if a.hold_times_file:
            with open(a.hold_times_file, "w") as f:
                f.write("".join("%d\n" % t for t in hold))
        result.update({
            "hold_notifies": stats["notifies"] - before,
            "hold_dialogs_notified": len(after),
            "hold_first_ns": min(hold) if hold else None,
            "hold_last_ns": max(hold) if hold else None,
        })
    result.update({
        "notifies_total": stats["notifies"],
        "notify_retransmissions_seen": stats["notify_retrans"],
        "subscribe_retransmissions": stats["subscribe_retrans"],
        "notify_states": stats["notify_states"],
        "unexpected_requests": stats["other"],
    })
    out = json.dumps(result, indent=1)
    if a.json_out:
        with open(a.json_out, "w") as f:
            f.write(out + "\n")
    else:
        print(out)


if __name__ == "__main__":
    main()
