//! `;name=value` parameter lists of URIs and header values.

use super::grammar::{
    self as g, In, PResult, bs_slice, fail, is_token_char, quoted_string, sep, sws,
};
use bytestring::ByteString;
use std::fmt;

/// One parameter. `value` is kept as received (quoted-string content still
/// escaped); `quoted` records whether it was a quoted-string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: ByteString,
    pub value: Option<ByteString>,
    pub quoted: bool,
}

impl Param {
    pub fn new(name: impl Into<ByteString>, value: Option<impl Into<ByteString>>) -> Param {
        Param {
            name: name.into(),
            value: value.map(Into::into),
            quoted: false,
        }
    }

    pub fn quoted(name: impl Into<ByteString>, value: impl Into<ByteString>) -> Param {
        Param {
            name: name.into(),
            value: Some(value.into()),
            quoted: true,
        }
    }

    /// The value with quoted-pair escapes removed.
    pub fn unquoted_value(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.value.as_deref().map(|v| {
            if self.quoted {
                g::unescape_quoted(v)
            } else {
                v.into()
            }
        })
    }
}

/// An ordered parameter list; names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<Param>);

impl Params {
    pub fn push(&mut self, p: Param) {
        self.0.push(p);
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Param> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `None` when absent, `Some(None)` for a parameter without a value.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.find(name).map(|p| p.value.as_deref())
    }

    pub fn find(&self, name: &str) -> Option<&Param> {
        self.0.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Sets (replacing any present) a parameter.
    pub fn set(&mut self, p: Param) {
        match self
            .0
            .iter_mut()
            .find(|q| q.name.eq_ignore_ascii_case(&p.name))
        {
            Some(q) => *q = p,
            None => self.0.push(p),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|p| !p.name.eq_ignore_ascii_case(name));
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            write!(f, ";{}", p.name)?;
            if let Some(v) = &p.value {
                if p.quoted {
                    write!(f, "=\"{v}\"")?;
                } else {
                    write!(f, "={v}")?;
                }
            }
        }
        Ok(())
    }
}

/// `gen-value = token / host / quoted-string` (RFC 3261 §25.1). Hosts add
/// `:` and brackets (IPv6) to the token characters.
fn gen_value<'a>(src: &ByteString) -> impl Fn(In<'a>) -> PResult<'a, (ByteString, bool)> + '_ {
    move |i| {
        if i.first() == Some(&b'"') {
            let (r, q) = quoted_string(i)?;
            return Ok((r, (bs_slice(src, q), true)));
        }
        let n = i
            .iter()
            .position(|&b| !(is_token_char(b) || b == b':' || b == b'[' || b == b']'))
            .unwrap_or(i.len());
        if n == 0 {
            return fail(i, "empty parameter value");
        }
        Ok((&i[n..], (bs_slice(src, &i[..n]), false)))
    }
}

/// `*( SEMI generic-param )` of a header value.
pub(crate) fn header_params<'a>(src: &ByteString) -> impl Fn(In<'a>) -> PResult<'a, Params> + '_ {
    move |mut i| {
        let mut params = Params::default();
        while g::peek_sep(i, b';') {
            let (r, _) = sep(b';')(i)?;
            let (r, name) = g::expect("empty parameter", g::token)(r)?;
            let (r, value, quoted) = if g::peek_sep(r, b'=') {
                let (r, _) = sep(b'=')(r)?;
                let (r, (v, q)) = gen_value(src)(r)?;
                (r, Some(v), q)
            } else {
                (r, None, false)
            };
            params.push(Param {
                name: bs_slice(src, name),
                value,
                quoted,
            });
            i = r;
        }
        let (i, _) = sws(i)?;
        Ok((i, params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaced_params() {
        let src = ByteString::from_static(" ;   tag    = 1918181833n ; q = 0.33;lr;d=\"a \\\"b\"");
        let (rest, p) = header_params(&src)(src.as_bytes()).unwrap();
        assert!(rest.is_empty());
        assert_eq!(p.get("TAG"), Some(Some("1918181833n")));
        assert_eq!(p.get("q"), Some(Some("0.33")));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.find("d").unwrap().unquoted_value().unwrap(), "a \"b");
        assert_eq!(p.to_string(), ";tag=1918181833n;q=0.33;lr;d=\"a \\\"b\"");
    }

    #[test]
    fn empty_param_is_an_error() {
        let src = ByteString::from_static(";;");
        assert!(header_params(&src)(src.as_bytes()).is_err());
    }
}
