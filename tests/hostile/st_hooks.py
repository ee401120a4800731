"""schemathesis hooks for tests/hostile/schemathesis.sh (issue 17 item 5).

POST /cpim/v1/notify carries a presence document in `presence.body`: XML
(PIDF and its relatives) that the gateway parses and refuses with 400 when
it does not parse (docs/cpim-api.md). A JSON schema cannot say "a
well-formed PIDF document", so a generated string is never one. This hook
puts a real PIDF document for the request's target in its place, so that
the positive cases test what they are meant to; every other field, and the
negative cases (a `presence` that is not an object, a `body` that is not a
string, ...), stay as generated.
"""

import re

import schemathesis

PIDF = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">'
    '<tuple id="t1"><status><basic>open</basic></status></tuple></presence>'
)


def _with_document(body):
    if not isinstance(body, dict):
        return body
    presence = body.get("presence")
    if not isinstance(presence, dict) or not isinstance(presence.get("body"), str):
        return body
    if not isinstance(presence.get("content_type", ""), (str, type(None))):
        # A wrongly typed content_type is what makes this case negative.
        return body
    target = body.get("target") if isinstance(body.get("target"), str) else "pres:x@example.com"
    entity = target.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    presence = dict(presence)
    presence["body"] = PIDF.format(entity=entity)
    presence["content_type"] = "application/pidf+xml"
    return {**body, "presence": presence}


_ID = re.compile(r"^[\s\S]*[^\x00-\x20\x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\uFFFE\uFFFF][\s\S]*$")


def _unique_ids(body):
    """Tuple ids of one notify must differ (they become xs:IDs); a JSON
    schema cannot say so. Valid ids that repeat get a suffix that keeps
    them valid; an invalid id (what makes a negative case) stays as is."""
    if not isinstance(body, dict) or not isinstance(body.get("presence"), dict):
        return body
    tuples = body["presence"].get("tuples")
    if not isinstance(tuples, list):
        return body
    seen = set()
    out = []
    for i, t in enumerate(tuples):
        if isinstance(t, dict) and isinstance(t.get("id"), str) and _ID.match(t["id"]):
            if t["id"].strip() in seen:
                t = {**t, "id": f"{t['id']}-{i}"}
            seen.add(t["id"].strip())
        out.append(t)
    return {**body, "presence": {**body["presence"], "tuples": out}}


# before_call, not map_body: the coverage phase builds its cases without
# the map_* hooks.
@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.operation.path == "/cpim/v1/notify" and case.method.upper() == "POST":
        case.body = _unique_ids(_with_document(case.body))
