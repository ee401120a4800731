//! The real gateway binary as a child process, configured by a TOML text,
//! with the listener addresses it prints on stdout.

use super::TempDir;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

pub struct GatewayProcess {
    pub child: Child,
    pub udp: SocketAddr,
    pub http: SocketAddr,
}

/// Starts `sip-cpim-gateway run` on `config` (written into `dir`, named
/// `name`) and waits for its listeners.
pub fn spawn(dir: &TempDir, name: &str, config: &str) -> GatewayProcess {
    let cfg = dir.0.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sip-cpim-gateway"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env(
            "RUST_LOG",
            std::env::var("GATEWAY_TEST_LOG").unwrap_or("warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(if std::env::var("GATEWAY_TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut udp, mut http) = (None, None);
    while udp.is_none() || http.is_none() {
        let line = lines.next().expect("gateway prints its listeners").unwrap();
        if let Some(a) = line.strip_prefix("SIP listening: udp:") {
            udp = Some(a.parse().unwrap());
        } else if let Some(a) = line.strip_prefix("CPIM HTTP listening: ") {
            http = Some(a.parse().unwrap());
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    GatewayProcess {
        child,
        udp: udp.unwrap(),
        http: http.unwrap(),
    }
}

impl GatewayProcess {
    /// SIGKILL: no graceful shutdown, no final flush, leases not given back.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
