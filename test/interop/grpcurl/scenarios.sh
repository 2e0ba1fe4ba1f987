#!/usr/bin/env bash
# Runs test/interop/SCENARIOS.md against a Tidemark server with grpcurl and server reflection only
# (no proto files), and jq to read the JSON. Usage: scenarios.sh ADDRESS NAMESPACE.
# Exits 1 with "FAIL Sn: ..." on the first failed expectation, 2 on bad arguments or missing tools.
# GRPCURL may name the grpcurl binary (default: grpcurl on PATH).
set -uo pipefail

if [ $# -ne 2 ] || ! [[ $2 =~ ^[a-z0-9][a-z0-9-]{0,40}$ ]]; then
  echo "usage: scenarios.sh ADDRESS NAMESPACE (namespace: [a-z0-9][a-z0-9-]{0,40})" >&2
  exit 2
fi
ADDR=$1
NS=$2
GRPCURL=${GRPCURL:-grpcurl}
for tool in "$GRPCURL" jq; do
  command -v "$tool" >/dev/null 2>&1 || { echo "FAIL setup: $tool is not installed" >&2; exit 2; }
done

WORK=$(mktemp -d)
SUB_PID=""
cleanup() {
  if [ -n "$SUB_PID" ]; then kill "$SUB_PID" 2>/dev/null; wait "$SUB_PID" 2>/dev/null; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

SCENARIO=setup
fail() { echo "FAIL $SCENARIO: $*" >&2; exit 1; }
ok() { echo "ok $SCENARIO $*"; }

# call SERVICE/METHOD JSON: one unary or server-streaming call. OUT holds the response(s), ERR the
# error status as JSON (-format-error), RC grpcurl's exit code (64 + the gRPC code on an error).
call() {
  "$GRPCURL" -plaintext -emit-defaults -format-error -max-time 30 -d "$2" "$ADDR" "tidemark.v1.$1" >"$WORK/out" 2>"$WORK/err"
  RC=$?
  OUT=$(cat "$WORK/out")
  ERR=$(cat "$WORK/err")
}
expect_ok() { [ "$RC" -eq 0 ] || fail "$1 failed (exit $RC): $ERR"; }
# expect_code WHAT CODE NAME: the call failed with gRPC code CODE and its status is in ERR.
expect_code() {
  [ "$RC" -ne 0 ] || fail "$1: expected $3, the call succeeded: $OUT"
  local code
  code=$(jq -r '.code' <<<"$ERR" 2>/dev/null) || fail "$1: expected $3 as a JSON status, got: $ERR"
  [ "$code" = "$2" ] || fail "$1: expected $3 (code $2), got code $code: $ERR"
}
expect_eq() { [ "$2" = "$3" ] || fail "$1: expected '$3', got '$2'"; }
out() { jq -r "$1" <<<"$OUT"; }
# The first status detail of a type, from the google.rpc.Status grpcurl decoded from
# grpc-status-details-bin (its Any types resolved by reflection).
detail() { jq -c --arg t "type.googleapis.com/$1" '[.details[]? | select(."@type" == $t)][0] // empty' <<<"$ERR"; }
# Fields of a detail by JSON name, or by proto name should grpcurl print those.
field() { jq -r --arg j "$2" --arg p "$3" '.[$j] // .[$p] // empty' <<<"$1"; }
bad_fields() {
  local bad
  bad=$(detail google.rpc.BadRequest)
  [ -n "$bad" ] || fail "INVALID_ARGUMENT without a google.rpc.BadRequest detail: $ERR"
  jq -c '[(.fieldViolations // .field_violations)[].field] | sort' <<<"$bad"
}

ORDER="Order.$NS"
ADA="\"database\":\"$NS\",\"class_name\":\"Person\",\"instance_id\":\"ada\""
ADA_ID="$NS/Person/ada"

# ---------------------------------------------------------------- S1
SCENARIO=S1
CREATE="{$ADA,\"properties\":{\"name\":\"Ada Lovelace\",\"born\":1815},\"command_id\":\"$NS-c1\"}"
call InstanceService/CreateInstance "$CREATE"
expect_ok CreateInstance
expect_eq sequence_number "$(out .result.sequenceNumber)" 1
expect_eq replayed "$(out .result.replayed)" false
C1_ID=$(out .result.eventId)
C1_POS=$(out .result.globalPosition)
[ -n "$C1_ID" ] || fail "event_id is empty"
[ "$C1_POS" -gt 0 ] || fail "global_position is $C1_POS"
ok "created at seq 1, position $C1_POS"

# ---------------------------------------------------------------- S2
SCENARIO=S2
UPDATE="{$ADA,\"properties\":{\"title\":\"Countess\"},\"expected_seq\":1,\"command_id\":\"$NS-c2\"}"
call InstanceService/UpdateInstance "$UPDATE"
expect_ok UpdateInstance
expect_eq sequence_number "$(out .result.sequenceNumber)" 2
expect_eq replayed "$(out .result.replayed)" false
C2_ID=$(out .result.eventId)
C2_POS=$(out .result.globalPosition)
[ "$C2_POS" -gt "$C1_POS" ] || fail "global_position $C2_POS not above S1's $C1_POS"
ok "updated to seq 2"

# ---------------------------------------------------------------- S3
SCENARIO=S3
call InstanceService/UpdateInstance "{$ADA,\"properties\":{\"title\":\"Lady\"},\"expected_seq\":1,\"command_id\":\"$NS-c3\"}"
expect_code "stale UpdateInstance" 10 ABORTED
CONFLICT=$(detail tidemark.v1.ConcurrencyConflict)
[ -n "$CONFLICT" ] || fail "ABORTED without a tidemark.v1.ConcurrencyConflict detail: $ERR"
expect_eq aggregate_type "$(field "$CONFLICT" aggregateType aggregate_type)" Instance
expect_eq aggregate_id "$(field "$CONFLICT" aggregateId aggregate_id)" "$ADA_ID"
expect_eq expected_seq "$(field "$CONFLICT" expectedSeq expected_seq)" 1
expect_eq actual_seq "$(field "$CONFLICT" actualSeq actual_seq)" 2
ok "ABORTED, ConcurrencyConflict actual_seq 2"

# ---------------------------------------------------------------- S4
SCENARIO=S4
call InstanceService/UpdateInstance "$UPDATE"
expect_ok "retried UpdateInstance"
expect_eq event_id "$(out .result.eventId)" "$C2_ID"
expect_eq sequence_number "$(out .result.sequenceNumber)" 2
expect_eq global_position "$(out .result.globalPosition)" "$C2_POS"
expect_eq replayed "$(out .result.replayed)" true
call InstanceService/CreateInstance "$CREATE"
expect_ok "retried CreateInstance"
expect_eq "retried create event_id" "$(out .result.eventId)" "$C1_ID"
expect_eq "retried create sequence_number" "$(out .result.sequenceNumber)" 1
expect_eq "retried create replayed" "$(out .result.replayed)" true
ok "retries returned the original results"

# ---------------------------------------------------------------- S5
SCENARIO=S5
call InstanceService/GetInstance "{$ADA}"
expect_ok GetInstance
expect_eq version "$(out .instance.version)" 2
expect_eq deleted "$(out .instance.deleted)" false
expect_eq properties "$(jq -cS .instance.properties <<<"$OUT")" '{"born":1815,"name":"Ada Lovelace","title":"Countess"}'
ok "version 2 with merged properties"

# ---------------------------------------------------------------- S6
SCENARIO=S6
PLACED="{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"o1\",\"no_stream\":{},\"events\":[{\"event_id\":\"$NS-o1-placed\",\"event_type\":\"OrderPlaced\",\"data\":{\"total\":42}}]}"
call EventStoreService/AppendEvents "$PLACED"
expect_ok AppendEvents
expect_eq "appended events" "$(out '.events | length')" 1
expect_eq sequence_number "$(out '.events[0].sequenceNumber')" 1
expect_eq replayed "$(out .replayed)" false
O1_POS=$(out '.events[0].globalPosition')
call EventStoreService/AppendEvents "$PLACED"
expect_ok "retried AppendEvents"
expect_eq "retry sequence_number" "$(out '.events[0].sequenceNumber')" 1
expect_eq "retry global_position" "$(out '.events[0].globalPosition')" "$O1_POS"
expect_eq "retry replayed" "$(out .replayed)" true
call EventStoreService/AppendEvents "{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"o1\",\"any\":{},\"events\":[{\"event_id\":\"$NS-o1-placed\",\"event_type\":\"OrderPlaced\",\"data\":{\"total\":43}}]}"
expect_code "AppendEvents with other content" 6 ALREADY_EXISTS
IDEM=$(detail tidemark.v1.IdempotencyConflict)
[ -n "$IDEM" ] || fail "ALREADY_EXISTS without a tidemark.v1.IdempotencyConflict detail: $ERR"
expect_eq event_id "$(field "$IDEM" eventId event_id)" "$NS-o1-placed"
STORED=$(field "$IDEM" storedHash stored_hash)
INCOMING=$(field "$IDEM" incomingHash incoming_hash)
[[ $STORED =~ ^sha256:[0-9a-f]{64}$ ]] || fail "stored_hash '$STORED' is not sha256:<hex>"
[[ $INCOMING =~ ^sha256:[0-9a-f]{64}$ ]] || fail "incoming_hash '$INCOMING' is not sha256:<hex>"
[ "$STORED" != "$INCOMING" ] || fail "stored and incoming hash are equal"
ok "replayed append, then ALREADY_EXISTS with both hashes"

# ---------------------------------------------------------------- S7
SCENARIO=S7
call EventStoreService/AppendEvents "{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"o2\",\"events\":[{\"event_id\":\"$NS-o2-bad\",\"event_type\":\"OrderPlaced\"}]}"
expect_code "AppendEvents without an expectation" 3 INVALID_ARGUMENT
expect_eq violations "$(bad_fields)" '["expectation"]'
call InstanceService/UpdateInstance "{$ADA,\"properties\":{},\"command_id\":\"$NS-c4\"}"
expect_code "UpdateInstance without expected_seq" 3 INVALID_ARGUMENT
expect_eq violations "$(bad_fields)" '["expected_seq"]'
call EventStoreService/GetStreamHead "{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"o2\"}"
expect_code "GetStreamHead of the refused stream" 5 NOT_FOUND
call EventStoreService/GetStreamHead "{\"aggregate_type\":\"Instance\",\"aggregate_id\":\"$ADA_ID\"}"
expect_ok GetStreamHead
expect_eq "instance head" "$(out .head)" 2
ok "INVALID_ARGUMENT names expectation and expected_seq; nothing written"

# ---------------------------------------------------------------- S8
SCENARIO=S8
call EventStoreService/ReadStream "{\"aggregate_type\":\"Instance\",\"aggregate_id\":\"$ADA_ID\"}"
expect_ok ReadStream
# A server stream prints one JSON object per message.
OUT=$(jq -s -c '[.[].event]' <<<"$OUT")
expect_eq "events read" "$(out length)" 2
i=0
for want in "InstanceCreated $C1_ID $NS-c1 $C1_POS" "InstanceUpdated $C2_ID $NS-c2 $C2_POS"; do
  read -r type id command position <<<"$want"
  expect_eq "event $i sequence_number" "$(out ".[$i].sequenceNumber")" $((i + 1))
  expect_eq "event $i event_type" "$(out ".[$i].eventType")" "$type"
  expect_eq "event $i event_id" "$(out ".[$i].eventId")" "$id"
  expect_eq "event $i global_position" "$(out ".[$i].globalPosition")" "$position"
  expect_eq "event $i aggregate_type" "$(out ".[$i].aggregateType")" Instance
  expect_eq "event $i aggregate_id" "$(out ".[$i].aggregateId")" "$ADA_ID"
  expect_eq "event $i metadata.command_id" "$(out ".[$i].metadata.command_id")" "$command"
  expect_eq "event $i data is an object" "$(out ".[$i].data | type")" object
  i=$((i + 1))
done
call EventStoreService/ReadStream "{\"aggregate_type\":\"Instance\",\"aggregate_id\":\"$ADA_ID\",\"from_seq\":2}"
expect_ok "ReadStream from_seq 2"
OUT=$(jq -s -c '[.[].event]' <<<"$OUT")
expect_eq "events from seq 2" "$(out length)" 1
expect_eq "from_seq 2 sequence_number" "$(out '.[0].sequenceNumber')" 2
ok "two events in order; from_seq 2 reads one"

# ---------------------------------------------------------------- S9
SCENARIO=S9
append() { # append AGGREGATE_ID EXPECTATION_JSON EVENT_ID EVENT_TYPE
  call EventStoreService/AppendEvents "{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"$1\",$2,\"events\":[{\"event_id\":\"$3\",\"event_type\":\"$4\"}]}"
  expect_ok "append $3"
}
append o1 '"expected_seq":1' "$NS-o1-paid" OrderPaid
append o2 '"no_stream":{}' "$NS-o2-placed" OrderPlaced

# subscribe AFTER_POSITION: a live Subscribe call in the background; messages are read with next.
subscribe() {
  exec 3< <(exec "$GRPCURL" -plaintext -emit-defaults -format-error -max-time 60 \
    -d "{\"after_position\":$1,\"aggregate_types\":[\"$ORDER\"]}" "$ADDR" tidemark.v1.EventStoreService/Subscribe 2>&1)
  SUB_PID=$!
}
unsubscribe() {
  kill "$SUB_PID" 2>/dev/null
  wait "$SUB_PID" 2>/dev/null
  SUB_PID=""
  exec 3<&-
}
# next: reads the next message (grpcurl prints each as an indented JSON object ending in "}").
next() {
  MSG=""
  local line
  while IFS= read -r -t 20 line <&3; do
    MSG+="$line"$'\n'
    if [ "$line" = "}" ]; then MSG=$(jq -c . <<<"$MSG") || fail "Subscribe printed no JSON: $MSG"; return 0; fi
  done
  fail "Subscribe: no complete message within 20 s (got: ${MSG:-nothing})"
}
# expect_event WHAT EVENT_ID: MSG is that event, its position equals the envelope's global_position.
expect_event() {
  local id position global
  id=$(jq -r '.event.eventId // empty' <<<"$MSG")
  [ -n "$id" ] || fail "$1: expected event $2, got $MSG"
  expect_eq "$1 event_id" "$id" "$2"
  position=$(jq -r .position <<<"$MSG")
  global=$(jq -r .event.globalPosition <<<"$MSG")
  expect_eq "$1 position" "$position" "$global"
  POSITION=$position
}
expect_caught_up() { jq -e 'has("caughtUp")' <<<"$MSG" >/dev/null || fail "$1: expected caught_up, got $MSG"; }

subscribe 0
next; expect_event "catch-up message 1" "$NS-o1-placed"; P1=$POSITION
next; expect_event "catch-up message 2" "$NS-o1-paid"; P2=$POSITION
next; expect_event "catch-up message 3" "$NS-o2-placed"; P3=$POSITION
[ "$P1" -lt "$P2" ] && [ "$P2" -lt "$P3" ] || fail "positions not increasing: $P1 $P2 $P3"
next; expect_caught_up "message 4"
[ "$(jq -r .position <<<"$MSG")" -ge "$P3" ] || fail "caught_up position below the last event's $P3: $MSG"
append o2 '"expected_seq":1' "$NS-o2-shipped" OrderShipped
next; expect_event live "$NS-o2-shipped"
unsubscribe

subscribe "$P2"
next; expect_event "resume message 1" "$NS-o2-placed"
next; expect_event "resume message 2" "$NS-o2-shipped"
next; expect_caught_up "resume message 3"
unsubscribe
ok "catch-up, caught_up, live, resumed after position $P2 with no repeat"

# ---------------------------------------------------------------- S10
SCENARIO=S10
MULTI="{\"streams\":[{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"m1\",\"no_stream\":{},\"events\":[{\"event_id\":\"$NS-m1-opened\",\"event_type\":\"OrderOpened\",\"data\":{\"n\":1}}]},{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"o1\",\"expected_seq\":2,\"events\":[{\"event_id\":\"$NS-o1-noted\",\"event_type\":\"OrderNoted\"}]}],\"consistency_checks\":[{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"o2\",\"expected_seq\":2}]}"
call EventStoreService/AppendToStreams "$MULTI"
expect_ok AppendToStreams
expect_eq replayed "$(out .replayed)" false
expect_eq "streams" "$(jq -c '[.streams[] | [.aggregateId, [.events[].sequenceNumber]]]' <<<"$OUT")" '[["m1",["1"]],["o1",["3"]]]'
M1_POS=$(out '.streams[0].events[0].globalPosition')
O1N_POS=$(out '.streams[1].events[0].globalPosition')
expect_eq "o1 global_position" "$O1N_POS" "$((M1_POS + 1))"
FIRST=$(jq -c .streams <<<"$OUT")
call EventStoreService/AppendToStreams "$MULTI"
expect_ok "retried AppendToStreams"
expect_eq "retry replayed" "$(out .replayed)" true
expect_eq "retry streams" "$(jq -c .streams <<<"$OUT")" "$FIRST"
call EventStoreService/AppendToStreams "{\"streams\":[{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"m2\",\"no_stream\":{},\"events\":[{\"event_id\":\"$NS-m2-opened\",\"event_type\":\"OrderOpened\"}]},{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"o1\",\"expected_seq\":1,\"events\":[{\"event_id\":\"$NS-o1-late\",\"event_type\":\"OrderNoted\"}]}],\"consistency_checks\":[{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"o2\",\"expected_seq\":1},{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"m1\",\"no_stream\":{}}]}"
expect_code "AppendToStreams with stale expectations" 10 ABORTED
CONFLICT=$(detail tidemark.v1.ConsistencyConflict)
[ -n "$CONFLICT" ] || fail "ABORTED without a tidemark.v1.ConsistencyConflict detail: $ERR"
# uint64 fields print as JSON strings; an unset (zero) one may be left out: default it to "0".
CONFLICTS=$(jq -c '[.conflicts[] | [.field, (.aggregateType // .aggregate_type), (.aggregateId // .aggregate_id), ((.expectedSeq // .expected_seq // "0") | tostring), ((.actualSeq // .actual_seq // "0") | tostring)]]' <<<"$CONFLICT")
expect_eq conflicts "$CONFLICTS" "[[\"streams[1]\",\"$ORDER\",\"o1\",\"1\",\"3\"],[\"consistency_checks[0]\",\"$ORDER\",\"o2\",\"1\",\"2\"],[\"consistency_checks[1]\",\"$ORDER\",\"m1\",\"0\",\"1\"]]"
call EventStoreService/GetStreamHead "{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"m2\"}"
expect_code "GetStreamHead of m2" 5 NOT_FOUND
call EventStoreService/AppendToStreams "{\"streams\":[{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"m3\",\"any\":{},\"events\":[{\"event_id\":\"$NS-m3-opened\",\"event_type\":\"OrderOpened\"}]}],\"consistency_checks\":[{\"aggregate_type\":\"$ORDER\",\"aggregate_id\":\"m3\",\"no_stream\":{}}]}"
expect_code "AppendToStreams checking a written aggregate" 3 INVALID_ARGUMENT
expect_eq violations "$(bad_fields)" '["consistency_checks[0]"]'
ok "two streams at positions $M1_POS and $O1N_POS, replayed, three conflicts listed, nothing written"
# ---------------------------------------------------------------- S11
SCENARIO=S11
# filtered AFTER_POSITION KINDS_JSON: a stop_at_caught_up Subscribe that must end with OK by itself.
filtered() {
  call EventStoreService/Subscribe "{\"after_position\":$1,\"aggregate_type_prefix\":\"$ORDER\",\"event_types\":[\"OrderPlaced\"],\"kinds\":$2,\"checkpoints\":true,\"stop_at_caught_up\":true}"
}
# check_batch: OUT (every message) is events or checkpoints, then caught_up last, positions increasing.
check_batch() {
  ALL=$(jq -s -c . <<<"$OUT") || fail "Subscribe printed no JSON: $OUT"
  jq -e 'length > 0 and (last | has("caughtUp"))' <<<"$ALL" >/dev/null || fail "last message: expected caught_up, got $ALL"
  jq -e '.[:-1] | all(has("event") or has("checkpoint"))' <<<"$ALL" >/dev/null || fail "expected events or checkpoints before caught_up, got $ALL"
  jq -e '[.[].position | tonumber] | . as $p | [range(1; length)] | all($p[.] > $p[. - 1])' <<<"$ALL" >/dev/null || fail "positions not increasing: $ALL"
  IDS=$(jq -c '[.[] | select(has("event")) | .event.eventId]' <<<"$ALL")
  CAUGHT_UP=$(jq -r 'last | .position' <<<"$ALL")
}
filtered 0 '["EVENT_KIND_DOMAIN"]'
expect_ok "filtered Subscribe"
check_batch
expect_eq "filtered events" "$IDS" "[\"$NS-o1-placed\",\"$NS-o2-placed\"]"
LAST_EVENT=$(jq -r '[.[] | select(has("event")) | .position] | last' <<<"$ALL")
[ "$CAUGHT_UP" -ge "$LAST_EVENT" ] || fail "caught_up position $CAUGHT_UP below $LAST_EVENT"
CHECKPOINTS=$(jq '[.[] | select(has("checkpoint"))] | length' <<<"$ALL")
filtered "$CAUGHT_UP" '["EVENT_KIND_DOMAIN"]'
expect_ok "resumed filtered Subscribe"
check_batch
expect_eq "resumed events" "$IDS" "[]"
filtered 0 '[7]'
expect_code "Subscribe with an unknown kind" 3 INVALID_ARGUMENT
expect_eq violations "$(bad_fields)" '["kinds[0]"]'
ok "2 of the ORDER events matched, $CHECKPOINTS checkpoints, ended OK at position $CAUGHT_UP; resume empty; unknown kind refused"
# ---------------------------------------------------------------- S12
SCENARIO=S12
# orders MAX_BATCH: every ORDER event from position 0, MAX_BATCH per message, ending with OK.
orders() {
  call EventStoreService/Subscribe "{\"after_position\":0,\"aggregate_type_prefix\":\"$ORDER\",\"stop_at_caught_up\":true,\"max_batch\":$1}"
}
orders 0
expect_ok "unbatched Subscribe"
ALL=$(jq -s -c . <<<"$OUT") || fail "Subscribe printed no JSON: $OUT"
jq -e 'length > 0 and (last | has("caughtUp")) and (.[:-1] | all(has("event")))' <<<"$ALL" >/dev/null || fail "expected events then caught_up, got $ALL"
REFERENCE=$(jq -c '[.[] | select(has("event")) | .event.eventId]' <<<"$ALL")
orders 2
expect_ok "batched Subscribe"
ALL=$(jq -s -c . <<<"$OUT") || fail "Subscribe printed no JSON: $OUT"
jq -e 'length > 0 and (last | has("caughtUp"))' <<<"$ALL" >/dev/null || fail "last message: expected caught_up, got $ALL"
jq -e '.[:-1] | all(has("events") and (.events.events | length) >= 1 and (.events.events | length) <= 2)' <<<"$ALL" >/dev/null || fail "expected events messages of 1 or 2 events, got $ALL"
jq -e '.[:-1] | all(.position == (.events.events | last | .globalPosition))' <<<"$ALL" >/dev/null || fail "a batch's position is not its last event's: $ALL"
expect_eq "batched events" "$(jq -c '[.[:-1][] | .events.events[].eventId]' <<<"$ALL")" "$REFERENCE"
jq -e '[.[:-1][] | .events.events | length] | max == 2' <<<"$ALL" >/dev/null || fail "no message held two events: $ALL"
MESSAGES=$(jq 'length - 1' <<<"$ALL")
orders 1001
expect_code "Subscribe with max_batch 1001" 3 INVALID_ARGUMENT
expect_eq violations "$(bad_fields)" '["max_batch"]'
ok "$(jq length <<<"$REFERENCE") ORDER events in $MESSAGES messages of up to 2; max_batch 1001 refused"
