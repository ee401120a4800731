# shellcheck shell=bash
# Seed 000/001 §10.2 F1/F2 exactly: the PUA registers the same URI twice,
#   Contact: <sip:id@pua.example.com>;methods="MESSAGE";description="open"
#   Contact: <sip:id@pua.example.com>;methods="SUBSCRIBE"
# The gateway answers 200 with one binding whose feature tags are united
# (see seed-10.2-register-same-uri.xml for why one Contact, not two).
# transports: udp
start_gateway_with presence.subscribe_success_code=202

sipp_run pua1 seed-10.2-register-same-uri -cid_str 2818@pua.example.com
