# shellcheck shell=bash
# Seed 000/001 §7.1 "SIP to CPIM", the other adapter answers (docs/cpim-api.md
# "SIP -> CPIM"): one gateway, the adapter restarted on the same port in
# another mode for each step.
# transports: udp tcp
#
#   failure        SUBSCRIBE sip:dan@xmpp.example.org -> 603, To tag = transID; no NOTIFY
#   indeterminate  SUBSCRIBE sip:erin@xmpp.example.org -> 202 + NOTIFY pending (no body);
#                  unsubscribe -> 200 + terminated; adapter /unsubscribe transID = To tag
#   no adapter     SUBSCRIBE sip:fay@xmpp.example.org -> 480 with Retry-After; no NOTIFY
adapter_start failure
port=$ADAPTER_PORT
start_gateway_with 'sip.cpim_domains=["xmpp.example.org"]' "cpim.adapter_url=\"$ADAPTER_URL\"" \
    cpim.adapter_timeout_ms=2000

sipp_run refused cpim-7.1-refused -key cpim_user dan
adapter_expect "adapter asked once for dan, and the 603 stored nothing (no unsubscribe)" \
    "[c['target'] for c in calls('subscribe')] == ['pres:dan@xmpp.example.org'] and not calls('unsubscribe')"

adapter_stop
adapter_start indeterminate --port "$port"
sipp_run pending cpim-7.1-pending -key cpim_user erin
totag=$(sipp_log_value pending totag)
adapter_wait "adapter: erin subscribed and unsubscribed with transID = the To tag" \
    "[c['transID'] for c in calls('subscribe') if c['target'] == 'pres:erin@xmpp.example.org'] == ['$totag']
     and [c['transID'] for c in calls('unsubscribe')] == ['$totag']"

adapter_stop
sipp_run unavailable cpim-7.1-unavailable -key cpim_user fay
