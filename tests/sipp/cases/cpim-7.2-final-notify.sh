# shellcheck shell=bash
# Seed 000/001 §7.2 / RFC 6665: after the gateway's own unsubscribe (CPIM
# unsubscribe -> SUBSCRIBE Expires 0 -> 200), the SIP presentity sends the
# final NOTIFY terminated;reason=timeout (RFC 6665 §4.1.2.3, §4.2.1.4). The
# subscription exists until that NOTIFY (§4.4.1), so the gateway must answer
# it 200 (protocol-notes §1.3 step 6); it answers 481 because it drops the
# dialog on the 200 to the unsubscribe. Same flow as cpim-7.2-sip-presentity.sh
# up to there.
# transports: udp
uas_port=$(free_port)
adapter_start success
start_gateway_with 'sip.cpim_domains=["xmpp.example.org"]' "cpim.adapter_url=\"$ADAPTER_URL\"" \
    "sip.routes=[{ domain = \"sip.example.net\", next_hop = \"$TRANSPORT:127.0.0.1:$uas_port\" }]"

sipp_start_uas presentity "$uas_port" cpim-7.2-uas -set final_notify 1
wait_listening "$TRANSPORT" "$uas_port"
http_post /cpim/v1/subscribe \
    '{"watcher":"pres:alice@xmpp.example.org","target":"pres:bob@sip.example.net","duration":600}'
json_expect "subscribe: indeterminate" "d['status'] == 'indeterminate'"
sipp_wait_log presentity '^notified$'
http_post /cpim/v1/unsubscribe '{"watcher":"pres:alice@xmpp.example.org","target":"pres:bob@sip.example.net"}'
json_expect "unsubscribe: success" "d['status'] == 'success'"
sipp_wait presentity
