//! Digest computation (RFC 7616 §3.4, RFC 8760 for SIP): MD5 and SHA-256,
//! `qop=auth`. Pure functions.

use md5::Md5;
use sha2::{Digest, Sha256};

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// `algorithm=` value; absent means MD5 (RFC 7616 §3.3).
    pub fn parse(s: Option<&str>) -> Option<Algorithm> {
        match s {
            None => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    /// Length of a hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 => 64,
        }
    }

    /// `H(data)` as lowercase hex.
    pub fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// `HA1 = H(username:realm:password)`.
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> String {
    alg.hash(&format!("{user}:{realm}:{password}"))
}

/// The expected `response` (RFC 7616 §3.4.1): with `qop=auth`,
/// `KD(HA1, nonce:nc:cnonce:qop:HA2)`; without qop (RFC 2069 / RFC 3261
/// §22.4 legacy), `H(HA1:nonce:HA2)`. `HA2 = H(method:uri)`.
pub fn response(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    qop: Option<(&str, &str, &str)>,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hash(&format!("{method}:{uri}"));
    match qop {
        Some((nc, cnonce, qop)) => alg.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")),
        None => alg.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1.
    #[test]
    fn rfc7616_test_vectors() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        for (alg, expected) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let h = ha1(alg, "Mufasa", "http-auth@example.org", "Circle of Life");
            let r = response(
                alg,
                &h,
                nonce,
                Some(("00000001", cnonce, "auth")),
                "GET",
                "/dir/index.html",
            );
            assert_eq!(r, expected, "{}", alg.name());
        }
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(Algorithm::parse(None), Some(Algorithm::Md5));
        assert_eq!(Algorithm::parse(Some("sha-256")), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::parse(Some("SHA-512-256")), None);
    }
}
