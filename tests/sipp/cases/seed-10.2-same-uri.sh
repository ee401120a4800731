# shellcheck shell=bash
# Seed 000/001 §10.2 F1/F2 exactly: the PUA registers the same URI twice,
#   Contact: <sip:id@pua.example.com>;methods="MESSAGE";description="open"
#   Contact: <sip:id@pua.example.com>;methods="SUBSCRIBE"
# and the seed's F2 answers 200 listing both. The gateway answers 500 Out Of
# Order Request: the second Contact is checked (RFC 3261 §10.3 step 7,
# Call-ID/CSeq) against the binding the first Contact of the same request
# just added, as if it were an earlier registration.
# transports: udp
# expect: fail (gateway answers the seed's F1 REGISTER "500 Out Of Order Request", see README "Known gateway bugs")
start_gateway_with presence.subscribe_success_code=202

sipp_run pua1 seed-10.2-register -cid_str 2818@pua.example.com \
    -key reg_cseq 1 -key desc open -key sub_contact sip:id@pua.example.com
