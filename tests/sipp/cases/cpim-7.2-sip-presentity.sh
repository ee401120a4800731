# shellcheck shell=bash
# Seed 000/001 §7.2 "CPIM to SIP": a CPIM watcher (alice@xmpp.example.org)
# subscribes through the HTTP API to a SIP presentity (bob@sip.example.net),
# played by a SIPp UAS behind the static route
# sip.example.net -> TRANSPORT:127.0.0.1:PORT.
# transports: udp tcp
#
#   curl  POST /cpim/v1/subscribe {watcher, target, duration 600}
#   uas   SUBSCRIBE checked (Event, Expires 600, Accept, From tag = 40 hex, ...)
#         -> 202 (To tag, Contact) ; NOTIFY active with a PIDF body -> 200
#   curl  <- {"status":"indeterminate", "transID": the From tag, "duration":600}
#         (answered after the SIP final response; 202 -> indeterminate)
#   adapter  POST .../notify {watcher, target, presence: the NOTIFY body byte
#            for byte, application/pidf+xml}
#   curl  POST /cpim/v1/unsubscribe -> uas: SUBSCRIBE Expires 0 in the dialog
#         -> 200; final NOTIFY terminated -> 200 ; curl <- success
#   curl  POST /cpim/v1/unsubscribe again -> failure 481 (no state left, §7.2)
uas_port=$(free_port)
adapter_start success
start_gateway_with 'sip.cpim_domains=["xmpp.example.org"]' "cpim.adapter_url=\"$ADAPTER_URL\"" \
    "sip.routes=[{ domain = \"sip.example.net\", next_hop = \"$TRANSPORT:127.0.0.1:$uas_port\" }]"

sipp_start_uas presentity "$uas_port" cpim-7.2-uas -set final_notify 0
wait_listening "$TRANSPORT" "$uas_port"

http_post /cpim/v1/subscribe \
    '{"watcher":"pres:alice@xmpp.example.org","target":"pres:bob@sip.example.net","duration":600}'
expect_eq "POST /cpim/v1/subscribe HTTP status" "$HTTP_CODE" 200
ftag=$(sipp_log_value presentity ftag)
json_expect "202 -> indeterminate, transID = the SUBSCRIBE's From tag, duration 600" \
    "d['status'] == 'indeterminate' and d['transID'] == '$ftag' and d['duration'] == 600"

sipp_wait_log presentity '^notified$'
sipp_body presentity sent "NOTIFY " 1 >"$WORK/notify-sent.xml"
adapter_wait "adapter got the NOTIFY as a CPIM notify" "len(calls('notify')) >= 1"
adapter_expect "CPIM notify: watcher/target as subscribed, active, PIDF, the body byte for byte" "
    (lambda n: n['watcher'] == 'pres:alice@xmpp.example.org'
        and n['target'] == 'pres:bob@sip.example.net'
        and n.get('state') is None
        and n['presence']['content_type'] == 'application/pidf+xml'
        and n['presence']['body'] == open('$WORK/notify-sent.xml', encoding='utf-8', newline='').read()
        and re.fullmatch('[0-9a-f]{40}', n['transID']) is not None)(calls('notify')[0])"

http_post /cpim/v1/unsubscribe '{"watcher":"pres:alice@xmpp.example.org","target":"pres:bob@sip.example.net"}'
expect_eq "POST /cpim/v1/unsubscribe HTTP status" "$HTTP_CODE" 200
json_expect "unsubscribe answered success (200 to the SUBSCRIBE Expires 0)" "d['status'] == 'success'"
sipp_wait presentity

http_post /cpim/v1/unsubscribe '{"watcher":"pres:alice@xmpp.example.org","target":"pres:bob@sip.example.net"}'
json_expect "a second unsubscribe: failure 481, nothing left (§7.2)" \
    "d['status'] == 'failure' and d.get('code') == 481"
