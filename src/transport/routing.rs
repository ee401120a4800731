//! Response routing: the server side of RFC 3261 §18.2.1/§18.2.2 and
//! RFC 3581 (`rport`). Pure functions over the top Via and where the request
//! came from.

use super::{Proto, Source, Target};
use crate::sip::{Host, Message, Param, Via};
use bytestring::ByteString;
use std::net::{IpAddr, SocketAddr};

/// On receipt of a request (§18.2.1): add `received` when the sent-by host
/// is not the source address, and fill an empty `rport` with the source
/// port (RFC 3581 §4, which also makes `received` mandatory then).
pub fn stamp_received(msg: &mut Message, source: &Source) {
    if let Some(via) = msg.top_via().and_then(|top| stamped(top, source)) {
        msg.set_top_via(&via);
    }
}

/// `top` with `received` and `rport` set as `stamp_received` sets them, or
/// `None` when it needs neither.
pub fn stamped(top: &Via, source: &Source) -> Option<Via> {
    let src_ip = source.peer.ip();
    let host_is_source = match &top.host {
        Host::V4(a) => IpAddr::V4(*a) == src_ip,
        Host::V6(a) => IpAddr::V6(*a) == src_ip,
        Host::Domain(_) => false,
    };
    let wants_rport = matches!(top.rport(), Some(None));
    if host_is_source && !wants_rport {
        return None;
    }
    let mut via: Via = top.clone();
    via.params.set(Param::new(
        "received",
        Some(ByteString::from(src_ip.to_string())),
    ));
    if wants_rport {
        via.params.set(Param::new(
            "rport",
            Some(ByteString::from(source.peer.port().to_string())),
        ));
    }
    Some(via)
}

/// Where a response goes (§18.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseTarget {
    /// An address: send there (over `conn` first for streams).
    Direct(Target),
    /// `maddr` names a host that must be resolved first.
    Resolve {
        proto: Proto,
        host: String,
        port: u16,
    },
}

/// The response target for a request whose (already stamped) top Via is
/// `via`, received from `source`.
pub fn response_target(via: &Via, source: &Source) -> ResponseTarget {
    // The response uses the transport the request arrived on: a Via naming
    // TCP on a request that came over UDP has no connection to answer on,
    // and the peer is listening where it sent from.
    let proto = source.proto;
    let sent_by_port = via.port.unwrap_or_else(|| proto.default_port());
    if proto.is_reliable() {
        // Reliable: over the connection the request came in on; if that is
        // closed by then, a new connection to `received` at the sent-by port.
        let ip = via.received().unwrap_or(source.peer.ip());
        let mut t = Target::new(proto, SocketAddr::new(ip, sent_by_port));
        t.conn = source.conn;
        t.server_name = match &via.host {
            Host::Domain(d) => Some(d.to_string()),
            _ => None,
        };
        return ResponseTarget::Direct(t);
    }
    if let Some(maddr) = via.maddr() {
        let port = sent_by_port;
        return match maddr.parse::<IpAddr>() {
            Ok(ip) => ResponseTarget::Direct(Target::new(proto, SocketAddr::new(ip, port))),
            Err(_) => ResponseTarget::Resolve {
                proto,
                host: maddr.to_owned(),
                port,
            },
        };
    }
    let ip = via.received().unwrap_or(source.peer.ip());
    // RFC 3581 §4: rport with a value sends to the source port.
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => sent_by_port,
    };
    ResponseTarget::Direct(Target::new(proto, SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{HeaderName, Method, Uri};

    fn source(peer: &str, proto: Proto) -> Source {
        Source {
            proto,
            peer: peer.parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        }
    }

    fn req(via: &str) -> Message {
        let mut m = Message::request(
            Method::Options,
            Uri::parse_str("sip:gw@example.com").unwrap(),
        );
        m.push_header(HeaderName::Via, via.to_owned());
        m
    }

    #[test]
    fn received_added_for_hostname() {
        let mut m = req("SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds");
        let s = source("192.0.2.1:5060", Proto::Udp);
        stamp_received(&mut m, &s);
        let v = m.top_via().unwrap();
        assert_eq!(v.received(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(
            m.header_value(&HeaderName::Via),
            Some("SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;received=192.0.2.1")
        );
        // §18.2.2: received IP, sent-by port (default 5060).
        assert_eq!(
            response_target(v, &s),
            ResponseTarget::Direct(Target::new(Proto::Udp, "192.0.2.1:5060".parse().unwrap()))
        );
    }

    #[test]
    fn no_received_when_sent_by_is_source() {
        let mut m = req("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1");
        stamp_received(&mut m, &source("192.0.2.1:5070", Proto::Udp));
        assert_eq!(
            m.header_value(&HeaderName::Via),
            Some("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1")
        );
    }

    #[test]
    fn rport_rfc3581() {
        // RFC 3581 §4 example: the request arrives from a NAT'd port.
        let mut m = req(
            "SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bK1, SIP/2.0/UDP x.example.com;branch=z9hG4bK0",
        );
        let s = source("192.0.2.1:9988", Proto::Udp);
        stamp_received(&mut m, &s);
        let v = m.top_via().unwrap();
        assert_eq!(v.rport(), Some(Some(9988)));
        assert_eq!(v.received(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(m.via().len(), 2, "other Via values kept");
        assert_eq!(
            m.header_value(&HeaderName::Via),
            Some(
                "SIP/2.0/UDP 10.1.1.1:4540;rport=9988;branch=z9hG4bK1;received=192.0.2.1, SIP/2.0/UDP x.example.com;branch=z9hG4bK0"
            )
        );
        assert_eq!(
            response_target(v, &s),
            ResponseTarget::Direct(Target::new(Proto::Udp, "192.0.2.1:9988".parse().unwrap()))
        );
    }

    #[test]
    fn maddr_wins_for_udp() {
        let m = req("SIP/2.0/UDP a.example.com:5080;maddr=239.255.255.1;ttl=1;branch=z9hG4bK1");
        let t = response_target(m.top_via().unwrap(), &source("192.0.2.9:5080", Proto::Udp));
        assert_eq!(
            t,
            ResponseTarget::Direct(Target::new(
                Proto::Udp,
                "239.255.255.1:5080".parse().unwrap()
            ))
        );
        let m = req("SIP/2.0/UDP a.example.com;maddr=relay.example.com;branch=z9hG4bK1");
        let t = response_target(m.top_via().unwrap(), &source("192.0.2.9:5080", Proto::Udp));
        assert_eq!(
            t,
            ResponseTarget::Resolve {
                proto: Proto::Udp,
                host: "relay.example.com".into(),
                port: 5060
            }
        );
    }

    #[test]
    fn reliable_uses_the_connection() {
        let mut s = source("192.0.2.7:40000", Proto::Tcp);
        s.conn = Some(crate::transport::ConnId(7));
        let mut m = req("SIP/2.0/TCP client.example.com:5060;branch=z9hG4bK1");
        stamp_received(&mut m, &s);
        let ResponseTarget::Direct(t) = response_target(m.top_via().unwrap(), &s) else {
            panic!()
        };
        assert_eq!(t.conn, Some(crate::transport::ConnId(7)));
        assert_eq!(t.proto, Proto::Tcp);
        // Should the connection be gone: received IP at the sent-by port.
        assert_eq!(t.addr, "192.0.2.7:5060".parse().unwrap());
    }
}
