"""Decodes EventEnvelope protobuf JSON (proto field names, as stored in S3 and produced to Kafka)
with json_format, tolerating unknown fields, and checks the round trip is lossless.

Input on stdin: [{"name": ..., "json": "<envelope bytes>"}]. Output on stdout, one entry per case:
{"name", "unknown": [ignored field names], "reencoded": <envelope JSON>}. Exits 1 with
"FAIL <case>: ..." on the first failed check.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

from google.protobuf import json_format  # noqa: E402
from tidemark.v1.envelope_pb2 import EventEnvelope  # noqa: E402


class Failed(Exception):
    pass


def field_of(key):
    """The field a protobuf JSON parser maps `key` to: by proto name or by JSON name."""
    fields = EventEnvelope.DESCRIPTOR.fields_by_name
    if key in fields:
        return fields[key]
    return next((f for f in EventEnvelope.DESCRIPTOR.fields if f.json_name == key), None)


def zero_json(value):
    """A proto3 default, which encoders may leave out."""
    return value in (None, "", "0", 0, False, [], {}, "EVENT_KIND_UNSPECIFIED")


def decode(case):
    name, raw = case["name"], case["json"]
    try:
        generic = json.loads(raw)
    except ValueError as e:
        raise Failed(f"{name}: not JSON: {e}") from e
    if not isinstance(generic, dict):
        raise Failed(f"{name}: not a JSON object")
    # Unknown fields, and enum values by a name this reader does not know ("kind=EVENT_KIND_NEW"):
    # both come from newer writers, and both are dropped by the tolerant parse.
    unknown, skip = [], set()
    for key, value in generic.items():
        field = field_of(key)
        if field is None:
            unknown.append(key)
        elif field.enum_type is not None and isinstance(value, str) and value not in field.enum_type.values_by_name:
            unknown.append(f"{key}={value}")
            skip.add(key)
    unknown.sort()

    # Tolerant decoding: a newer writer may add fields and enum values an older reader does not know
    # (docs/COMPATIBILITY.md); ignore_unknown_fields ignores both.
    try:
        envelope = json_format.Parse(raw, EventEnvelope(), ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise Failed(f"{name}: json_format with ignore_unknown_fields rejected the envelope: {e}") from e
    # A strict parse must reject exactly the inputs with unknown fields: the option is what tolerates them.
    try:
        json_format.Parse(raw, EventEnvelope())
        strict_error = None
    except json_format.ParseError as e:
        strict_error = e
    if unknown and strict_error is None:
        raise Failed(f"{name}: strict json_format accepted unknown fields {unknown}")
    if not unknown and strict_error is not None:
        raise Failed(f"{name}: strict json_format rejected an envelope with no unknown fields: {strict_error}")
    if not envelope.event_id or envelope.sequence_number == 0:
        raise Failed(f"{name}: decoded envelope lacks event_id or sequence_number: {envelope}")

    reencoded = json_format.MessageToJson(envelope, preserving_proto_field_name=True)
    again = json_format.Parse(reencoded, EventEnvelope())
    if again != envelope:
        raise Failed(f"{name}: round trip changed the message:\n  first  {envelope}\n  second {again}")

    output = json.loads(reencoded)
    for key, value in generic.items():
        field = field_of(key)
        if field is None or key in skip:
            continue
        if field.name not in output:
            if not zero_json(value):
                raise Failed(f"{name}: field {key} = {value!r} was lost")
            continue
        if output[field.name] != value:
            raise Failed(f"{name}: field {key} changed: input {value!r}, re-encoded {output[field.name]!r}")
    return {"name": name, "unknown": unknown, "reencoded": output}


def main():
    try:
        cases = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        print(f"FAIL stdin: expected a JSON array of {{name, json}}: {e}", file=sys.stderr)
        return 1
    if not isinstance(cases, list) or not cases:
        print("FAIL stdin: no cases", file=sys.stderr)
        return 1
    results = []
    for case in cases:
        try:
            results.append(decode(case))
        except Failed as e:
            print(f"FAIL {e}", file=sys.stderr)
            return 1
        except Exception as e:  # anything unexpected still names the case
            print(f"FAIL {case.get('name', '?')}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    json.dump(results, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
