// Command envelope decodes EventEnvelope protobuf JSON (proto field names, as stored in S3 and
// produced to Kafka) with protojson, tolerating unknown fields, and checks the round trip is
// lossless. It also reads whole segments (docs/STORAGE.md) and checks them against the format.
//
// Input on stdin: a JSON array of cases, each either
//
//	{"name": ..., "json": "<envelope bytes>"}
//	{"name": ..., "segment_base64": "<a whole segment object, base64>"}
//
// Output on stdout, one entry per case, in input order:
//
//	envelope:      {"name", "unknown": [ignored field names], "reencoded": <envelope JSON>}
//	segment:       {"name", "segment", "created_at", "events": [{"entry": <header entry>, "unknown", "reencoded"}]}
//	void segment:  {"name", "segment", "void": {"voided_at", "reason"}}
//
// It exits 1 with "FAIL <case>: ..." on the first failed check.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	tm "tidemark.local/interop/gen/tidemark/v1"
)

type input struct {
	Name          string  `json:"name"`
	JSON          *string `json:"json"`
	SegmentBase64 *string `json:"segment_base64"`
}

type result struct {
	Name      string          `json:"name"`
	Unknown   []string        `json:"unknown"`
	Reencoded json.RawMessage `json:"reencoded"`
}

// entry is one element of a segment header's `events`, as the header states it.
type entry struct {
	EventID        string `json:"event_id"`
	AggregateType  string `json:"aggregate_type"`
	AggregateID    string `json:"aggregate_id"`
	SequenceNumber string `json:"sequence_number"`
	Offset         int64  `json:"offset"`
	Length         int64  `json:"length"`
}

type segmentEvent struct {
	Entry     entry           `json:"entry"`
	Unknown   []string        `json:"unknown"`
	Reencoded json.RawMessage `json:"reencoded"`
}

type segmentResult struct {
	Name      string         `json:"name"`
	Segment   string         `json:"segment"`
	CreatedAt string         `json:"created_at"`
	Events    []segmentEvent `json:"events"`
}

type voidInfo struct {
	VoidedAt string `json:"voided_at"`
	Reason   string `json:"reason"`
}

type voidResult struct {
	Name    string   `json:"name"`
	Segment string   `json:"segment"`
	Void    voidInfo `json:"void"`
}

func fail(name, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "FAIL %s: %s\n", name, fmt.Sprintf(format, args...))
	os.Exit(1)
}

// Tolerant decoding: a newer writer may add fields and enum values an older reader does not know
// (docs/COMPATIBILITY.md); DiscardUnknown ignores both.
var lenient = protojson.UnmarshalOptions{DiscardUnknown: true}

// Proto field names, as the store writes them.
var encoder = protojson.MarshalOptions{UseProtoNames: true}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("stdin", "%v", err)
	}
	var cases []input
	if err := json.Unmarshal(raw, &cases); err != nil {
		fail("stdin", "expected a JSON array of {name, json} or {name, segment_base64}: %v", err)
	}
	if len(cases) == 0 {
		fail("stdin", "no cases")
	}
	out := make([]any, 0, len(cases))
	for i, c := range cases {
		if c.Name == "" {
			fail(fmt.Sprintf("case %d", i), "no name")
		}
		switch {
		case c.JSON != nil && c.SegmentBase64 != nil:
			fail(c.Name, "give either json or segment_base64, not both")
		case c.JSON != nil:
			unknown, reencoded, _ := decodeEnvelope(c.Name, []byte(*c.JSON))
			out = append(out, result{Name: c.Name, Unknown: unknown, Reencoded: reencoded})
		case c.SegmentBase64 != nil:
			body, err := base64.StdEncoding.DecodeString(*c.SegmentBase64)
			if err != nil {
				fail(c.Name, "segment_base64 is not base64: %v", err)
			}
			out = append(out, decodeSegment(c.Name, body))
		default:
			fail(c.Name, "neither json nor segment_base64")
		}
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fail("stdout", "%v", err)
	}
}

// decodeEnvelope decodes one envelope tolerantly and checks the round trip is lossless. It
// returns the ignored parts (unknown fields, unknown enum names), the re-encoded JSON and the message.
func decodeEnvelope(name string, raw []byte) ([]string, json.RawMessage, *tm.EventEnvelope) {
	fields := (&tm.EventEnvelope{}).ProtoReflect().Descriptor().Fields()
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		fail(name, "not a JSON object: %v", err)
	}
	// Unknown fields, and enum values by a name this reader does not know ("kind=EVENT_KIND_NEW"):
	// both come from newer writers, and both are dropped by the tolerant parse.
	unknown := []string{}
	skip := map[string]bool{}
	for key, value := range generic {
		field := fieldOf(fields, key)
		if field == nil {
			unknown = append(unknown, key)
			continue
		}
		if name, isString := value.(string); isString && field.Enum() != nil && !field.IsList() && !field.IsMap() &&
			field.Enum().Values().ByName(protoreflect.Name(name)) == nil {
			unknown = append(unknown, key+"="+name)
			skip[key] = true
		}
	}
	sort.Strings(unknown)

	envelope := &tm.EventEnvelope{}
	if err := lenient.Unmarshal(raw, envelope); err != nil {
		fail(name, "protojson with DiscardUnknown rejected the envelope: %v", err)
	}
	// A strict parse must reject exactly the inputs with unknown fields: the option is what tolerates them.
	strictErr := protojson.Unmarshal(raw, &tm.EventEnvelope{})
	if len(unknown) > 0 && strictErr == nil {
		fail(name, "strict protojson accepted unknown fields %v", unknown)
	}
	if len(unknown) == 0 && strictErr != nil {
		fail(name, "strict protojson rejected an envelope with no unknown fields: %v", strictErr)
	}
	if envelope.GetEventId() == "" || envelope.GetSequenceNumber() == 0 {
		fail(name, "decoded envelope lacks event_id or sequence_number: %v", envelope)
	}

	reencoded, err := encoder.Marshal(envelope)
	if err != nil {
		fail(name, "re-encode: %v", err)
	}
	again := &tm.EventEnvelope{}
	if err := protojson.Unmarshal(reencoded, again); err != nil {
		fail(name, "re-encoded JSON does not parse strictly: %v", err)
	}
	if !proto.Equal(envelope, again) {
		fail(name, "round trip changed the message:\n  first  %v\n  second %v", envelope, again)
	}

	var output map[string]any
	if err := json.Unmarshal(reencoded, &output); err != nil {
		fail(name, "re-encoded JSON: %v", err)
	}
	for key, value := range generic {
		field := fieldOf(fields, key)
		if field == nil || skip[key] {
			continue
		}
		got, present := output[string(field.Name())]
		if !present {
			if !zeroJSON(value) {
				fail(name, "field %s = %v was lost", key, value)
			}
			continue
		}
		if !reflect.DeepEqual(got, value) {
			fail(name, "field %s changed: input %v, re-encoded %v", key, value, got)
		}
	}
	return unknown, reencoded, envelope
}

const (
	segmentFormat  = "tidemark.segment"
	segmentVersion = 1
)

var (
	// A uint64 as protobuf JSON writes it: decimal, no sign, no leading zeros; segment numbers
	// and sequence numbers start at 1.
	positiveDecimal = regexp.MustCompile(`^[1-9][0-9]*$`)
	// RFC 3339 as the header carries it (the writer's clock, UTC).
	rfc3339 = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$`)
)

// decodeSegment reads a whole segment object as docs/STORAGE.md specifies it, from the header
// alone and from the lines alone, and fails unless both readings agree with every envelope.
func decodeSegment(name string, body []byte) any {
	if !utf8.Valid(body) {
		fail(name, "the segment is not UTF-8")
	}
	newline := bytes.IndexByte(body, '\n')
	if newline < 0 {
		fail(name, "no header line: the segment holds no \\n")
	}
	decoder := json.NewDecoder(bytes.NewReader(body[:newline]))
	decoder.UseNumber()
	var header map[string]any
	if err := decoder.Decode(&header); err != nil {
		fail(name, "the header line is not a JSON object: %v", err)
	}
	if header == nil { // `null` decodes into a map without an error
		fail(name, "the header line is not a JSON object: null")
	}
	if decoder.More() {
		fail(name, "the header line holds more than one JSON value")
	}
	if format, _ := header["format"].(string); format != segmentFormat {
		fail(name, "header format is %v, expected %q", jsonText(header["format"]), segmentFormat)
	}
	if version, ok := integer(header["version"]); !ok || version != segmentVersion {
		fail(name, "header version is %v, this reader knows version %d only", jsonText(header["version"]), segmentVersion)
	}
	segment, ok := header["segment"].(string)
	if !ok || !positiveDecimal.MatchString(segment) {
		fail(name, "header segment is %v, expected a positive decimal string", jsonText(header["segment"]))
	}
	if _, err := strconv.ParseUint(segment, 10, 64); err != nil {
		fail(name, "header segment %s is not a uint64: %v", segment, err)
	}
	h := newline + 1

	if voided, present := header["void"]; present {
		if _, both := header["events"]; both {
			fail(name, "the header has both void and events")
		}
		v, isObject := voided.(map[string]any)
		if !isObject {
			fail(name, "header void is %v, expected an object", jsonText(voided))
		}
		voidedAt, _ := v["voided_at"].(string)
		checkTime(name, "void.voided_at", v["voided_at"])
		reason, isString := v["reason"].(string)
		if !isString {
			fail(name, "header void.reason is %v, expected a string", jsonText(v["reason"]))
		}
		if h != len(body) {
			fail(name, "a void segment is a single header line, but %d bytes follow it", len(body)-h)
		}
		return voidResult{Name: name, Segment: segment, Void: voidInfo{VoidedAt: voidedAt, Reason: reason}}
	}

	createdAt, _ := header["created_at"].(string)
	checkTime(name, "created_at", header["created_at"])
	list, isArray := header["events"].([]any)
	if !isArray {
		fail(name, "header events is %v, expected an array (or void)", jsonText(header["events"]))
	}
	entries := make([]entry, len(list))
	seqs := make([]uint64, len(list))
	ids := map[string]int{}
	slots := map[[3]string]int{}
	for i, item := range list {
		entries[i], seqs[i] = parseEntry(name, i, item)
		e := entries[i]
		if j, dup := ids[e.EventID]; dup {
			fail(name, "entries %d and %d have the same event_id %q (event ids are store-wide unique)", j, i, e.EventID)
		}
		ids[e.EventID] = i
		slot := [3]string{e.AggregateType, e.AggregateID, e.SequenceNumber}
		if j, dup := slots[slot]; dup {
			fail(name, "entries %d and %d are the same slot (%s, %s, %s)", j, i, e.AggregateType, e.AggregateID, e.SequenceNumber)
		}
		slots[slot] = i
	}

	// From the header: each entry's bytes [H + offset, H + offset + length), one whole line.
	fields := (&tm.EventEnvelope{}).ProtoReflect().Descriptor().Fields()
	events := make([]segmentEvent, len(entries))
	for i, e := range entries {
		where := fmt.Sprintf("%s: event %d (%s)", name, i, e.EventID)
		start, end := int64(h)+e.Offset, int64(h)+e.Offset+e.Length
		if e.Offset > int64(len(body)) || e.Length > int64(len(body)) || end > int64(len(body)) {
			fail(where, "bytes [%d, %d) are not one line: the segment has %d bytes", start, end, len(body))
		}
		line := body[start:end]
		if bytes.IndexByte(line, '\n') >= 0 {
			fail(where, "bytes [%d, %d) are not one line: they hold a \\n", start, end)
		}
		if end < int64(len(body)) && body[end] != '\n' {
			fail(where, "bytes [%d, %d) are not one line: byte %d is %q, not \\n", start, end, end, body[end])
		}
		if !utf8.Valid(line) {
			fail(where, "bytes [%d, %d) are not UTF-8: the range cuts a character", start, end)
		}
		checkLineKeys(where, fields, line)
		unknown, reencoded, envelope := decodeEnvelope(where, line)
		for _, f := range []struct{ field, header, envelope string }{
			{"event_id", e.EventID, envelope.GetEventId()},
			{"aggregate_type", e.AggregateType, envelope.GetAggregateType()},
			{"aggregate_id", e.AggregateID, envelope.GetAggregateId()},
		} {
			if f.header != f.envelope {
				fail(where, "%s does not match the header: header %q, envelope %q", f.field, f.header, f.envelope)
			}
		}
		if seqs[i] != envelope.GetSequenceNumber() {
			fail(where, "sequence_number does not match the header: header %s, envelope %d", e.SequenceNumber, envelope.GetSequenceNumber())
		}
		events[i] = segmentEvent{Entry: e, Unknown: unknown, Reencoded: reencoded}
	}

	// From the lines alone: splitting the body on \n gives the same lines in the same order.
	rest := body[h:]
	var lines [][2]int64 // [offset, length] relative to H
	for offset := int64(0); offset < int64(len(rest)); {
		n := int64(bytes.IndexByte(rest[offset:], '\n'))
		if n < 0 {
			n = int64(len(rest)) - offset // a last line without \n
		}
		lines = append(lines, [2]int64{offset, n})
		offset += n + 1
	}
	if len(lines) != len(entries) {
		fail(name, "split on \\n, the body has %d lines, the header lists %d events", len(lines), len(entries))
	}
	for i, l := range lines {
		if e := entries[i]; l[0] != e.Offset || l[1] != e.Length {
			fail(name, "split on \\n, line %d is at offset %d with length %d, the header's entry %d (%s) says offset %d length %d", i, l[0], l[1], i, e.EventID, e.Offset, e.Length)
		}
	}
	return segmentResult{Name: name, Segment: segment, CreatedAt: createdAt, Events: events}
}

// parseEntry checks the types of one header entry and returns it with its sequence number.
func parseEntry(name string, i int, item any) (entry, uint64) {
	where := fmt.Sprintf("%s: header entry %d", name, i)
	obj, isObject := item.(map[string]any)
	if !isObject {
		fail(where, "is %v, expected an object", jsonText(item))
	}
	text := func(key string) string {
		s, isString := obj[key].(string)
		if !isString {
			fail(where, "%s is %v, expected a string", key, jsonText(obj[key]))
		}
		return s
	}
	count := func(key string) int64 {
		n, ok := integer(obj[key])
		if !ok || n < 0 {
			fail(where, "%s is %v, expected a non-negative integer", key, jsonText(obj[key]))
		}
		return n
	}
	e := entry{
		EventID:        text("event_id"),
		AggregateType:  text("aggregate_type"),
		AggregateID:    text("aggregate_id"),
		SequenceNumber: text("sequence_number"),
		Offset:         count("offset"),
		Length:         count("length"),
	}
	if e.EventID == "" {
		fail(where, "event_id is empty")
	}
	if !positiveDecimal.MatchString(e.SequenceNumber) {
		fail(where, "sequence_number is %q, expected a positive decimal string", e.SequenceNumber)
	}
	seq, err := strconv.ParseUint(e.SequenceNumber, 10, 64)
	if err != nil {
		fail(where, "sequence_number %s is not a uint64: %v", e.SequenceNumber, err)
	}
	return e, seq
}

// checkLineKeys checks what docs/STORAGE.md says of an envelope line beyond the envelope schema:
// known fields by their proto names, and no global_position (assigned after the segment is written).
func checkLineKeys(where string, fields protoreflect.FieldDescriptors, line []byte) {
	var generic map[string]json.RawMessage
	if err := json.Unmarshal(line, &generic); err != nil {
		fail(where, "not a JSON object: %v", err)
	}
	for key := range generic {
		field := fieldOf(fields, key)
		if field == nil {
			continue
		}
		if key != string(field.Name()) {
			fail(where, "field %s is written by its JSON name, segments use proto field names (%s)", key, field.Name())
		}
		if field.Name() == "global_position" {
			fail(where, "global_position is present (%s): a segment's envelopes have none", generic[key])
		}
	}
}

// checkTime fails unless value is an RFC 3339 time in UTC.
func checkTime(name, field string, value any) {
	s, isString := value.(string)
	if !isString || !rfc3339.MatchString(s) {
		fail(name, "header %s is %v, expected an RFC 3339 time", field, jsonText(value))
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		fail(name, "header %s %q is not an RFC 3339 time: %v", field, s, err)
	}
	if _, offset := t.Zone(); offset != 0 {
		fail(name, "header %s %q is not in UTC", field, s)
	}
}

// integer reads a JSON number (decoded with UseNumber) written as an integer.
func integer(v any) (int64, bool) {
	n, isNumber := v.(json.Number)
	if !isNumber {
		return 0, false
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	return i, err == nil
}

// jsonText shows a decoded JSON value as JSON, for messages ("absent or null" when missing or null:
// a map lookup cannot tell the two apart).
func jsonText(v any) string {
	if v == nil {
		return "absent or null"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// fieldOf finds a field by its proto name or JSON name (a protobuf JSON parser accepts both).
func fieldOf(fields protoreflect.FieldDescriptors, key string) protoreflect.FieldDescriptor {
	if f := fields.ByName(protoreflect.Name(key)); f != nil {
		return f
	}
	return fields.ByJSONName(key)
}

// zeroJSON reports whether a JSON value is a proto3 default, which encoders may leave out.
func zeroJSON(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == "" || x == "0" || x == "EVENT_KIND_UNSPECIFIED"
	case float64:
		return x == 0
	case bool:
		return !x
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}
