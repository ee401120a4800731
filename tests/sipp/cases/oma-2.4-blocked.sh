# shellcheck shell=bash
# OMA Presence SIMPLE flow 2.4 (seed 004, PS-1.0-int-M-0130 "Watcher is
# blocked"; protocol-notes §5.4): a watcher the presentity blocks (admin API
# rule `block`) is refused: its existing subscription ends with
# terminated;reason=rejected, a new SUBSCRIBE gets 403, and its third-party
# PUBLISH for the presentity (seed steps 1-4) gets 403 and composes nothing:
# eve holds no publisher grant (issue 14: only a grant, never a watch rule,
# lets a third party publish; the source below has one).
# transports: udp tcp
#
#   admin    PUT /admin/v1/publishers/sip:ivy@example.com/sip:source@example.com -> 200
#   source   PUBLISH for ivy, t24 open -> 200
#   eve      SUBSCRIBE ivy (default policy allow) -> 200 -> NOTIFY active, t24
#   admin    PUT /admin/v1/policies/sip:ivy@example.com/sip:eve@example.com
#            {"action":"block"} -> 200, the rule echoed; GET lists it
#   eve      NOTIFY terminated;reason=rejected (RFC 6665 §4.2.1.4)
#   watcher  SUBSCRIBE ivy -> 200 -> NOTIFY t24; then no NOTIFY for 4 s while:
#   eve      SUBSCRIBE ivy -> 403 (To tag), no NOTIFY
#   eve      seed step 1 PUBLISH for ivy (From eve, tuple eve-t24 open)
#            -> step 3 403 Forbidden, no SIP-ETag, no Expires
#   watcher  unsubscribe -> terminated, t24 only
#   GET /cpim/v1/presence/pres:ivy@example.com: t24, no eve-t24
start_gateway_with

pidf=(-key ctype application/pidf+xml -key pidf_ns urn:ietf:params:xml:ns:pidf
    -key pres_user ivy -key pub_expires 3600)
put_publisher sip:ivy@example.com sip:source@example.com
sipp_run source publish "${pidf[@]}" -key pua source -key tuple_id t24 \
    -key basic open -key ts 2005-02-07T13:00:00Z

sipp_start eve oma-2.4-blocked
sipp_wait_log eve '^e1$'
put_policy sip:ivy@example.com sip:eve@example.com block
sipp_wait_log eve '^rejected$'
sipp_wait eve
http_get /admin/v1/policies/sip:ivy@example.com
json_expect "the block rule is stored" \
    "d['default'] == 'allow' and d['rules'] == [{'watcher': 'sip:eve@example.com', 'action': 'block'}]"

sipp_start watcher oma-2.4-watcher
sipp_wait_log watcher '^n1$'
sipp_run eve-subscribe subscribe-403 -key pres_user ivy -key sub_user eve \
    -key event presence -key accept application/pidf+xml
sipp_run eve-publish publish-403 "${pidf[@]}" -key pua eve -key tuple_id eve-t24 \
    -key basic open -key ts 2005-02-07T13:05:00Z
! grep -q '^quiet-over$' "$WORK/watcher.log" ||
    fail "the watcher's quiet window ended before eve's requests were done (machine too slow?)"
step "ok: eve's SUBSCRIBE and PUBLISH were refused within the watcher's quiet window"
sipp_wait watcher

http_get /cpim/v1/presence/pres:ivy@example.com
expect_eq "GET /cpim/v1/presence status" "$HTTP_CODE" 200
[[ "$HTTP_BODY" == *'<tuple id="t24">'* && "$HTTP_BODY" != *'eve-t24'* ]] ||
    fail "GET /cpim/v1/presence: want t24 and no eve-t24: $HTTP_BODY"
step "ok: the refused PUBLISH composed nothing"
