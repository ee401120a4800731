//! JID ↔ SIP/CPIM URI mapping (RFC 7247 §5), pure string work.
//!
//! RFC 7247 §5.2/§5.3: a bare JID `local@domain` maps to `sip:local@domain`
//! (and here to `pres:local@domain` for the CPIM API, RFC 3859 §3.1); the
//! resource is dropped (§5.3, it names a session, not the user). The
//! localpart characters XMPP forbids are carried with XEP-0106 escapes on
//! the XMPP side and percent-encoded on the SIP side (RFC 3261 §25.1 `user`).

use thiserror::Error;

/// An address with no scheme and no resource: `local@domain`, the key every
/// subscription is stored under.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Address {
    /// The user part, unescaped (neither XEP-0106 nor percent encoding).
    pub local: String,
    /// The domain, lower case.
    pub domain: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("not a sip:, pres: or im: URI: {0:?}")]
    Scheme(String),
    #[error("no user part in {0:?}")]
    NoUser(String),
    #[error("bad percent-encoding in {0:?}")]
    Percent(String),
    #[error("invalid JID {0:?}: {1}")]
    Jid(String, String),
}

/// XEP-0106 §3: the characters escaped in a JID localpart, with their escapes.
const JID_ESCAPES: [(char, &str); 10] = [
    ('\\', "\\5c"),
    (' ', "\\20"),
    ('"', "\\22"),
    ('&', "\\26"),
    ('\'', "\\27"),
    ('/', "\\2f"),
    (':', "\\3a"),
    ('<', "\\3c"),
    ('>', "\\3e"),
    ('@', "\\40"),
];

impl Address {
    /// Parses `sip:`, `sips:`, `pres:` or `im:` URIs (RFC 7247 §5.4 SIP to
    /// XMPP): the user part is percent-decoded, URI parameters and headers
    /// are dropped, the domain is lower-cased (RFC 3261 §19.1.4 compares
    /// hosts case-insensitively; user parts are case-sensitive and kept).
    pub fn from_uri(uri: &str) -> Result<Address, AddressError> {
        let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
        let rest = ["sip:", "sips:", "pres:", "im:"]
            .iter()
            .find_map(|s| {
                uri.get(..s.len())
                    .filter(|p| p.eq_ignore_ascii_case(s))
                    .map(|_| &uri[s.len()..])
            })
            .ok_or_else(|| AddressError::Scheme(uri.to_owned()))?;
        let rest = rest.split([';', '?']).next().unwrap_or_default();
        let (user, host) = rest
            .rsplit_once('@')
            .ok_or_else(|| AddressError::NoUser(uri.to_owned()))?;
        if user.is_empty() || host.is_empty() {
            return Err(AddressError::NoUser(uri.to_owned()));
        }
        let host = host.split(':').next().unwrap_or(host);
        Ok(Address {
            local: percent_decode(user).ok_or_else(|| AddressError::Percent(uri.to_owned()))?,
            domain: host.to_ascii_lowercase(),
        })
    }

    /// Parses a JID (RFC 7247 §5.5 XMPP to SIP): the resource is dropped and
    /// the localpart is normalised by the `jid` crate (RFC 7622 PRECIS:
    /// lower case), then XEP-0106 escapes are undone.
    pub fn from_jid(jid: &str) -> Result<Address, AddressError> {
        let parsed =
            jid::Jid::new(jid).map_err(|e| AddressError::Jid(jid.into(), e.to_string()))?;
        let node = parsed
            .node()
            .ok_or_else(|| AddressError::NoUser(jid.to_owned()))?;
        Ok(Address {
            local: xep0106_unescape(node.as_str()),
            domain: parsed.domain().as_str().to_ascii_lowercase(),
        })
    }

    /// `pres:local@domain` with the user part percent-encoded as RFC 3261
    /// §25.1 requires (RFC 7247 §5.5).
    pub fn to_pres(&self) -> String {
        format!("pres:{}@{}", percent_encode_user(&self.local), self.domain)
    }

    /// The bare JID string, XEP-0106-escaped and lower-cased (RFC 7247 §5.4:
    /// XMPP localparts are case-insensitive under PRECIS, so a SIP user part
    /// that differs only in case names the same JID).
    pub fn to_bare_jid(&self) -> Result<jid::BareJid, AddressError> {
        let s = format!("{}@{}", xep0106_escape(&self.local), self.domain);
        jid::BareJid::new(&s).map_err(|e| AddressError::Jid(s.clone(), e.to_string()))
    }

    /// `local@domain` as written for logs and storage keys.
    pub fn key(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// RFC 3261 §25.1: `user = 1*( unreserved / escaped / user-unreserved )`,
/// `user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"`.
fn percent_encode_user(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn xep0106_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match JID_ESCAPES.iter().find(|(ch, _)| *ch == c) {
            Some((_, esc)) => out.push_str(esc),
            None => out.push(c),
        }
    }
    out
}

fn xep0106_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    'outer: while i < s.len() {
        for (c, esc) in JID_ESCAPES {
            if s[i..].len() >= esc.len() && s[i..i + esc.len()].eq_ignore_ascii_case(esc) {
                out.push(c);
                i += esc.len();
                continue 'outer;
            }
        }
        let c = s[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_to_bare_jid() {
        let a = Address::from_uri("sip:bob@Example.COM;transport=udp").unwrap();
        assert_eq!(a.key(), "bob@example.com");
        assert_eq!(a.to_bare_jid().unwrap().to_string(), "bob@example.com");
        assert_eq!(Address::from_uri("<pres:bob@example.com>").unwrap(), a);
    }

    #[test]
    fn jid_resource_dropped_and_lowercased() {
        let a = Address::from_jid("Alice@XMPP.example.org/laptop").unwrap();
        assert_eq!(a.key(), "alice@xmpp.example.org");
        assert_eq!(a.to_pres(), "pres:alice@xmpp.example.org");
    }

    #[test]
    fn percent_and_xep0106_round_trip() {
        // A SIP user part with a space and an '@' (percent-encoded).
        let a = Address::from_uri("sip:john%20o%40x@example.com").unwrap();
        assert_eq!(a.local, "john o@x");
        let j = a.to_bare_jid().unwrap();
        assert_eq!(j.to_string(), "john\\20o\\40x@example.com");
        let back = Address::from_jid(&j.to_string()).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.to_pres(), "pres:john%20o%40x@example.com");
    }

    #[test]
    fn rejects_what_is_not_an_address() {
        assert!(matches!(
            Address::from_uri("tel:+123"),
            Err(AddressError::Scheme(_))
        ));
        assert!(matches!(
            Address::from_uri("sip:example.com"),
            Err(AddressError::NoUser(_))
        ));
        assert!(matches!(
            Address::from_uri("sip:a%zz@x"),
            Err(AddressError::Percent(_))
        ));
        assert!(matches!(
            Address::from_jid("example.com"),
            Err(AddressError::NoUser(_))
        ));
    }
}
