//! Digest authentication of requests to local presentities (RFC 3261 §22,
//! RFC 7616, RFC 8760): challenges offering SHA-256 and MD5 with
//! `qop=auth`, stateless nonces that go stale, `nc` replay checks, and the
//! seed's replay rule for `Date` (seed §9.4).

pub mod digest;

use crate::sip::{HeaderName, Message};
use digest::Algorithm;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;

/// Users and their HA1 hashes, from the credentials file: one
/// `user:realm:HA1` line per algorithm (32 hex digits: MD5, 64: SHA-256).
/// Lines for other realms and `#` comments are ignored.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    users: HashMap<String, Vec<(Algorithm, String)>>,
}

impl Credentials {
    pub fn parse(text: &str, realm: &str) -> Result<Credentials, String> {
        let mut users: HashMap<String, Vec<(Algorithm, String)>> = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.rsplitn(3, ':').collect();
            let [ha1, r, user] = parts[..] else {
                return Err(format!("line {}: expected user:realm:HA1", n + 1));
            };
            if r != realm {
                continue;
            }
            let alg = match ha1.len() {
                32 => Algorithm::Md5,
                64 => Algorithm::Sha256,
                _ => {
                    return Err(format!(
                        "line {}: HA1 must be 32 (MD5) or 64 (SHA-256) hex digits",
                        n + 1
                    ));
                }
            };
            if !ha1.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("line {}: HA1 is not hex", n + 1));
            }
            users
                .entry(user.to_owned())
                .or_default()
                .push((alg, ha1.to_ascii_lowercase()));
        }
        Ok(Credentials { users })
    }

    pub fn load(path: &std::path::Path, realm: &str) -> Result<Credentials, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text, realm).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether any user has an HA1 for `alg`: only then can an answer
    /// computed with it be verified.
    pub fn has(&self, alg: Algorithm) -> bool {
        self.users.values().flatten().any(|(a, _)| *a == alg)
    }

    fn ha1(&self, user: &str, alg: Algorithm) -> Option<&str> {
        self.users
            .get(user)?
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, h)| h.as_str())
    }
}

/// The outcome of checking a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials are right: the authenticated user name.
    Authenticated(String),
    /// No (usable) credentials, or a stale nonce: answer 401 with a challenge.
    Challenge { stale: bool },
    /// Wrong credentials, a replayed nonce count, or a Date out of range: 403.
    Forbidden(&'static str),
}

pub struct Authenticator {
    realm: String,
    creds: Credentials,
    secret: [u8; 32],
    nonce_ttl_ms: i64,
    date_skew_ms: i64,
    /// Highest `nc` seen per nonce (RFC 7616 §3.4: a repeated count is a replay).
    nc_seen: Mutex<HashMap<String, u32>>,
}

type HmacSha256 = Hmac<Sha256>;

impl Authenticator {
    pub fn new(
        realm: &str,
        creds: Credentials,
        nonce_ttl_ms: i64,
        date_skew_ms: i64,
    ) -> Authenticator {
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Authenticator {
            realm: realm.to_owned(),
            creds,
            secret,
            nonce_ttl_ms,
            date_skew_ms,
            nc_seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn mac(&self, ts: &str) -> String {
        let mut m = HmacSha256::new_from_slice(&self.secret).expect("any key length");
        m.update(ts.as_bytes());
        let tag = m.finalize().into_bytes();
        tag[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A nonce: issue time and a MAC over it, so no state is kept per
    /// challenge and a forged nonce is recognised.
    pub fn nonce(&self, now_ms: i64) -> String {
        // Issue time, a random part (unique per challenge), then the MAC.
        let rnd = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let ts = format!("{now_ms:x}-{rnd}");
        let mac = self.mac(&ts);
        format!("{ts}.{mac}")
    }

    /// The WWW-Authenticate values of a 401: SHA-256 first (RFC 8760 §2.4),
    /// then MD5 for older clients — each only when the credentials file
    /// holds HA1s of that algorithm. An answer to a challenge we cannot
    /// verify would be refused anyway, and deployed clients (baresip's
    /// libre, tests/interop/README.md) try only the first challenge and give
    /// up when they lack its algorithm instead of moving on to the next one
    /// as RFC 8760 §2.4 asks.
    pub fn challenges(&self, stale: bool, now_ms: i64) -> Vec<String> {
        let all = [Algorithm::Sha256, Algorithm::Md5];
        // A 401 must carry a challenge (RFC 3261 §22.1) even when no one
        // can answer it (an empty credentials file): then both are offered.
        let held = all.iter().any(|a| self.creds.has(*a));
        all.iter()
            .filter(|a| !held || self.creds.has(**a))
            .map(|a| {
                // One nonce per challenge: each has its own nc sequence.
                let nonce = self.nonce(now_ms);
                let mut c = format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    self.realm,
                    a.name()
                );
                if stale {
                    c.push_str(", stale=true");
                }
                c
            })
            .collect()
    }

    /// Checks the Authorization of `req` (RFC 3261 §22.4).
    pub fn verify(&self, req: &Message, now_ms: i64) -> Verdict {
        let Ok(values) = req.authorization() else {
            return Verdict::Challenge { stale: false };
        };
        let Some(c) = values
            .iter()
            .find(|v| v.is_digest() && v.param("realm").as_deref() == Some(self.realm.as_str()))
        else {
            return Verdict::Challenge { stale: false };
        };
        let (Some(user), Some(nonce), Some(uri), Some(given)) = (
            c.param("username"),
            c.param("nonce"),
            c.param("uri"),
            c.param("response"),
        ) else {
            return Verdict::Challenge { stale: false };
        };
        let Some(alg) = Algorithm::parse(c.param("algorithm").as_deref()) else {
            return Verdict::Challenge { stale: false };
        };
        // A nonce we did not issue: challenge afresh.
        let Some((ts, mac)) = nonce.split_once('.') else {
            return Verdict::Challenge { stale: false };
        };
        if self.mac(ts) != mac {
            return Verdict::Challenge { stale: false };
        }
        let issued = ts
            .split('-')
            .next()
            .and_then(|t| i64::from_str_radix(t, 16).ok())
            .unwrap_or(0);
        let Some(ha1) = self.creds.ha1(&user, alg) else {
            return Verdict::Forbidden("unknown user");
        };
        let method = req.method().map(|m| m.to_string()).unwrap_or_default();
        let qop = c.param("qop");
        let (nc, cnonce) = (c.param("nc"), c.param("cnonce"));
        let expected = match (&qop, &nc, &cnonce) {
            (Some(q), Some(nc), Some(cn)) if q.eq_ignore_ascii_case("auth") => {
                digest::response(alg, ha1, &nonce, Some((nc, cn, q)), &method, &uri)
            }
            (None, _, _) => digest::response(alg, ha1, &nonce, None, &method, &uri),
            _ => return Verdict::Challenge { stale: false },
        };
        if !expected.eq_ignore_ascii_case(&given) {
            return Verdict::Forbidden("wrong credentials");
        }
        // Right password, old nonce: ask again with stale=true (RFC 7616 §3.3).
        if now_ms - issued > self.nonce_ttl_ms || issued > now_ms + 60_000 {
            return Verdict::Challenge { stale: true };
        }
        if let Some(nc) = nc {
            let Ok(n) = u32::from_str_radix(&nc, 16) else {
                return Verdict::Forbidden("bad nonce count");
            };
            let mut seen = self.nc_seen.lock().unwrap_or_else(|p| p.into_inner());
            // Forget nonces that can no longer be used.
            if seen.len() > 100_000 {
                let ttl = self.nonce_ttl_ms;
                seen.retain(|k, _| {
                    k.split(['.', '-'])
                        .next()
                        .and_then(|t| i64::from_str_radix(t, 16).ok())
                        .is_some_and(|t| now_ms - t <= ttl)
                });
            }
            let last = seen.entry(nonce.clone()).or_insert(0);
            if n <= *last {
                return Verdict::Forbidden("replayed nonce count");
            }
            *last = n;
        }
        // Seed §9.4: a signed request carrying a Date far from now is a replay.
        if let Ok(Some(date)) = req.date() {
            let ms = date
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            if (ms - now_ms).abs() > self.date_skew_ms {
                return Verdict::Forbidden("Date out of range");
            }
        }
        Verdict::Authenticated(user)
    }
}

/// A 401 with challenges.
pub fn challenge_response(
    st_reply: Message,
    auth: &Authenticator,
    stale: bool,
    now_ms: i64,
) -> Message {
    let mut r = st_reply;
    for c in auth.challenges(stale, now_ms) {
        r.push_header(HeaderName::WwwAuthenticate, c);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Limits, parse_datagram};

    fn creds() -> Credentials {
        let md5 = digest::ha1(Algorithm::Md5, "alice", "example.com", "secret");
        let sha = digest::ha1(Algorithm::Sha256, "alice", "example.com", "secret");
        Credentials::parse(
            &format!(
                "# users\nalice:example.com:{md5}\nalice:example.com:{sha}\nbob:other.org:{md5}\n"
            ),
            "example.com",
        )
        .unwrap()
    }

    fn register(auth: &str) -> Message {
        let raw = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:alice@example.com>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n{auth}Content-Length: 0\r\n\r\n"
        );
        parse_datagram(bytes::Bytes::from(raw), &Limits::default()).unwrap()
    }

    fn authorization(alg: Algorithm, nonce: &str, nc: &str, password: &str) -> String {
        let ha1 = digest::ha1(alg, "alice", "example.com", password);
        let r = digest::response(
            alg,
            &ha1,
            nonce,
            Some((nc, "cn1", "auth")),
            "REGISTER",
            "sip:example.com",
        );
        format!(
            "Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"sip:example.com\", response=\"{r}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"cn1\"\r\n",
            alg.name()
        )
    }

    #[test]
    fn challenges_only_for_algorithms_the_credentials_hold() {
        let both = Authenticator::new("example.com", creds(), 30_000, 0);
        let algs = |a: &Authenticator| -> Vec<String> {
            a.challenges(false, 0)
                .iter()
                .map(|c| {
                    c.split("algorithm=")
                        .nth(1)
                        .unwrap()
                        .split(',')
                        .next()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(algs(&both), ["SHA-256", "MD5"]);
        let md5 = digest::ha1(Algorithm::Md5, "alice", "example.com", "secret");
        let only_md5 =
            Credentials::parse(&format!("alice:example.com:{md5}\n"), "example.com").unwrap();
        let a = Authenticator::new("example.com", only_md5, 30_000, 0);
        assert_eq!(algs(&a), ["MD5"]);
        let sha = digest::ha1(Algorithm::Sha256, "alice", "example.com", "secret");
        let only_sha =
            Credentials::parse(&format!("alice:example.com:{sha}\n"), "example.com").unwrap();
        let a = Authenticator::new("example.com", only_sha, 30_000, 0);
        assert_eq!(algs(&a), ["SHA-256"]);
    }

    #[test]
    fn challenge_then_success_for_both_algorithms() {
        let a = Authenticator::new("example.com", creds(), 300_000, 300_000);
        assert_eq!(
            a.verify(&register(""), 1000),
            Verdict::Challenge { stale: false }
        );
        let ch = a.challenges(false, 1000);
        assert!(
            ch[0].contains("algorithm=SHA-256")
                && ch[1].contains("algorithm=MD5")
                && ch[0].contains("qop=\"auth\"")
        );
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let nonce = a.nonce(1000);
            let req = register(&authorization(alg, &nonce, "00000001", "secret"));
            assert_eq!(
                a.verify(&req, 2000),
                Verdict::Authenticated("alice".into()),
                "{}",
                alg.name()
            );
            // The same nonce count again is a replay.
            assert_eq!(
                a.verify(&req, 2000),
                Verdict::Forbidden("replayed nonce count")
            );
            let req = register(&authorization(alg, &nonce, "00000002", "secret"));
            assert_eq!(a.verify(&req, 2000), Verdict::Authenticated("alice".into()));
        }
    }

    #[test]
    fn wrong_password_stale_and_forged_nonces() {
        let a = Authenticator::new("example.com", creds(), 10_000, 300_000);
        let nonce = a.nonce(1000);
        let wrong = register(&authorization(Algorithm::Md5, &nonce, "00000001", "guess"));
        assert_eq!(
            a.verify(&wrong, 2000),
            Verdict::Forbidden("wrong credentials")
        );
        let right = register(&authorization(Algorithm::Md5, &nonce, "00000002", "secret"));
        assert_eq!(a.verify(&right, 20_000), Verdict::Challenge { stale: true });
        let forged = register(&authorization(
            Algorithm::Md5,
            "3e8-0badc0de.00000000000000000000000000000000",
            "00000001",
            "secret",
        ));
        assert_eq!(a.verify(&forged, 2000), Verdict::Challenge { stale: false });
    }
}
