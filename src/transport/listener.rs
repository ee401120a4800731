//! Addresses as `gateway.toml` writes them: SIP listeners and static next
//! hops (`transport:ip:port`). Pure parsing; the configuration refers to
//! these types, the transport layer owns them.

use super::Proto;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A SIP listener address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub transport: Proto,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = match self.transport {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Tls => "tls",
        };
        write!(f, "{t}:{}", self.addr)
    }
}

/// Parses `udp:HOST:PORT` (IPv6 hosts in brackets).
pub fn parse_listener(s: &str) -> Result<Listener, String> {
    let (t, addr) = s.split_once(':').ok_or("expected transport:host:port")?;
    let transport = match t.to_ascii_lowercase().as_str() {
        "udp" => Proto::Udp,
        "tcp" => Proto::Tcp,
        "tls" => Proto::Tls,
        _ => {
            return Err(format!(
                "unknown transport {t:?} (expected udp, tcp or tls)"
            ));
        }
    };
    let addr = addr
        .parse::<SocketAddr>()
        .map_err(|_| format!("{addr:?} is not an IP address and port"))?;
    Ok(Listener { transport, addr })
}

/// A static next hop for a domain (`[sip] routes`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    pub domain: String,
    /// `transport:host:port`.
    pub next_hop: String,
}
