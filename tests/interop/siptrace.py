#!/usr/bin/env python3
"""Reads the SIP messages a client logged (baresip `-s` trace, linphonec's
belle-sip log at -d 6) and evaluates an assertion over them, or prints them.

    siptrace.py [--me ADDR] [--peer ADDR] LOG expr 'PYEXPR'      exit 0 if PYEXPR is true, 1 if not
    siptrace.py LOG value 'PYEXPR'     prints PYEXPR
    siptrace.py LOG show [SUBSTRING]   prints the messages (start line, key
                                       headers, body) whose text has SUBSTRING

In PYEXPR: `msgs` (every message in log order, both directions), `sent` /
`rcvd` (the client's own / the ones it received), and helpers:
    reqs(method, out=True)   requests the client sent (out=False: received)
    final(req)               final status of the response to req seen in the
                             other direction (same Call-ID, CSeq), or None
    answers(req)             every status answering req, in order
Each message m has: m.out, m.proto, m.method (requests), m.status
(responses), m.cseq (number), m.cseq_method, m.callid, m.hdr(name),
m.expires (int or None), m.to_tag, m.from_tag, m.substate, m.body, m.text.
"""
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
COMPACT = {"i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
           "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
           "v": "via", "o": "event", "u": "allow-events"}


class Msg:
    def __init__(self, out, proto, src, dst, raw):
        self.out, self.proto, self.src, self.dst = out, proto, src, dst
        head, _, body = raw.partition("\n\n")
        lines = head.split("\n")
        self.start = lines[0].strip()
        self.headers = []
        for l in lines[1:]:
            if l[:1] in (" ", "\t") and self.headers:
                n, v = self.headers[-1]
                self.headers[-1] = (n, v + " " + l.strip())
            elif ":" in l:
                n, v = l.split(":", 1)
                n = n.strip().lower()
                self.headers.append((COMPACT.get(n, n), v.strip()))
        n = self.hdr("content-length")
        self.body = body[: int(n)] if n and n.isdigit() else body
        self.text = self.start + "\n" + "\n".join(f"{a}: {b}" for a, b in self.headers) + "\n\n" + self.body
        m = re.match(r"SIP/2\.0\s+(\d{3})", self.start)
        self.status = int(m.group(1)) if m else None
        self.method = None if m else self.start.split(" ", 1)[0]
        cs = (self.hdr("cseq") or "0 X").split()
        self.cseq = int(cs[0]) if cs[0].isdigit() else -1
        self.cseq_method = cs[1] if len(cs) > 1 else ""
        self.callid = self.hdr("call-id")
        e = self.hdr("expires")
        self.expires = int(e) if e and e.isdigit() else None
        self.to_tag = _tag(self.hdr("to"))
        self.from_tag = _tag(self.hdr("from"))
        self.substate = self.hdr("subscription-state")

    def hdr(self, name):
        for n, v in self.headers:
            if n == name.lower():
                return v
        return None

    def brief(self):
        keep = ("via", "from", "to", "call-id", "cseq", "contact", "expires", "event",
                "subscription-state", "content-type", "content-length", "route",
                "record-route", "www-authenticate", "authorization", "sip-etag",
                "sip-if-match", "min-expires", "warning", "accept")
        h = "\n".join(f"{n.title()}: {v}" for n, v in self.headers if n in keep)
        d = "sent" if self.out else "received"
        return f"--- {d} ({self.proto} {self.src} -> {self.dst})\n{self.start}\n{h}\n" + (
            "\n" + self.body.strip() + "\n" if self.body.strip() else "")


def _tag(v):
    m = re.search(r";\s*tag=([^;>\s]+)", v or "")
    return m.group(1) if m else None


def parse(path):
    data = ANSI.sub("", open(path, encoding="utf-8", errors="replace").read()).replace("\r\n", "\n")
    msgs = []
    # baresip -s: "#\nUDP 127.0.0.1:a -> 127.0.0.1:b\n<message>" (its own
    # messages are sent from its sip_listen address: --me).
    for m in re.finditer(r"(?m)^#\n(UDP|TCP|TLS) (\S+) -> (\S+)\n(.*?)(?=^#\n(?:UDP|TCP|TLS) |\Z)", data, re.S):
        msgs.append(Msg(None, m.group(1), m.group(2), m.group(3), m.group(4)))
    if msgs:
        return msgs
    # belle-sip (linphonec -d 6 -l FILE): "...: message sent to [UDP://h:p], size: [n] bytes"
    # or "...: received [n] new bytes from [UDP://h:p]:", then the message, up to
    # the next timestamped log line.
    pat = re.compile(
        r"(message sent to|received \[\d+\] new bytes from) \[(\w+)://([^\]]+)\][^\n]*\n"
        r"(.*?)(?=^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|\Z)", re.S | re.M)
    for m in pat.finditer(data):
        raw = m.group(4).strip("\n") + "\n"
        if not re.match(r"[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3}", raw):
            continue
        if m.group(1).startswith("message sent"):
            msgs.append(Msg(True, m.group(2).upper(), "me", m.group(3), raw))
        else:
            msgs.append(Msg(False, m.group(2).upper(), m.group(3), "me", raw))
    return msgs


def main():
    args = sys.argv[1:]
    me = peer = None
    while len(args) >= 2 and args[0] in ("--me", "--peer"):
        if args[0] == "--me":
            me = args[1]
        else:
            peer = args[1]
        args = args[2:]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path, cmd, rest = args[0], args[1], args[2:]
    msgs = parse(path)
    # Direction of a baresip trace entry: towards the peer (the gateway's
    # listening address) or from our own listening address is ours; over TCP
    # one side of a connection is an ephemeral port.
    for m in msgs:
        if m.out is None:
            if peer and m.dst == peer:
                m.out = True
            elif peer and m.src == peer:
                m.out = False
            else:
                m.out = m.src == me
    sent = [m for m in msgs if m.out]
    rcvd = [m for m in msgs if not m.out]

    def reqs(method, out=True):
        return [m for m in msgs if m.method == method and m.out == out]

    def answers(req):
        return [m.status for m in msgs if m.status and m.out != req.out and m.callid == req.callid
                and m.cseq == req.cseq and m.cseq_method == req.method]

    def final(req):
        f = [s for s in answers(req) if s >= 200]
        return f[-1] if f else None

    env = dict(msgs=msgs, sent=sent, rcvd=rcvd, reqs=reqs, answers=answers, final=final, re=re)
    if cmd == "expr":
        return 0 if eval(rest[0], env) else 1
    if cmd == "value":
        print(eval(rest[0], env))
        return 0
    if cmd == "show":
        sub = rest[0] if rest else ""
        for m in msgs:
            if sub in m.text:
                sys.stdout.write(m.brief())
        return 0
    print(f"unknown command {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
