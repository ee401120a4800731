# shellcheck shell=bash
# OMA Presence SIMPLE flow 2.1 (seed 004, PS-1.0-int-M-0100; protocol-notes
# §5.1): publication from multiple sources is composed into one document.
# transports: udp tcp
#
#   admin    PUT /admin/v1/publishers/sip:alice@example.com/sip:source{1,2}@example.com
#            -> 200 (issue 14: a source other than alice needs a publisher grant)
#   source3  PUBLISH for alice, no grant (default policy allow) -> 403
#   source2  PUBLISH for alice (PIDF tuple t2 open) -> 200, SIP-ETag, Expires
#   watcher  SUBSCRIBE alice -> 200 -> NOTIFY with t2
#   source1  PUBLISH for alice (third party: From source1, tuple t1 closed)
#            -> 200 with SIP-ETag and Expires (RFC 3903 §6 step 9)
#   watcher  NOTIFY active with t1 and t2; unsubscribe -> terminated
#   GET /cpim/v1/presence/pres:alice@example.com: t1 and t2 too
start_gateway_with

pidf=(-key ctype application/pidf+xml -key pidf_ns urn:ietf:params:xml:ns:pidf
    -key pres_user alice -key pub_expires 3600)
put_publisher sip:alice@example.com sip:source1@example.com
put_publisher sip:alice@example.com sip:source2@example.com
# The default policy here is "allow": a watch policy, so no permission to
# publish (issue 14). A source without a grant is refused.
sipp_run source3 publish-403 "${pidf[@]}" -key pua source3 -key tuple_id t3 \
    -key basic open -key ts 2005-02-07T09:55:00Z
sipp_run source2 publish "${pidf[@]}" -key pua source2 -key tuple_id t2 \
    -key basic open -key ts 2005-02-07T10:00:00Z
sipp_start watcher oma-2.1-watcher
sipp_wait_log watcher '^n1$'
sipp_run source1 publish "${pidf[@]}" -key pua source1 -key tuple_id t1 \
    -key basic closed -key ts 2005-02-07T10:05:00Z
[[ "$(sipp_log_value source1 etag)" != "$(sipp_log_value source2 etag)" ]] ||
    fail "the two publications got the same SIP-ETag"
sipp_wait watcher

http_get /cpim/v1/presence/pres:alice@example.com
expect_eq "GET /cpim/v1/presence status" "$HTTP_CODE" 200
[[ "$HTTP_BODY" == *'<tuple id="t1">'* && "$HTTP_BODY" == *'<tuple id="t2">'* ]] ||
    fail "GET /cpim/v1/presence: want tuples t1 and t2: $HTTP_BODY"
[[ "$HTTP_BODY" != *'<tuple id="t3">'* ]] ||
    fail "GET /cpim/v1/presence: source3's refused tuple t3 is there: $HTTP_BODY"
step "ok: the fetched document has t1 and t2"
