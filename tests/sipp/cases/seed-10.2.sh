# shellcheck shell=bash
# Seed 000/001 §10.2 "Presence Server with Client Notifications" (F1-F12)
# with the gateway as the presence server (subscribe_success_code = 202).
# transports: udp tcp
#
#   pua1     F1 REGISTER (Call-ID 2818@pua.example.com, CSeq 1):
#            <sip:id@pua.example.com>;methods="MESSAGE";description="open" and
#            <sip:id-sub@pua.example.com>;methods="SUBSCRIBE"
#            -> F2 200 listing both contacts, each with expires
#   watcher  F3 SUBSCRIBE (Accept xpidf) -> F6 202 -> F7 NOTIFY: contact open
#   pua2     F9 re-REGISTER (CSeq 2, description="busy") -> F10 200
#   watcher  F11 NOTIFY with the status text "busy"; unsubscribe -> 202 + terminated
#
# Two changes from the seed text, each covered by an expected-fail case:
# the methods="SUBSCRIBE" Contact has its own URI (the seed registers the same
# URI twice: seed-10.2-same-uri.sh), and F3 carries a From tag (the seed's
# has none: seed-10.3-rfc2543.sh).
start_gateway_with presence.subscribe_success_code=202

sipp_run pua1 seed-10.2-register -cid_str 2818@pua.example.com \
    -key reg_cseq 1 -key desc open -key sub_contact sip:id-sub@pua.example.com
sipp_start watcher seed-10.2-watcher -key from_tag ";tag=w102-$$"
sipp_wait_log watcher '^notify1$'
sipp_run pua2 seed-10.2-register -cid_str 2818@pua.example.com \
    -key reg_cseq 2 -key desc busy -key sub_contact sip:id-sub@pua.example.com
c=$(sipp_log_value pua2 contact_message)
[[ "$c" == *'description="busy"'* ]] || fail "F10: the 200's Contact lacks description=\"busy\": $c"
step "ok: F10 Contact: $c"
sipp_wait watcher
