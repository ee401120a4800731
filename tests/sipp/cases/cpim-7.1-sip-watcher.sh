# shellcheck shell=bash
# Seed 000/001 §7.1 "SIP to CPIM": a SIP watcher subscribes to a presentity of
# a CPIM domain (cpim_domains = xmpp.example.org) through the gateway, which
# calls the adapter (tests/sipp/adapter.py, mode success, duration 300).
# transports: udp tcp
#
#   watcher  SUBSCRIBE sip:carol@xmpp.example.org (Expires 600)
#            -> adapter POST .../subscribe {watcher, target, duration, transID}
#            -> 202, To tag = transID (40 hex), Contact = the gateway,
#               Expires 300; NOTIFY active without a body, same Contact
#   curl     POST /cpim/v1/notify {watcher pres:bob@example.com, target
#            pres:carol@..., presence {application/pidf+xml, body}} -> success
#   watcher  NOTIFY with that body, byte for byte
#   watcher  refresh (Expires 600) to the NOTIFY's Contact, a Request-URI
#            with no CPIM domain: routed by dialog -> adapter subscribe again
#            with transID = the To tag -> 202, NOTIFY with the last state
#   watcher  SUBSCRIBE Expires 0 to the same target -> adapter POST .../unsubscribe
#            with transID = the To tag -> 200, NOTIFY terminated;reason=timeout
adapter_start success --duration 300
start_gateway_with 'sip.cpim_domains=["xmpp.example.org"]' "cpim.adapter_url=\"$ADAPTER_URL\""

sipp_start watcher cpim-7.1-watcher
sipp_wait_log watcher '^n1$'
totag=$(sipp_log_value watcher totag)
[[ "$totag" =~ ^[0-9a-f]{40}$ ]] || fail "202 To tag '$totag' is not 40 hex characters"

adapter_expect "adapter got one subscribe: watcher, target, duration 600, transID = the To tag" \
    "len(calls('subscribe')) == 1 and calls('subscribe')[0] == {
        'watcher': 'pres:bob@example.com', 'target': 'pres:carol@xmpp.example.org',
        'duration': 600, 'transID': '$totag'}"

# The CPIM side's presence, as PIDF; sent and expected back byte for byte.
body=$'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:carol@xmpp.example.org">\n  <tuple id="carol-xmpp">\n    <status><basic>open</basic></status>\n    <note xml:lang="en">Writing tests &amp; drinking tea</note>\n  </tuple>\n</presence>\n'
printf '%s' "$body" >"$WORK/notify-body.xml"
req=$(python3 -c '
import json, sys
print(json.dumps({"watcher": "pres:bob@example.com", "target": "pres:carol@xmpp.example.org",
                  "presence": {"content_type": "application/pidf+xml", "body": open(sys.argv[1]).read()}}))
' "$WORK/notify-body.xml")
http_post /cpim/v1/notify "$req"
expect_eq "POST /cpim/v1/notify HTTP status" "$HTTP_CODE" 200
json_expect "CPIM notify answered success" 'd["status"] == "success"'

sipp_wait_log watcher '^n2$'
sipp_body watcher received "NOTIFY " 2 >"$WORK/notify-received.xml"
cmp -s "$WORK/notify-body.xml" "$WORK/notify-received.xml" || {
    diff <(od -c "$WORK/notify-body.xml") <(od -c "$WORK/notify-received.xml") | head -n 20 | indent
    fail "the NOTIFY body differs from the body posted to /cpim/v1/notify"
}
step "ok: the NOTIFY carries the posted body byte for byte"

sipp_wait watcher
adapter_wait "adapter got one unsubscribe with transID = the To tag" \
    "len(calls('unsubscribe')) == 1 and calls('unsubscribe')[0].get('transID') == '$totag'
     and calls('unsubscribe')[0].get('watcher') == 'pres:bob@example.com'
     and calls('unsubscribe')[0].get('target') == 'pres:carol@xmpp.example.org'"
adapter_expect "the refresh reached the adapter as a subscribe with the same transID" \
    "len(calls('subscribe')) == 2 and calls('subscribe')[1] == {
        'watcher': 'pres:bob@example.com', 'target': 'pres:carol@xmpp.example.org',
        'duration': 600, 'transID': '$totag'}"
adapter_expect "no notify to the adapter" "len(calls('notify')) == 0"
