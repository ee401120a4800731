#!/usr/bin/env python3
"""Network fuzzer for a running gateway (issue 17 item 5; run by netfuzz.sh).

Replays the fuzz corpus (fuzz/regressions, fuzz/corpus if seeded, the RFC
4475 torture messages, the seed flows) and deterministic mutants of the
seed flows (bit flips, truncations, duplicated headers, huge or negative
Content-Length, NULs, lost CRLFs, long lines, spliced messages) as UDP
datagrams and as TCP streams (one connection per message), in batches.
After every batch:

  * the gateway answers OPTIONS with 200 over UDP and over TCP;
  * its process is alive;
  * if no message of the batch was answered 2xx (so none was accepted),
    its state is unchanged: the registrations, publications and watchers
    of every presentity (/admin/v1/presentities) and every subscription
    (/admin/v1/subscriptions: id, kind, watcher, target, state). After a
    batch with an accepted message the state is let settle and becomes
    the new baseline.

Python 3 standard library only. Exits 1 on any violated invariant; prints
a JSON summary (messages sent, answers by status, no-answer counts,
OPTIONS probes, batches checked) on stdout.
"""

import argparse
import json
import os
import random
import socket
import sys
import time
import urllib.request

OPTIONS = (
    "OPTIONS sip:gw@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/{t} 127.0.0.1:{port};branch=z9hG4bK-probe{n};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=p{n}\r\n"
    "To: <sip:gw@example.com>\r\nCall-ID: probe-{n}@fuzz\r\nCSeq: {n} OPTIONS\r\n"
    "Content-Length: 0\r\n\r\n"
)


def load_corpus(dirs):
    out = []
    for d in dirs:
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    data = f.read()
                # The stream target's files start with a chunk-size byte.
                if os.path.basename(d) == "stream" and data:
                    data = data[1:]
                out.append((f"{os.path.basename(d)}/{name}", data))
    return out


def mutate(rng, msg):
    """One mutant of `msg` and the name of the mutation."""
    kind = rng.choice(
        ["bitflip", "truncate", "dup-header", "huge-cl", "neg-cl", "nul", "no-crlf",
         "long-line", "drop-line", "splice", "many-headers", "bad-start"]
    )
    b = bytearray(msg)
    lines = bytes(b).split(b"\r\n")
    if kind == "bitflip" and b:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b), kind
    if kind == "truncate" and len(b) > 1:
        return bytes(b[: rng.randrange(1, len(b))]), kind
    if kind == "dup-header" and len(lines) > 2:
        i = rng.randrange(1, max(2, len(lines) - 2))
        n = rng.choice([2, 3, 50, 200])
        lines[i:i + 1] = [lines[i]] * n
        return b"\r\n".join(lines), kind
    if kind in ("huge-cl", "neg-cl"):
        v = {"huge-cl": rng.choice([b"99999999", b"18446744073709551616", b"4294967296"]),
             "neg-cl": rng.choice([b"-1", b"-99999", b"0x10", b"1e3"])}[kind]
        out = [l for l in lines if not l.lower().startswith((b"content-length:", b"l:"))]
        out.insert(1, b"Content-Length: " + v)
        return b"\r\n".join(out), kind
    if kind == "nul" and b:
        b.insert(rng.randrange(len(b)), 0)
        return bytes(b), kind
    if kind == "no-crlf":
        return bytes(b).replace(b"\r\n", b"\n", rng.randint(1, 5)), kind
    if kind == "long-line" and len(lines) > 1:
        lines.insert(1, b"X-Long: " + b"a" * rng.choice([9000, 70000]))
        return b"\r\n".join(lines), kind
    if kind == "drop-line" and len(lines) > 2:
        del lines[rng.randrange(len(lines) - 1)]
        return b"\r\n".join(lines), kind
    if kind == "splice" and len(b) > 4:
        i = rng.randrange(len(b))
        return bytes(b[:i] + b[rng.randrange(len(b)):]), kind
    if kind == "many-headers" and len(lines) > 1:
        lines[1:1] = [b"X-H%d: v" % k for k in range(rng.choice([127, 129, 1000]))]
        return b"\r\n".join(lines), kind
    return b"\xff\xfe" + bytes(b), "bad-start"


def status_of(data):
    if data.startswith(b"SIP/2.0 "):
        try:
            return int(data[8:11])
        except ValueError:
            return None
    return None


def answer_request(sock, data, addr):
    """200 to a request the gateway sends us (a NOTIFY to a fuzzed
    Contact that resolved here), so it does not retransmit it into the
    next batch's window."""
    if data.startswith(b"SIP/2.0"):
        return
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = [l for l in head[1:] if l.split(b":", 1)[0].strip().lower()
            in (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")]
    sock.sendto(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n", addr)


class Fuzzer:
    def __init__(self, a):
        self.a = a
        self.udp_target = parse_addr(a.udp)
        self.tcp_target = parse_addr(a.tcp)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Responses to a message whose Via names a host (no rport) go to
        # the received address and the sent-by port, 5060 by default
        # (RFC 3261 §18.2.2): listen there when it is free.
        try:
            self.udp.bind(("127.0.0.1", 5060))
        except OSError:
            self.udp.bind(("127.0.0.1", 0))
        self.uport = self.udp.getsockname()[1]
        self.stats = {"udp_sent": 0, "tcp_sent": 0, "answers": {}, "udp_no_answer": 0,
                      "tcp_no_answer": 0, "tcp_closed_by_gateway": 0,
                      "options_ok": 0, "options_failed": 0, "batches": 0,
                      "batches_state_checked": 0, "batches_with_2xx": 0,
                      "state_violations": 0, "mutations": {}}
        self.failures = []
        self.probe_n = 0

    def http(self, path):
        req = urllib.request.Request(f"http://{self.a.http}{path}",
                                     headers={"Authorization": f"Bearer {self.a.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def state(self):
        pres = self.http("/admin/v1/presentities")
        subs = self.http("/admin/v1/subscriptions?limit=10000")["subscriptions"]
        return (
            sorted(json.dumps(p, sort_keys=True) for p in pres),
            sorted((s["id"], s["kind"], s["watcher"], s["target"], s["state"]) for s in subs),
        )

    def settle(self):
        prev = self.state()
        for _ in range(20):  # at most ~6 s
            time.sleep(0.3)
            self.drain(0.0)
            cur = self.state()
            if cur == prev:
                return cur
            prev = cur
        return prev

    def count(self, code):
        k = str(code) if code is not None else "non-sip"
        self.stats["answers"][k] = self.stats["answers"].get(k, 0) + 1

    def drain(self, wait):
        """Reads what arrives on the UDP socket for `wait` seconds;
        returns the response codes."""
        codes = []
        self.udp.settimeout(wait if wait > 0 else 0.001)
        end = time.monotonic() + wait
        while True:
            try:
                data, addr = self.udp.recvfrom(70000)
            except (socket.timeout, BlockingIOError):
                break
            except OSError:
                break
            st = status_of(data)
            if st is None:
                answer_request(self.udp, data, addr)
            else:
                codes.append(st)
            left = end - time.monotonic()
            if left <= 0:
                self.udp.settimeout(0.001)
            else:
                self.udp.settimeout(left)
        return codes

    def send_udp(self, data):
        try:
            self.udp.sendto(data[:65507], self.udp_target)
        except OSError:
            return []
        self.stats["udp_sent"] += 1
        codes = self.drain(self.a.wait)
        if not codes:
            self.stats["udp_no_answer"] += 1
        for c in codes:
            self.count(c)
        return codes

    def send_tcp(self, data):
        codes = []
        try:
            s = socket.create_connection(self.tcp_target, timeout=2)
        except OSError as e:
            self.failures.append(f"TCP connect failed: {e}")
            return codes
        with s:
            try:
                s.sendall(data)
            except OSError:
                self.stats["tcp_closed_by_gateway"] += 1
            self.stats["tcp_sent"] += 1
            s.settimeout(self.a.wait)
            buf = b""
            end = time.monotonic() + self.a.wait
            while time.monotonic() < end and len(buf) < 1 << 20:
                try:
                    chunk = s.recv(65536)
                except (socket.timeout, OSError):
                    break
                if not chunk:
                    self.stats["tcp_closed_by_gateway"] += 1
                    break
                buf += chunk
            for part in buf.split(b"SIP/2.0 ")[1:]:
                st = status_of(b"SIP/2.0 " + part)
                codes.append(st)
                self.count(st)
        if not codes:
            self.stats["tcp_no_answer"] += 1
        return codes

    def probe(self):
        ok = True
        self.probe_n += 1
        msg = OPTIONS.format(t="UDP", port=self.uport, n=self.probe_n).encode()
        for _ in range(3):  # UDP may lose a datagram: retransmit (Timer E)
            self.udp.sendto(msg, self.udp_target)
            if 200 in self.drain(0.5):
                break
        else:
            ok = False
            self.failures.append("no 200 to OPTIONS over UDP")
        self.probe_n += 1
        try:
            with socket.create_connection(self.tcp_target, timeout=2) as s:
                s.sendall(OPTIONS.format(t="TCP", port=s.getsockname()[1], n=self.probe_n).encode())
                s.settimeout(2)
                if not s.recv(4096).startswith(b"SIP/2.0 200"):
                    raise OSError("not 200")
        except OSError as e:
            ok = False
            self.failures.append(f"no 200 to OPTIONS over TCP: {e}")
        self.stats["options_ok" if ok else "options_failed"] += 1
        return ok

    def alive(self):
        if self.a.pid:
            try:
                os.kill(self.a.pid, 0)
            except OSError:
                self.failures.append("gateway process gone")
                return False
        return True

    def run(self, messages):
        base = self.settle()
        batch = self.a.batch
        for i in range(0, len(messages), batch):
            chunk = messages[i:i + batch]
            accepted = False
            for name, transport, data in chunk:
                codes = self.send_udp(data) if transport == "udp" else self.send_tcp(data)
                if any(c is not None and 200 <= c < 300 for c in codes):
                    accepted = True
            self.stats["batches"] += 1
            if not self.alive():
                break
            self.probe()
            if accepted:
                self.stats["batches_with_2xx"] += 1
                base = self.settle()
                continue
            self.drain(0.05)
            cur = self.state()
            self.stats["batches_state_checked"] += 1
            if cur != base:
                # A NOTIFY failing late after an earlier accepted batch
                # would show here; settle once and compare again.
                cur2 = self.settle()
                if cur2 != base:
                    self.stats["state_violations"] += 1
                    self.failures.append(
                        "state changed by a batch with no 2xx: "
                        + ", ".join(f"{n}/{t}" for n, t, _ in chunk)[:600])
                base = cur2
            if len(self.failures) > 20:
                break


def parse_addr(s):
    h, p = s.rsplit(":", 1)
    return (h, int(p))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--udp", required=True)
    ap.add_argument("--tcp", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--token", default="")
    ap.add_argument("--pid", type=int, default=0)
    ap.add_argument("--corpus", action="append", default=[])
    ap.add_argument("--seeds", action="append", default=[], help="dirs of seed flows to mutate")
    ap.add_argument("--mutants", type=int, default=600)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--wait", type=float, default=0.12, help="seconds to wait for answers")
    a = ap.parse_args()
    if not (0 <= a.mutants <= 1_000_000 and 1 <= a.batch <= 1000):
        sys.exit("mutants 0..1000000, batch 1..1000")
    rng = random.Random(a.seed)
    corpus = load_corpus(a.corpus)
    seeds = [d for n, d in load_corpus(a.seeds)]
    if not corpus and not seeds:
        sys.exit("no corpus found")
    messages = []
    for name, data in corpus:
        messages.append((name, "udp", data))
        messages.append((name, "tcp", data))
    fz = Fuzzer(a)
    for k in range(a.mutants):
        data, kind = mutate(rng, rng.choice(seeds or [d for _, d in corpus]))
        fz.stats["mutations"][kind] = fz.stats["mutations"].get(kind, 0) + 1
        messages.append((f"mutant-{k}-{kind}", rng.choice(["udp", "tcp"]), data))
    t0 = time.monotonic()
    fz.probe()
    fz.run(messages)
    fz.probe()
    fz.alive()
    fz.stats["seconds"] = round(time.monotonic() - t0, 1)
    fz.stats["corpus_files"] = len(corpus)
    fz.stats["failures"] = fz.failures
    print(json.dumps(fz.stats, indent=1, sort_keys=True))
    sys.exit(1 if fz.failures else 0)


if __name__ == "__main__":
    main()
