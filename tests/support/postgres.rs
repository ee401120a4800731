//! A real PostgreSQL server for a test (issue 18): `initdb` in a temporary
//! directory, `postgres` on a loopback ephemeral port, stopped by PID when
//! dropped. Run as the `postgres` user when the tests run as root (the
//! server refuses root).
//!
//! Without PostgreSQL installed the tests that need it say so and return,
//! unless `SIPGW_REQUIRE_POSTGRES=1` (CI sets it): then its absence fails.

use super::TempDir;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PgServer {
    child: Child,
    pub port: u16,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    _dir: TempDir,
}

/// The directory of `initdb` and `postgres`.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !p.is_empty() {
            let p = std::fs::canonicalize(&p).unwrap_or_else(|_| PathBuf::from(&p));
            return p.parent().map(|d| d.to_path_buf());
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

/// `(uid, gid)` to run the server as: the `postgres` user when root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id postgres");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("the postgres user exists when running as root")
    };
    Some((id("-u"), id("-g")))
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn command(bin: &std::path::Path, name: &str, user: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(bin.join(name));
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid);
    }
    c
}

impl PgServer {
    /// A fresh server, or `None` (with a note) if PostgreSQL is not
    /// installed and not required.
    pub fn start() -> Option<PgServer> {
        let Some(bin) = bin_dir() else {
            if std::env::var("SIPGW_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "SIPGW_REQUIRE_POSTGRES=1 but initdb is not installed (apt-get install postgresql)"
                );
            }
            eprintln!("SKIPPED: PostgreSQL is not installed (initdb not found)");
            return None;
        };
        let user = run_as();
        let dir = TempDir::new("pg");
        let data = dir.0.join("data");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir.0, Some(uid), Some(gid)).unwrap();
        }
        // --no-sync only for initdb's own files; the server keeps fsync on,
        // since what is tested is durability.
        let out = command(&bin, "initdb", user)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "gw", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.0.join("postgres.log")).unwrap();
        drop(log);
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.0.join("postgres.log"), Some(uid), Some(gid)).unwrap();
        }
        let child = spawn_server(&bin, user, &dir.0, port);
        let server = PgServer {
            child,
            port,
            bin,
            user,
            _dir: dir,
        };
        server.wait_ready();
        Some(server)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && command(&self.bin, "pg_isready", None)
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            {
                break;
            }
            assert!(Instant::now() < deadline, "postgres did not start in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: every client disconnected) and
    /// starts it again on the same data and port, as an operator's restart
    /// or a database failover looks to the gateway.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_server(&self.bin, self.user, &self._dir.0, self.port);
        self.wait_ready();
    }

    fn stop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown (disconnects clients, then
        // stops cleanly).
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A connection string for database `postgres` as user `gw`.
    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=gw dbname=postgres", self.port)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `postgres` on `dir/data`, logging (appending) to `dir/postgres.log`.
fn spawn_server(
    bin: &std::path::Path,
    user: Option<(u32, u32)>,
    dir: &std::path::Path,
    port: u16,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("postgres.log"))
        .unwrap();
    command(bin, "postgres", user)
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=60",
            "-c",
            "shared_buffers=32MB",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("postgres starts")
}
