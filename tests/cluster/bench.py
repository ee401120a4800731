#!/usr/bin/env python3
"""Cluster throughput (issue 18): 1 node on sled against 1, 2 and 3 nodes on
one PostgreSQL, in one run, with the same SIPp PUBLISH scenario
(tests/sipp/side-by-side/kamailio/scenarios/publish.xml, unmodified).

For each configuration, a rate ladder (total PUBLISH/s over all nodes, one
SIPp per node at rate/N) until the first step that is not clean (a failed
call, or under 95 % of the offered rate). Each step reports:
  * achieved rate (successful calls only) and retransmissions;
  * CPU per PUBLISH of each gateway node and of PostgreSQL (all its
    processes), in µs, from /proc (utime + stime);
  * database statements per PUBLISH (pg_stat_statements, BEGIN and COMMIT
    included), transactions (COMMITs) per PUBLISH, round trips per PUBLISH
    (TCP data segments the gateways sent to PostgreSQL: a client that
    waits for each answer sends one segment per round trip, a pipelined
    group leaves as one) and WAL bytes per PUBLISH (pg_current_wal_lsn);
  * the share of requests forwarded between nodes
    (sipgw_cluster_forwarded_total).

Modes of addressing the nodes:
  holder  each SIPp sends only the presentities its node holds (what a
          shard-aware balancer does: no forwarding);
  spread  every SIPp sends every presentity (what a hash balancer that does
          not know the shards does: (N-1)/N of requests take one hop).

Usage: bench.py --binary target/release/sip-cpim-gateway
       [--configs sled1,pg1,pg2,pg3,pg3-spread] [--rates 1000,2000,...]
       [--seconds 5] [--rounds 1]
Prints one JSON line per step on stderr as it goes and a markdown table on
stdout. Loopback only; every process stopped by PID; every loop bounded.
"""
import argparse
import csv
import json
import re
import os
import shutil
import subprocess
import sys
import time
import urllib.request

from rig import Node, Postgres, free_port, pg_bin, work_dir

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIO = os.path.join(HERE, "..", "sipp", "side-by-side", "kamailio", "scenarios", "publish.xml")
SHARDS = 64
TTL_S = 15
HZ = os.sysconf("SC_CLK_TCK")


def shard_of(aor):
    """src/cluster/shard.rs `Sharding::of` (pinned there by a test)."""
    rest = aor.split(":", 1)[1] if aor.split(":", 1)[0] in ("sip", "sips", "pres", "im", "xmpp") else aor
    h = 0xCBF29CE484222325
    for b in rest.lower().encode():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % SHARDS


def cpu_ticks(pids):
    t = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            t += int(f[11]) + int(f[12])
        except (OSError, IndexError):
            pass
    return t


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Db:
    def __init__(self, pg):
        self.pg = pg
        self.psql = os.path.join(pg_bin(), "psql")

    def q(self, sql):
        r = subprocess.run([self.psql, "-h", "127.0.0.1", "-p", str(self.pg.port), "-U", "gw", "-d", "postgres",
                            "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise SystemExit(f"psql: {r.stderr.strip()}")
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def counters(self):
        """(statements executed by the gateways, COMMITs among them).
        pg_stat_statements counts at the end of each statement;
        pg_stat_database.xact_commit would lag by up to 10 s (PostgreSQL 15
        flushes an idle backend's counters that late)."""
        stmts, commits = self.q(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(calls) FILTER (WHERE query = 'COMMIT'), 0) "
            "FROM pg_stat_statements WHERE query NOT ILIKE '%pg_stat%' AND query NOT ILIKE '%wal_lsn%'")[0]
        return int(stmts), int(commits)

    def wal_lsn(self):
        return self.q("SELECT pg_current_wal_lsn()")[0][0]

    def wal_since(self, lsn):
        return int(float(self.q(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')")[0][0]))

    def top(self, n=8):
        return self.q("SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_statements "
                      f"WHERE query NOT ILIKE '%pg_stat%' AND query NOT ILIKE '%wal_lsn%' ORDER BY calls DESC LIMIT {n}")


def pg_segments(port):
    """TCP data segments PostgreSQL has received and sent on its
    established connections (`ss -ti`: data_segs_in / data_segs_out). A
    client's pipelined requests leave as one write and one segment, and so
    do the server's answers to them: the segments PostgreSQL sends count
    the round trips."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    seg_in = sum(int(x) for x in re.findall(r"data_segs_in:(\d+)", out))
    seg_out = sum(int(x) for x in re.findall(r"data_segs_out:(\d+)", out))
    return seg_in, seg_out


def metric(node, name):
    try:
        body = urllib.request.urlopen(f"http://{node.http}/metrics", timeout=5).read().decode()
    except OSError:
        return 0
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def ready(node):
    try:
        return urllib.request.urlopen(f"http://{node.http}/readyz", timeout=2).status == 200
    except OSError:
        return False


def sipp_summary(path):
    rows = list(csv.reader(open(path), delimiter=";"))
    h, last = rows[0], rows[-1]
    g = lambda k: last[h.index(k)]
    t = float(g("CurrentTime").split()[-1]) - float(g("StartTime").split()[-1])
    return int(g("SuccessfulCall(C)")), int(g("FailedCall(C)")), int(g("Retransmissions(C)")), t


class Config:
    def __init__(self, label):
        self.label = label
        self.backend = "sled" if label.startswith("sled") else "postgres"
        prefix = "sled" if self.backend == "sled" else "pg"
        self.n = int(label[len(prefix):].split("-")[0])
        self.spread = label.endswith("-spread")


def start(cfg, args, root, pg, db):
    names = ["a", "b", "c", "d", "e"][: cfg.n]
    if cfg.backend == "postgres":
        db.q("DROP TABLE IF EXISTS sipgw_records, sipgw_leases, sipgw_meta, sipgw_nodes")
    members = names if cfg.n > 1 else []
    nodes = [Node(args.binary, root, f"{cfg.label}-{x}".replace("-", "_"), None if cfg.backend == "sled" else pg,
                  members=[f"{cfg.label}-{m}".replace("-", "_") for m in members], shards=SHARDS, ttl_s=TTL_S,
                  extra='[log]\nlevel = "warn"\n')
             for x in names]
    # Settled: every node ready and every shard held by its preferred member
    # (members[s % N], src/store/postgres/leases.rs), so the holders do not
    # move during the steps.
    deadline = time.monotonic() + 6 * TTL_S
    while time.monotonic() < deadline:
        if all(ready(n) for n in nodes):
            if cfg.backend == "sled":
                return nodes, None
            held = {int(s): h for s, h in db.q("SELECT shard, holder FROM sipgw_leases WHERE expires_at > now()")}
            if len(held) == SHARDS and (cfg.n == 1 or all(held[s] == nodes[s % cfg.n].name for s in held)):
                return nodes, held
        time.sleep(0.25)
    raise SystemExit(f"{cfg.label}: the shards did not settle")


def users_for(cfg, nodes, held, count, step):
    """Per node, `count` fresh presentities (never published before)."""
    per = {n.name: [] for n in nodes}
    k = 0
    target = count // len(nodes)
    while any(len(v) < target for v in per.values()) and k < count * 20:
        u = f"s{step}u{k}"
        k += 1
        if cfg.spread or held is None:
            owner = nodes[k % len(nodes)].name
        else:
            owner = held[shard_of(f"sip:{u}@example.com")]
        if len(per[owner]) < target:
            per[owner].append(u)
    return per


def run_step(cfg, nodes, held, rate, args, root, pg, db, step):
    calls = rate * args.seconds
    per_node_calls = calls // len(nodes)
    users = users_for(cfg, nodes, held, calls, step)
    d = os.path.join(root, f"{cfg.label}-{rate}-{step}")
    os.makedirs(d)
    shutil.copy(SCENARIO, d)
    pg_pids = ([pg.proc.pid] + children(pg.proc.pid)) if cfg.backend == "postgres" else []
    node_c0 = [cpu_ticks([n.proc.pid]) for n in nodes]
    pg_c0 = cpu_ticks(pg_pids)
    fwd0 = sum(metric(n, "sipgw_cluster_forwarded_total") for n in nodes)
    db0 = db.counters() if cfg.backend == "postgres" else (0, 0)
    seg0 = pg_segments(pg.port)
    wal0 = db.wal_lsn() if cfg.backend == "postgres" else None
    procs = []
    for i, n in enumerate(nodes):
        inf = os.path.join(d, f"{n.name}.csv")
        with open(inf, "w") as f:
            f.write("SEQUENTIAL\n" + "".join(f"{u};\n" for u in users[n.name]))
        tmo = per_node_calls * 3 // max(1, rate // len(nodes)) + 30
        wd = os.path.join(d, n.name)
        os.makedirs(wd)
        shutil.copy(SCENARIO, wd)
        procs.append(subprocess.Popen(
            ["timeout", "-k", "10", str(tmo + 30), "sipp", f"{n.udp[0]}:{n.udp[1]}", "-sf", "publish.xml",
             "-inf", inf, "-i", "127.0.0.1", "-p", str(free_port()), "-m", str(per_node_calls),
             "-r", str(rate // len(nodes)), "-timeout", f"{tmo}s", "-timeout_error", "-recv_timeout", "10s",
             "-nostdin", "-buff_size", "4194304", "-max_non_invite_retrans", "5",
             "-trace_stat", "-stf", "stat.csv", "-fd", "1", "-trace_err", "-error_file", "errors.log"],
            cwd=wd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    t0 = time.monotonic()
    for p in procs:
        p.wait()
    wall = time.monotonic() - t0
    node_c1 = [cpu_ticks([n.proc.pid]) for n in nodes]
    pg_c1 = cpu_ticks(pg_pids + [c for c in children(pg.proc.pid) if c not in pg_pids]) if pg_pids else 0
    seg1 = pg_segments(pg.port)
    wal = db.wal_since(wal0) if wal0 else None
    db1 = db.counters() if cfg.backend == "postgres" else (0, 0)
    fwd1 = sum(metric(n, "sipgw_cluster_forwarded_total") for n in nodes)
    ok = failed = retrans = 0
    span = 0.0
    for n in nodes:
        o, f_, r, t = sipp_summary(os.path.join(d, n.name, "stat.csv"))
        ok, failed, retrans, span = ok + o, failed + f_, retrans + r, max(span, t)
    per_op = lambda ticks: round(1e6 * ticks / HZ / max(ok, 1))
    row = {
        "config": cfg.label, "rate": rate, "achieved": round(ok / span) if span else 0, "ok": ok,
        "failed": failed, "retrans": retrans, "wall_s": round(wall, 1),
        "node_us_per_op": [per_op(c1 - c0) for c0, c1 in zip(node_c0, node_c1)],
        "node_us_per_op_sum": per_op(sum(node_c1) - sum(node_c0)),
        "pg_us_per_op": per_op(pg_c1 - pg_c0) if pg_pids else None,
        "db_statements_per_op": round((db1[0] - db0[0]) / max(ok, 1), 3) if pg_pids else None,
        "db_commits_per_op": round((db1[1] - db0[1]) / max(ok, 1), 3) if pg_pids else None,
        "db_round_trips_per_op": round((seg1[0] - seg0[0]) / max(ok, 1), 3) if pg_pids else None,
        "db_wal_bytes_per_op": round(wal / max(ok, 1)) if wal is not None else None,
        "forwarded_share": round((fwd1 - fwd0) / max(ok, 1), 3),
        "rss_kb": [rss_kb(n.proc.pid) for n in nodes],
    }
    return row


def idle_rate(db, seconds=10):
    """Statements per second a settled cluster sends with no traffic (lease
    rounds and heartbeats)."""
    s0, c0 = db.counters()
    time.sleep(seconds)
    s1, c1 = db.counters()
    return round((s1 - s0) / seconds, 2), round((c1 - c0) / seconds, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--configs", default="sled1,pg1,pg2,pg3,pg3-spread")
    ap.add_argument("--rates", default="2000,4000,6000,8000,10000,12000,14000,16000")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (SIPp logs, node logs)")
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)
    rates = [int(r) for r in args.rates.split(",")]
    root = work_dir("sipgw-clbench-")
    pg = Postgres(root, settings=("shared_preload_libraries=pg_stat_statements",
                                  "pg_stat_statements.track_utility=on", "pg_stat_statements.max=1000"))
    db = Db(pg)
    db.q("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    rows = []
    idle = {}
    try:
        step = 0
        for rnd in range(args.rounds):
            for label in args.configs.split(","):
                cfg = Config(label)
                nodes, held = start(cfg, args, root, pg, db)
                try:
                    if cfg.backend == "postgres" and rnd == 0 and not cfg.spread:
                        idle[label] = idle_rate(db)
                    if cfg.backend == "postgres":
                        db.q("SELECT pg_stat_statements_reset()")
                    for rate in rates:
                        step += 1
                        row = run_step(cfg, nodes, held, rate, args, root, pg, db, step)
                        row["round"] = rnd + 1
                        print(json.dumps(row), file=sys.stderr, flush=True)
                        rows.append(row)
                        if row["failed"] or row["achieved"] < rate * 0.95:
                            break
                    if cfg.backend == "postgres" and rnd == 0:
                        print(json.dumps({"config": label, "top_statements": db.top()}), file=sys.stderr, flush=True)
                finally:
                    for n in nodes:
                        n.stop()
                time.sleep(1)
    finally:
        pg.stop()
    print("| round | configuration | offered/s | achieved/s | failed | retrans | CPU µs/PUBLISH per node | "
          "nodes' CPU µs/PUBLISH, sum | PostgreSQL CPU µs/PUBLISH | DB statements/PUBLISH | "
          "DB commits/PUBLISH | DB round trips/PUBLISH | WAL bytes/PUBLISH | forwarded |")
    print("|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        na = lambda v: "–" if v is None else v
        print(f"| {r['round']} | {r['config']} | {r['rate']} | {r['achieved']} | {r['failed']} | {r['retrans']} | "
              f"{' / '.join(map(str, r['node_us_per_op']))} | {r['node_us_per_op_sum']} | {na(r['pg_us_per_op'])} | "
              f"{na(r['db_statements_per_op'])} | {na(r['db_commits_per_op'])} | {na(r['db_round_trips_per_op'])} | "
              f"{na(r.get('db_wal_bytes_per_op'))} | "
              f"{r['forwarded_share']:.0%} |")
    print()
    print("Idle cluster (no traffic), statements/s and commits/s sent to PostgreSQL: "
          + ", ".join(f"{k}: {v[0]} / {v[1]}" for k, v in idle.items()))
    if args.keep:
        print(f"work directory kept: {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
