//! `sip-cpim-gateway lint`: parse captured SIP messages and report, per
//! file, the typed core headers or the fault (offset, header, reason).

use crate::sip::{self, Message, ParseError, StartLine};
use bytes::Bytes;
use serde::Serialize;

/// What `lint` reports for one valid message.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub start_line: String,
    pub via: Vec<ViaSummary>,
    pub from: Option<AddrSummary>,
    pub to: Option<AddrSummary>,
    pub call_id: Option<String>,
    pub cseq: Option<String>,
    pub max_forwards: Option<u8>,
    pub content_length: Option<u32>,
    pub content_type: Option<String>,
    pub event: Option<String>,
    pub expires: Option<u32>,
    pub subscription_state: Option<String>,
    pub body_bytes: usize,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ViaSummary {
    pub transport: String,
    pub sent_by: String,
    pub branch: Option<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AddrSummary {
    pub uri: String,
    pub tag: Option<String>,
}

/// A fault, as `lint` reports it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Fault {
    pub error: String,
    pub offset: Option<usize>,
    pub header: Option<String>,
    /// The status a UAS would answer with.
    pub status: u16,
}

impl From<&ParseError> for Fault {
    fn from(e: &ParseError) -> Fault {
        Fault {
            error: e.to_string(),
            offset: e.offset(),
            header: e.header().map(|h| h.to_string()),
            status: e.status_code(),
        }
    }
}

/// Parses one message (datagram framing) and decodes every typed header.
pub fn lint_bytes(bytes: Bytes, limits: &sip::Limits) -> Result<Summary, ParseError> {
    let m = sip::parse_datagram(bytes, limits)?;
    m.check_headers()?;
    Ok(summarize(&m))
}

fn summarize(m: &Message) -> Summary {
    let start_line = match m.start_line() {
        StartLine::Request { method, uri } => format!("{method} {uri} SIP/2.0"),
        StartLine::Response { code, reason } => format!("SIP/2.0 {code} {reason}"),
    };
    let addr = |n: Option<&sip::NameAddr>| {
        n.map(|n| AddrSummary {
            uri: n.uri.to_string(),
            tag: n.tag().map(str::to_owned),
        })
    };
    Summary {
        start_line,
        via: m
            .via()
            .iter()
            .map(|v| ViaSummary {
                transport: v.transport.to_string(),
                sent_by: match v.port {
                    Some(p) => format!("{}:{p}", v.host),
                    None => v.host.to_string(),
                },
                branch: v.branch().map(str::to_owned),
            })
            .collect(),
        from: addr(m.from()),
        to: addr(m.to()),
        call_id: m.call_id().map(str::to_owned),
        cseq: m.cseq().map(ToString::to_string),
        max_forwards: m.max_forwards(),
        content_length: m.content_length(),
        content_type: m.content_type().ok().flatten().map(|c| c.to_string()),
        event: m.event().ok().flatten().map(|e| e.to_string()),
        expires: m.expires().ok().flatten(),
        subscription_state: m.subscription_state().ok().flatten().map(|s| s.to_string()),
        body_bytes: m.body().len(),
    }
}

/// The one-line text form.
pub fn format_line(path: &str, r: &Result<Summary, ParseError>) -> String {
    match r {
        Err(e) => format!("{path}: ERROR {e} (a UAS answers {})", e.status_code()),
        Ok(m) => {
            let mut parts = vec![format!("{path}: OK {}", m.start_line)];
            for v in &m.via {
                parts.push(format!(
                    "Via: SIP/2.0/{} {}{}",
                    v.transport,
                    v.sent_by,
                    v.branch
                        .as_ref()
                        .map(|b| format!(";branch={b}"))
                        .unwrap_or_default()
                ));
            }
            let addr = |name: &str, a: &Option<AddrSummary>| {
                a.as_ref().map(|a| {
                    format!(
                        "{name}: {}{}",
                        a.uri,
                        a.tag
                            .as_ref()
                            .map(|t| format!(";tag={t}"))
                            .unwrap_or_default()
                    )
                })
            };
            parts.extend(addr("From", &m.from));
            parts.extend(addr("To", &m.to));
            parts.extend(m.call_id.as_ref().map(|c| format!("Call-ID: {c}")));
            parts.extend(m.cseq.as_ref().map(|c| format!("CSeq: {c}")));
            parts.extend(m.max_forwards.map(|c| format!("Max-Forwards: {c}")));
            parts.extend(m.event.as_ref().map(|c| format!("Event: {c}")));
            parts.extend(m.expires.map(|c| format!("Expires: {c}")));
            parts.extend(
                m.subscription_state
                    .as_ref()
                    .map(|c| format!("Subscription-State: {c}")),
            );
            parts.extend(
                m.content_type
                    .as_ref()
                    .map(|c| format!("Content-Type: {c}")),
            );
            parts.push(format!("body: {} bytes", m.body_bytes));
            parts.join(" | ")
        }
    }
}

/// The JSON form of one file's result.
pub fn to_json(path: &str, r: &Result<Summary, ParseError>) -> serde_json::Value {
    match r {
        Ok(s) => serde_json::json!({ "file": path, "valid": true, "message": s }),
        Err(e) => serde_json::json!({ "file": path, "valid": false, "fault": Fault::from(e) }),
    }
}
