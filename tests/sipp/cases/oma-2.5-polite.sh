# shellcheck shell=bash
# OMA Presence SIMPLE flow 2.5 (seed 004, PS-1.0-int-M-0140 "Watcher is
# politely blocked"; protocol-notes §5.5): a politely blocked watcher gets
# what a granted subscription gets (200, active NOTIFY) but only a neutral
# document, never the presentity's real state, also after it changes.
# transports: udp tcp
#
#   admin    PUT /admin/v1/publishers/sip:frank@example.com/sip:{source,mobile}@example.com
#            -> 200 (issue 14: third-party sources need a publisher grant)
#   source   PUBLISH for frank, t25 open -> 200
#   admin    PUT /admin/v1/policies/sip:frank@example.com/sip:eve@example.com
#            {"action":"polite-block"} -> 200, the rule echoed; GET lists it
#   watcher  (authorized, the control) SUBSCRIBE -> 200 -> NOTIFY t25 open
#   eve      step 1 SUBSCRIBE -> step 3 200 -> step 5 NOTIFY active, neutral
#            (basic closed, no t25, no open) -> step 7 200
#   mobile   PUBLISH for frank, t25-mobile open -> 200
#   watcher  NOTIFY with t25 and t25-mobile open (the change is real)
#   eve      no NOTIFY within 3 s, or one with the neutral document again
#   both     unsubscribe -> terminated (eve's still neutral)
#   GET /cpim/v1/presence/pres:frank@example.com: t25 and t25-mobile open
start_gateway_with

pidf=(-key ctype application/pidf+xml -key pidf_ns urn:ietf:params:xml:ns:pidf
    -key pres_user frank -key pub_expires 3600)
put_publisher sip:frank@example.com sip:source@example.com
put_publisher sip:frank@example.com sip:mobile@example.com
sipp_run source publish "${pidf[@]}" -key pua source -key tuple_id t25 \
    -key basic open -key ts 2005-02-07T14:00:00Z
put_policy sip:frank@example.com sip:eve@example.com polite-block
http_get /admin/v1/policies/sip:frank@example.com
json_expect "the polite-block rule is stored" \
    "d['rules'] == [{'watcher': 'sip:eve@example.com', 'action': 'polite-block'}]"

sipp_start watcher oma-2.5-watcher
sipp_wait_log watcher '^n1$'
sipp_start eve oma-2.5-blocked
sipp_wait_log eve '^n1$'
sipp_run mobile publish "${pidf[@]}" -key pua mobile -key tuple_id t25-mobile \
    -key basic open -key ts 2005-02-07T14:05:00Z
! grep -q '^quiet$' "$WORK/eve.log" ||
    fail "eve's 3 s window ended before the second PUBLISH was done (machine too slow?)"
sipp_wait_log watcher '^n2$'
sipp_wait watcher eve
if grep -q '^n2-neutral$' "$WORK/eve.log"; then
    step "ok: after the state change eve got the neutral document again"
else
    step "ok: after the state change eve got no NOTIFY"
fi

http_get /cpim/v1/presence/pres:frank@example.com
expect_eq "GET /cpim/v1/presence status" "$HTTP_CODE" 200
[[ "$HTTP_BODY" == *'<tuple id="t25">'* && "$HTTP_BODY" == *'<tuple id="t25-mobile">'* &&
    "$HTTP_BODY" != *'<basic>closed</basic>'* ]] ||
    fail "GET /cpim/v1/presence: want t25 and t25-mobile, both open: $HTTP_BODY"
step "ok: frank's real state is t25 and t25-mobile open (what eve never saw)"
