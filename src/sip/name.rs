//! Header field names: case-insensitive, with the compact forms of RFC 3261
//! §7.3.3, RFC 6665 §8.2.1 (`o`, `u`) and RFC 3515 (`r`).

use bytestring::ByteString;
use std::fmt;

macro_rules! header_names {
    ($( $variant:ident => $canonical:literal $(, $compact:literal)? ;)*) => {
        /// A SIP header field name. Known names are variants; any other is kept
        /// as received in `Other` and compared case-insensitively.
        #[derive(Debug, Clone, Eq)]
        pub enum HeaderName {
            $( #[doc = $canonical] $variant, )*
            /// An extension header, spelled as received.
            Other(ByteString),
        }

        const KNOWN: &[(&str, HeaderName)] = &[ $( ($canonical, HeaderName::$variant), )* ];

        impl HeaderName {
            /// The canonical (long-form) spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $( HeaderName::$variant => $canonical, )*
                    HeaderName::Other(s) => s,
                }
            }

            /// The name for a compact form letter (case-insensitive).
            fn from_compact(c: u8) -> Option<HeaderName> {
                match c.to_ascii_lowercase() {
                    $( $( $compact => Some(HeaderName::$variant), )? )*
                    _ => None,
                }
            }
        }
    };
}

header_names! {
    Accept => "Accept";
    AcceptContact => "Accept-Contact", b'a';
    AcceptEncoding => "Accept-Encoding";
    AcceptLanguage => "Accept-Language";
    AlertInfo => "Alert-Info";
    Allow => "Allow";
    AllowEvents => "Allow-Events", b'u';
    AuthenticationInfo => "Authentication-Info";
    Authorization => "Authorization";
    CallId => "Call-ID", b'i';
    CallInfo => "Call-Info";
    Contact => "Contact", b'm';
    ContentDisposition => "Content-Disposition";
    ContentEncoding => "Content-Encoding", b'e';
    ContentLanguage => "Content-Language";
    ContentLength => "Content-Length", b'l';
    ContentType => "Content-Type", b'c';
    CSeq => "CSeq";
    Date => "Date";
    ErrorInfo => "Error-Info";
    Event => "Event", b'o';
    Expires => "Expires";
    From => "From", b'f';
    InReplyTo => "In-Reply-To";
    MaxForwards => "Max-Forwards";
    MimeVersion => "MIME-Version";
    MinExpires => "Min-Expires";
    Organization => "Organization";
    Priority => "Priority";
    ProxyAuthenticate => "Proxy-Authenticate";
    ProxyAuthorization => "Proxy-Authorization";
    ProxyRequire => "Proxy-Require";
    RecordRoute => "Record-Route";
    ReferTo => "Refer-To", b'r';
    ReferredBy => "Referred-By", b'b';
    RejectContact => "Reject-Contact", b'j';
    ReplyTo => "Reply-To";
    RequestDisposition => "Request-Disposition", b'd';
    Require => "Require";
    RetryAfter => "Retry-After";
    Route => "Route";
    Server => "Server";
    SessionExpires => "Session-Expires", b'x';
    SipETag => "SIP-ETag";
    SipIfMatch => "SIP-If-Match";
    Subject => "Subject", b's';
    SubscriptionState => "Subscription-State";
    Supported => "Supported", b'k';
    Timestamp => "Timestamp";
    To => "To", b't';
    Unsupported => "Unsupported";
    UserAgent => "User-Agent";
    Via => "Via", b'v';
    Warning => "Warning";
    WwwAuthenticate => "WWW-Authenticate";
}

impl HeaderName {
    /// Looks a received name up: compact forms expand, known names are
    /// matched case-insensitively, others are kept as spelled.
    ///
    /// Invariant: `name` is a non-empty token (checked by the caller).
    pub fn parse(name: &ByteString) -> HeaderName {
        Self::lookup(name.as_bytes()).unwrap_or_else(|| HeaderName::Other(name.clone()))
    }

    /// A name from a static string (for building messages).
    pub fn from_static(name: &'static str) -> HeaderName {
        Self::lookup(name.as_bytes())
            .unwrap_or_else(|| HeaderName::Other(ByteString::from_static(name)))
    }

    /// A known name (case-insensitive) or compact form; `None` for others.
    /// Candidates are bucketed by length, so a lookup compares against one
    /// to four names instead of all of them (the parser's hot path).
    pub(crate) fn lookup(n: &[u8]) -> Option<HeaderName> {
        if n.len() == 1 {
            return Self::from_compact(n[0]);
        }
        static BY_LEN: std::sync::LazyLock<Vec<Vec<usize>>> = std::sync::LazyLock::new(|| {
            let max = KNOWN.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
            let mut v = vec![Vec::new(); max + 1];
            for (i, (c, _)) in KNOWN.iter().enumerate() {
                v[c.len()].push(i);
            }
            v
        });
        let bucket = BY_LEN.get(n.len())?;
        let first = n[0].to_ascii_lowercase();
        bucket
            .iter()
            .map(|&i| &KNOWN[i])
            .find(|(c, _)| {
                c.as_bytes()[0].to_ascii_lowercase() == first
                    && c.as_bytes().eq_ignore_ascii_case(n)
            })
            .map(|(_, h)| h.clone())
    }

    /// Headers that RFC 3261 §7.3 allows only once per message.
    pub fn is_single_valued(&self) -> bool {
        matches!(
            self,
            HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::From
                | HeaderName::To
                | HeaderName::MaxForwards
                | HeaderName::ContentLength
                | HeaderName::ContentType
                | HeaderName::Expires
                | HeaderName::MinExpires
                | HeaderName::Event
                | HeaderName::SubscriptionState
                | HeaderName::SipETag
                | HeaderName::SipIfMatch
                | HeaderName::Date
                | HeaderName::RetryAfter
        )
    }
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl std::hash::Hash for HeaderName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            HeaderName::Other(s) => {
                for b in s.as_bytes() {
                    state.write_u8(b.to_ascii_lowercase());
                }
            }
            _ => std::mem::discriminant(self).hash(state),
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &'static str) -> HeaderName {
        HeaderName::parse(&ByteString::from_static(s))
    }

    #[test]
    fn compact_and_case_insensitive() {
        assert_eq!(p("i"), HeaderName::CallId);
        assert_eq!(p("I"), HeaderName::CallId);
        assert_eq!(p("o"), HeaderName::Event);
        assert_eq!(p("u"), HeaderName::AllowEvents);
        assert_eq!(p("MaX-fOrWaRdS"), HeaderName::MaxForwards);
        assert_eq!(p("sip-etag"), HeaderName::SipETag);
        assert_eq!(p("cseq").as_str(), "CSeq");
        assert_eq!(p("NewFangledHeader"), p("newfangledheader"));
        assert_eq!(p("z").as_str(), "z");
        // RFC 4475 §3.1.1.5: an escaped name is not the header it spells.
        assert_eq!(
            p("C%6Fntact"),
            HeaderName::Other(ByteString::from_static("C%6Fntact"))
        );
    }
}
