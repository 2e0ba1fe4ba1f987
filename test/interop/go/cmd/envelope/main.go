// Command envelope decodes EventEnvelope protobuf JSON (proto field names, as stored in S3 and
// produced to Kafka) with protojson, tolerating unknown fields, and checks the round trip is
// lossless. Input on stdin: [{"name": ..., "json": "<envelope bytes>"}]. Output on stdout, one
// entry per case: {"name", "unknown": [ignored field names], "reencoded": <envelope JSON>}.
// It exits 1 with "FAIL <case>: ..." on the first failed check.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	tm "tidemark.local/interop/gen/tidemark/v1"
)

type input struct {
	Name string `json:"name"`
	JSON string `json:"json"`
}

type result struct {
	Name      string          `json:"name"`
	Unknown   []string        `json:"unknown"`
	Reencoded json.RawMessage `json:"reencoded"`
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
		fail("stdin", "expected a JSON array of {name, json}: %v", err)
	}
	if len(cases) == 0 {
		fail("stdin", "no cases")
	}
	out := make([]result, 0, len(cases))
	for _, c := range cases {
		out = append(out, decode(c))
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fail("stdout", "%v", err)
	}
}

func decode(c input) result {
	fields := (&tm.EventEnvelope{}).ProtoReflect().Descriptor().Fields()
	var generic map[string]any
	if err := json.Unmarshal([]byte(c.JSON), &generic); err != nil {
		fail(c.Name, "not a JSON object: %v", err)
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
	if err := lenient.Unmarshal([]byte(c.JSON), envelope); err != nil {
		fail(c.Name, "protojson with DiscardUnknown rejected the envelope: %v", err)
	}
	// A strict parse must reject exactly the inputs with unknown fields: the option is what tolerates them.
	strictErr := protojson.Unmarshal([]byte(c.JSON), &tm.EventEnvelope{})
	if len(unknown) > 0 && strictErr == nil {
		fail(c.Name, "strict protojson accepted unknown fields %v", unknown)
	}
	if len(unknown) == 0 && strictErr != nil {
		fail(c.Name, "strict protojson rejected an envelope with no unknown fields: %v", strictErr)
	}
	if envelope.GetEventId() == "" || envelope.GetSequenceNumber() == 0 {
		fail(c.Name, "decoded envelope lacks event_id or sequence_number: %v", envelope)
	}

	reencoded, err := encoder.Marshal(envelope)
	if err != nil {
		fail(c.Name, "re-encode: %v", err)
	}
	again := &tm.EventEnvelope{}
	if err := protojson.Unmarshal(reencoded, again); err != nil {
		fail(c.Name, "re-encoded JSON does not parse strictly: %v", err)
	}
	if !proto.Equal(envelope, again) {
		fail(c.Name, "round trip changed the message:\n  first  %v\n  second %v", envelope, again)
	}

	var output map[string]any
	if err := json.Unmarshal(reencoded, &output); err != nil {
		fail(c.Name, "re-encoded JSON: %v", err)
	}
	for key, value := range generic {
		field := fieldOf(fields, key)
		if field == nil || skip[key] {
			continue
		}
		got, present := output[string(field.Name())]
		if !present {
			if !zeroJSON(value) {
				fail(c.Name, "field %s = %v was lost", key, value)
			}
			continue
		}
		if !reflect.DeepEqual(got, value) {
			fail(c.Name, "field %s changed: input %v, re-encoded %v", key, value, got)
		}
	}
	return result{Name: c.Name, Unknown: unknown, Reencoded: reencoded}
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
