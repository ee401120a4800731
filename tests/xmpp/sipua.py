"""A minimal SIP watcher (RFC 6665 subscriber) over UDP for the XMPP e2e
tests: SUBSCRIBE, in-dialog refresh and Expires 0, NOTIFYs answered 200 and
recorded. Only what the tests need; loopback only.

Why not SIPp here: the number of NOTIFYs a watcher sees while the XMPP side
changes depends on timing the test drives from Python; this UA records every
NOTIFY and lets the test wait for the one it expects. SIPp plays the PUA
(PUBLISH) side."""

import asyncio
import re
import secrets


def _hdr(msg, name):
    m = re.search(r"(?im)^" + re.escape(name) + r"[ \t]*:[ \t]*(.*?)\r?$", msg)
    return m.group(1).strip() if m else None


class Notify:
    def __init__(self, state, body, cseq):
        self.state = state  # Subscription-State value, e.g. "active;expires=60"
        self.body = body
        self.cseq = cseq

    def __repr__(self):
        return f"NOTIFY({self.state!r}, {len(self.body)} bytes)"


class SipWatcher(asyncio.DatagramProtocol):
    def __init__(self, user, domain, gw):
        self.user, self.domain, self.gw = user, domain, gw
        self.transport = None
        self.port = None
        self.call_id = secrets.token_hex(8) + "@xmpp-e2e"
        self.from_tag = secrets.token_hex(4)
        self.to_tag = None
        self.cseq = 0
        self.target = None
        self.remote_target = None
        self.pending = {}
        self.notifies = []
        self.seen_cseq = set()
        self.changed = asyncio.Event()

    @classmethod
    async def create(cls, user, domain, gw):
        loop = asyncio.get_running_loop()
        ua = cls(user, domain, gw)
        await loop.create_datagram_endpoint(lambda: ua, local_addr=("127.0.0.1", 0))
        return ua

    def connection_made(self, transport):
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def close(self):
        if self.transport:
            self.transport.close()

    def datagram_received(self, data, addr):
        msg = data.decode("utf-8", "replace")
        head, _, body = msg.partition("\r\n\r\n")
        first = head.split("\r\n", 1)[0]
        if first.startswith("SIP/2.0"):
            code = int(first.split()[1])
            cseq = _hdr(head, "CSeq") or ""
            fut = self.pending.get(cseq)
            if code >= 200 and fut and not fut.done():
                fut.set_result((code, head))
            return
        if first.startswith("NOTIFY"):
            self._answer(head, 200, "OK")
            cseq = _hdr(head, "CSeq")
            if cseq in self.seen_cseq:
                return  # a retransmission
            self.seen_cseq.add(cseq)
            contact = _hdr(head, "Contact") or _hdr(head, "m")
            if contact:
                m = re.search(r"<([^>]+)>", contact)
                self.remote_target = m.group(1) if m else contact
            n = int(_hdr(head, "Content-Length") or _hdr(head, "l") or "0")
            self.notifies.append(Notify(_hdr(head, "Subscription-State") or "", body.encode()[:n].decode(), cseq))
            self.changed.set()
            return
        # Anything else: 405, as RFC 3261 §8.2.1 wants.
        self._answer(head, 405, "Method Not Allowed")

    def _answer(self, head, code, reason):
        lines = [f"SIP/2.0 {code} {reason}"]
        for line in head.split("\r\n")[1:]:
            name = line.split(":", 1)[0].strip().lower()
            if name in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"):
                lines.append(line)
        lines.append("Content-Length: 0")
        self.transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self.gw)

    async def _request(self, expires, timeout=40):
        self.cseq += 1
        ruri = self.remote_target or self.target
        to = f"<{self.target}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        branch = "z9hG4bK" + secrets.token_hex(8)
        req = (
            f"SUBSCRIBE {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{self.user}@{self.domain}>;tag={self.from_tag}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {self.cseq} SUBSCRIBE\r\n"
            f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>\r\n"
            f"Event: presence\r\n"
            f"Accept: application/pidf+xml\r\n"
            f"Expires: {expires}\r\n"
            f"Content-Length: 0\r\n\r\n"
        )
        key = f"{self.cseq} SUBSCRIBE"
        fut = asyncio.get_running_loop().create_future()
        self.pending[key] = fut
        # RFC 3261 §17.1.2.2 Timer E, bounded by `timeout`.
        delay, waited = 0.5, 0.0
        try:
            while waited < timeout:
                self.transport.sendto(req.encode(), self.gw)
                try:
                    code, head = await asyncio.wait_for(asyncio.shield(fut), delay)
                    break
                except asyncio.TimeoutError:
                    waited += delay
                    delay = min(delay * 2, 4.0)
            else:
                return None
        finally:
            self.pending.pop(key, None)
        if 200 <= code < 300 and not self.to_tag:
            m = re.search(r";\s*tag=([^;>\s]+)", _hdr(head, "To") or "")
            self.to_tag = m.group(1) if m else None
            c = _hdr(head, "Contact") or _hdr(head, "m")
            if c:
                m = re.search(r"<([^>]+)>", c)
                self.remote_target = m.group(1) if m else c
        return code

    async def subscribe(self, target, expires):
        self.target = target
        return await self._request(expires)

    async def refresh(self, expires):
        return await self._request(expires)

    async def wait_notify(self, pred, timeout):
        """The first NOTIFY not yet consumed for which pred(n) holds; the ones
        before it are consumed. None after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            while self.notifies:
                n = self.notifies.pop(0)
                if pred(n):
                    return n
            left = end - loop.time()
            if left <= 0:
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                return None
