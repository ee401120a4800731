//! Via (RFC 3261 §20.42, §18.2.1; RFC 3581 rport) and its transport.

use super::decode::{comma_list, decode_with};
use crate::sip::error::ValueError;
use crate::sip::grammar::{self as g, In, PResult, fail, peek_sep, sep, token};
use crate::sip::params::{Param, Params, header_params};
use crate::sip::uri::{Host, host};
use bytestring::ByteString;
use nom::Parser;
use nom::bytes::complete::take_while1;
use std::fmt;

/// The transport of a Via header or a `transport=` parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Sctp,
    Ws,
    Wss,
    Other(ByteString),
}

impl Transport {
    pub fn parse(s: &str) -> Transport {
        match s.to_ascii_uppercase().as_str() {
            "UDP" => Transport::Udp,
            "TCP" => Transport::Tcp,
            "TLS" => Transport::Tls,
            "SCTP" => Transport::Sctp,
            "WS" => Transport::Ws,
            "WSS" => Transport::Wss,
            _ => Transport::Other(ByteString::from(s.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
            Transport::Other(s) => s,
        }
    }

    /// RFC 3261 §17.1.1.1: reliable transports set no retransmit timers.
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Default port (RFC 3261 §19.1.2).
    pub fn default_port(&self) -> u16 {
        match self {
            Transport::Tls | Transport::Wss => 5061,
            _ => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `protocol-name "/" protocol-version`, normally `SIP/2.0`.
    pub protocol: ByteString,
    pub transport: Transport,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

/// RFC 3261 §8.1.1.7: branches of RFC 3261 elements start with this.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

impl Via {
    pub fn new(transport: Transport, host: Host, port: Option<u16>, branch: &str) -> Via {
        let mut params = Params::default();
        params.push(Param::new(
            "branch",
            Some(ByteString::from(branch.to_owned())),
        ));
        Via {
            protocol: ByteString::from_static("SIP/2.0"),
            transport,
            host,
            port,
            params,
        }
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.get("branch").flatten()
    }

    /// The branch when it carries the RFC 3261 magic cookie (and more than
    /// the cookie itself, RFC 4475 §3.2.1).
    pub fn rfc3261_branch(&self) -> Option<&str> {
        self.branch()
            .filter(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }

    pub fn received(&self) -> Option<std::net::IpAddr> {
        self.params
            .get("received")
            .flatten()
            .and_then(|v| v.parse().ok())
    }

    /// `None` absent, `Some(None)` present without value (RFC 3581 request).
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }

    pub fn maddr(&self) -> Option<&str> {
        self.params.get("maddr").flatten()
    }

    pub fn ttl(&self) -> Option<u8> {
        self.params
            .get("ttl")
            .flatten()
            .and_then(|v| v.parse().ok())
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.protocol, self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

fn via_parm<'a>(src: &ByteString) -> impl Fn(In<'a>) -> PResult<'a, Via> + '_ {
    move |i| {
        let start = i;
        let (i, name) = g::expect("expected a protocol name", token)(i)?;
        let (i, _) = sep(b'/')(i)?;
        let (i, version) = g::expect("expected a protocol version", token)(i)?;
        let (i, _) = sep(b'/')(i)?;
        let (i, transport) = g::expect("expected a transport", token)(i)?;
        let (i, ws) = take_while1::<_, _, g::GrammarError>(g::is_wsp)
            .parse(i)
            .map_err(|_| {
                nom::Err::Error(g::GrammarError {
                    at: i,
                    reason: "expected whitespace before sent-by",
                })
            })?;
        let _ = ws;
        let (i, h) = host(src)(i)?;
        let (i, port) = if peek_sep(i, b':') {
            let (i, _) = sep(b':')(i)?;
            let (i, p) = g::decimal(65535, "expected a port number")(i)?;
            (i, Some(p as u16))
        } else {
            (i, None)
        };
        let (i, params) = header_params(src)(i)?;
        // Typed checks of the parameters RFC 3261 §20.42 defines.
        for p in params.iter() {
            let v = p.value.as_deref();
            let ok = match p.name.to_ascii_lowercase().as_str() {
                "ttl" => v.is_some_and(|v| v.len() <= 3 && v.parse::<u8>().is_ok()),
                "received" => v.is_some_and(|v| v.parse::<std::net::IpAddr>().is_ok()),
                "rport" => v.is_none_or(|v| v.parse::<u16>().is_ok()),
                "branch" | "maddr" => v.is_some_and(|v| !v.is_empty()),
                _ => true,
            };
            if !ok {
                return fail(start, "invalid Via parameter value");
            }
        }
        let protocol = if name == b"SIP" && version == b"2.0" {
            ByteString::from_static("SIP/2.0")
        } else {
            ByteString::from(format!(
                "{}/{}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(version)
            ))
        };
        let transport = Transport::parse(std::str::from_utf8(transport).unwrap_or(""));
        Ok((
            i,
            Via {
                protocol,
                transport,
                host: h,
                port,
                params,
            },
        ))
    }
}

/// `Via: via-parm *( COMMA via-parm )`.
pub fn decode_via(src: &ByteString) -> Result<Vec<Via>, ValueError> {
    decode_with(src, comma_list(via_parm(src)))
}

/// Port of a `sent-by` or host with default; used by response routing.
pub fn sent_by_port(via: &Via) -> u16 {
    via.port.unwrap_or_else(|| via.transport.default_port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::headers::decode::bs;

    #[test]
    fn via_with_spaces_and_params() {
        let v = decode_via(&bs("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239")).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].transport, Transport::Tcp);
        assert_eq!(v[0].host, Host::Domain(bs("spindle.example.com")));
        assert_eq!(v[0].branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(v[1].host, Host::V4("192.168.255.111".parse().unwrap()));
        assert_eq!(
            v[1].to_string(),
            "SIP/2.0/UDP 192.168.255.111;branch=z9hG4bK30239"
        );
    }

    #[test]
    fn via_params_typed() {
        let v = &decode_via(&bs("SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKabc;received=192.0.2.1;rport;ttl=16;maddr=224.2.0.1")).unwrap()[0];
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.received(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.ttl(), Some(16));
        assert_eq!(v.maddr(), Some("224.2.0.1"));
        assert_eq!(v.rfc3261_branch(), Some("z9hG4bKabc"));
        assert!(decode_via(&bs("SIP/2.0/UDP h;ttl=300")).is_err());
        assert!(decode_via(&bs("SIP/2.0/UDP h;received=nohost")).is_err());
        assert!(decode_via(&bs("SIP/2.0/UDP 192.0.2.15;;,;,,")).is_err());
    }
}
