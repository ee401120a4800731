//! Accept negotiation (RFC 3261 §20.1, RFC 3856 §6.5/§7.1): the presence
//! format to send to a watcher, given the media ranges it accepts.

use super::format::PresenceFormat;

/// q-value of a media range (RFC 3261 §20.1 / RFC 7231 §5.3.1); an
/// unparseable q counts as 1, out-of-range values are clamped.
fn q_of(range: &mime::Mime) -> f32 {
    range
        .get_param("q")
        .and_then(|q| q.as_str().trim().parse::<f32>().ok())
        .filter(|q| q.is_finite())
        .map(|q| q.clamp(0.0, 1.0))
        .unwrap_or(1.0)
}

/// q the Accept ranges give to `format`: the most specific matching range
/// wins (exact > `type/*` > `*/*`); 0 when nothing matches.
fn quality(ranges: &[mime::Mime], format: PresenceFormat) -> f32 {
    let (ty, sub) = format
        .content_type()
        .split_once('/')
        .unwrap_or(("application", ""));
    let mut best: Option<(u8, f32)> = None;
    for r in ranges {
        let (rt, rs) = r.essence_str().split_once('/').unwrap_or(("", ""));
        let specificity = if rt.eq_ignore_ascii_case(ty) && rs.eq_ignore_ascii_case(sub) {
            2
        } else if rt.eq_ignore_ascii_case(ty) && rs == "*" {
            1
        } else if rt == "*" && rs == "*" {
            0
        } else {
            continue;
        };
        let q = q_of(r);
        best = match best {
            Some((s, bq)) if s > specificity || (s == specificity && bq >= q) => Some((s, bq)),
            _ => Some((specificity, q)),
        };
    }
    best.map_or(0.0, |(_, q)| q)
}

/// RFC 3261 §20.1 / RFC 3856 §6.5 negotiation: the format to send to a
/// watcher given its Accept values (`None` = header absent → PIDF;
/// `Some(empty list)` = nothing acceptable). Honours q-values (q=0 = not
/// acceptable), wildcards `*/*` and `application/*`; ties go to PIDF, then
/// cpim-pidf, then XPIDF. `None` return = 406 Not Acceptable.
pub fn negotiate(accept: Option<&[mime::Mime]>) -> Option<PresenceFormat> {
    let Some(ranges) = accept else {
        return Some(PresenceFormat::Pidf);
    };
    let mut best: Option<(PresenceFormat, f32)> = None;
    for f in PresenceFormat::ALL {
        let q = quality(ranges, f);
        if q > 0.0 && best.is_none_or(|(_, bq)| q > bq) {
            best = Some((f, q));
        }
    }
    best.map(|(f, _)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mimes(s: &[&str]) -> Vec<mime::Mime> {
        s.iter().map(|m| m.parse().unwrap()).collect()
    }

    #[test]
    fn negotiation() {
        use PresenceFormat::*;
        let n = |s: &[&str]| negotiate(Some(&mimes(s)));
        assert_eq!(negotiate(None), Some(Pidf));
        assert_eq!(n(&[]), None);
        assert_eq!(n(&["application/pidf+xml"]), Some(Pidf));
        assert_eq!(n(&["application/xpidf+xml"]), Some(Xpidf));
        assert_eq!(n(&["application/cpim-pidf+xml"]), Some(CpimPidf));
        assert_eq!(
            n(&["application/pidf+xml;q=0.5", "application/xpidf+xml"]),
            Some(Xpidf)
        );
        assert_eq!(n(&["application/*"]), Some(Pidf));
        assert_eq!(n(&["*/*"]), Some(Pidf));
        assert_eq!(n(&["text/plain"]), None);
        assert_eq!(n(&["application/pidf+xml;q=0"]), None);
        assert_eq!(
            n(&["application/pidf+xml;q=0", "application/*"]),
            Some(CpimPidf)
        );
        assert_eq!(
            n(&[
                "application/pidf+xml;q=0",
                "application/*;q=0.1",
                "application/xpidf+xml;q=0.2"
            ]),
            Some(Xpidf)
        );
        assert_eq!(
            n(&["application/xpidf+xml", "application/cpim-pidf+xml"]),
            Some(CpimPidf)
        );
        assert_eq!(
            n(&["application/xpidf+xml", "application/pidf+xml"]),
            Some(Pidf)
        );
        assert_eq!(n(&["Application/PIDF+XML;q=0.7", "text/plain"]), Some(Pidf));
        assert_eq!(n(&["*/*;q=0"]), None);
        assert_eq!(n(&["application/pidf+xml;q=bogus"]), Some(Pidf));
        assert_eq!(
            n(&["application/sdp", "application/xpidf+xml;q=0.001"]),
            Some(Xpidf)
        );
    }
}
