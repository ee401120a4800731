"""End-to-end SIP <-> XMPP presence through sip-cpim-gateway and xmpp-adapter
(issue 15), on 127.0.0.1 only: Prosody (foreground, private config), the
gateway, the adapter, slixmpp clients, SIPp as the PUA and sipua.py as the
SIP watcher. Prints "PASS name: what" / "FAIL name: why" per check and ends
with "N passed, N failed". Every process it starts is written to the PID
file given (run.sh's EXIT trap stops them too)."""

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import slixmpp

from sipua import SipWatcher

HERE = os.path.dirname(os.path.abspath(__file__))
XMPP_DOMAIN = "xmpp.example.org"
SIP_DOMAIN = "example.com"
SECRET = "component-secret"
TOKEN = "e2e-token"
PASSWORD = "pw"

RESULTS = {"passed": 0, "failed": 0}


def report(ok, name, what):
    RESULTS["passed" if ok else "failed"] += 1
    print(f"{'PASS' if ok else 'FAIL'} {name}: {what}", flush=True)
    return ok


def free_port():
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            t.close()
            u.close()
        return port
    raise RuntimeError("no free port")


class Procs:
    """Processes started by the test, by name, stopped by PID."""

    def __init__(self, work, pidfile):
        self.work, self.pidfile, self.p = work, pidfile, {}

    def start(self, name, argv, env=None):
        log = open(os.path.join(self.work, f"{name}.log"), "ab")
        e = dict(os.environ, NO_COLOR="1")
        e.update(env or {})
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=e, cwd=self.work)
        self.p[name] = p
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def log(self, name):
        try:
            return open(os.path.join(self.work, f"{name}.log"), encoding="utf-8", errors="replace").read()
        except OSError:
            return ""

    def stop(self, name, sig=signal.SIGTERM, wait=10):
        p = self.p.pop(name, None)
        if not p or p.poll() is not None:
            return p.returncode if p else None
        p.send_signal(sig)
        try:
            return p.wait(wait)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(5)

    def alive(self, name):
        return name in self.p and self.p[name].poll() is None

    def stop_all(self):
        for n in list(self.p):
            self.stop(n)


async def wait_until(pred, timeout, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()


def http(method, url, body=None, token=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


# ---------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------


class Rig:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.procs = Procs(self.work, args.pids)
        self.c2s = free_port()
        self.comp = free_port()
        self.sip = free_port()
        self.gw_http = free_port()
        self.ad_http = free_port()
        self.pdir = os.path.join(self.work, "prosody")

    # Prosody -------------------------------------------------------------
    def prosody_config(self):
        os.makedirs(os.path.join(self.pdir, "data"), exist_ok=True)
        os.makedirs(os.path.join(self.pdir, "certs"), exist_ok=True)
        cfg = os.path.join(self.pdir, "prosody.cfg.lua")
        d = self.pdir
        with open(cfg, "w") as f:
            f.write(f"""-- private loopback Prosody for tests/xmpp (not a system service)
run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
certificates = "{d}/certs"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{d}/prosody.log" }} }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "posix"; "presence" }}
modules_disabled = {{ "s2s" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s} }}
c2s_interfaces = {{ "127.0.0.1" }}
component_ports = {{ {self.comp} }}
component_interfaces = {{ "127.0.0.1" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
VirtualHost "{XMPP_DOMAIN}"
Component "{SIP_DOMAIN}"
  component_secret = "{SECRET}"
""")
        return cfg

    def register(self, user):
        cfg = os.path.join(self.pdir, "prosody.cfg.lua")
        subprocess.run(["prosodyctl", "--config", cfg, "register", user, XMPP_DOMAIN, PASSWORD],
                       check=True, capture_output=True, timeout=30)

    async def start_prosody(self):
        cfg = os.path.join(self.pdir, "prosody.cfg.lua")
        self.procs.start("prosody", ["prosody", "-F", "--config", cfg])
        ok = await wait_until(lambda: port_open(self.c2s) and port_open(self.comp), 20)
        if not ok:
            raise RuntimeError("prosody did not open its ports:\n" + tail(os.path.join(self.pdir, "prosody.log")))

    # Gateway -------------------------------------------------------------
    def gateway_config(self):
        d = os.path.join(self.work, "gateway")
        os.makedirs(os.path.join(d, "store"), exist_ok=True)
        cfg = os.path.join(d, "gateway.toml")
        with open(cfg, "w") as f:
            f.write(f"""[sip]
listen = ["udp:127.0.0.1:{self.sip}", "tcp:127.0.0.1:{self.sip}"]
local_domains = ["{SIP_DOMAIN}"]
cpim_domains = ["{XMPP_DOMAIN}"]
routes = []
[cpim]
listen = "127.0.0.1:{self.gw_http}"
adapter_url = "http://127.0.0.1:{self.ad_http}/cpim"
token = "{TOKEN}"
retry_initial_ms = 200
retry_max_ms = 1000
[store]
path = "{d}/store"
[presence]
default_policy = "allow"
notify_min_interval_ms = 0
""")
        return cfg

    async def start_gateway(self):
        cfg = os.path.join(self.work, "gateway", "gateway.toml")
        self.procs.start("gateway", [self.args.gateway, "run", "--config", cfg],
                         env={"RUST_LOG": os.environ.get("GW_LOG", "warn")})
        ok = await wait_until(lambda: http("GET", f"http://127.0.0.1:{self.gw_http}/healthz")[0] == 200, 20)
        if not ok:
            raise RuntimeError("gateway did not start:\n" + self.procs.log("gateway")[-2000:])

    # Adapter -------------------------------------------------------------
    def adapter_config(self):
        d = os.path.join(self.work, "adapter")
        os.makedirs(d, exist_ok=True)
        cfg = os.path.join(d, "xmpp-adapter.toml")
        with open(cfg, "w") as f:
            f.write(f"""[adapter]
listen = "127.0.0.1:{self.ad_http}"
state_path = "{d}/state.json"
retry_min_s = 1
retry_max_s = 5
[gateway]
url = "http://127.0.0.1:{self.gw_http}"
timeout_ms = 35000
retry_initial_ms = 200
retry_max_ms = 1000
[xmpp]
server = "127.0.0.1:{self.comp}"
reconnect_min_ms = 200
reconnect_max_ms = 2000
[[xmpp.components]]
domain = "{SIP_DOMAIN}"
secret = "{SECRET}"
""")
        return cfg

    async def start_adapter(self):
        cfg = os.path.join(self.work, "adapter", "xmpp-adapter.toml")
        # The token through the environment, as an operator would.
        self.procs.start("adapter", [self.args.adapter, "run", "--config", cfg],
                         env={"RUST_LOG": os.environ.get("ADAPTER_LOG", "xmpp_adapter=debug,info"),
                              "XMPP_ADAPTER__GATEWAY__TOKEN": TOKEN})
        ok = await wait_until(lambda: self.component_up(), 20)
        if not ok:
            raise RuntimeError("adapter did not connect its component:\n" + self.procs.log("adapter")[-3000:])

    def component_up(self):
        code, body = http("GET", f"http://127.0.0.1:{self.ad_http}/healthz")
        return code == 200 and json.loads(body)["components"].get(SIP_DOMAIN) is True

    # SIPp PUA ------------------------------------------------------------
    def publish(self, label, user, tuple_id, basic, note, activity, etag=None):
        """Runs one SIPp PUBLISH; returns the new etag or None."""
        sf = "publish-modify.xml" if etag else "publish-initial.xml"
        log = os.path.join(self.work, f"sipp-{label}.log")
        argv = ["sipp", f"127.0.0.1:{self.sip}", "-sf", os.path.join(HERE, sf), "-t", "u1",
                "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1", "-timeout", "20s", "-timeout_error",
                "-nostdin", "-trace_logs", "-log_file", log, "-trace_err", "-error_file", log + ".err",
                "-key", "pres_user", user, "-key", "tuple_id", tuple_id, "-key", "basic", basic,
                "-key", "note", note, "-key", "activities", activity]
        if etag:
            argv += ["-key", "etag", etag]
        r = subprocess.run(argv, cwd=self.work, capture_output=True, timeout=40)
        if r.returncode != 0:
            return None
        m = re.findall(r"etag=(\S+)", open(log).read())
        return m[-1] if m else None


def port_open(port):
    s = socket.socket()
    s.settimeout(0.3)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def tail(path, n=3000):
    try:
        return open(path, encoding="utf-8", errors="replace").read()[-n:]
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# XMPP clients
# ---------------------------------------------------------------------------


class User(slixmpp.ClientXMPP):
    """A real XMPP client: records every presence stanza it receives; answers
    nothing on its own (roster auto-authorisation off)."""

    def __init__(self, name, port):
        super().__init__(f"{name}@{XMPP_DOMAIN}/e2e", PASSWORD)
        self.port = port
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        # None: neither approve nor refuse by itself (False would answer
        # every subscribe with `unsubscribed`).
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
        self.got = []
        self.seen = []
        self.changed = asyncio.Event()
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        # slixmpp names available presence by its show (presence_dnd, ...).
        for ev in ("presence_available", "presence_chat", "presence_away", "presence_xa",
                   "presence_dnd", "presence_unavailable", "presence_subscribe",
                   "presence_subscribed", "presence_unsubscribe", "presence_unsubscribed",
                   "presence_probe", "presence_error"):
            self.add_event_handler(ev, self.on_presence)
        self.initial = None

    async def on_start(self, _):
        await self.get_roster()
        show, status = self.initial or ("", "")
        self.send_presence(pshow=show or None, pstatus=status or None)
        self.ready.set()

    def on_presence(self, p):
        t = p["type"]
        if t in ("available", "", "chat", "away", "xa", "dnd"):
            t = "available"
        self.got.append({"type": t, "from": str(p["from"]), "show": p["show"] or "",
                         "status": p["status"] or "", "at": time.monotonic()})
        self.changed.set()

    async def go(self, show="", status=""):
        self.initial = (show, status)
        self.connect("127.0.0.1", self.port)
        await asyncio.wait_for(self.ready.wait(), 15)

    async def wait(self, pred, timeout):
        """The first recorded presence matching pred (consumed with those
        before it), or None."""
        end = time.monotonic() + timeout
        while True:
            while self.got:
                g = self.got.pop(0)
                self.seen.append(g)
                if pred(g):
                    return g
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                return None

    def roster_sub(self, jid):
        try:
            return self.client_roster[jid]["subscription"]
        except KeyError:
            return None

    async def leave(self):
        self.disconnect()
        try:
            await asyncio.wait_for(self.disconnected, 10)
        except Exception:
            pass


async def login(name, rig, show="", status=""):
    u = User(name, rig.c2s)
    await u.go(show, status)
    return u


def watches(rig, watcher, target):
    """Whether the gateway's admin view lists a subscription of watcher to
    target (SubscriptionView: watcher, target URIs)."""
    c, b = http("GET", f"http://127.0.0.1:{rig.gw_http}/admin/v1/subscriptions", token=TOKEN)
    if c != 200:
        return None
    return any(watcher in s["watcher"] and target in s["target"] for s in json.loads(b)["subscriptions"])


def pidf_check(body, basic, note=None, activity=None, no_open=False):
    """What the mapping (RFC 8048 §6.2, docs/xmpp.md) says the PIDF holds."""
    if f"<basic>{basic}</basic>" not in body:
        return False
    if no_open and "<basic>open</basic>" in body:
        return False
    if note is not None and not re.search(r"<note[^>]*>" + re.escape(note) + "</note>", body):
        return False
    if activity is not None and f"<rpid:{activity}/>" not in body:
        return False
    if activity is None and "<rpid:activities>" in body and basic == "open" and note is not None:
        return False
    return True


# ---------------------------------------------------------------------------
# The flows
# ---------------------------------------------------------------------------


async def main(args):
    rig = Rig(args)
    rig.prosody_config()
    for u in ("alice", "dave"):
        rig.register(u)
    rig.gateway_config()
    rig.adapter_config()
    await rig.start_prosody()
    await rig.start_gateway()
    await rig.start_adapter()
    report(True, "setup", f"prosody c2s {rig.c2s} component {rig.comp}, gateway sip {rig.sip} http {rig.gw_http}, adapter http {rig.ad_http}")
    gw = ("127.0.0.1", rig.sip)
    bob = f"bob@{SIP_DOMAIN}"
    alice_jid = f"alice@{XMPP_DOMAIN}"
    latencies = []

    alice = await login("alice", rig, "", "Hello")

    # 1. XMPP user watches a local SIP presentity; each PUBLISH as presence.
    etag = rig.publish("pub0", "bob", "pc", "open", "Here", "<rpid:unknown/>")
    alice.send_presence(pto=bob, ptype="subscribe")
    g = await alice.wait(lambda g: g["type"] == "subscribed" and g["from"].startswith(bob), 15)
    report(g is not None, "xmpp-subscribe", "alice's subscribe to bob@example.com answered `subscribed` (SIP subscription active)")
    await wait_until(lambda: alice.roster_sub(bob) in ("to", "both"), 5)
    report(alice.roster_sub(bob) in ("to", "both"), "xmpp-roster", f"alice's roster item for bob is '{alice.roster_sub(bob)}'")
    g = await alice.wait(lambda g: g["type"] == "available" and g["from"] == f"{bob}/pc" and g["status"] == "Here", 10)
    report(g is not None and g["show"] == "", "publish-0", "PUBLISH open/'Here'/no activity -> available, no show, status 'Here'")
    for i, (note, act, show) in enumerate([("In a meeting", "busy", "dnd"), ("Lunch", "away", "away"),
                                            ("On the phone", "on-the-phone", "dnd")], 1):
        t0 = time.monotonic()
        etag = rig.publish(f"pub{i}", "bob", "pc", "open", note, f"<rpid:{act}/>", etag)
        g = await alice.wait(lambda g: g["type"] == "available" and g["from"] == f"{bob}/pc" and g["status"] == note, 10)
        ok = g is not None and g["show"] == show
        if g:
            latencies.append(g["at"] - t0)
        report(ok, f"publish-{i}", f"PUBLISH '{note}' + rpid:{act} -> show '{show}' status '{note}'" + ("" if ok else f" (got {g}; last seen {alice.seen[-3:]})"))
    etag = rig.publish("pub-closed", "bob", "pc", "closed", "Gone", "<rpid:unknown/>", etag)
    g = await alice.wait(lambda g: g["from"] == f"{bob}/pc" and g["type"] == "unavailable", 10)
    report(g is not None, "publish-closed", "PUBLISH basic=closed -> type='unavailable'")

    # 2. A SIP watcher of an XMPP user, with approval.
    carol = await SipWatcher.create("carol", SIP_DOMAIN, gw)
    code = await carol.subscribe(f"sip:{alice_jid}", 600)
    report(code in (200, 202), "sip-subscribe", f"carol's SUBSCRIBE to alice answered {code}")
    n = await carol.wait_notify(lambda n: n.state.startswith("pending"), 10)
    report(n is not None, "sip-pending", "first NOTIFY is pending until alice decides")
    g = await alice.wait(lambda g: g["type"] == "subscribe" and g["from"].startswith(f"carol@{SIP_DOMAIN}"), 10)
    report(g is not None, "xmpp-gets-subscribe", "alice receives <presence type='subscribe'> from carol@example.com")
    alice.send_presence(pto=f"carol@{SIP_DOMAIN}", ptype="subscribed")
    n = await carol.wait_notify(lambda n: n.state.startswith("active") and pidf_check(n.body, "open", "Hello"), 10)
    report(n is not None, "sip-active", "after `subscribed`: NOTIFY active, PIDF open with note 'Hello'")
    for show, status, act in [("dnd", "Busy", "busy"), ("away", "Coffee", "away"), ("xa", "Holidays", "away"),
                              ("chat", "Talk to me", None)]:
        alice.send_presence(pshow=show, pstatus=status)
        n = await carol.wait_notify(lambda n: pidf_check(n.body, "open", status, act), 10)
        extra = ""
        if n is not None and show == "xa":
            extra = " + user-input idle"
            n = n if "<rpid:user-input>idle</rpid:user-input>" in n.body else None
        report(n is not None, f"xmpp-presence-{show}", f"show '{show}' status '{status}' -> NOTIFY PIDF open, note '{status}', " + (f"rpid:{act}{extra}" if act else "no activity"))

    # 3. Offline -> closed; a new login keeps the subscriptions (probes).
    await alice.leave()
    n = await carol.wait_notify(lambda n: pidf_check(n.body, "closed", no_open=True), 10)
    report(n is not None, "xmpp-offline", "alice logs out -> NOTIFY with basic=closed only")
    alice = await login("alice", rig, "", "Back")
    n = await carol.wait_notify(lambda n: pidf_check(n.body, "open", "Back"), 10)
    report(n is not None, "xmpp-online-again", "alice logs in again -> NOTIFY open 'Back'")
    g = await alice.wait(lambda g: g["from"].startswith(bob) and g["type"] in ("available", "unavailable"), 10)
    ok = g is not None and g["type"] == "unavailable" and alice.roster_sub(bob) in ("to", "both")
    report(ok, "xmpp-probe", f"login probe answered from the SIP state held ({g and g['type']}), roster still '{alice.roster_sub(bob)}'")

    # 4. Unsubscribe from the SIP side ends the XMPP side.
    code = await carol.refresh(0)
    n = await carol.wait_notify(lambda n: n.state.startswith("terminated"), 10)
    report(code == 200 and n is not None, "sip-unsubscribe", f"carol's Expires 0 -> {code} and NOTIFY terminated")
    g = await alice.wait(lambda g: g["type"] == "unsubscribe" and g["from"].startswith(f"carol@{SIP_DOMAIN}"), 10)
    report(g is not None, "xmpp-gets-unsubscribe", "alice receives `unsubscribe` from carol@example.com")

    # 5. A refused subscription: terminated NOTIFY for the SIP watcher.
    erin = await SipWatcher.create("erin", SIP_DOMAIN, gw)
    code = await erin.subscribe(f"sip:{alice_jid}", 600)
    g = await alice.wait(lambda g: g["type"] == "subscribe" and g["from"].startswith(f"erin@{SIP_DOMAIN}"), 10)
    alice.send_presence(pto=f"erin@{SIP_DOMAIN}", ptype="unsubscribed")
    # At once, without waiting for erin's refresh: the final NOTIFY.
    n = await erin.wait_notify(lambda n: n.state.startswith("terminated"), 10)
    # The dialog is gone: erin's refresh names no dialog.
    code2 = await erin.refresh(600)
    report(code in (200, 202) and g is not None and n is not None and "rejected" in n.state
           and code2 == 481, "sip-refused",
           f"alice's `unsubscribed` -> NOTIFY '{n and n.state}' at once; erin's refresh then {code2}")
    erin.close()

    # 6. Unsubscribe from the XMPP side ends the SIP side.
    alice.send_presence(pto=bob, ptype="unsubscribe")
    def watched():
        return watches(rig, alice_jid, bob)
    report(watched(), "xmpp-watch-listed", "before: the gateway lists alice's subscription to bob (admin view)")
    gone = await wait_until(lambda: not watched(), 10)
    report(gone, "xmpp-unsubscribe", "alice's `unsubscribe` removes the gateway's subscription (admin view)")

    # 7. Restart: kill -9 adapter, kill -9 gateway, restart Prosody.
    alice.send_presence(pto=bob, ptype="subscribe")
    g = await alice.wait(lambda g: g["type"] == "subscribed" and g["from"].startswith(bob), 15)
    carol2 = await SipWatcher.create("frank", SIP_DOMAIN, gw)
    await carol2.subscribe(f"sip:{alice_jid}", 600)
    g2 = await alice.wait(lambda g: g["type"] == "subscribe" and g["from"].startswith(f"frank@{SIP_DOMAIN}"), 10)
    alice.send_presence(pto=f"frank@{SIP_DOMAIN}", ptype="subscribed")
    n = await carol2.wait_notify(lambda n: n.state.startswith("active"), 10)
    report(g is not None and g2 is not None and n is not None, "restart-setup", "alice watches bob, frank watches alice (active)")

    # Faults: a malformed stanza is skipped (the component link stays up);
    # the gateway away: the adapter retries the notify until it is back.
    alice.send_raw(f"<presence to='{bob}'><show>bogus</show></presence>")
    await asyncio.sleep(0.5)
    c, body = http("GET", f"http://127.0.0.1:{rig.ad_http}/metrics")
    malformed = re.search(r'xmpp_adapter_stanzas_total\{direction="malformed",type="any"\} (\d+)', body)
    connects = re.search(r'xmpp_adapter_component_connects_total\{domain="example.com"\} (\d+)', body)
    report(malformed is not None and connects is not None and connects.group(1) == "1" and rig.component_up(),
           "malformed-stanza", f"<show>bogus</show> ignored (malformed {malformed and malformed.group(1)}), component connections {connects and connects.group(1)}")
    rig.procs.stop("gateway")
    alice.send_presence(pshow="away", pstatus="Gateway down")
    await asyncio.sleep(1.5)
    await rig.start_gateway()
    n = await carol2.wait_notify(lambda n: pidf_check(n.body, "open", "Gateway down", "away"), 15)
    report(n is not None, "gateway-down", "presence sent while the gateway was stopped reaches frank once it is back")
    await asyncio.sleep(0.5)
    rig.procs.stop("adapter", signal.SIGKILL)
    rig.procs.stop("gateway", signal.SIGKILL)
    rig.procs.stop("prosody", signal.SIGTERM)
    await alice.leave()
    await rig.start_prosody()
    await rig.start_gateway()
    await rig.start_adapter()
    report(True, "restart", "adapter and gateway killed -9, Prosody restarted, all three started again")
    alice = await login("alice", rig, "dnd", "After restart")
    n = await carol2.wait_notify(lambda n: pidf_check(n.body, "open", "After restart", "busy"), 20)
    report(n is not None, "restart-xmpp-to-sip", "alice's next presence reaches frank as NOTIFY (busy, 'After restart')")
    etag = rig.publish("pub-restart", "bob", "pc", "open", "Restarted", "<rpid:away/>", None)
    g = await alice.wait(lambda g: g["type"] == "available" and g["from"].startswith(bob) and g["status"] == "Restarted", 20)
    report(g is not None and g["show"] == "away", "restart-sip-to-xmpp", f"bob's next PUBLISH reaches alice (away, 'Restarted'): {g}")
    report(alice.roster_sub(bob) in ("to", "both"), "restart-roster", f"alice's subscription to bob survived ('{alice.roster_sub(bob)}')")

    # The roster item goes: no SIP subscription is left behind.
    alice.del_roster_item(bob)
    listed = watches(rig, alice_jid, bob)
    gone = await wait_until(lambda: not watches(rig, alice_jid, bob), 10)
    report(listed and gone, "roster-remove", f"alice removes bob from her roster -> the gateway's subscription is gone (listed before: {listed})")

    # Health and metrics of the adapter.
    c, body = http("GET", f"http://127.0.0.1:{rig.ad_http}/metrics")
    ok = c == 200 and 'xmpp_adapter_component_connected{domain="example.com"} 1' in body and "xmpp_adapter_stanzas_total" in body and "xmpp_adapter_cpim_calls_total" in body
    report(ok, "metrics", "/metrics has component_connected 1, stanzas and CPIM call counters")

    if latencies:
        latencies.sort()
        print(f"info: PUBLISH -> XMPP client latency over {len(latencies)} changes: max {max(latencies)*1000:.0f} ms")
    await alice.leave()
    carol.close()
    carol2.close()
    # Clean stop: SIGTERM, exit 0.
    rc_a = rig.procs.stop("adapter")
    rc_g = rig.procs.stop("gateway")
    report(rc_a == 0, "adapter-stop", f"adapter exits {rc_a} on SIGTERM")
    rig.procs.stop_all()
    return rc_g


def run():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--pids", required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--adapter", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    rig_err = None
    try:
        asyncio.run(asyncio.wait_for(main(args), 220))
    except Exception as e:  # a setup failure or the overall bound
        rig_err = e
        report(False, "run", f"{type(e).__name__}: {e}")
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    sys.exit(0 if RESULTS["failed"] == 0 and rig_err is None else 1)


if __name__ == "__main__":
    run()
