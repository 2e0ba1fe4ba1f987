/** Browsing: databases, aggregate types, streams, one stream's events and one event. */
import { toJson } from "@bufbuild/protobuf";
import { useState } from "preact/hooks";
import { EventEnvelopeSchema, EventKind, type EventEnvelope } from "../../gen/tidemark/v1/envelope_pb.js";
import { ProcessingState } from "../../gen/tidemark/v1/processing_pb.js";
import { eventStore, inspection, link, processing, when } from "./api.js";
import { databaseLabel, EventRow, eventColumns, Loaded, num, Pager, State, StreamLink, Table, TokenPager } from "./common.jsx";
import { DeadLetterActions } from "./processing.jsx";
import { useCall } from "./use-call.js";

/** The start page: databases, and direct ways to an event or a stream. */
export function Databases() {
  const call = useCall((signal) => inspection.listDatabases({}, { signal }), []);
  return (
    <>
      <h1>Databases</h1>
      <GoTo />
      <Loaded {...call} retry={call.reload}>
        {() =>
          call.value!.databases.length === 0 ? (
            <p class="note">No streams yet (or none this token may read).</p>
          ) : (
            <Table id="databases" columns={["database", num("streams")]}>
                {call.value!.databases.map((d) => (
                  <tr key={d.database}>
                    <td>
                      <a href={link("db", d.database)}>{databaseLabel(d.database)}</a>
                    </td>
                    <td class="num">{String(d.streams)}</td>
                  </tr>
                ))}
              </Table>
          )
        }
      </Loaded>
    </>
  );
}

function GoTo() {
  const [eventId, setEventId] = useState("");
  return (
    <form
      class="inline"
      onSubmit={(e) => {
        e.preventDefault();
        if (eventId.trim() !== "") location.hash = link("event", eventId.trim());
      }}
    >
      <input type="text" name="event-id" placeholder="event id" value={eventId} onInput={(e) => setEventId((e.target as HTMLInputElement).value)} />
      <button type="submit">Open event</button>
    </form>
  );
}

/** The aggregate types of one database. */
export function AggregateTypes(props: { readonly database: string }) {
  const call = useCall((signal) => inspection.listAggregateTypes({ database: props.database }, { signal }), [props.database]);
  return (
    <>
      <div class="crumbs">
        <a href="#/">databases</a> / {databaseLabel(props.database)}
      </div>
      <h1>Aggregate types in {databaseLabel(props.database)}</h1>
      <Loaded {...call} retry={call.reload}>
        {() => (
          <Table id="aggregate-types" columns={["aggregate type", num("streams")]}>
              {call.value!.aggregateTypes.map((t) => (
                <tr key={t.aggregateType}>
                  <td>
                    <a href={link("db", props.database, t.aggregateType)}>{t.aggregateType}</a>
                  </td>
                  <td class="num">{String(t.streams)}</td>
                </tr>
              ))}
            </Table>
        )}
      </Loaded>
    </>
  );
}

/** The streams of one type in one database, filtered by an id prefix, a page at a time. */
export function Streams(props: { readonly database: string; readonly aggregateType: string }) {
  const [filter, setFilter] = useState("");
  const [applied, setApplied] = useState("");
  const [pages, setPages] = useState<string[]>([""]);
  const pageToken = pages[pages.length - 1]!;
  const call = useCall(
    (signal) => inspection.listStreams({ database: props.database, aggregateType: props.aggregateType, idPrefix: applied, pageToken, pageSize: 50 }, { signal }),
    [props.database, props.aggregateType, applied, pageToken],
  );
  return (
    <>
      <div class="crumbs">
        <a href="#/">databases</a> / <a href={link("db", props.database)}>{databaseLabel(props.database)}</a> / {props.aggregateType}
      </div>
      <h1>{props.aggregateType} streams</h1>
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(filter);
          setPages([""]);
        }}
      >
        <input type="text" name="id-prefix" placeholder="aggregate id starts with…" value={filter} onInput={(e) => setFilter((e.target as HTMLInputElement).value)} />
        <button type="submit">Find</button>
      </form>
      <Loaded {...call} retry={call.reload}>
        {() => (
          <>
            <Table id="streams" columns={["aggregate id", num("head"), "updated"]}>
                {call.value!.streams.map((s) => (
                  <tr key={s.aggregateId}>
                    <td>
                      <a href={link("stream", s.aggregateType, s.aggregateId)}>{s.aggregateId}</a>
                    </td>
                    <td class="num">{String(s.head)}</td>
                    <td>{when(s.updatedAt)}</td>
                  </tr>
                ))}
              </Table>
            {call.value!.streams.length === 0 && <p class="note">No stream matches.</p>}
            <TokenPager pages={pages} setPages={setPages} next={call.value!.nextPageToken} />
          </>
        )}
      </Loaded>
    </>
  );
}

const PAGE = 100;

/** One stream: its head and its events, a page at a time. */
export function Stream(props: { readonly aggregateType: string; readonly aggregateId: string }) {
  const [from, setFrom] = useState(1);
  const call = useCall(
    async (signal) => {
      const request = { aggregateType: props.aggregateType, aggregateId: props.aggregateId };
      const head = await eventStore.getStreamHead(request, { signal });
      const events: EventEnvelope[] = [];
      for await (const message of eventStore.readStream({ ...request, fromSeq: BigInt(from), maxCount: PAGE }, { signal })) if (message.event !== undefined) events.push(message.event);
      return { head, events };
    },
    [props.aggregateType, props.aggregateId, from],
  );
  const database = props.aggregateId.includes("/") ? props.aggregateId.slice(0, props.aggregateId.indexOf("/")) : "";
  return (
    <>
      <div class="crumbs">
        <a href="#/">databases</a> / <a href={link("db", database)}>{databaseLabel(database)}</a> / <a href={link("db", database, props.aggregateType)}>{props.aggregateType}</a> / {props.aggregateId}
      </div>
      <h1>
        Stream {props.aggregateType} <span class="mono">{props.aggregateId}</span>
      </h1>
      <Loaded {...call} retry={call.reload}>
        {() => (
          <>
            <p>
              head <strong id="stream-head">{String(call.value!.head.head)}</strong> · allocated {String(call.value!.head.allocated)} · last position {String(call.value!.head.globalPosition)}
            </p>
            <Table id="events" columns={eventColumns(false)}>
              {call.value!.events.map((e) => (
                <EventRow key={e.eventId} event={e} withStream={false} />
              ))}
            </Table>
            <Pager canBack={!(from === 1)} back={() => setFrom(Math.max(1, from - PAGE))} canForward={!(call.value!.events.length < PAGE)} forward={() => setFrom(from + PAGE)} />
          </>
        )}
      </Loaded>
    </>
  );
}

/** One event: envelope, data, metadata, where it is stored, and what each handler did with it. */
export function Event(props: { readonly eventId: string }) {
  const call = useCall((signal) => inspection.getEvent({ eventId: props.eventId }, { signal }), [props.eventId]);
  const status = useCall((signal) => processing.getProcessingStatus({ key: { case: "eventId", value: props.eventId } }, { signal }), [props.eventId]);
  const [outcome, setOutcome] = useState<string | undefined>(undefined);
  return (
    <>
      <h1>
        Event <span class="mono">{props.eventId}</span>
      </h1>
      <Loaded {...call} retry={call.reload}>
        {() => {
          const { event, location } = call.value!;
          const e = event!;
          return (
            <>
              <dl id="envelope">
                <dt>event type</dt>
                <dd>{e.eventType}</dd>
                <dt>stream</dt>
                <dd>
                  <StreamLink aggregateType={e.aggregateType} aggregateId={e.aggregateId} />{" "}
                  seq {String(e.sequenceNumber)}
                </dd>
                <dt>global position</dt>
                <dd>{String(e.globalPosition)}</dd>
                <dt>kind</dt>
                <dd>{EventKind[e.kind]}</dd>
                <dt>occurred at</dt>
                <dd>{when(e.occurredAt)}</dd>
                <dt>committed at</dt>
                <dd>{when(call.value!.committedAt)}</dd>
                <dt>actor</dt>
                <dd>{e.actor}</dd>
                <dt>schema version</dt>
                <dd>{String(e.schemaVersion)}</dd>
                <dt>content hash</dt>
                <dd class="mono">{e.contentHash}</dd>
                <dt>previous hash</dt>
                <dd class="mono">{e.previousHash}</dd>
                <dt>chain hash</dt>
                <dd class="mono">{call.value!.chainHash}</dd>
              </dl>
              <h2>Data</h2>
              <pre id="event-data">{JSON.stringify(e.data ?? {}, null, 2)}</pre>
              <h2>Metadata</h2>
              <table id="metadata">
                <tbody>
                  {Object.entries(e.metadata)
                    .sort(([a], [b]) => (a < b ? -1 : 1))
                    .map(([k, v]) => (
                      <tr key={k}>
                        <th>{k}</th>
                        <td class="mono">{v}</td>
                      </tr>
                    ))}
                </tbody>
              </table>
              <h2>Where it is stored</h2>
              <dl id="location">
                <dt>bucket</dt>
                <dd>{location?.bucket}</dd>
                <dt>segment key</dt>
                <dd class="mono">{location?.key}</dd>
                <dt>bytes</dt>
                <dd>
                  offset {String(location?.offset)}, length {String(location?.length)} (Range: bytes={String(location?.offset)}-{String((location?.offset ?? 0n) + (location?.length ?? 0n) - 1n)})
                </dd>
              </dl>
              <h2>Envelope (protobuf JSON)</h2>
              <pre id="envelope-json">{JSON.stringify(toJson(EventEnvelopeSchema, e, { useProtoFieldName: true }), null, 2)}</pre>
            </>
          );
        }}
      </Loaded>
      <h2>Processing</h2>
      {outcome !== undefined && <p class="outcome">{outcome}</p>}
      <Loaded {...status} retry={status.reload}>
        {() => {
          const handlers = status.value!.events[0]?.handlers ?? [];
          return handlers.length === 0 ? (
            <p class="note">No handler has seen this event yet.</p>
          ) : (
            <Table id="processing" columns={["handler", "state", num("attempts"), "last error", "updated", ""]}>
                {handlers.map((h) => (
                  <tr key={h.handler}>
                    <td>{h.handler}</td>
                    <td>
                      <State name={ProcessingState[h.state]} />
                    </td>
                    <td class="num">{h.attempts}</td>
                    <td class="mono">{h.lastError}</td>
                    <td>{when(h.updatedAt)}</td>
                    <td>
                      {(h.state === ProcessingState.DEAD_LETTERED || h.state === ProcessingState.PARKED) && (
                        <DeadLetterActions
                          selection={{ handler: h.handler, target: { case: "eventId", value: props.eventId } }}
                          onDone={(text) => {
                            setOutcome(text);
                            status.reload();
                          }}
                        />
                      )}
                    </td>
                  </tr>
                ))}
              </Table>
          );
        }}
      </Loaded>
    </>
  );
}
