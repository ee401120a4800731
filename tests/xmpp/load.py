"""Load figures for docs/performance.md (issue 15): presence changes per
second carried XMPP -> SIP and SIP -> XMPP with N subscriptions each way, and
the latency from a PUBLISH to the XMPP client receiving it (p50/p99).
Loopback only, bounded, every process stopped by PID (run with
tests/xmpp/load.sh, which owns the EXIT trap).

  XMPP -> SIP direction: U XMPP users each watch P SIP presentities
  (U*P = N subscriptions); each PUBLISH of a presentity reaches its U
  watchers as stanzas.
  SIP -> XMPP direction: N SIP watcher dialogs (one UDP UA) on U XMPP users;
  each presence change of a user reaches its N/U watchers as NOTIFYs."""

import argparse
import asyncio
import os
import re
import secrets
import statistics
import sys
import time

import e2e
from e2e import SIP_DOMAIN, XMPP_DOMAIN, Rig, http, report


class Publisher(asyncio.DatagramProtocol):
    """PUBLISH sender: one publication per presentity, modified with
    SIP-If-Match (RFC 3903 §4.4); records the send time of each change."""

    def __init__(self, gw):
        self.gw, self.etag, self.pending = gw, {}, {}

    def connection_made(self, t):
        self.t = t
        self.port = t.get_extra_info("sockname")[1]

    def datagram_received(self, data, addr):
        m = data.decode("utf-8", "replace")
        cid = re.search(r"(?im)^call-id:\s*(\S+)", m)
        et = re.search(r"(?im)^sip-etag:\s*(\S+)", m)
        code = int(m.split()[1]) if m.startswith("SIP/2.0") else 0
        if cid and code >= 200:
            f = self.pending.pop(cid.group(1), None)
            if f and not f.done():
                f.set_result((code, et.group(1) if et else None))

    async def publish(self, user, note, show_act):
        cid = secrets.token_hex(8)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\r\n'
            '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
            'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
            'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" '
            f'entity="pres:{user}@{SIP_DOMAIN}">'
            f'<tuple id="pc"><status><basic>open</basic></status><note>{note}</note></tuple>'
            f'<dm:person id="p"><rpid:activities><rpid:{show_act}/></rpid:activities></dm:person>'
            "</presence>\r\n"
        )
        ifm = f"SIP-If-Match: {self.etag[user]}\r\n" if user in self.etag else ""
        req = (
            f"PUBLISH sip:{user}@{SIP_DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{SIP_DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{user}@{SIP_DOMAIN}>\r\nCall-ID: {cid}\r\nCSeq: 1 PUBLISH\r\n"
            f"Expires: 3600\r\nEvent: presence\r\n{ifm}Content-Type: application/pidf+xml\r\n"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )
        f = asyncio.get_running_loop().create_future()
        self.pending[cid] = f
        for _ in range(6):
            self.t.sendto(req.encode(), self.gw)
            try:
                code, et = await asyncio.wait_for(asyncio.shield(f), 1.0)
                if et:
                    self.etag[user] = et
                return code
            except asyncio.TimeoutError:
                continue
        return None


class Watchers(asyncio.DatagramProtocol):
    """Many SIP watcher dialogs on one UDP socket: SUBSCRIBE each, answer
    every NOTIFY 200, count NOTIFYs per note text."""

    def __init__(self, gw):
        self.gw, self.pending, self.seen = gw, {}, {}
        self.count = 0
        self.cseqs = set()

    def connection_made(self, t):
        self.t = t
        self.port = t.get_extra_info("sockname")[1]

    def datagram_received(self, data, addr):
        m = data.decode("utf-8", "replace")
        head, _, body = m.partition("\r\n\r\n")
        if m.startswith("SIP/2.0"):
            cid = re.search(r"(?im)^call-id:\s*(\S+)", head).group(1)
            f = self.pending.get(cid)
            if f and not f.done() and int(m.split()[1]) >= 200:
                f.set_result(int(m.split()[1]))
            return
        if m.startswith("NOTIFY"):
            lines = ["SIP/2.0 200 OK"] + [l for l in head.split("\r\n")[1:]
                                           if l.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
            self.t.sendto(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(), addr)
            key = (re.search(r"(?im)^call-id:\s*(\S+)", head).group(1), re.search(r"(?im)^cseq:\s*(\d+)", head).group(1))
            if key in self.cseqs:
                return
            self.cseqs.add(key)
            note = re.search(r"<note[^>]*>([^<]*)</note>", body)
            if note:
                self.seen[note.group(1)] = self.seen.get(note.group(1), 0) + 1
                self.count += 1

    async def subscribe(self, user, target):
        cid = secrets.token_hex(8)
        req = (
            f"SUBSCRIBE sip:{target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{SIP_DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{target}>\r\nCall-ID: {cid}\r\nCSeq: 1 SUBSCRIBE\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{self.port}>\r\nEvent: presence\r\n"
            f"Accept: application/pidf+xml\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
        )
        f = asyncio.get_running_loop().create_future()
        self.pending[cid] = f
        for _ in range(6):
            self.t.sendto(req.encode(), self.gw)
            try:
                return await asyncio.wait_for(asyncio.shield(f), 2.0)
            except asyncio.TimeoutError:
                continue
        return None


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def main(args):
    rig = Rig(args)
    rig.prosody_config()
    U, N = args.users, args.subs
    P = N // U
    for i in range(U):
        rig.register(f"u{i}")
    rig.gateway_config()
    with open(os.path.join(rig.work, "gateway", "gateway.toml"), "a") as f:
        f.write("max_subscriptions_per_watcher = 0\n")
    rig.adapter_config()
    await rig.start_prosody()
    await rig.start_gateway()
    await rig.start_adapter()
    loop = asyncio.get_running_loop()
    gw = ("127.0.0.1", rig.sip)
    _, pub = await loop.create_datagram_endpoint(lambda: Publisher(gw), local_addr=("127.0.0.1", 0))
    _, wat = await loop.create_datagram_endpoint(lambda: Watchers(gw), local_addr=("127.0.0.1", 0))

    # Presentities exist before anyone watches them.
    for j in range(P):
        await pub.publish(f"p{j}", "start", "unknown")
    users = []
    for i in range(U):
        u = e2e.User(f"u{i}", rig.c2s)
        u.roster.auto_authorize = True  # SIP watchers are approved at once
        await u.go("", "start")
        users.append(u)
    t0 = time.monotonic()
    for u in users:
        for j in range(P):
            u.send_presence(pto=f"p{j}@{SIP_DOMAIN}", ptype="subscribe")
    ok = await e2e.wait_until(lambda: sum(1 for u in users for g in u.got if g["type"] == "subscribed") >= N, 120, 0.5)
    report(ok, "load-xmpp-subscriptions", f"{N} XMPP -> SIP subscriptions active in {time.monotonic() - t0:.1f} s")
    t0 = time.monotonic()
    codes = await asyncio.gather(*[wat.subscribe(f"w{k}", f"u{k % U}@{XMPP_DOMAIN}") for k in range(N)])
    ok = all(c in (200, 202) for c in codes)
    report(ok, "load-sip-subscriptions", f"{N} SIP -> XMPP SUBSCRIBEs answered in {time.monotonic() - t0:.1f} s ({sum(c in (200, 202) for c in codes if c)} ok)")
    await e2e.wait_until(lambda: wat.seen.get("start", 0) >= N, 60, 0.5)
    report(wat.seen.get("start", 0) >= N, "load-sip-active", f"{wat.seen.get('start', 0)} watchers got the first NOTIFY with state")

    # SIP -> XMPP: C rounds of one PUBLISH per presentity; U stanzas each.
    for u in users:
        u.got.clear()
    lat, sent_at = [], {}
    rounds = args.rounds
    t0 = time.monotonic()
    for r in range(rounds):
        for j in range(P):
            note = f"r{r}-p{j}"
            sent_at[note] = time.monotonic()
            code = await pub.publish(f"p{j}", note, "away" if r % 2 else "busy")
            if code != 200:
                print(f"info: PUBLISH {note} -> {code}")
    want = rounds * P * U
    got = lambda: sum(1 for u in users for g in u.got if g["status"].startswith("r"))
    await e2e.wait_until(lambda: got() >= want, 120, 0.2)
    t1 = max((g["at"] for u in users for g in u.got if g["status"].startswith("r")), default=time.monotonic())
    n = got()
    for u in users:
        for g in u.got:
            if g["status"] in sent_at:
                lat.append(g["at"] - sent_at[g["status"]])
    rate = n / (t1 - t0)
    report(n >= want, "load-sip-to-xmpp", f"{n}/{want} presence stanzas in {t1 - t0:.2f} s: {rate:.0f}/s; PUBLISH -> client latency p50 {pct(lat, 50)*1000:.0f} ms p99 {pct(lat, 99)*1000:.0f} ms")

    # XMPP -> SIP: C rounds; in each, every user changes presence once and
    # the round ends when all N watchers have that change (the adapter keeps
    # only the latest state per pair, so rounds are not overlapped).
    t0 = time.monotonic()
    n2 = 0
    ok = True
    for r in range(rounds):
        for i, u in enumerate(users):
            u.send_presence(pshow="dnd" if r % 2 else "away", pstatus=f"x{r}-u{i}")
        done = await e2e.wait_until(lambda: sum(v for k, v in wat.seen.items() if k.startswith(f"x{r}-")) >= N, 60, 0.05)
        n2 += sum(v for k, v in wat.seen.items() if k.startswith(f"x{r}-"))
        ok = ok and done
    t1 = time.monotonic()
    want2 = rounds * N
    report(ok, "load-xmpp-to-sip", f"{n2}/{want2} NOTIFYs in {t1 - t0:.2f} s: {n2 / (t1 - t0):.0f}/s")
    c, body = http("GET", f"http://127.0.0.1:{rig.ad_http}/metrics")
    for line in body.splitlines():
        if line.startswith("xmpp_adapter_cpim_calls_total") or line.startswith("xmpp_adapter_stanzas_total{direction=\"dropped\""):
            print("info:", line)
    for u in users:
        await u.leave()
    rig.procs.stop("adapter")
    rig.procs.stop("gateway")
    rig.procs.stop_all()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--pids", required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--subs", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    try:
        asyncio.run(asyncio.wait_for(main(a), 600))
    except Exception as ex:
        report(False, "load", f"{type(ex).__name__}: {ex}")
    print(f"{e2e.RESULTS['passed']} passed, {e2e.RESULTS['failed']} failed")
    sys.exit(1 if e2e.RESULTS["failed"] else 0)
