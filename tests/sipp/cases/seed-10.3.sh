# shellcheck shell=bash
# Seed 000/001 §10.3 "Presence Server Notifications" (F1-F8): the gateway is
# the presence server; the watcher's XPIDF NOTIFY carries the PUA's
# registered description="Away from keyboard".
# transports: udp tcp
#
#   pua1     REGISTER (CSeq 1, Call-ID 110@pua.example.com, methods="MESSAGE")
#            -> 200 with the binding: the presentity is "open" (seed F3's state)
#   watcher  F1 SUBSCRIBE (Accept xpidf) -> F2 202 -> F3 NOTIFY open
#   pua2     F5 REGISTER (CSeq 2, same Call-ID, description="Away from keyboard")
#            -> F6 200, Contact with the description and an expires parameter
#   watcher  F7 NOTIFY "Away from keyboard"; unsubscribe -> 202 + terminated
#
# The watcher's F1 carries a From tag here (the one change from the seed);
# seed-10.3-rfc2543.sh sends it without, exactly as the seed does.
start_gateway_with presence.subscribe_success_code=202

sipp_run pua1 seed-10.3-register -cid_str 110@pua.example.com \
    -key reg_cseq 1 -key desc_param ''
sipp_start watcher seed-10.3-watcher -key from_tag ";tag=w103-$$"
sipp_wait_log watcher '^notify1$'
sipp_run pua2 seed-10.3-register -cid_str 110@pua.example.com \
    -key reg_cseq 2 -key desc_param ';description="Away from keyboard"'
contact=$(sipp_log_value pua2 contact)
[[ "$contact" == *'description="Away from keyboard"'* ]] ||
    fail "F6: the 200's Contact lacks description=\"Away from keyboard\": $contact"
step "ok: F6 Contact: $contact"
sipp_wait watcher
