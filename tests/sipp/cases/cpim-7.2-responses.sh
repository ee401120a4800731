# shellcheck shell=bash
# Seed 000/001 §7.2 "CPIM to SIP", the response mapping (protocol-notes §1.3
# step 3, docs/cpim-api.md): 200 -> success with the response's Expires as
# duration; 403 -> failure with code 403; nothing kept after a failure.
# transports: udp tcp
#
#   carl (UAS answers 200, Expires 120): subscribe -> {"status":"success","duration":120}
#        unsubscribe -> SUBSCRIBE Expires 0 in the dialog -> 200 -> success
#   dora (UAS answers 403): subscribe -> {"status":"failure","code":403}
#        unsubscribe -> failure 481, nothing sent (no state was kept)
uas_port=$(free_port)
adapter_start success
start_gateway_with 'sip.cpim_domains=["xmpp.example.org"]' "cpim.adapter_url=\"$ADAPTER_URL\"" \
    "sip.routes=[{ domain = \"sip.example.net\", next_hop = \"$TRANSPORT:127.0.0.1:$uas_port\" }]"

sipp_start_uas carl "$uas_port" cpim-7.2-uas-200
wait_listening "$TRANSPORT" "$uas_port"
http_post /cpim/v1/subscribe \
    '{"watcher":"pres:alice@xmpp.example.org","target":"pres:carl@sip.example.net","duration":600}'
expect_eq "subscribe HTTP status" "$HTTP_CODE" 200
json_expect "200 -> success, duration 120 (the 200's Expires)" \
    "d['status'] == 'success' and d['duration'] == 120 and re.fullmatch('[0-9a-f]{40}', d['transID'])"
http_post /cpim/v1/unsubscribe '{"watcher":"pres:alice@xmpp.example.org","target":"pres:carl@sip.example.net"}'
json_expect "unsubscribe: success" "d['status'] == 'success'"
sipp_wait carl

sipp_start_uas dora "$uas_port" cpim-7.2-uas-403
wait_listening "$TRANSPORT" "$uas_port"
http_post /cpim/v1/subscribe \
    '{"watcher":"pres:alice@xmpp.example.org","target":"pres:dora@sip.example.net","duration":600}'
expect_eq "subscribe HTTP status" "$HTTP_CODE" 200
json_expect "403 -> failure with code 403" "d['status'] == 'failure' and d.get('code') == 403"
http_post /cpim/v1/unsubscribe '{"watcher":"pres:alice@xmpp.example.org","target":"pres:dora@sip.example.net"}'
json_expect "unsubscribe after a refusal: failure 481 (nothing was kept)" \
    "d['status'] == 'failure' and d.get('code') == 481"
sipp_wait dora
adapter_expect "no CPIM notify was produced" "not calls('notify')"
