"""Decodes EventEnvelope protobuf JSON (proto field names, as stored in S3 and produced to Kafka)
with json_format, tolerating unknown fields, and checks the round trip is lossless. Also reads
whole segments (docs/STORAGE.md) and checks them against the format.

Input on stdin: a JSON array of cases, each either
    {"name": ..., "json": "<envelope bytes>"}
    {"name": ..., "segment_base64": "<a whole segment object, base64>"}
Output on stdout, one entry per case, in input order:
    envelope:      {"name", "unknown": [ignored field names], "reencoded": <envelope JSON>}
    segment:       {"name", "segment", "created_at", "events": [{"entry": <header entry>, "unknown", "reencoded"}]}
    void segment:  {"name", "segment", "void": {"voided_at", "reason"}}
Exits 1 with "FAIL <case>: ..." on the first failed check.
"""

import base64
import binascii
import datetime
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

from google.protobuf import json_format  # noqa: E402
from tidemark.v1.envelope_pb2 import EventEnvelope  # noqa: E402

SEGMENT_FORMAT = "tidemark.segment"
SEGMENT_VERSION = 1
UINT64_MAX = 2**64 - 1
# A uint64 as protobuf JSON writes it: decimal, no sign, no leading zeros; segment numbers and
# sequence numbers start at 1. ([0-9], not \d: \d matches every Unicode digit.)
POSITIVE_DECIMAL = re.compile(r"[1-9][0-9]*")
RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)


class Failed(Exception):
    pass


def no_constants(name):
    """JSON has no NaN or Infinity, though Python's json module reads them."""
    raise ValueError(f"{name} is not JSON")


def strict_json(text):
    return json.loads(text, parse_constant=no_constants)


def field_of(key):
    """The field a protobuf JSON parser maps `key` to: by proto name or by JSON name."""
    fields = EventEnvelope.DESCRIPTOR.fields_by_name
    if key in fields:
        return fields[key]
    return next((f for f in EventEnvelope.DESCRIPTOR.fields if f.json_name == key), None)


def zero_json(value):
    """A proto3 default, which encoders may leave out."""
    return value in (None, "", "0", 0, False, [], {}, "EVENT_KIND_UNSPECIFIED")


def show(value):
    """A decoded JSON value as JSON, for messages ("absent or null" when missing, as in Go)."""
    return "absent or null" if value is None else json.dumps(value, ensure_ascii=False)


def decode_envelope(name, raw):
    """Decodes one envelope tolerantly and checks the round trip is lossless.

    Returns (ignored parts, re-encoded envelope as a dict, the message)."""
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
    return unknown, output, envelope


def decode_case(case):
    if not isinstance(case, dict) or not isinstance(case.get("name"), str) or not case["name"]:
        raise Failed(f"stdin: a case is not an object with a name: {case!r}")
    name = case["name"]
    has_json, has_segment = "json" in case, "segment_base64" in case
    if has_json and has_segment:
        raise Failed(f"{name}: give either json or segment_base64, not both")
    if has_json:
        if not isinstance(case["json"], str):
            raise Failed(f"{name}: json is not a string")
        unknown, output, _ = decode_envelope(name, case["json"])
        return {"name": name, "unknown": unknown, "reencoded": output}
    if has_segment:
        if not isinstance(case["segment_base64"], str):
            raise Failed(f"{name}: segment_base64 is not a string")
        try:
            body = base64.b64decode(case["segment_base64"], validate=True)
        except binascii.Error as e:
            raise Failed(f"{name}: segment_base64 is not base64: {e}") from e
        return decode_segment(name, body)
    raise Failed(f"{name}: neither json nor segment_base64")


def is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check_time(name, field, value):
    """Fails unless value is an RFC 3339 time in UTC."""
    match = RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise Failed(f"{name}: header {field} is {show(value)}, expected an RFC 3339 time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime.datetime(year, month, day, hour, minute, second)
    except ValueError as e:
        raise Failed(f"{name}: header {field} {show(value)} is not an RFC 3339 time: {e}") from e
    if match.group(8) not in ("Z", "+00:00", "-00:00"):
        raise Failed(f"{name}: header {field} {show(value)} is not in UTC")


def parse_entry(name, i, item):
    """Checks the types of one header entry; returns it and its sequence number."""
    where = f"{name}: header entry {i}"
    if not isinstance(item, dict):
        raise Failed(f"{where} is {show(item)}, expected an object")
    entry = {}
    for key in ("event_id", "aggregate_type", "aggregate_id", "sequence_number"):
        if not isinstance(item.get(key), str):
            raise Failed(f"{where}: {key} is {show(item.get(key))}, expected a string")
        entry[key] = item[key]
    for key in ("offset", "length"):
        if not is_integer(item.get(key)) or item[key] < 0:
            raise Failed(f"{where}: {key} is {show(item.get(key))}, expected a non-negative integer")
        entry[key] = item[key]
    if not entry["event_id"]:
        raise Failed(f"{where}: event_id is empty")
    if not POSITIVE_DECIMAL.fullmatch(entry["sequence_number"]):
        raise Failed(f"{where}: sequence_number is {show(entry['sequence_number'])}, expected a positive decimal string")
    if int(entry["sequence_number"]) > UINT64_MAX:
        raise Failed(f"{where}: sequence_number {entry['sequence_number']} is not a uint64: out of range")
    return entry, int(entry["sequence_number"])


def check_line_keys(where, line):
    """What docs/STORAGE.md says of an envelope line beyond the envelope schema: known fields by
    their proto names, and no global_position (it is assigned after the segment is written)."""
    try:
        generic = strict_json(line)
    except ValueError as e:
        raise Failed(f"{where}: not JSON: {e}") from e
    if not isinstance(generic, dict):
        raise Failed(f"{where}: not a JSON object")
    for key, value in generic.items():
        field = field_of(key)
        if field is None:
            continue
        if key != field.name:
            raise Failed(f"{where}: field {key} is written by its JSON name, segments use proto field names ({field.name})")
        if field.name == "global_position":
            raise Failed(f"{where}: global_position is present ({show(value)}): a segment's envelopes have none")


def decode_segment(name, body):
    """Reads a whole segment object as docs/STORAGE.md specifies it, from the header alone and from
    the lines alone, and fails unless both readings agree with every envelope."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Failed(f"{name}: the segment is not UTF-8: {e}") from e
    newline = body.find(b"\n")
    if newline < 0:
        raise Failed(f"{name}: no header line: the segment holds no \\n")
    try:
        header = strict_json(body[:newline].decode("utf-8"))
    except ValueError as e:
        raise Failed(f"{name}: the header line is not a JSON object: {e}") from e
    if not isinstance(header, dict):
        raise Failed(f"{name}: the header line is not a JSON object: {show(header)}")
    if header.get("format") != SEGMENT_FORMAT:
        raise Failed(f"{name}: header format is {show(header.get('format'))}, expected {show(SEGMENT_FORMAT)}")
    version = header.get("version")
    if not is_integer(version) or version != SEGMENT_VERSION:
        raise Failed(f"{name}: header version is {show(version)}, this reader knows version {SEGMENT_VERSION} only")
    segment = header.get("segment")
    if not isinstance(segment, str) or not POSITIVE_DECIMAL.fullmatch(segment):
        raise Failed(f"{name}: header segment is {show(segment)}, expected a positive decimal string")
    if int(segment) > UINT64_MAX:
        raise Failed(f"{name}: header segment {segment} is not a uint64: out of range")
    h = newline + 1

    if "void" in header:
        if "events" in header:
            raise Failed(f"{name}: the header has both void and events")
        void = header["void"]
        if not isinstance(void, dict):
            raise Failed(f"{name}: header void is {show(void)}, expected an object")
        check_time(name, "void.voided_at", void.get("voided_at"))
        if not isinstance(void.get("reason"), str):
            raise Failed(f"{name}: header void.reason is {show(void.get('reason'))}, expected a string")
        if h != len(body):
            raise Failed(f"{name}: a void segment is a single header line, but {len(body) - h} bytes follow it")
        return {"name": name, "segment": segment, "void": {"voided_at": void["voided_at"], "reason": void["reason"]}}

    check_time(name, "created_at", header.get("created_at"))
    listed = header.get("events")
    if not isinstance(listed, list):
        raise Failed(f"{name}: header events is {show(listed)}, expected an array (or void)")
    entries, seqs, ids, slots = [], [], {}, {}
    for i, item in enumerate(listed):
        entry, seq = parse_entry(name, i, item)
        if entry["event_id"] in ids:
            raise Failed(f"{name}: entries {ids[entry['event_id']]} and {i} have the same event_id {show(entry['event_id'])} (event ids are store-wide unique)")
        ids[entry["event_id"]] = i
        slot = (entry["aggregate_type"], entry["aggregate_id"], seq)
        if slot in slots:
            raise Failed(f"{name}: entries {slots[slot]} and {i} are the same slot ({slot[0]}, {slot[1]}, {slot[2]})")
        slots[slot] = i
        entries.append(entry)
        seqs.append(seq)

    # From the header: each entry's bytes [H + offset, H + offset + length), one whole line.
    events = []
    for i, entry in enumerate(entries):
        where = f"{name}: event {i} ({entry['event_id']})"
        start = h + entry["offset"]
        end = start + entry["length"]
        if end > len(body):
            raise Failed(f"{where}: bytes [{start}, {end}) are not one line: the segment has {len(body)} bytes")
        line = body[start:end]
        if b"\n" in line:
            raise Failed(f"{where}: bytes [{start}, {end}) are not one line: they hold a \\n")
        if end < len(body) and body[end] != 0x0A:
            raise Failed(f"{where}: bytes [{start}, {end}) are not one line: byte {end} is {chr(body[end])!r}, not \\n")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:  # a range that cuts a character
            raise Failed(f"{where}: bytes [{start}, {end}) are not UTF-8: {e}") from e
        check_line_keys(where, text)
        unknown, output, envelope = decode_envelope(where, text)
        for field in ("event_id", "aggregate_type", "aggregate_id"):
            if getattr(envelope, field) != entry[field]:
                raise Failed(f"{where}: {field} does not match the header: header {show(entry[field])}, envelope {show(getattr(envelope, field))}")
        if envelope.sequence_number != seqs[i]:
            raise Failed(f"{where}: sequence_number does not match the header: header {entry['sequence_number']}, envelope {envelope.sequence_number}")
        events.append({"entry": entry, "unknown": unknown, "reencoded": output})

    # From the lines alone: splitting the body on \n gives the same lines in the same order.
    rest = body[h:]
    parts = rest.split(b"\n")
    if parts[-1] == b"":
        parts.pop()  # the last line's \n (a last line without one is still a line)
    lines, offset = [], 0
    for part in parts:
        lines.append((offset, len(part)))
        offset += len(part) + 1
    if len(lines) != len(entries):
        raise Failed(f"{name}: split on \\n, the body has {len(lines)} lines, the header lists {len(entries)} events")
    for i, ((line_offset, line_length), entry) in enumerate(zip(lines, entries)):
        if (line_offset, line_length) != (entry["offset"], entry["length"]):
            raise Failed(
                f"{name}: split on \\n, line {i} is at offset {line_offset} with length {line_length}, "
                f"the header's entry {i} ({entry['event_id']}) says offset {entry['offset']} length {entry['length']}"
            )
    return {"name": name, "segment": segment, "created_at": header["created_at"], "events": events}


def main():
    try:
        cases = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        print(f"FAIL stdin: expected a JSON array of {{name, json}} or {{name, segment_base64}}: {e}", file=sys.stderr)
        return 1
    if not isinstance(cases, list) or not cases:
        print("FAIL stdin: no cases", file=sys.stderr)
        return 1
    results = []
    for case in cases:
        try:
            results.append(decode_case(case))
        except Failed as e:
            print(f"FAIL {e}", file=sys.stderr)
            return 1
        except Exception as e:  # anything unexpected still names the case
            name = case.get("name", "?") if isinstance(case, dict) else "?"
            print(f"FAIL {name}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    json.dump(results, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
