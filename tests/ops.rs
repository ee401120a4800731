//! Operating the gateway (issue 7): the release binary started on the
//! bundled `gateway.toml` in a temporary directory (listeners and store
//! path overridden by `GATEWAY__…` variables), its `/healthz`, `/readyz`
//! and `/metrics`, SIGTERM → exit 0 with the store flushed, `export` /
//! `import`, and `healthcheck`.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{TempDir, Ua, parse_exposition, pidf, series};

const BIN: &str = env!("CARGO_BIN_EXE_sip-cpim-gateway");

fn http_client() -> reqwest::Client {
    // reqwest is built without a TLS provider of its own (plain HTTP here).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn bundled_config() -> String {
    format!("{}/gateway.toml", env!("CARGO_MANIFEST_DIR"))
}

/// The variables every process of a test shares: ephemeral loopback
/// ports, the store in the temporary directory.
fn env(dir: &TempDir) -> Vec<(&'static str, String)> {
    vec![
        (
            "GATEWAY__SIP__LISTEN",
            r#"["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]"#.into(),
        ),
        ("GATEWAY__CPIM__LISTEN", "127.0.0.1:0".into()),
        (
            "GATEWAY__STORE__PATH",
            dir.0.join("store").display().to_string(),
        ),
        ("GATEWAY__PRESENCE__DEFAULT_POLICY", "allow".into()),
        ("RUST_LOG", "warn".into()),
    ]
}

/// Runs a one-shot subcommand on the bundled configuration in `dir`.
fn cli(dir: &TempDir, args: &[&str]) -> std::process::Output {
    let config = bundled_config();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", config.as_str()]);
    Command::new(BIN)
        .current_dir(&dir.0)
        .args(all)
        .envs(env(dir))
        .output()
        .unwrap()
}

struct Running {
    child: Child,
    done: bool,
    udp: SocketAddr,
    http: SocketAddr,
    stdout: std::sync::mpsc::Receiver<String>,
}

/// Starts `sip-cpim-gateway run --config gateway.toml` and reads the
/// addresses it prints.
fn start(dir: &TempDir) -> Running {
    let mut child = Command::new(BIN)
        .current_dir(&dir.0)
        .args(["run", "--config", &bundled_config()])
        .envs(env(dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary starts");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut udp, mut http) = (None, None);
    while udp.is_none() || http.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("startup lines within 20 s");
        if let Some(a) = line.strip_prefix("SIP listening: udp:") {
            udp = Some(a.parse().unwrap());
        } else if let Some(a) = line.strip_prefix("CPIM HTTP listening: ") {
            http = Some(a.parse().unwrap());
        }
    }
    Running {
        child,
        done: false,
        udp: udp.unwrap(),
        http: http.unwrap(),
        stdout: rx,
    }
}

/// A failing test does not leave its gateway behind.
impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends SIGTERM and waits (bounded) for the exit status.
fn terminate(mut r: Running) -> (std::process::ExitStatus, Vec<String>) {
    let ok = Command::new("kill")
        .args(["-TERM", &r.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = r.child.try_wait().unwrap() {
            r.done = true;
            let rest: Vec<String> = r.stdout.try_iter().collect();
            return (st, rest);
        }
        assert!(Instant::now() < deadline, "no exit within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn metrics(http: &reqwest::Client, addr: SocketAddr) -> HashMap<String, f64> {
    let r = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    parse_exposition(&r.text().await.unwrap())
}

fn publish(call_id: &str) -> String {
    let body = pidf(
        "pres:ops@example.com",
        "t1",
        "open",
        "on duty",
        "2026-12-02T10:00:00Z",
    );
    format!(
        "PUBLISH sip:ops@example.com SIP/2.0\r\nVia: {{via}}\r\nMax-Forwards: 70\r\nFrom: <sip:ops@example.com>;tag=p1\r\nTo: <sip:ops@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\n\r\n{body}"
    )
}

#[tokio::test]
async fn health_readiness_metrics_and_graceful_stop() {
    let dir = TempDir::new("ops");
    let r = start(&dir);
    let http = http_client();

    let h = http
        .get(format!("http://{}/healthz", r.http))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    assert_eq!(h.text().await.unwrap(), "ok\n");
    let ready = http
        .get(format!("http://{}/readyz", r.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "started": true, "store": true})
    );

    let before = metrics(&http, r.http).await;
    let received = r#"sipgw_sip_requests_received_total{method="PUBLISH"}"#;
    let sent_200 = r#"sipgw_sip_responses_sent_total{method="PUBLISH",code="200"}"#;
    assert_eq!(series(&before, "sipgw_publications_active"), 0.0);
    assert_eq!(
        series(&before, r#"sipgw_subscriptions_active{kind="local"}"#),
        0.0
    );
    assert!(before.contains_key(r#"sipgw_sip_transactions_in_flight{kind="server"}"#));

    // One PUBLISH: the counters move by exactly one, the level follows.
    let ua = Ua::new(r.udp).await;
    let resp = ua.request(&publish("ops-1"), &mut Vec::new()).await;
    assert_eq!(resp.status(), Some(200));
    let after = metrics(&http, r.http).await;
    assert_eq!(series(&after, received) - series(&before, received), 1.0);
    assert_eq!(series(&after, sent_200) - series(&before, sent_200), 1.0);
    assert_eq!(series(&after, "sipgw_publications_active"), 1.0);
    assert!(
        series(&after, "sipgw_store_flush_seconds_count")
            > series(&before, "sipgw_store_flush_seconds_count"),
        "the PUBLISH was made durable by a group commit"
    );
    assert!(series(&after, "sipgw_store_batches_total") >= 1.0);
    assert!(
        series(
            &after,
            r#"sipgw_http_requests_total{route="/metrics",status="200"}"#
        ) >= 1.0
    );

    // SIGTERM: exit 0, the store flushed (the PUBLISH is in it).
    let (status, lines) = terminate(r);
    assert!(status.success(), "exit status {status:?}");
    assert!(
        lines.iter().any(|l| l == "stopped: store flushed"),
        "{lines:?}"
    );
    let out = cli(&dir, &["export"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8(out.stdout).unwrap();
    let publication = dump
        .lines()
        .find(|l| l.starts_with(r#"{"tree":"publications""#))
        .expect("the publication survived the stop");
    assert!(publication.contains("sip:ops@example.com"), "{publication}");
    assert!(publication.contains("on duty"), "{publication}");
}

#[test]
fn export_import_move_a_store_and_healthcheck_reports() {
    let dir = TempDir::new("ops-backup");
    // Nothing to export yet.
    let out = cli(&dir, &["export"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store at"));

    // A gateway holds a publication; `healthcheck` sees it up, then down.
    let r = start(&dir);
    let health = |dir: &TempDir, http: SocketAddr| {
        Command::new(BIN)
            .current_dir(&dir.0)
            .args(["healthcheck", "--config", &bundled_config()])
            .envs(env(dir))
            .env("GATEWAY__CPIM__LISTEN", http.to_string())
            .output()
            .unwrap()
    };
    assert!(health(&dir, r.http).status.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let udp = r.udp;
    let code = rt.block_on(async move {
        let ua = Ua::new(udp).await;
        ua.request(&publish("ops-2"), &mut Vec::new())
            .await
            .status()
    });
    assert_eq!(code, Some(200));
    // The store is locked while the gateway runs: export says so.
    let locked = cli(&dir, &["export"]);
    assert_eq!(locked.status.code(), Some(1));
    let http = r.http;
    let (status, _) = terminate(r);
    assert!(status.success());
    let down = health(&dir, http);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).starts_with("unhealthy:"));

    let dump = dir.0.join("dump.jsonl");
    let out = cli(&dir, &["export", "--output", dump.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "exported 1 records"
    );

    // Into a second, empty store: then a gateway on it serves the state.
    let other = TempDir::new("ops-restore");
    std::fs::create_dir_all(other.0.join("store")).unwrap();
    let import = |force: bool| {
        let mut c = Command::new(BIN);
        c.current_dir(&other.0)
            .args(["import", "--config", &bundled_config(), "--input"])
            .arg(&dump)
            .envs(env(&other));
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let first = import(false);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = import(false);
    assert_eq!(again.status.code(), Some(1), "refuses a non-empty store");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds 1 records"));
    assert!(import(true).status.success());

    let r = start(&other);
    let http = r.http;
    let doc = rt.block_on(async move {
        http_client()
            .get(format!(
                "http://{http}/cpim/v1/presence/pres:ops@example.com"
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(doc.contains("on duty"), "{doc}");
    let (status, _) = terminate(r);
    assert!(status.success());
}
