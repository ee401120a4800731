//! Next-hop resolution for requests the gateway sends: static routes from
//! `gateway.toml` first, then RFC 3263 §4 (NAPTR → SRV → A/AAAA) through
//! hickory-resolver.

use super::{Proto, StaticRoute, Target, TransportError, parse_listener};
use crate::sip::{Host, Scheme, Uri};
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::{RData, RecordType};
use std::net::{IpAddr, SocketAddr};
use tokio::sync::OnceCell;

/// Resolves a URI to an ordered list of targets to try.
pub struct Resolver {
    routes: Vec<(String, Target)>,
    /// Created on first use: a gateway with only static routes never reads
    /// the system resolver configuration.
    dns: OnceCell<Option<TokioResolver>>,
}

impl Resolver {
    /// `routes` maps a domain (case-insensitive, exact) to `transport:ip:port`.
    pub fn new(routes: &[StaticRoute]) -> Result<Resolver, String> {
        let mut out = Vec::with_capacity(routes.len());
        for r in routes {
            let l =
                parse_listener(&r.next_hop).map_err(|e| format!("route for {}: {e}", r.domain))?;
            out.push((
                r.domain.to_ascii_lowercase(),
                Target::new(l.transport, l.addr),
            ));
        }
        Ok(Resolver {
            routes: out,
            dns: OnceCell::new(),
        })
    }

    /// The static routes for a domain, in configuration order: the first
    /// is the primary next hop, the others its backups, tried in turn when
    /// it fails (RFC 3263 §4.3, as for the targets of an SRV set).
    pub fn static_routes(&self, domain: &str) -> Vec<Target> {
        self.routes
            .iter()
            .filter(|(d, _)| d.eq_ignore_ascii_case(domain))
            .map(|(_, t)| t.clone())
            .collect()
    }

    async fn dns(&self) -> Result<&TokioResolver, TransportError> {
        let r = self
            .dns
            .get_or_init(|| async {
                match TokioResolver::builder_tokio().and_then(|b| b.build()) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "no DNS resolver available");
                        None
                    }
                }
            })
            .await;
        r.as_ref()
            .ok_or_else(|| TransportError::Resolve("dns".into(), "no resolver configured".into()))
    }

    /// RFC 3263 §4: targets for a SIP URI, in the order to try them.
    pub async fn resolve(&self, uri: &Uri) -> Result<Vec<Target>, TransportError> {
        let host = match uri.params.get("maddr").flatten() {
            Some(m) => m.to_owned(),
            None => match &uri.host {
                Some(Host::Domain(d)) => d.to_string(),
                Some(Host::V4(a)) => a.to_string(),
                Some(Host::V6(a)) => a.to_string(),
                None => {
                    return Err(TransportError::Resolve(
                        uri.to_string(),
                        "URI has no host".into(),
                    ));
                }
            },
        };
        let secure = uri.scheme == Scheme::Sips;
        let explicit = uri.transport_param().and_then(|t| match t.as_str() {
            "udp" => Some(Proto::Udp),
            "tcp" if secure => Some(Proto::Tls),
            "tcp" => Some(Proto::Tcp),
            "tls" => Some(Proto::Tls),
            _ => None,
        });
        let routed = self.static_routes(&host);
        if !routed.is_empty() {
            return Ok(routed);
        }
        let default_proto = if secure { Proto::Tls } else { Proto::Udp };
        let named = |proto: Proto, addr: SocketAddr| Target {
            proto,
            addr,
            server_name: Some(host.clone()),
            conn: None,
        };
        // §4.1/§4.2: a numeric host or an explicit port skips NAPTR and SRV.
        if let Ok(ip) = host.parse::<IpAddr>() {
            let proto = explicit.unwrap_or(default_proto);
            let port = uri.port.unwrap_or_else(|| proto.default_port());
            return Ok(vec![named(proto, SocketAddr::new(ip, port))]);
        }
        let dns = self.dns().await?;
        if let Some(port) = uri.port {
            let proto = explicit.unwrap_or(default_proto);
            return self.addresses(dns, &host, port, proto, &named).await;
        }
        // §4.1: NAPTR for the transport when none is given.
        let mut srv_names: Vec<(Proto, String)> = Vec::new();
        if let Some(p) = explicit {
            srv_names.push((p, srv_name(p, &host)));
        } else {
            if let Ok(l) = dns.lookup(host.as_str(), RecordType::NAPTR).await {
                let mut naptr: Vec<_> = l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::NAPTR(n) => Some(n.clone()),
                        _ => None,
                    })
                    .collect();
                naptr.sort_by_key(|n| (n.order, n.preference));
                for n in naptr {
                    let proto = match n.services.to_ascii_uppercase().as_slice() {
                        b"SIP+D2U" if !secure => Proto::Udp,
                        b"SIP+D2T" if !secure => Proto::Tcp,
                        b"SIPS+D2T" => Proto::Tls,
                        _ => continue,
                    };
                    srv_names.push((proto, n.replacement.to_ascii()));
                }
            }
            if srv_names.is_empty() {
                // §4.1: no NAPTR — try SRV for each supported transport.
                if secure {
                    srv_names.push((Proto::Tls, srv_name(Proto::Tls, &host)));
                } else {
                    for p in [Proto::Udp, Proto::Tcp, Proto::Tls] {
                        srv_names.push((p, srv_name(p, &host)));
                    }
                }
            }
        }
        // §4.2: SRV, then A/AAAA of each target in priority order.
        let mut out = Vec::new();
        for (proto, name) in &srv_names {
            let Ok(l) = dns.lookup(name.as_str(), RecordType::SRV).await else {
                continue;
            };
            let mut srv: Vec<_> = l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            // Weights are honoured only as a stable tie-break (heavier first).
            srv.sort_by_key(|s| (s.priority, std::cmp::Reverse(s.weight)));
            for s in srv {
                let target = s.target.to_ascii();
                if let Ok(mut a) = self
                    .addresses(dns, target.trim_end_matches('.'), s.port, *proto, &named)
                    .await
                {
                    out.append(&mut a);
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
        // §4.2: no SRV — A/AAAA of the host with the default port.
        let proto = explicit.unwrap_or(default_proto);
        self.addresses(dns, &host, proto.default_port(), proto, &named)
            .await
    }

    async fn addresses(
        &self,
        dns: &TokioResolver,
        host: &str,
        port: u16,
        proto: Proto,
        named: &impl Fn(Proto, SocketAddr) -> Target,
    ) -> Result<Vec<Target>, TransportError> {
        let ips = dns
            .lookup_ip(host)
            .await
            .map_err(|e| TransportError::Resolve(host.to_owned(), e.to_string()))?;
        let out: Vec<Target> = ips
            .iter()
            .map(|ip| named(proto, SocketAddr::new(ip, port)))
            .collect();
        if out.is_empty() {
            return Err(TransportError::Resolve(
                host.to_owned(),
                "no addresses".into(),
            ));
        }
        Ok(out)
    }
}

fn srv_name(p: Proto, host: &str) -> String {
    match p {
        Proto::Udp => format!("_sip._udp.{host}"),
        Proto::Tcp => format!("_sip._tcp.{host}"),
        Proto::Tls => format!("_sips._tcp.{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(d: &str, h: &str) -> StaticRoute {
        StaticRoute {
            domain: d.into(),
            next_hop: h.into(),
        }
    }

    #[tokio::test]
    async fn static_routes_win() {
        let r = Resolver::new(&[route("Example.NET", "tcp:127.0.0.1:5070")]).unwrap();
        let t = r
            .resolve(&Uri::parse_str("sip:bob@example.net").unwrap())
            .await
            .unwrap();
        assert_eq!(
            t,
            vec![Target::new(Proto::Tcp, "127.0.0.1:5070".parse().unwrap())]
        );
    }

    #[tokio::test]
    async fn numeric_hosts_need_no_dns() {
        let r = Resolver::new(&[]).unwrap();
        let t = r
            .resolve(&Uri::parse_str("sip:bob@127.0.0.1:5080;transport=tcp").unwrap())
            .await
            .unwrap();
        assert_eq!(
            (t[0].proto, t[0].addr),
            (Proto::Tcp, "127.0.0.1:5080".parse().unwrap())
        );
        let t = r
            .resolve(&Uri::parse_str("sips:bob@[::1]").unwrap())
            .await
            .unwrap();
        assert_eq!(
            (t[0].proto, t[0].addr),
            (Proto::Tls, "[::1]:5061".parse().unwrap())
        );
        let t = r
            .resolve(&Uri::parse_str("sip:bob@192.0.2.1;maddr=127.0.0.2").unwrap())
            .await
            .unwrap();
        assert_eq!(
            (t[0].proto, t[0].addr),
            (Proto::Udp, "127.0.0.2:5060".parse().unwrap())
        );
    }

    #[test]
    fn bad_route_rejected() {
        assert!(Resolver::new(&[route("x", "sctp:1.2.3.4:5")]).is_err());
    }
}
