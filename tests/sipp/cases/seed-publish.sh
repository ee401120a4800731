# shellcheck shell=bash
# Seed 002 (draft-olson-simple-publish-02) §12 M1-M14, with RFC 3903
# entity-tags: two PUAs publish for presentity@example.com, a watcher and the
# PUA's own subscription see the composed document.
# transports: udp tcp
#
#   admin    PUT /admin/v1/publishers/sip:presentity@example.com/sip:{mobile,desktop}@example.com
#            -> 200 (issue 14: the PUAs publish From their own AORs, so each
#            needs a publisher grant for presentity)
#   watcher  M1 SUBSCRIBE -> M2 200 -> n1 NOTIFY (neutral)
#   pub1     PUBLISH mobile-phone open 16:49:29Z -> 200 + SIP-ETag  -> watcher n2
#   pub2     PUBLISH desktop open 12:21:29Z (another PUA) -> 200 + SIP-ETag
#            -> watcher n3 = seed M3 (both tuples)
#   self     M5 SUBSCRIBE (Accept cpim-pidf) -> M6 200 -> M7 NOTIFY (both open)
#   m9       M9 PUBLISH mobile-phone closed 17:00:19Z -> M10 200 + SIP-ETag
#            -> watcher n4 = M11, self M13
#   stale    PUBLISH mobile-phone open 16:55:00Z (older) -> 494, no SIP-ETag
#   refresh  SIP-If-Match: pub2's tag, no body -> 200 with a new SIP-ETag
#   old-tag  SIP-If-Match: pub2's (now superseded) tag -> 412
#   bogus    SIP-If-Match: a made-up tag -> 412
#   modify   SIP-If-Match: the refreshed tag, desktop closed 17:05:00Z -> 200
#            -> watcher n5 and self: both closed (so nothing was notified
#            for the 494, refresh or 412s); both unsubscribe -> terminated.
start_gateway_with

pub_keys=(-key pres_user presentity -key pub_expires 3600)
cpim_pidf=(-key ctype application/cpim-pidf+xml -key pidf_ns urn:ietf:params:xml:ns:cpim-pidf)
put_publisher sip:presentity@example.com sip:mobile@example.com
put_publisher sip:presentity@example.com sip:desktop@example.com

sipp_start watcher publish-watcher
sipp_wait_log watcher '^n1$'

sipp_run pub1 publish "${pub_keys[@]}" "${cpim_pidf[@]}" -key pua mobile -key tuple_id mobile-phone \
    -key basic open -key ts 2003-02-01T16:49:29Z
sipp_wait_log watcher '^n2$'

sipp_run pub2 publish "${pub_keys[@]}" "${cpim_pidf[@]}" -key pua desktop -key tuple_id desktop \
    -key basic open -key ts 2003-02-01T12:21:29Z
sipp_wait_log watcher '^n3$'
etag_desktop=$(sipp_log_value pub2 etag)
[[ -n "$etag_desktop" ]] || fail "no SIP-ETag logged for pub2"
expect_le "pub2 Expires <= 3600" "$(sipp_log_value pub2 expires)" 3600

sipp_start self publish-self
sipp_wait_log self '^m7$'

sipp_run m9 publish "${pub_keys[@]}" "${cpim_pidf[@]}" -key pua mobile -key tuple_id mobile-phone \
    -key basic closed -key ts 2003-02-01T17:00:19Z
sipp_wait_log watcher '^n4$'
sipp_wait_log self '^m13$'
etag_m9=$(sipp_log_value m9 etag)
etag_pub1=$(sipp_log_value pub1 etag)
[[ "$etag_m9" != "$etag_pub1" && "$etag_m9" != "$etag_desktop" ]] ||
    fail "M10: SIP-ETag $etag_m9 is not a new entity-tag (pub1 $etag_pub1, pub2 $etag_desktop)"

sipp_run stale publish-494 "${pub_keys[@]}" -key pua mobile -key tuple_id mobile-phone \
    -key basic open -key ts 2003-02-01T16:55:00Z

sipp_run refresh publish-refresh "${pub_keys[@]}" -key pua desktop -key etag "$etag_desktop"
etag_refreshed=$(sipp_log_value refresh etag)
[[ -n "$etag_refreshed" && "$etag_refreshed" != "$etag_desktop" ]] ||
    fail "refresh: SIP-ETag '$etag_refreshed' should be new (RFC 3903 §6 step 9), was '$etag_desktop'"
step "ok: refresh gave a new SIP-ETag ($etag_desktop -> $etag_refreshed)"

sipp_run old-tag publish-412 "${pub_keys[@]}" -key pua desktop -key etag "$etag_desktop"
sipp_run bogus publish-412 "${pub_keys[@]}" -key pua desktop -key etag "bogus-$$-etag"

sipp_run modify publish-modify "${pub_keys[@]}" -key pua desktop -key etag "$etag_refreshed" \
    -key tuple_id desktop -key basic closed -key ts 2003-02-01T17:05:00Z

sipp_wait watcher self

# The fetch API sees the same composed state (docs/cpim-api.md).
http_get /cpim/v1/presence/pres:presentity@example.com
expect_eq "GET /cpim/v1/presence status" "$HTTP_CODE" 200
[[ "$HTTP_BODY" == *'<tuple id="mobile-phone">'* && "$HTTP_BODY" == *'<tuple id="desktop">'* &&
    "$HTTP_BODY" != *'<basic>open</basic>'* ]] ||
    fail "GET /cpim/v1/presence: want mobile-phone and desktop, both closed: $HTTP_BODY"
