//! URIs: `sip`, `sips` (RFC 3261 §19.1), `pres`/`im` in the mailbox form of
//! RFC 3859/3860 Appendix A, `tel` (RFC 3966), and any other absolute URI kept
//! opaque (RFC 4475 §3.3.2/§3.3.4 require parsing them).

use super::grammar::{
    self as g, In, PResult, bs_slice, escaped_run, fail, is_escape, is_hnv_char, is_hostname_char,
    is_param_char, is_password_char, is_scheme_char, is_uric, is_user_char,
};
use super::params::{Param, Params};
use bytestring::ByteString;
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A URI scheme.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
    Pres,
    Im,
    Tel,
    /// Any other scheme, lower-cased.
    Other(ByteString),
}

impl Scheme {
    fn parse(s: &[u8]) -> Scheme {
        if s.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if s.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if s.eq_ignore_ascii_case(b"pres") {
            Scheme::Pres
        } else if s.eq_ignore_ascii_case(b"im") {
            Scheme::Im
        } else if s.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            let lower = String::from_utf8_lossy(s).to_ascii_lowercase();
            Scheme::Other(ByteString::from(lower))
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Pres => "pres",
            Scheme::Im => "im",
            Scheme::Tel => "tel",
            Scheme::Other(s) => s,
        }
    }

    /// `sip` and `sips`: the schemes a SIP element routes on.
    pub fn is_sip(&self) -> bool {
        matches!(self, Scheme::Sip | Scheme::Sips)
    }
}

/// A host: a domain name (compared case-insensitively) or an IP address.
#[derive(Debug, Clone, Eq)]
pub enum Host {
    Domain(ByteString),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl PartialEq for Host {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Host::Domain(a), Host::Domain(b)) => a.eq_ignore_ascii_case(b),
            (Host::V4(a), Host::V4(b)) => a == b,
            (Host::V6(a), Host::V6(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

impl Host {
    /// The host lower-cased (domains) or formatted (addresses), for keys.
    pub fn canonical(&self) -> String {
        match self {
            Host::Domain(d) => d.to_ascii_lowercase(),
            other => other.to_string(),
        }
    }
}

/// A parsed URI. For `sip`/`sips`/`pres`/`im` the structured fields are set;
/// `tel` keeps the number in `user`; other schemes keep everything after the
/// colon in `opaque`.
///
/// Invariant: `user`, `password`, parameter names/values and `headers` hold
/// the escaped (wire) form; the printer writes them back verbatim.
#[derive(Debug, Clone)]
pub struct Uri {
    pub scheme: Scheme,
    pub user: Option<ByteString>,
    pub password: Option<ByteString>,
    pub host: Option<Host>,
    pub port: Option<u16>,
    pub params: Params,
    /// The `?header=value&...` part, without the `?`.
    pub headers: Option<ByteString>,
    /// Everything after `scheme:` for schemes without a structured form.
    pub opaque: Option<ByteString>,
}

/// Where the URI appears; decides which parts the grammar allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UriContext {
    /// Request-URI: parameters yes, headers no (RFC 3261 §19.1.1 table).
    RequestUri,
    /// Inside `<...>` of a name-addr: parameters and headers.
    NameAddr,
    /// addr-spec without brackets: the URI ends at `;` (header params
    /// follow), and `?` headers are not allowed (RFC 3261 §20).
    AddrSpec,
}

impl Uri {
    /// A `sip:` URI with a user and a host.
    pub fn sip(user: Option<&str>, host: &str) -> Uri {
        Uri {
            scheme: Scheme::Sip,
            user: user.map(|u| ByteString::from(u.to_owned())),
            password: None,
            host: Some(parse_host_str(host)),
            port: None,
            params: Params::default(),
            headers: None,
            opaque: None,
        }
    }

    /// Parses a complete URI string (for configuration and the JSON API).
    pub fn parse_str(s: &str) -> Result<Uri, super::ValueError> {
        let bs = ByteString::from(s.to_owned());
        Self::parse_bs(&bs, UriContext::NameAddr)
    }

    pub(crate) fn parse_bs(bs: &ByteString, ctx: UriContext) -> Result<Uri, super::ValueError> {
        let input = bs.as_bytes();
        match uri(bs, ctx)(input) {
            Ok((&[], u)) => Ok(u),
            Ok((rest, _)) => Err(super::ValueError {
                at: input.len() - rest.len(),
                reason: "unexpected characters after URI",
            }),
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(super::ValueError {
                at: g::offset_in(input, e.at),
                reason: e.reason,
            }),
            Err(nom::Err::Incomplete(_)) => Err(super::ValueError {
                at: input.len(),
                reason: "incomplete URI",
            }),
        }
    }

    /// The user part with escapes decoded (RFC 3261 §19.1.4).
    pub fn user_unescaped(&self) -> Option<String> {
        self.user.as_deref().map(unescape)
    }

    /// Transport parameter, lower-cased.
    pub fn transport_param(&self) -> Option<String> {
        self.params
            .get("transport")
            .flatten()
            .map(|v| v.to_ascii_lowercase())
    }

    /// The canonical address-of-record (RFC 3261 §10.3 step 5, seed `002`
    /// §10 step 5): every URI parameter and header removed, escapes of
    /// characters that may appear unescaped decoded (others upper-cased),
    /// host lower-cased. Two URIs that name the same AOR give equal strings.
    pub fn aor(&self) -> Uri {
        Uri {
            scheme: self.scheme.clone(),
            user: self
                .user
                .as_deref()
                .map(|u| ByteString::from(normalize_escapes(u, is_user_char))),
            password: None,
            host: self.host.as_ref().map(|h| match h {
                Host::Domain(d) => Host::Domain(ByteString::from(d.to_ascii_lowercase())),
                other => other.clone(),
            }),
            port: self.port,
            params: Params::default(),
            headers: None,
            opaque: self.opaque.clone(),
        }
    }

    /// The AOR as a string key (see [`Uri::aor`]).
    pub fn aor_key(&self) -> String {
        self.aor().to_string()
    }

    /// The same identity in another scheme (seed §4: `pres:user@host` ↔
    /// `sip:user@host`; URI parameters and headers are dropped).
    pub fn with_scheme(&self, scheme: Scheme) -> Uri {
        let mut u = self.aor();
        u.scheme = scheme;
        if !u.scheme.is_sip() {
            u.port = None;
        }
        u
    }

    /// `sip:`/`sips:` comparison per RFC 3261 §19.1.4; other schemes compare
    /// scheme, user and host (case-insensitive host) and opaque parts.
    pub fn matches(&self, other: &Uri) -> bool {
        if self.scheme != other.scheme {
            return false;
        }
        if let (Some(a), Some(b)) = (&self.opaque, &other.opaque) {
            return a.eq_ignore_ascii_case(b);
        }
        let user_eq = match (&self.user, &other.user) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                normalize_escapes(a, is_user_char) == normalize_escapes(b, is_user_char)
            }
            _ => false,
        };
        let pass_eq = match (&self.password, &other.password) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                normalize_escapes(a, is_password_char) == normalize_escapes(b, is_password_char)
            }
            _ => false,
        };
        if !user_eq || !pass_eq || self.host != other.host || self.port != other.port {
            return false;
        }
        if !self.scheme.is_sip() {
            return true;
        }
        // §19.1.4: user, ttl, method, maddr and transport must match when
        // present in either; any other parameter only when present in both.
        const MUST_MATCH: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];
        for name in MUST_MATCH {
            let a = self
                .params
                .get(name)
                .map(|v| v.map(|s| normalize_escapes(s, is_param_char)));
            let b = other
                .params
                .get(name)
                .map(|v| v.map(|s| normalize_escapes(s, is_param_char)));
            if !eq_opt_ci(&a, &b) {
                return false;
            }
        }
        for p in self.params.iter() {
            if MUST_MATCH.iter().any(|m| p.name.eq_ignore_ascii_case(m)) {
                continue;
            }
            if let Some(bv) = other.params.get(&p.name) {
                let av = p
                    .value
                    .as_deref()
                    .map(|s| normalize_escapes(s, is_param_char));
                let bv = bv.map(|s| normalize_escapes(s, is_param_char));
                if !eq_opt_ci(&Some(av), &Some(bv)) {
                    return false;
                }
            }
        }
        // Header components must all be present in both and equal.
        match (&self.headers, &other.headers) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                let mut ha: Vec<String> = a
                    .split('&')
                    .map(|h| normalize_escapes(h, is_hnv_char))
                    .collect();
                let mut hb: Vec<String> = b
                    .split('&')
                    .map(|h| normalize_escapes(h, is_hnv_char))
                    .collect();
                ha.sort();
                hb.sort();
                ha == hb
            }
            _ => false,
        }
    }
}

fn eq_opt_ci(a: &Option<Option<String>>, b: &Option<Option<String>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(None), Some(None)) => true,
        (Some(Some(x)), Some(Some(y))) => x.eq_ignore_ascii_case(y),
        _ => false,
    }
}

/// Structural equality (what was parsed), not §19.1.4 equivalence: see
/// [`Uri::matches`] for that.
impl PartialEq for Uri {
    fn eq(&self, other: &Self) -> bool {
        self.scheme == other.scheme
            && self.user == other.user
            && self.password == other.password
            && self.host == other.host
            && self.port == other.port
            && self.params == other.params
            && self.headers == other.headers
            && self.opaque == other.opaque
    }
}
impl Eq for Uri {}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme.as_str())?;
        f.write_char(':')?;
        if let Some(o) = &self.opaque {
            return f.write_str(o);
        }
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                f.write_char(':')?;
                f.write_str(p)?;
            }
            if self.host.is_some() {
                f.write_char('@')?;
            }
        }
        if let Some(h) = &self.host {
            write!(f, "{h}")?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)?;
        if let Some(h) = &self.headers {
            f.write_char('?')?;
            f.write_str(h)?;
        }
        Ok(())
    }
}

/// Decodes every `%HEX HEX` escape. Bytes that do not form UTF-8 are
/// replaced; `%00` stays a NUL character (RFC 4475 §3.1.1.4: it must not
/// shorten the AOR).
pub fn unescape(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut k = 0;
    while k < b.len() {
        if is_escape(&b[k..]) {
            out.push(hex(b[k + 1]) << 4 | hex(b[k + 2]));
            k += 3;
        } else {
            out.push(b[k]);
            k += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Canonical escaping: escapes of characters that `allowed` admits
/// unescaped are decoded, the rest are written with upper-case hex.
pub fn normalize_escapes(s: &str, allowed: fn(u8) -> bool) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut k = 0;
    while k < b.len() {
        if is_escape(&b[k..]) {
            let c = hex(b[k + 1]) << 4 | hex(b[k + 2]);
            if c.is_ascii() && allowed(c) {
                out.push(c as char);
            } else {
                let _ = write!(out, "%{c:02X}");
            }
            k += 3;
        } else {
            // Non-escape bytes are ASCII by the grammar of the parts passed here.
            out.push(b[k] as char);
            k += 1;
        }
    }
    out
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

fn parse_host_str(h: &str) -> Host {
    if let Some(v6) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        if let Ok(a) = v6.parse() {
            return Host::V6(a);
        }
    }
    if let Ok(a) = h.parse::<Ipv4Addr>() {
        return Host::V4(a);
    }
    Host::Domain(ByteString::from(h.to_owned()))
}

// ---------------------------------------------------------------------------
// Parsers. `src` is the buffer the input slices come from, so parts can be
// kept as cheap `ByteString` slices of it.

/// `host` (RFC 3261 §25.1): hostname, IPv4address or IPv6reference.
pub(crate) fn host<'a>(src: &ByteString) -> impl Fn(In<'a>) -> PResult<'a, Host> + '_ {
    move |i| {
        if i.first() == Some(&b'[') {
            let end = match memchr::memchr(b']', i) {
                Some(e) => e,
                None => return fail(i, "unterminated IPv6 reference"),
            };
            let text = std::str::from_utf8(&i[1..end]).unwrap_or("");
            return match text.parse::<Ipv6Addr>() {
                Ok(a) => Ok((&i[end + 1..], Host::V6(a))),
                Err(_) => fail(i, "invalid IPv6 address"),
            };
        }
        let (rest, name) = g::expect(
            "expected a host",
            nom::bytes::complete::take_while1(is_hostname_char),
        )(i)?;
        // hostname = *( domainlabel "." ) toplabel [ "." ]; an all-digit
        // dotted quad is an IPv4 address.
        if name.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
            let text = std::str::from_utf8(name).unwrap_or("");
            return match text.parse::<Ipv4Addr>() {
                Ok(a) => Ok((rest, Host::V4(a))),
                Err(_) => fail(i, "invalid IPv4 address"),
            };
        }
        if name[0] == b'-' || name[0] == b'.' || name.windows(2).any(|w| w == b"..") {
            return fail(i, "invalid host name");
        }
        Ok((rest, Host::Domain(bs_slice(src, name))))
    }
}

/// `[ ":" port ]`.
pub(crate) fn opt_port(i: In<'_>) -> PResult<'_, Option<u16>> {
    if i.first() == Some(&b':') {
        let (rest, p) = g::decimal(65535, "expected a port number")(&i[1..])?;
        Ok((rest, Some(p as u16)))
    } else {
        Ok((i, None))
    }
}

/// `*( ";" uri-parameter )` with `pname ["=" pvalue]`, `1*paramchar` each.
fn uri_params<'a>(src: &ByteString) -> impl Fn(In<'a>) -> PResult<'a, Params> + '_ {
    move |mut i| {
        let mut params = Params::default();
        while i.first() == Some(&b';') {
            let (rest, name) = escaped_run(is_param_char, "empty URI parameter")(&i[1..])?;
            let (rest, value) = if rest.first() == Some(&b'=') {
                let (r, v) = escaped_run(is_param_char, "empty URI parameter value")(&rest[1..])?;
                (r, Some(bs_slice(src, v)))
            } else {
                (rest, None)
            };
            params.push(Param {
                name: bs_slice(src, name),
                value,
                quoted: false,
            });
            i = rest;
        }
        Ok((i, params))
    }
}

/// `?hname=hvalue *( "&" hname=hvalue )`, kept as one escaped string.
fn uri_headers<'a>(src: &ByteString) -> impl Fn(In<'a>) -> PResult<'a, Option<ByteString>> + '_ {
    move |i| {
        if i.first() != Some(&b'?') {
            return Ok((i, None));
        }
        let body = &i[1..];
        let mut k = 0;
        loop {
            let (r, _) = escaped_run(is_hnv_char, "empty URI header name")(&body[k..])?;
            if r.first() != Some(&b'=') {
                return fail(r, "expected '=' in URI header");
            }
            let r = &r[1..];
            // hvalue may be empty
            let r = match escaped_run(is_hnv_char, "")(r) {
                Ok((r2, _)) => r2,
                Err(_) => r,
            };
            k = body.len() - r.len();
            if r.first() == Some(&b'&') {
                k += 1;
                continue;
            }
            break;
        }
        Ok((&body[k..], Some(bs_slice(src, &body[..k]))))
    }
}

/// A URI in the given context.
pub(crate) fn uri<'a>(
    src: &ByteString,
    ctx: UriContext,
) -> impl Fn(In<'a>) -> PResult<'a, Uri> + '_ {
    move |i| {
        if i.first() == Some(&b'<') {
            return fail(i, "URI must not be enclosed in '<' '>' here");
        }
        let (rest, scheme) = g::expect(
            "expected a URI scheme",
            nom::bytes::complete::take_while1(is_scheme_char),
        )(i)?;
        if !scheme[0].is_ascii_alphabetic() || rest.first() != Some(&b':') {
            return fail(i, "expected a URI scheme");
        }
        let scheme = Scheme::parse(scheme);
        let rest = &rest[1..];
        match scheme {
            Scheme::Sip | Scheme::Sips => sip_uri(src, scheme, ctx, rest),
            Scheme::Pres | Scheme::Im => mailbox_uri(src, scheme, ctx, rest),
            Scheme::Tel => tel_uri(src, ctx, rest),
            Scheme::Other(_) => {
                // absoluteURI = scheme ":" ( hier-part / opaque-part ), uric chars.
                let stop = |b: u8| {
                    !is_uric(b) || (ctx == UriContext::AddrSpec && (b == b';' || b == b','))
                };
                let end = rest
                    .iter()
                    .position(|&b| stop(b) && b != b'%')
                    .unwrap_or(rest.len());
                if end == 0 {
                    return fail(rest, "empty URI");
                }
                let (r, body) = escaped_run(|b| !stop(b), "empty URI")(&rest[..end])?;
                if !r.is_empty() {
                    return fail(r, "malformed % escape");
                }
                Ok((
                    &rest[body.len()..],
                    Uri {
                        scheme,
                        user: None,
                        password: None,
                        host: None,
                        port: None,
                        params: Params::default(),
                        headers: None,
                        opaque: Some(bs_slice(src, body)),
                    },
                ))
            }
        }
    }
}

fn sip_uri<'a>(src: &ByteString, scheme: Scheme, ctx: UriContext, i: In<'a>) -> PResult<'a, Uri> {
    // userinfo ends at the first '@': no part of a SIP-URI after userinfo may
    // contain an unescaped '@', while the user part may contain ';' and '?'
    // (RFC 4475 §3.1.1.2, §3.1.1.9). Only an addr-spec (no brackets) ends
    // at a comma: there the comma separates header values.
    let limit = i
        .iter()
        .position(|&b| {
            b == b' '
                || b == b'\t'
                || b == b'>'
                || b == b'<'
                || (b == b',' && ctx == UriContext::AddrSpec)
        })
        .unwrap_or(i.len());
    let (i, user, password) = match memchr::memchr(b'@', &i[..limit]) {
        Some(at) => {
            let userinfo = &i[..at];
            let (user_part, pass_part) = match memchr::memchr(b':', userinfo) {
                Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
                None => (userinfo, None),
            };
            let (r, u) = escaped_run(is_user_char, "empty user part")(user_part)?;
            if !r.is_empty() {
                return fail(r, "invalid character in user part");
            }
            let password = match pass_part {
                Some(p) if p.is_empty() => Some(bs_slice(src, p)),
                Some(p) => {
                    let (r, pw) = escaped_run(is_password_char, "invalid password")(p)?;
                    if !r.is_empty() {
                        return fail(r, "invalid character in password");
                    }
                    Some(bs_slice(src, pw))
                }
                None => None,
            };
            (&i[at + 1..], Some(bs_slice(src, u)), password)
        }
        None => (i, None, None),
    };
    let (i, h) = host(src)(i)?;
    let (i, port) = opt_port(i)?;
    let (i, params) = if ctx == UriContext::AddrSpec {
        (i, Params::default())
    } else {
        uri_params(src)(i)?
    };
    let (i, headers) = match ctx {
        UriContext::NameAddr => uri_headers(src)(i)?,
        UriContext::RequestUri if i.first() == Some(&b'?') => {
            return fail(i, "headers are not allowed in a Request-URI");
        }
        UriContext::AddrSpec if i.first() == Some(&b'?') => {
            return fail(i, "a URI with headers must be enclosed in '<' '>'");
        }
        _ => (i, None),
    };
    Ok((
        i,
        Uri {
            scheme,
            user,
            password,
            host: Some(h),
            port,
            params,
            headers,
            opaque: None,
        },
    ))
}

/// `pres:`/`im:` — `[ local-part "@" ] domain [ "?" headers ]` (RFC 3859
/// Appendix A, mailbox per RFC 2822 addr-spec with dot-atom local part).
fn mailbox_uri<'a>(
    src: &ByteString,
    scheme: Scheme,
    ctx: UriContext,
    i: In<'a>,
) -> PResult<'a, Uri> {
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=^_`{|}~.".contains(&b);
    let (i, user) = match i.iter().position(|&b| !atext(b)) {
        Some(at) if i[at] == b'@' => {
            if at == 0 {
                return fail(i, "empty local part");
            }
            (&i[at + 1..], Some(bs_slice(src, &i[..at])))
        }
        _ => (i, None),
    };
    let (i, h) = host(src)(i)?;
    let (i, headers) = if ctx == UriContext::NameAddr {
        uri_headers(src)(i)?
    } else {
        (i, None)
    };
    // A pres/im URI has no parameters; in brackets a ';' is an error.
    if ctx != UriContext::AddrSpec && i.first() == Some(&b';') {
        return fail(i, "parameters are not allowed in a pres/im URI");
    }
    Ok((
        i,
        Uri {
            scheme,
            user,
            password: None,
            host: Some(h),
            port: None,
            params: Params::default(),
            headers,
            opaque: None,
        },
    ))
}

/// `tel:` — the number in `user`, then `;` parameters (RFC 3966).
fn tel_uri<'a>(src: &ByteString, ctx: UriContext, i: In<'a>) -> PResult<'a, Uri> {
    let numchar = |b: u8| b.is_ascii_hexdigit() || b"+-.()*#pPwW".contains(&b);
    let (rest, number) = g::expect(
        "expected a telephone number",
        nom::bytes::complete::take_while1(numchar),
    )(i)?;
    let (rest, params) = if ctx == UriContext::AddrSpec {
        (rest, Params::default())
    } else {
        uri_params(src)(rest)?
    };
    Ok((
        rest,
        Uri {
            scheme: Scheme::Tel,
            user: Some(bs_slice(src, number)),
            password: None,
            host: None,
            port: None,
            params,
            headers: None,
            opaque: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Uri {
        Uri::parse_str(s).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    #[test]
    fn sip_uri_parts() {
        let u = p(
            "sip:alice:secret@Atlanta.com:5061;transport=TCP;lr?subject=project%20x&priority=urgent",
        );
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Some(Host::Domain("atlanta.com".into())));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport_param().as_deref(), Some("tcp"));
        assert_eq!(u.params.get("lr"), Some(None));
        assert_eq!(
            u.headers.as_deref(),
            Some("subject=project%20x&priority=urgent")
        );
        assert_eq!(
            u.to_string(),
            "sip:alice:secret@Atlanta.com:5061;transport=TCP;lr?subject=project%20x&priority=urgent"
        );
    }

    #[test]
    fn ipv6_and_ipv4_hosts() {
        assert_eq!(
            p("sip:[2001:db8::10]:5070").host,
            Some(Host::V6("2001:db8::10".parse().unwrap()))
        );
        assert_eq!(
            p("sip:192.0.2.4").host,
            Some(Host::V4("192.0.2.4".parse().unwrap()))
        );
        assert!(Uri::parse_str("sip:[2001:db8::10").is_err());
        assert!(Uri::parse_str("sip:999.1.1.1").is_err());
    }

    #[test]
    fn rfc3261_19_1_4_equivalent() {
        // The equivalent pairs of RFC 3261 §19.1.4.
        let eq = [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
        ];
        for (a, b) in eq {
            assert!(p(a).matches(&p(b)), "{a} == {b}");
            assert!(p(b).matches(&p(a)), "{b} == {a}");
        }
    }

    #[test]
    fn rfc3261_19_1_4_not_equivalent() {
        let ne = [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
            (
                "sip:carol@chicago.com;newparam=5",
                "sip:carol@chicago.com;newparam=6",
            ),
        ];
        for (a, b) in ne {
            assert!(!p(a).matches(&p(b)), "{a} != {b}");
        }
    }

    #[test]
    fn aor_canonical_form() {
        let u = p("sip:%75se%72@Example.COM;user=phone;transport=udp?x=y");
        assert_eq!(u.aor_key(), "sip:user@example.com");
        // %00 is kept escaped: it must not shorten the AOR (RFC 4475 §3.1.1.4).
        assert_eq!(
            p("sip:null-%00-null@example.com").aor_key(),
            "sip:null-%00-null@example.com"
        );
        assert_eq!(p("sip:a%2fb@x.org").aor_key(), "sip:a/b@x.org");
        assert_eq!(p("sip:a%40b@x.org").aor_key(), "sip:a%40b@x.org");
    }

    #[test]
    fn pres_and_im() {
        let u = p("pres:presentity@example.com");
        assert_eq!(u.scheme, Scheme::Pres);
        assert_eq!(u.user.as_deref(), Some("presentity"));
        assert_eq!(
            u.with_scheme(Scheme::Sip).to_string(),
            "sip:presentity@example.com"
        );
        let s = p("sip:bob@Example.com:5060;transport=tcp");
        assert_eq!(
            s.with_scheme(Scheme::Pres).to_string(),
            "pres:bob@example.com"
        );
        assert_eq!(
            p("im:fred.o'neil@example.com").user.as_deref(),
            Some("fred.o'neil")
        );
        assert!(Uri::parse_str("pres:@example.com").is_err());
    }

    #[test]
    fn tel_and_opaque() {
        let t = p("tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!(t.user.as_deref(), Some("+1-201-555-0123"));
        assert_eq!(t.params.get("phone-context"), Some(Some("example.com")));
        let o = p("soap.beep://192.0.2.103:3002");
        assert_eq!(o.scheme, Scheme::Other("soap.beep".into()));
        assert_eq!(o.opaque.as_deref(), Some("//192.0.2.103:3002"));
        assert_eq!(o.to_string(), "soap.beep://192.0.2.103:3002");
    }

    #[test]
    fn unescape_keeps_nul() {
        assert_eq!(unescape("null-%00-null"), "null-\0-null");
        assert_eq!(unescape("I%20have%20spaces"), "I have spaces");
    }
}
