#!/usr/bin/env python3
"""Disk full under load (issue 17, item 2; docs/reliability.md "Disk full and
I/O errors").

Run by tests/reliability/diskfull.sh, which mounts a small tmpfs for the
store, picks the ports and writes the configuration. Reuses crash.py's
parties (SIP watchers/publishers, SIP presentity, CPIM adapter and client)
and its checker. Three rounds of the same eight kinds of operation:

  1. "before": load on a store with room.
  2. "full": load; one second in, a filler file takes every free byte of
     the filesystem. Every change the gateway cannot make durable must be
     refused (500 SIP, 503 CPIM), /readyz must turn 503, reads (GET
     presence, the admin API) must still answer 200.
  3. "after": the filler is deleted; /readyz must return to 200 without a
     restart, and the load must be acknowledged again (no 500/503).

Then SIGTERM (exit status 0), a restart on the same store (it must open:
no corruption), and crash.py's final check of every operation: each
acknowledged one present, each refused one absent. `export` must read the
store after the last stop. Exits 1 on any loss, refused-but-present
operation, 2xx while the disk was full for a change that did not survive,
failed expectation above, or check error.
"""
import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crash  # noqa: E402
from crash import KINDS, Checker, Gateway, Http, Sip, World, log, mono, run_load  # noqa: E402


def fill(path):
    """Writes `path` until the filesystem is full; bytes written."""
    n = 0
    block = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as f:
        for _ in range(1 << 16):  # bounded: 64 GiB
            try:
                n += f.write(block)
            except OSError:
                break
        # The last partial block: whatever bytes still fit.
        for size in (1 << 16, 1 << 12, 1 << 9):
            for _ in range(64):
                try:
                    n += f.write(block[:size])
                except OSError:
                    break
    return n


class Readyz(threading.Thread):
    """Polls /readyz every 50 ms; keeps the transitions."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.http = Http(port)
        self.stop = threading.Event()
        self.log = []  # (t, status)
        self.last = None

    def run(self):
        while not self.stop.wait(0.05):
            try:
                st, _ = self.http.call("GET", "/readyz")
            except Exception:
                st = None
            if st != self.last:
                self.log.append((mono(), st))
                self.last = st

    def first(self, status, after):
        return next((t for t, s in self.log if s == status and t >= after), None)


def round_(world, sip, rates, workers, seconds, r, during=None):
    world.round = r
    sip.open()
    n0 = len(world.ops)
    threads, errors = run_load(world, seconds, rates, workers)
    t0 = mono()
    if during:
        during()
    world.stop.wait(max(0.0, seconds - (mono() - t0)))
    world.stop.set()
    for th in threads:
        th.join(120)
    stuck = [th.name for th in threads if th.is_alive()]
    if stuck:
        raise RuntimeError("load workers did not stop: %s" % stuck)
    ops = [o for o in world.ops[n0:] if o.phase == "load"]
    for o in ops:
        if o.state == "pending":
            o.state = "unanswered"
    return ops, errors


def summary(ops):
    out = {}
    for k in KINDS:
        ko = [o for o in ops if o.kind == k]
        codes = {}
        for o in ko:
            if o.state == "refused":
                # Overload control's 503 (a starved machine) is not the
                # store's: counted apart.
                c = str(o.code) + ("-overloaded" if "(overloaded)" in str(o.resp or "") else "")
                codes[c] = codes.get(c, 0) + 1
        out[k] = {"sent": len(ko), "acked": sum(o.state == "acked" for o in ko),
                  "refused": sum(o.state == "refused" for o in ko),
                  "unanswered": sum(o.state == "unanswered" for o in ko), "codes": codes}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("bin", "config", "store", "filler", "work", "json-out", "report"):
        ap.add_argument("--" + name, required=True)
    for name in ("sip-port", "http-port", "ua-port", "adapter-port"):
        ap.add_argument("--" + name, type=int, required=True)
    ap.add_argument("--seconds", type=float, default=4.0, help="load per round")
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    a.seed = a.seed if a.seed is not None else int(time.time()) & 0x7FFFFFFF
    a.refuse_fraction = 0.05
    a.gateway_log = os.path.join(a.work, "gateway.log")
    a.pid_file = os.path.join(a.work, "gateway.pid")
    # Below crash.sh's rates: the checker and two SIPp-free parties share
    # the 2-core machine with the gateway.
    rates = {"register": 100, "publish": 100, "publish-modify": 100, "subscribe-local": 80,
             "subscribe-gw": 80, "cpim-notify": 100, "cpim-subscribe": 60, "ua-notify": 80}
    workers = {k: 6 for k in KINDS}
    world = World(a)
    sip = Sip(a.sip_port, a.ua_port, world)
    adapter = crash.Adapter(a.adapter_port)
    world.sip, world.http, world.adapter = sip, Http(a.http_port), adapter
    gw = Gateway(a)
    checker = Checker(world, sip, Http(a.http_port), adapter, gw)
    sip.start()
    adapter.start()
    res = {"seed": a.seed, "rates": rates, "seconds": a.seconds, "problems": []}
    problems = res["problems"]
    ready = None
    try:
        gw.start()
        ready = Readyz(a.http_port)
        ready.start()
        ops1, e1 = round_(world, sip, rates, workers, a.seconds, 1)
        log("round 1 (room): %s" % json.dumps(summary(ops1)))

        notifies0 = sip.counts["notifies"]
        reads = {"ok": 0, "failed": 0, "codes": {}}
        filled = {}

        def during():
            time.sleep(1.0)
            t = mono()
            filled["bytes"] = fill(a.filler)
            filled["t"] = t
            st = os.statvfs(os.path.dirname(a.filler))
            filled["free_after"] = st.f_bavail * st.f_frsize
            log("filler: %d bytes written in %.2f s; %d bytes free" % (filled["bytes"], mono() - t,
                                                                       filled["free_after"]))
            # Reads while full: the presence of published presentities and
            # the admin view of them.
            pubs = [p for p in world.pubs if getattr(p, "etag", None)][:20]
            for p in pubs:
                for path in ("/cpim/v1/presence/" + crash.q("pres:" + p.aor.split(":", 1)[1]),
                             "/admin/v1/presentities/" + crash.q(p.aor)):
                    try:
                        code, _ = world.http.call("GET", path)
                    except Exception:
                        code = None
                    reads["codes"][str(code)] = reads["codes"].get(str(code), 0) + 1
                    reads["ok" if code == 200 else "failed"] += 1

        ops2, e2 = round_(world, sip, rates, workers, a.seconds + 2, 2, during)
        t_end2 = mono()
        res["notifies_while_full"] = sip.counts["notifies"] - notifies0
        s2 = summary(ops2)
        log("round 2 (full): %s" % json.dumps(s2))
        t_503 = ready.first(503, filled["t"])
        res["readyz_503_after_fill_ms"] = None if t_503 is None else round((t_503 - filled["t"]) * 1000)
        if t_503 is None:
            problems.append("/readyz never answered 503 while the disk was full")
        if reads["failed"]:
            problems.append("reads while full: %s" % reads)
        refusals = sum(v["refused"] for v in s2.values())
        codes = {}
        for v in s2.values():
            for c, n in v["codes"].items():
                codes[c] = codes.get(c, 0) + n
        if not any(c in ("500", "503") for c in codes):
            problems.append("no 500/503 while the disk was full (codes %s)" % codes)
        res.update({"filler": filled, "reads_while_full": reads, "round2_codes": codes})

        os.unlink(a.filler)
        t_free = mono()
        # NOTIFYs the watchers received while the store could not write
        # (/readyz 503 until the filler went): each carries a CSeq the
        # store records first, so none is expected but those whose commit
        # was already done.
        if t_503 is not None:
            with sip.cond:
                res["notifies_while_unwritable"] = sum(
                    1 for lst in sip.notifies.values() for e in lst if t_503 <= e["t"] <= t_free)
        deadline = t_free + 60
        while mono() < deadline and ready.last != 200:
            time.sleep(0.05)
        t_200 = ready.first(200, t_free)
        res["readyz_200_after_free_ms"] = None if t_200 is None else round((t_200 - t_free) * 1000)
        if t_200 is None:
            problems.append("/readyz not 200 within 60 s of the filler's removal")
        ops3, e3 = round_(world, sip, rates, workers, a.seconds, 3)
        s3 = summary(ops3)
        log("round 3 (room again): %s" % json.dumps(s3))
        for k, v in s3.items():
            bad = {c: n for c, n in v["codes"].items() if c in ("500", "503")}
            if bad:
                problems.append("%s: %s after the space returned" % (k, bad))
            if v["acked"] == 0 and v["sent"]:
                problems.append("%s: nothing acknowledged after the space returned" % k)
        # Deliveries still queued for the adapter go out before the stop.
        time.sleep(2)
        ready.stop.set()
        for r in (1, 2, 3):
            world.kill_t[r] = mono()  # the SIGTERM below is this run's "kill"
        res["readyz_log"] = [(round((t - t_free) * 1000), s) for t, s in ready.log]
        res["stop_status"] = gw.stop()
        if res["stop_status"] != 0:
            problems.append("exit status %s on SIGTERM" % res["stop_status"])
        res["ready_after_restart_ms"] = round(gw.start() * 1000)
        sip.open()
        world.round = 4
        checker.reset()
        t_c = mono()
        checker.check(final=True)
        res["final"] = {"checked": dict(checker.checked), "losses": dict(checker.losses),
                        "refused_present": dict(checker.rbp), "refused_absent": dict(checker.refused_absent),
                        "unanswered_present": dict(checker.ua_present),
                        "unanswered_absent": dict(checker.ua_absent), "findings": checker.findings[:20],
                        "check_errors": checker.errors, "check_s": round(mono() - t_c, 1)}
        res["rounds"] = {"room": summary(ops1), "full": s2, "room again": s3}
        res["load_errors"] = e1 + e2 + e3
        res["anomalies"] = sip.anomalies
        res["stop_status_2"] = gw.stop()
        rc, msg = gw.export(a.store, os.path.join(a.work, "export.jsonl"))
        res["export"] = {"status": rc, "message": msg}
        if rc != 0:
            problems.append("export after the last stop failed (%s): %s" % (rc, msg))
        levels = {"ERROR": 0, "WARN": 0}
        with open(a.gateway_log, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "replace")
                for lv in levels:
                    if " %s " % lv in line:
                        levels[lv] += 1
        res["log_levels"] = levels
    finally:
        world.stop.set()
        if ready:
            ready.stop.set()
        gw.kill()
        sip.stopping = True
        adapter.stop()
    fin = res["final"]
    losses, rbp = sum(fin["losses"].values()), sum(fin["refused_present"].values())
    if losses:
        problems.append("%d acknowledged operations lost" % losses)
    if rbp:
        problems.append("%d refused operations present" % rbp)
    if fin["check_errors"]:
        problems.append("check errors: %s" % fin["check_errors"][:3])
    if res["anomalies"]:
        problems.append("SIP anomalies: %s" % res["anomalies"][:3])
    with open(a.json_out, "w") as f:
        json.dump(res, f, indent=1, default=str)
    with open(a.report, "w") as f:
        f.write(render(res))
    return 1 if problems else 0


def render(res):
    L = ["| round | kind | sent | acked | refused (codes) | unanswered |", "|---|---|---:|---:|---|---:|"]
    for name, s in res["rounds"].items():
        for k in KINDS:
            v = s[k]
            L.append("| %s | %s | %d | %d | %d %s | %d |" % (name, k, v["sent"], v["acked"], v["refused"],
                                                           json.dumps(v["codes"]), v["unanswered"]))
    fin = res["final"]
    L.append("")
    L.append("After SIGTERM and a restart (ready in %s ms): checked %d acknowledged operations; "
             "losses %d; refused and verified absent %d; refused but present %d; unanswered present/absent %d/%d; "
             "check errors %d" % (res["ready_after_restart_ms"], sum(fin["checked"].values()),
                                  sum(fin["losses"].values()), sum(fin["refused_absent"].values()),
                                  sum(fin["refused_present"].values()), sum(fin["unanswered_present"].values()),
                                  sum(fin["unanswered_absent"].values()), len(fin["check_errors"])))
    L.append("filler %s bytes; /readyz 503 %s ms after the fill began, 200 %s ms after the filler was removed; "
             "reads while full %s; NOTIFYs received in round 2 %d, of which while /readyz was 503 %s; "
             "exit status on SIGTERM %s; export %s; "
             "gateway log %s" % (res["filler"].get("bytes"), res["readyz_503_after_fill_ms"],
                                 res["readyz_200_after_free_ms"], json.dumps(res["reads_while_full"]),
                                 res["notifies_while_full"], res.get("notifies_while_unwritable"),
                                 res["stop_status"], res["export"]["status"],
                                 json.dumps(res["log_levels"])))
    L.append("")
    L.append("DISKFULL %s%s" % ("PASSED" if not res["problems"] else "FAILED: ",
                                "; ".join(res["problems"])))
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
