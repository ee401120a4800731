#!/usr/bin/env python3
"""Long-lived subscriptions of the soak (soak.sh, issue 17 item 6).

Publishes for N presentities sip:ll-I@example.com, subscribes one watcher
to each (Expires 120) and refreshes every dialog in-dialog every 60 s while
soak.sh's SIPp load runs. Answers every NOTIFY 200 and records, per dialog,
the notes it carried. When the file named by --final appears (soak.sh
creates it when the load ends), publishes a new note for every presentity
and waits up to 15 s for each dialog to receive a NOTIFY carrying it.
Writes a JSON result. Python 3 standard library only; loopback only.
"""
import argparse
import json
import os
import random
import re
import socket
import threading
import time

mono = time.monotonic


def parse(data):
    text = data.decode("utf-8", "replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    h = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        h.setdefault(k.strip().lower(), v.strip())
    return lines[0], h, body


def tag_of(v):
    m = re.search(r";\s*tag=([^;>\s]+)", v or "")
    return m.group(1) if m else None


class Sip:
    def __init__(self, gw_port):
        self.gw = ("127.0.0.1", gw_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.waiting = {}  # branch -> [event, response]
        self.notify_cb = None
        self.stop = False
        self.n = 0
        self.errors = []

    def branch(self):
        with self.lock:
            self.n += 1
            return "z9hG4bKsoak%d.%d" % (self.n, random.randrange(1 << 30))

    def request(self, text, branch, timeout=8.0):
        """Sends with RFC 3261 Timer A retransmissions; the final response or None."""
        ev = threading.Event()
        slot = [ev, None]
        with self.lock:
            self.waiting[branch] = slot
        t0, iv = mono(), 0.5
        try:
            while mono() - t0 < timeout:
                self.sock.sendto(text.encode(), self.gw)
                if ev.wait(min(iv, timeout - (mono() - t0))):
                    return slot[1]
                iv = min(iv * 2, 4.0)
            return None
        finally:
            with self.lock:
                self.waiting.pop(branch, None)

    def run(self):
        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            first, h, body = parse(data)
            if first.startswith("SIP/2.0"):
                code = int(first.split()[1])
                if code < 200:
                    continue
                m = re.search(r"branch=([^;\s]+)", h.get("via", ""))
                with self.lock:
                    slot = self.waiting.get(m.group(1)) if m else None
                if slot:
                    slot[1] = (code, h, body)
                    slot[0].set()
            elif first.startswith("NOTIFY"):
                reply = "SIP/2.0 200 OK\r\nVia: %s\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\nContent-Length: 0\r\n\r\n" % (
                    h.get("via"), h.get("from"), h.get("to"), h.get("call-id"), h.get("cseq"))
                self.sock.sendto(reply.encode(), addr)
                if self.notify_cb:
                    self.notify_cb(h, body)


def pidf(aor, note):
    return ('<?xml version="1.0" encoding="UTF-8"?>\r\n'
            '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:%s">\r\n'
            '<tuple id="t1"><status><basic>open</basic></status><note>%s</note></tuple>\r\n'
            '</presence>\r\n') % (aor, note)


class Dialog:
    def __init__(self, i):
        self.i = i
        self.aor = "ll-%d@example.com" % i
        self.callid = "soak-ll-%d-%d@127.0.0.1" % (i, random.randrange(1 << 30))
        self.ftag = "w%d" % i
        self.ttag = None
        self.target = None
        self.cseq = 0
        self.notes = []
        self.notifies = 0
        self.refreshes = 0
        self.refresh_failures = 0
        self.terminated = False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sip-port", type=int, required=True)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--refresh", type=float, default=60.0)
    ap.add_argument("--final", required=True, help="the file whose appearance ends the run")
    ap.add_argument("--max-seconds", type=float, required=True, help="bound on the whole run")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    sip = Sip(a.sip_port)
    th = threading.Thread(target=sip.run, daemon=True)
    th.start()
    dialogs = {}
    lock = threading.Lock()

    def on_notify(h, body):
        d = dialogs.get(h.get("call-id"))
        if d is None:
            return
        m = re.search(r"<note>([^<]*)</note>", body)
        with lock:
            d.notifies += 1
            if m:
                d.notes.append(m.group(1))
            if h.get("subscription-state", "").startswith("terminated"):
                d.terminated = True

    sip.notify_cb = on_notify

    def publish(aor, note):
        b = sip.branch()
        body = pidf(aor, note)
        text = ("PUBLISH sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=%s;rport\r\n"
                "From: <sip:%s>;tag=p%d\r\nTo: <sip:%s>\r\nCall-ID: %s\r\nCSeq: 1 PUBLISH\r\n"
                "Max-Forwards: 70\r\nEvent: presence\r\nExpires: 3600\r\n"
                "Content-Type: application/pidf+xml\r\nContent-Length: %d\r\n\r\n%s") % (
            aor, sip.port, b, aor, random.randrange(1 << 30), aor, b + "@soak", len(body.encode()), body)
        r = sip.request(text, b)
        return r[0] if r else None

    def subscribe(d, expires):
        b = sip.branch()
        d.cseq += 1
        ruri = d.target or "sip:%s" % d.aor
        to = "<sip:%s>" % d.aor + (";tag=%s" % d.ttag if d.ttag else "")
        text = ("SUBSCRIBE %s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=%s;rport\r\n"
                "From: <sip:wll-%d@example.com>;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d SUBSCRIBE\r\n"
                "Max-Forwards: 70\r\nContact: <sip:wll-%d@127.0.0.1:%d>\r\nEvent: presence\r\n"
                "Accept: application/pidf+xml\r\nExpires: %d\r\nContent-Length: 0\r\n\r\n") % (
            ruri, sip.port, b, d.i, d.ftag, to, d.callid, d.cseq, d.i, sip.port, expires)
        r = sip.request(text, b)
        if r is None:
            return None
        code, h, _ = r
        if 200 <= code < 300 and d.ttag is None:
            d.ttag = tag_of(h.get("to"))
            m = re.search(r"<([^>]+)>", h.get("contact", ""))
            d.target = m.group(1) if m else None
        return code

    t_end = mono() + a.max_seconds
    res = {"count": a.count, "setup_errors": [], "refreshes": 0, "refresh_failures": 0,
           "refresh_attempts_failed": {}, "refresh_failure_codes": []}
    created = {}
    for i in range(a.count):
        d = Dialog(i)
        dialogs[d.callid] = d
        code = publish(d.aor, "start-%d" % i)
        if code != 200:
            res["setup_errors"].append("PUBLISH %s: %s" % (d.aor, code))
        created[d.callid] = mono()
        code = subscribe(d, 120)
        if code is None or not 200 <= code < 300:
            res["setup_errors"].append("SUBSCRIBE %s: %s" % (d.aor, code))
    print("soak.py: %d long-lived subscriptions set up, %d errors" % (a.count, len(res["setup_errors"])),
          flush=True)
    # Refresh every dialog --refresh seconds after its last SUBSCRIBE (well
    # inside its Expires of 120 s) until the final file appears (bounded by
    # --max-seconds).
    order = list(dialogs.values())
    due = {d.callid: created[d.callid] + a.refresh for d in order}
    while not os.path.exists(a.final) and mono() < t_end:
        d = min(order, key=lambda x: due[x.callid])
        wait = due[d.callid] - mono()
        if wait > 0:
            time.sleep(min(wait, 0.2))
            continue
        # A refresh that is not answered 2xx (a 503 from overload control,
        # or no answer at all on a starved machine) is tried again 5 s later,
        # up to 5 times, as a subscriber does before its subscription
        # (Expires 120) runs out; 481 means it is gone.
        code = None
        for attempt in range(6):
            code = subscribe(d, 120)
            if code is not None and (200 <= code < 300 or code == 481):
                break
            res["refresh_attempts_failed"][str(code)] = res["refresh_attempts_failed"].get(str(code), 0) + 1
            time.sleep(5)
        due[d.callid] = mono() + a.refresh
        res["refreshes"] += 1
        if code is None or not 200 <= code < 300:
            res["refresh_failures"] += 1
            res["refresh_failure_codes"].append(code)
            d.refresh_failures += 1
    # The final check: a new note per presentity must reach its watcher.
    final_note = "final-%d" % random.randrange(1 << 30)
    t0 = mono()
    for d in order:
        code = publish(d.aor, final_note)
        if code != 200:
            res["setup_errors"].append("final PUBLISH %s: %s" % (d.aor, code))
    deadline = mono() + 15
    while mono() < deadline:
        with lock:
            missing = [d for d in order if final_note not in d.notes]
        if not missing:
            break
        time.sleep(0.1)
    with lock:
        missing = [d.aor for d in order if final_note not in d.notes]
        res.update({
            "final_note": final_note,
            "final_wait_s": round(mono() - t0, 2),
            "unnotified": missing,
            "terminated": [d.aor for d in order if d.terminated],
            "notifies": sum(d.notifies for d in order),
        })
    sip.stop = True
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print("soak.py: final NOTIFY reached %d of %d watchers (%.2f s); %d refreshes, %d failed; attempts "
          "retried: %s; %d terminated dialogs; setup errors %d"
          % (len(order) - len(missing), len(order), res["final_wait_s"], res["refreshes"],
             res["refresh_failures"], json.dumps(res["refresh_attempts_failed"]), len(res["terminated"]),
             len(res["setup_errors"])), flush=True)
    return 0 if not missing and not res["terminated"] and not res["refresh_failures"] \
        and not res["setup_errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
