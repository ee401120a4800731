//! Salvaging the headers needed to answer a request that did not parse.
//!
//! RFC 3261 §8.2 wants a 400 (or 505, 513) for a malformed request, and a
//! response needs Via, From, To, Call-ID and CSeq copied from the request
//! (§8.2.6.2). This lenient scan finds those header lines without judging
//! their values, so even a request whose To header is the fault can be
//! answered. Anything that does not look like a request yields `None`
//! (responses and noise are dropped, never answered).

use super::grammar::is_token_char;
use super::name::HeaderName;
use bytestring::ByteString;

/// The raw header values of a request that failed to parse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Salvaged {
    /// Every Via value line, in order, as received (unfolded).
    pub via: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub call_id: Option<String>,
    pub cseq: Option<String>,
}

/// Scans `bytes` leniently; `None` unless it starts like a Request-Line and
/// carries at least one Via (without which no response can be routed).
pub fn salvage_request(bytes: &[u8]) -> Option<Salvaged> {
    let mut k = 0;
    while bytes[k..].starts_with(b"\r\n") {
        k += 2;
    }
    let b = &bytes[k..];
    let first_end = memchr::memchr(b'\n', b).unwrap_or(b.len());
    let first = &b[..first_end];
    // A Request-Line starts with a method token and a space; a Status-Line
    // with "SIP/".
    let m = first.iter().position(|&c| !is_token_char(c)).unwrap_or(0);
    if m == 0 || first.get(m) != Some(&b' ') || first.starts_with(b"SIP/") {
        return None;
    }
    let head_end = memchr::memmem::find(b, b"\r\n\r\n").unwrap_or(b.len());
    let head = String::from_utf8_lossy(&b[..head_end]);
    let mut out = Salvaged::default();
    let mut lines: Vec<String> = Vec::new();
    for line in head.split('\n').skip(1) {
        let line = line.trim_end_matches('\r');
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            lines.push(line.to_owned());
        }
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim_end();
        if name.is_empty() || !name.bytes().all(is_token_char) {
            continue;
        }
        let value = value.trim().to_owned();
        match HeaderName::parse(&ByteString::from(name.to_owned())) {
            HeaderName::Via => out.via.push(value),
            HeaderName::From if out.from.is_none() => out.from = Some(value),
            HeaderName::To if out.to.is_none() => out.to = Some(value),
            HeaderName::CallId if out.call_id.is_none() => out.call_id = Some(value),
            HeaderName::CSeq if out.cseq.is_none() => out.cseq = Some(value),
            _ => {}
        }
    }
    if out.via.is_empty() { None } else { Some(out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salvages_a_request_with_a_broken_to() {
        let s = salvage_request(
            b"INVITE sip:user@example.com SIP/2.0\r\nTo: \"Mr. J. User <sip:j.user@example.com>\r\nFrom: sip:caller@example.net;tag=93334\r\nv: SIP/2.0/UDP 192.0.2.59:5050;\r\n branch=z9hG4bKkdjuw39234\r\ni: quotbal.aksdj\r\nCSeq: 8 INVITE\r\n\r\nbody",
        )
        .unwrap();
        assert_eq!(
            s.via,
            ["SIP/2.0/UDP 192.0.2.59:5050; branch=z9hG4bKkdjuw39234"]
        );
        assert_eq!(
            s.to.as_deref(),
            Some("\"Mr. J. User <sip:j.user@example.com>")
        );
        assert_eq!(s.call_id.as_deref(), Some("quotbal.aksdj"));
        assert_eq!(s.cseq.as_deref(), Some("8 INVITE"));
    }

    #[test]
    fn responses_and_noise_are_not_salvaged() {
        assert!(salvage_request(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n").is_none());
        assert!(salvage_request(b"\x00\x01garbage").is_none());
        assert!(
            salvage_request(b"OPTIONS sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n").is_none(),
            "no Via"
        );
    }
}
