//! A damaged, newer or foreign store at startup (design §6, issue 17): the
//! real binary, started on a store built in a temporary directory, never
//! panics and never silently starts empty. A damaged store is moved aside
//! with its bytes and the start refused (exit 3) until the operator allows
//! an empty start; a store of a newer version (exit 4) and a path that is
//! no store (exit 5) are refused and left untouched; damaged records are
//! moved out of an otherwise healthy store into a file (exit 3).

mod support;

use sip_cpim_gateway::store::{Batch, MANIFEST, SledStore, Store, Tree};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_sip-cpim-gateway");

/// Policies in the dump every test starts from.
const RECORDS: usize = 300;

fn config(dir: &TempDir) -> PathBuf {
    let cfg = dir.0.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\nlocal_domains = [\"example.com\"]\nroutes = []\n[cpim]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n",
            store(dir).display()
        ),
    )
    .unwrap();
    cfg
}

fn store(dir: &TempDir) -> PathBuf {
    dir.0.join("store")
}

fn policy_line(i: usize) -> String {
    format!(
        r#"{{"tree":"policies","key":"sip:alice@example.com\nsip:w{i}@example.com","record":{{"action":"allow","presentity":"sip:alice@example.com","watcher":"sip:w{i}@example.com"}}}}"#
    )
}

/// A subcommand on the test's configuration; `env` added.
fn cli(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> Output {
    let cfg = config(dir);
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&cfg)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// How a `run` ended up.
enum Outcome {
    /// It exited before serving: status and stderr.
    Refused(i32, String),
    Served(Running),
}

/// `run` on the test's configuration with `env`: refused, or serving.
fn outcome(dir: &TempDir, env: &[(&str, &str)]) -> Outcome {
    let cfg = config(dir);
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut r = Running(child, rx, Some(errors));
    loop {
        match r.1.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.starts_with("serving") => return Outcome::Served(r),
            Ok(_) => {}
            // stdout closed: the process is exiting.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = r.0.wait().unwrap();
                let stderr = r.2.take().unwrap().join().unwrap();
                assert!(
                    !stderr.contains("panicked"),
                    "a refusal, not a panic:\n{stderr}"
                );
                return Outcome::Refused(status.code().expect("exited, not killed"), stderr);
            }
            Err(e) => panic!("neither serving nor exiting: {e}"),
        }
    }
}

/// `run` on the test's configuration, expected to refuse: its status and
/// stderr. No test here ever sees a gateway serve on a damaged store.
fn refused_run(dir: &TempDir) -> (i32, String) {
    refused_with(dir, &[])
}

fn refused_with(dir: &TempDir, env: &[(&str, &str)]) -> (i32, String) {
    match outcome(dir, env) {
        Outcome::Refused(code, stderr) => (code, stderr),
        Outcome::Served(_) => panic!("the gateway served"),
    }
}

/// The one line `main` prints about the refusal (the last line of stderr;
/// the error-level log lines come before it).
fn last_line(stderr: &str) -> &str {
    stderr.trim_end().lines().last().unwrap_or("")
}

/// A store of [`RECORDS`] policies, written by `import` and closed cleanly.
fn populated(dir: &TempDir) {
    let mut dump =
        String::from(r#"{"format":"sip-cpim-gateway-export","version":1,"exported_at_ms":1}"#);
    dump.push('\n');
    for i in 0..RECORDS {
        dump.push_str(&policy_line(i));
        dump.push('\n');
    }
    let file = dir.0.join("dump.jsonl");
    std::fs::write(&file, dump).unwrap();
    let out = cli(dir, &["import", "--input", file.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes one raw value into the (stopped) store, through the library.
fn put_raw(dir: &TempDir, tree: Tree, key: &[u8], value: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = SledStore::open(&store(dir)).unwrap();
        let mut b = Batch::default();
        b.put(tree, key.to_vec(), value.to_vec());
        s.commit(b).await.unwrap();
        s.close().await.unwrap();
    });
}

/// Every file below `dir` by relative path, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, at: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(at).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The `store.corrupt-*` directories and files beside the store.
fn asides(dir: &TempDir) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("store.corrupt-")
        })
        .collect();
    v.sort();
    v
}

/// A running gateway (its stdout lines, its stderr being read), killed if
/// a test fails.
struct Running(
    Child,
    std::sync::mpsc::Receiver<String>,
    Option<std::thread::JoinHandle<String>>,
);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `run` with `env`, expected to serve.
fn serving(dir: &TempDir, env: &[(&str, &str)]) -> Running {
    match outcome(dir, env) {
        Outcome::Served(r) => r,
        Outcome::Refused(code, stderr) => panic!("refused ({code}): {stderr}"),
    }
}

/// SIGTERM (a clean stop), or SIGKILL (a crash); waits for the exit.
fn stop(mut r: Running, signal: &str) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args([signal, &r.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = r.0.try_wait().unwrap() {
            if signal == "-TERM" && !st.success() {
                let stderr = r.2.take().map(|t| t.join().unwrap()).unwrap_or_default();
                eprintln!("exit {st} after SIGTERM:\n{stderr}");
            }
            return st;
        }
        assert!(Instant::now() < deadline, "no exit within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many policies `export` finds.
fn exported_policies(dir: &TempDir) -> usize {
    let out = cli(dir, &["export"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(r#""tree":"policies""#))
        .count()
}

/// After a damaged store was moved aside: a plain restart is refused as
/// well (no restart loop ends in an empty gateway); the operator's
/// `start_after_corruption` starts an empty store; the aside copy stays.
fn refused_until_allowed(dir: &TempDir) {
    let (code, stderr) = refused_run(dir);
    assert_eq!(code, 3, "{stderr}");
    let line = last_line(&stderr);
    assert!(
        line.contains("missing, and") && line.contains("store.corrupt-"),
        "{line}"
    );
    let asides_before = asides(dir);
    let r = serving(dir, &[("GATEWAY__STORE__START_AFTER_CORRUPTION", "true")]);
    assert!(stop(r, "-TERM").success());
    assert_eq!(asides(dir), asides_before, "the aside copy is kept");
    assert_eq!(exported_policies(dir), 0, "the operator's empty start");
}

/// Case 1: a sled file cut to a few bytes while the gateway was stopped.
#[test]
fn truncated_file_is_moved_aside_and_refused() {
    for (file, keep) in [("db", 16u64), ("conf", 3)] {
        let dir = TempDir::new("trunc");
        populated(&dir);
        let path = store(&dir).join(file);
        let before = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(keep)
            .unwrap();
        let damaged = snapshot(&store(&dir));
        let (code, stderr) = refused_run(&dir);
        assert_eq!(code, 3, "{stderr}");
        let line = last_line(&stderr);
        assert!(
            line.contains(&format!(
                "damaged ({file}: {keep} bytes, {before} at the last clean stop)"
            )) && line.contains("moved aside to ")
                && line.contains(&store(&dir).display().to_string()),
            "{line}"
        );
        assert!(
            stderr.contains("ERROR") && stderr.contains("moved aside"),
            "logged at error level: {stderr}"
        );
        // Moved aside with its bytes as they were; nothing left in place.
        let aside = asides(&dir);
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(snapshot(&aside[0]), damaged);
        assert!(!store(&dir).exists());
        refused_until_allowed(&dir);
    }
}

/// Case 2: random bytes over the store's files. After a clean stop they
/// are found before sled reads them (the aside copy has exactly those
/// bytes); after a crash sled has to read them, and its failures (errors,
/// panics, a silently shortened log) all end in the same refusal.
#[test]
fn random_bytes_are_moved_aside_and_refused() {
    let mut seed = 0x5eed_u64;
    let mut noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    // After a clean stop: every sled file overwritten, same length.
    let dir = TempDir::new("noise");
    populated(&dir);
    for (name, bytes) in snapshot(&store(&dir)) {
        if name != MANIFEST {
            std::fs::write(store(&dir).join(&name), noise(bytes.len())).unwrap();
        }
    }
    let damaged = snapshot(&store(&dir));
    let (code, stderr) = refused_run(&dir);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        last_line(&stderr).contains("contents changed since the last clean stop"),
        "{stderr}"
    );
    let aside = asides(&dir);
    assert_eq!(snapshot(&aside[0]), damaged, "bytes as they were");
    refused_until_allowed(&dir);

    // After a crash (SIGKILL: no clean-stop stamps): noise over the log
    // at several places, as a failing disk leaves it. Noise over a part of
    // the log sled no longer needs loses nothing, and then the gateway may
    // serve, with every record; otherwise it refuses.
    let mut refusals = 0;
    for round in 0..4usize {
        let dir = TempDir::new("noise-crash");
        populated(&dir);
        let r = serving(&dir, &[]);
        assert!(!stop(r, "-KILL").success());
        let db = store(&dir).join("db");
        let mut bytes = std::fs::read(&db).unwrap();
        // The log's written part (the rest of its segment is zeros).
        let len = bytes
            .iter()
            .rposition(|b| *b != 0)
            .map_or(bytes.len(), |p| p + 1);
        let at = [0, len / 3, len / 2, len.saturating_sub(64)][round];
        let n = [bytes.len(), 512, 512, 64][round].min(bytes.len() - at);
        bytes[at..at + n].copy_from_slice(&noise(n));
        std::fs::write(&db, &bytes).unwrap();
        match outcome(&dir, &[]) {
            Outcome::Refused(code, stderr) => {
                assert_eq!(code, 3, "round {round}: {stderr}");
                assert!(last_line(&stderr).contains("damaged ("), "{stderr}");
                assert_eq!(asides(&dir).len(), 1, "round {round}");
                assert!(!store(&dir).exists());
                eprintln!("round {round}: refused: {}", last_line(&stderr));
                refusals += 1;
            }
            Outcome::Served(r) => {
                assert!(stop(r, "-TERM").success());
                assert_eq!(
                    exported_policies(&dir),
                    RECORDS,
                    "round {round}: nothing lost"
                );
                eprintln!("round {round}: served, with every record");
            }
        }
    }
    assert!(refusals >= 1, "a log that is all noise is refused");
}

/// Case 3: a store written by a newer version. Refused, and not moved
/// aside or changed: it is not damaged, and the newer version still needs
/// it.
#[test]
fn newer_store_is_refused_untouched() {
    // A newer store format: refused before sled opens anything.
    let dir = TempDir::new("newer");
    populated(&dir);
    let m = store(&dir).join(MANIFEST);
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, text.replace("\"format\": 1", "\"format\": 2")).unwrap();
    let before = snapshot(&store(&dir));
    let (code, stderr) = refused_run(&dir);
    assert_eq!(code, 4, "{stderr}");
    let line = last_line(&stderr);
    assert!(
        line.contains("written by a newer version (store format 2")
            && line.contains("left untouched"),
        "{line}"
    );
    assert_eq!(snapshot(&store(&dir)), before, "byte for byte");
    assert!(asides(&dir).is_empty());
    // `start_after_corruption` does not apply: it is not damaged.
    let (code, _) = refused_with(&dir, &[("GATEWAY__STORE__START_AFTER_CORRUPTION", "true")]);
    assert_eq!(code, 4);
    assert_eq!(snapshot(&store(&dir)), before);

    // A record with a newer version byte in a store of this format.
    let dir = TempDir::new("newer-record");
    populated(&dir);
    let newer = vec![0x03, 0x01, 0x02, 0x03];
    let key = b"sip:a@example.com\nsip:a@h";
    put_raw(&dir, Tree::Registrations, key, &newer);
    let (code, stderr) = refused_run(&dir);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        last_line(&stderr).contains("record version 0x03 in registrations"),
        "{stderr}"
    );
    assert!(asides(&dir).is_empty());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = SledStore::open(&store(&dir)).unwrap();
        assert_eq!(s.get(Tree::Registrations, key).unwrap(), Some(newer));
        assert_eq!(s.scan(Tree::Policies).unwrap().len(), RECORDS);
        s.close().await.unwrap();
    });
}

/// Case 4: `[store] path` names something that is not a store.
#[test]
fn foreign_path_is_refused_untouched() {
    let dir = TempDir::new("foreign");
    std::fs::create_dir_all(store(&dir)).unwrap();
    std::fs::write(store(&dir).join("accounts.csv"), b"alice,1\n").unwrap();
    std::fs::create_dir_all(store(&dir).join("photos")).unwrap();
    let before = snapshot(&store(&dir));
    let (code, stderr) = refused_run(&dir);
    assert_eq!(code, 5, "{stderr}");
    let line = last_line(&stderr);
    assert!(
        line.contains(
            "not a sip-cpim-gateway store (a directory holding other files: accounts.csv, photos)"
        ) && line.contains("left untouched"),
        "{line}"
    );
    assert_eq!(snapshot(&store(&dir)), before);
    assert_eq!(std::fs::read_dir(store(&dir)).unwrap().count(), 2);
    assert!(asides(&dir).is_empty());

    let dir = TempDir::new("foreign-file");
    std::fs::write(store(&dir), b"not a directory").unwrap();
    let (code, stderr) = refused_run(&dir);
    assert_eq!(code, 5, "{stderr}");
    assert!(
        last_line(&stderr).contains("a file, not a directory"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(store(&dir)).unwrap(), b"not a directory");
}

/// A record that does not decode, in an otherwise healthy store: moved
/// out into a file (its bytes in hex), the start refused until allowed;
/// the healthy records stay and load.
#[test]
fn damaged_record_is_moved_aside_and_refused() {
    let dir = TempDir::new("record");
    populated(&dir);
    let key = b"sip:alice@example.com\nsip:broken@example.com".to_vec();
    // Version 1, then a string length far beyond the value.
    let bad = vec![0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, b'x'];
    put_raw(&dir, Tree::Policies, &key, &bad);
    let (code, stderr) = refused_run(&dir);
    assert_eq!(code, 3, "{stderr}");
    let line = last_line(&stderr);
    assert!(
        line.contains(r#"1 damaged record(s) (policies key "sip:alice@example.com\nsip:broken@example.com": corrupt record in policies: postcard"#)
            && line.contains(".records.jsonl; refusing to start without them"),
        "{line}"
    );
    let aside = asides(&dir);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].to_string_lossy().ends_with(".records.jsonl"));
    let moved: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&aside[0]).unwrap().trim()).unwrap();
    assert_eq!(moved["tree"], "policies");
    assert_eq!(moved["key"], String::from_utf8(key.clone()).unwrap());
    let hex: String = bad.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(moved["value_hex"], hex, "the record's bytes");
    // Refused again at the next start: nothing silently goes missing.
    let (code, stderr) = refused_run(&dir);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        last_line(&stderr).contains("1 damaged record(s)"),
        "{stderr}"
    );
    // Allowed: starts with every healthy record, and says so only once.
    let r = serving(&dir, &[("GATEWAY__STORE__START_AFTER_CORRUPTION", "true")]);
    assert!(stop(r, "-TERM").success());
    assert_eq!(exported_policies(&dir), RECORDS);
    let r = serving(&dir, &[]);
    assert!(stop(r, "-TERM").success());
}

/// The clean path: a store stopped cleanly, and one killed, start again
/// with everything in them.
#[test]
fn healthy_store_starts_after_clean_and_unclean_stops() {
    let dir = TempDir::new("healthy");
    populated(&dir);
    let r = serving(&dir, &[]);
    assert!(stop(r, "-TERM").success());
    let r = serving(&dir, &[]);
    assert!(!stop(r, "-KILL").success());
    let r = serving(&dir, &[]);
    assert!(stop(r, "-TERM").success());
    assert_eq!(exported_policies(&dir), RECORDS);
    assert!(asides(&dir).is_empty());
}
