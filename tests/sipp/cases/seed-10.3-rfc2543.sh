# shellcheck shell=bash
# Seed 000/001 §10.3 F1 exactly as the seed sends it: an RFC 2543 SUBSCRIBE
# without a From tag (fixtures/seed-flows/10.3-F1-SUBSCRIBE.sip). RFC 3261
# §12.1.1: "A UAS MUST be prepared to receive a request without a tag in the
# From field, in which case the tag is considered to have a value of null."
# Otherwise the same flow as seed-10.3.sh.
# transports: udp
start_gateway_with presence.subscribe_success_code=202

sipp_run pua1 seed-10.3-register -cid_str 110@pua.example.com \
    -key reg_cseq 1 -key desc_param ''
sipp_start watcher seed-10.3-watcher -key from_tag ''
sipp_wait_log watcher '^notify1$'
sipp_run pua2 seed-10.3-register -cid_str 110@pua.example.com \
    -key reg_cseq 2 -key desc_param ';description="Away from keyboard"'
sipp_wait watcher
