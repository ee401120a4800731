//! RFC 3261 §25.1 lexical rules as nom 8 parsers over bytes.
//!
//! Header values reach these parsers already unfolded (RFC 3261 §7.3.1: a
//! CRLF followed by whitespace is equivalent to one SP), so linear whitespace
//! here is only SP and HTAB. Every parser is a `complete` parser: running out
//! of input is an error, never "incomplete".

use bytestring::ByteString;
use nom::{
    IResult, Parser,
    bytes::complete::{take_while, take_while1},
    error::{ErrorKind, ParseError},
};

/// Parser input: a slice of an unfolded header value or start line.
pub(crate) type In<'a> = &'a [u8];

/// Why a grammar rule failed, and where (`at` is the unparsed remainder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GrammarError<'a> {
    pub at: In<'a>,
    pub reason: &'static str,
}

/// The reason nom's own combinators report; `expect` replaces it.
pub(crate) const UNEXPECTED: &str = "unexpected character";

impl<'a> ParseError<In<'a>> for GrammarError<'a> {
    fn from_error_kind(input: In<'a>, kind: ErrorKind) -> Self {
        let reason = match kind {
            ErrorKind::Eof => "unexpected end of value",
            _ => UNEXPECTED,
        };
        GrammarError { at: input, reason }
    }

    fn append(_: In<'a>, _: ErrorKind, other: Self) -> Self {
        other
    }
}

pub(crate) type PResult<'a, O> = IResult<In<'a>, O, GrammarError<'a>>;

/// Fails at `at` with `reason`.
pub(crate) fn fail<'a, O>(at: In<'a>, reason: &'static str) -> PResult<'a, O> {
    Err(nom::Err::Error(GrammarError { at, reason }))
}

/// Runs `p`; a generic failure inside it is reported with `reason`.
pub(crate) fn expect<'a, O, P>(
    reason: &'static str,
    mut p: P,
) -> impl FnMut(In<'a>) -> PResult<'a, O>
where
    P: Parser<In<'a>, Output = O, Error = GrammarError<'a>>,
{
    move |i| {
        p.parse(i).map_err(|e| {
            e.map(|mut g| {
                if g.reason == UNEXPECTED || g.reason == "unexpected end of value" {
                    g.reason = reason;
                }
                g
            })
        })
    }
}

// ---------------------------------------------------------------------------
// Character classes (RFC 3261 §25.1), one lookup table with a bit per class.

const TOKEN: u16 = 1;
const WORD: u16 = 1 << 1;
const UNRESERVED: u16 = 1 << 2;
const USER_UNRESERVED: u16 = 1 << 3;
const PASSWORD_EXTRA: u16 = 1 << 4;
const PARAM_UNRESERVED: u16 = 1 << 5;
const HNV_UNRESERVED: u16 = 1 << 6;
const HOSTNAME: u16 = 1 << 7;
const RESERVED: u16 = 1 << 8;
const SCHEME: u16 = 1 << 9;

const fn class_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() {
            t[c] |= TOKEN | WORD | UNRESERVED | HOSTNAME | SCHEME;
        }
        c += 1;
    }
    t = mark(t, b"-.!%*_+`'~", TOKEN);
    t = mark(t, b"-.!%*_+`'~()<>:\\\"/[]?{}", WORD);
    t = mark(t, b"-_.!~*'()", UNRESERVED);
    t = mark(t, b"&=+$,;?/", USER_UNRESERVED);
    t = mark(t, b"&=+$,", PASSWORD_EXTRA);
    t = mark(t, b"[]/:&+$", PARAM_UNRESERVED);
    t = mark(t, b"[]/?:+$", HNV_UNRESERVED);
    t = mark(t, b"-.", HOSTNAME);
    t = mark(t, b";/?:@&=+$,", RESERVED);
    t = mark(t, b"+-.", SCHEME);
    t
}

const fn mark(mut t: [u16; 256], chars: &[u8], class: u16) -> [u16; 256] {
    let mut i = 0;
    while i < chars.len() {
        t[chars[i] as usize] |= class;
        i += 1;
    }
    t
}

static CLASS: [u16; 256] = class_table();

#[inline]
fn is(b: u8, class: u16) -> bool {
    CLASS[b as usize] & class != 0
}

#[inline]
pub(crate) fn is_token_char(b: u8) -> bool {
    is(b, TOKEN)
}
#[inline]
pub(crate) fn is_word_char(b: u8) -> bool {
    is(b, WORD)
}
#[inline]
pub(crate) fn is_user_char(b: u8) -> bool {
    is(b, UNRESERVED | USER_UNRESERVED)
}
#[inline]
pub(crate) fn is_password_char(b: u8) -> bool {
    is(b, UNRESERVED | PASSWORD_EXTRA)
}
#[inline]
pub(crate) fn is_param_char(b: u8) -> bool {
    is(b, UNRESERVED | PARAM_UNRESERVED)
}
#[inline]
pub(crate) fn is_hnv_char(b: u8) -> bool {
    is(b, UNRESERVED | HNV_UNRESERVED)
}
#[inline]
pub(crate) fn is_hostname_char(b: u8) -> bool {
    is(b, HOSTNAME)
}
#[inline]
pub(crate) fn is_uric(b: u8) -> bool {
    is(b, UNRESERVED | RESERVED)
}
#[inline]
pub(crate) fn is_scheme_char(b: u8) -> bool {
    is(b, SCHEME)
}
#[inline]
pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

// ---------------------------------------------------------------------------
// Primitive parsers.

/// `SWS`: optional linear whitespace.
pub(crate) fn sws(i: In<'_>) -> PResult<'_, ()> {
    let (i, _) = take_while(is_wsp).parse(i)?;
    Ok((i, ()))
}

/// `token` (RFC 3261 §25.1).
pub(crate) fn token(i: In<'_>) -> PResult<'_, In<'_>> {
    expect("expected a token", take_while1(is_token_char))(i)
}

/// A separator with optional whitespace around it: `SEMI`, `COMMA`, `EQUAL`,
/// `SLASH`, `COLON` of RFC 3261 §25.1.
pub(crate) fn sep<'a>(c: u8) -> impl Fn(In<'a>) -> PResult<'a, ()> {
    move |i| {
        let (i, _) = sws(i)?;
        match i.first() {
            Some(&b) if b == c => {
                let (i, _) = sws(&i[1..])?;
                Ok((i, ()))
            }
            _ => fail(i, separator_reason(c)),
        }
    }
}

fn separator_reason(c: u8) -> &'static str {
    match c {
        b';' => "expected ';'",
        b',' => "expected ','",
        b'=' => "expected '='",
        b'/' => "expected '/'",
        b':' => "expected ':'",
        _ => UNEXPECTED,
    }
}

/// True when the input, after optional whitespace, starts with `c`.
#[inline]
pub(crate) fn peek_sep(i: In<'_>, c: u8) -> bool {
    let mut k = 0;
    while k < i.len() && is_wsp(i[k]) {
        k += 1;
    }
    i.get(k) == Some(&c)
}

/// `quoted-string` without the leading SWS: returns the content between the
/// quotes, quoted-pairs left escaped (RFC 3261 §25.1).
pub(crate) fn quoted_string(i: In<'_>) -> PResult<'_, In<'_>> {
    if i.first() != Some(&b'"') {
        return fail(i, "expected '\"'");
    }
    let body = &i[1..];
    let mut k = 0;
    while k < body.len() {
        match body[k] {
            b'"' => return Ok((&body[k + 1..], &body[..k])),
            b'\\' => {
                // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                match body.get(k + 1) {
                    Some(&n) if n <= 0x7f && n != b'\r' && n != b'\n' => k += 2,
                    _ => return fail(&body[k..], "invalid escape in quoted string"),
                }
            }
            b'\r' | b'\n' => return fail(&body[k..], "line break in quoted string"),
            // qdtext: LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII; the header
            // section was checked to be UTF-8, so bytes >= 0x80 are well formed.
            b if b == b' ' || b == b'\t' || b >= 0x21 => k += 1,
            _ => return fail(&body[k..], "control character in quoted string"),
        }
    }
    fail(i, "unterminated quoted string")
}

/// Removes quoted-pair escapes from quoted-string content.
pub(crate) fn unescape_quoted(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\\') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Decimal digits as a `u64`, failing on overflow of `max`.
pub(crate) fn decimal(max: u64, what: &'static str) -> impl Fn(In<'_>) -> PResult<'_, u64> {
    move |i| {
        let (rest, digits) = expect(what, take_while1(|b: u8| b.is_ascii_digit()))(i)?;
        let mut v: u64 = 0;
        for &d in digits {
            v = match v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
            {
                Some(v) if v <= max => v,
                _ => return fail(i, "number out of range"),
            };
        }
        Ok((rest, v))
    }
}

/// A `%HEX HEX` escape is well formed at the start of `i`.
#[inline]
pub(crate) fn is_escape(i: &[u8]) -> bool {
    i.len() >= 3 && i[0] == b'%' && i[1].is_ascii_hexdigit() && i[2].is_ascii_hexdigit()
}

/// `1*(class / escaped)`: characters of a class, or `%HEX HEX` escapes.
pub(crate) fn escaped_run<'a>(
    class: impl Fn(u8) -> bool,
    what: &'static str,
) -> impl Fn(In<'a>) -> PResult<'a, In<'a>> {
    move |i| {
        let mut k = 0;
        while k < i.len() {
            let b = i[k];
            if class(b) {
                k += 1;
            } else if b == b'%' {
                if !is_escape(&i[k..]) {
                    return fail(&i[k..], "malformed % escape");
                }
                k += 3;
            } else {
                break;
            }
        }
        if k == 0 {
            return fail(i, what);
        }
        Ok((&i[k..], &i[..k]))
    }
}

/// Skips a (possibly nested) `comment` (RFC 3261 §25.1), returning its text.
pub(crate) fn comment(i: In<'_>) -> PResult<'_, In<'_>> {
    if i.first() != Some(&b'(') {
        return fail(i, "expected '('");
    }
    let mut depth = 0usize;
    let mut k = 0;
    while k < i.len() {
        match i[k] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok((&i[k + 1..], &i[1..k]));
                }
            }
            b'\\' => k += 1,
            _ => {}
        }
        k += 1;
    }
    fail(i, "unterminated comment")
}

/// Where `part` starts inside `whole` (both slices of one buffer).
#[inline]
pub(crate) fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

/// Slice `part` (a sub-slice of `src`) out as a `ByteString`.
///
/// Invariant: `part` starts and ends at ASCII boundaries of `src`, so the
/// slice is valid UTF-8 (continuation bytes are never ASCII).
pub(crate) fn bs_slice(src: &ByteString, part: &[u8]) -> ByteString {
    let off = offset_in(src.as_bytes(), part);
    match src.get(off..off + part.len()) {
        Some(s) => src.slice_ref(s),
        None => ByteString::from(String::from_utf8_lossy(part).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_string_escapes_and_errors() {
        let (rest, q) = quoted_string(br#""J Rosenberg \\\"" <x>"#).unwrap();
        assert_eq!(q, br#"J Rosenberg \\\""#);
        assert_eq!(rest, b" <x>");
        assert_eq!(unescape_quoted(r#"J Rosenberg \\\""#), r#"J Rosenberg \""#);
        let e = quoted_string(b"\"Mr. J. User <sip:j@x>").unwrap_err();
        assert!(matches!(e, nom::Err::Error(g) if g.reason == "unterminated quoted string"));
    }

    #[test]
    fn decimal_rejects_overflow() {
        assert_eq!(
            decimal(u32::MAX as u64, "n")(b"0009 x").unwrap(),
            (&b" x"[..], 9)
        );
        assert!(decimal(u32::MAX as u64, "n")(b"36893488147419103232").is_err());
        assert!(decimal(255, "n")(b"300").is_err());
    }

    #[test]
    fn escaped_run_requires_hex() {
        assert!(escaped_run(is_user_char, "user")(b"%ZZ").is_err());
        assert_eq!(
            escaped_run(is_user_char, "user")(b"a%41b@h").unwrap().1,
            b"a%41b"
        );
    }

    #[test]
    fn nested_comment() {
        assert_eq!(
            comment(b"(a (b) c) x").unwrap(),
            (&b" x"[..], &b"a (b) c"[..])
        );
        assert!(comment(b"(a (b) c").is_err());
    }
}
