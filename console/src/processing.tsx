/** The processing page: the relay's checkpoints and lag, each handler's progress, and dead letters. */
import { Code, ConnectError } from "@connectrpc/connect";
import { useState } from "preact/hooks";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ProcessingState, type DeadLetterSelection, type DeadLetterSelectionSchema } from "../../gen/tidemark/v1/processing_pb.js";
import { describeError, inspection, link, processing, when } from "./api.js";
import { Loaded, num, State, StreamLink, Table, TokenPager } from "./common.jsx";
import { useCall } from "./use-call.js";

type Selection = MessageInitShape<typeof DeadLetterSelectionSchema>;

/**
 * Replay and discard of a selection of one handler's dead letters (one event, or one aggregate's
 * sequence): the ProcessingService redrive RPCs, with the caller's token (admin scope). Discard
 * asks for the reason it records.
 */
export function DeadLetterActions(props: { readonly selection: Selection; readonly label?: string; readonly onDone: (outcome: string) => void }) {
  const [reason, setReason] = useState("");
  const [discarding, setDiscarding] = useState(false);
  const [busy, setBusy] = useState(false);
  const [failure, setFailure] = useState<string | undefined>(undefined);
  const run = (what: string, call: () => Promise<{ eventIds: string[] }>) => {
    setBusy(true);
    call().then(
      (out) => {
        setBusy(false);
        setDiscarding(false);
        setFailure(undefined);
        // Told to the page, which reloads (and may no longer list this row).
        props.onDone(`${what}: ${out.eventIds.length} event(s) (${out.eventIds.join(", ")})`);
      },
      (e: unknown) => {
        setBusy(false);
        setFailure(describeError(e));
      },
    );
  };
  const suffix = props.label === undefined ? "" : ` ${props.label}`;
  return (
    <span class="actions">
      <button disabled={busy} onClick={() => run("replay requested", () => processing.replayDeadLetters({ selection: props.selection }))}>
        {`Replay${suffix}`}
      </button>{" "}
      {discarding ? (
        <form
          class="inline discard"
          onSubmit={(e) => {
            e.preventDefault();
            run("discarded", () => processing.discardDeadLetters({ selection: props.selection, reason }));
          }}
        >
          <input type="text" name="reason" placeholder="why (recorded)" value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
          <button type="submit" disabled={busy}>
            Discard
          </button>
          <button type="button" onClick={() => setDiscarding(false)}>
            Cancel
          </button>
        </form>
      ) : (
        <button disabled={busy} onClick={() => setDiscarding(true)}>
          {`Discard${suffix}…`}
        </button>
      )}
      {failure !== undefined && <span class="error">{failure}</span>}
    </span>
  );
}

/** Dead-lettered, parked and replaying events of every handler the registry knows, with redrive buttons. */
function DeadLetters() {
  const [pages, setPages] = useState<string[]>([""]);
  const [outcome, setOutcome] = useState<string | undefined>(undefined);
  const done = (text: string) => {
    setOutcome(text);
    call.reload();
  };
  const pageToken = pages[pages.length - 1]!;
  const call = useCall((signal) => processing.listDeadLetters({ includeReplaying: true, pageSize: 100, pageToken }, { signal }), [pageToken]);
  return (
    <Loaded {...call} retry={call.reload}>
      {() => {
        const list = call.value!.deadLetters;
        const aggregates = new Set<string>();
        return (
          <>
            <p>
              {call.value!.counts.map((c) => (
                <span key={c.handler} class="status counts">
                  {c.handler}: {String(c.deadLettered)} dead lettered, {String(c.parked)} parked, {String(c.replayRequested)} replay requested
                </span>
              ))}{" "}
              <button onClick={call.reload}>Refresh</button>
            </p>
            {outcome !== undefined && <p class="outcome">{outcome}</p>}
            {list.length === 0 ? (
              <p class="note">No dead-lettered or parked event.</p>
            ) : (
              <Table id="dead-letters" columns={["handler", "stream", num("seq"), "event", "state", num("attempts"), "cause", "first / last failure", ""]}>
                  {list.map((d) => {
                    const aggregateKey = `${d.handler}\n${d.aggregateType}\n${d.aggregateId}`;
                    // The aggregate's buttons once, on its first listed event (the rest follow it in seq order).
                    const firstOfAggregate = !aggregates.has(aggregateKey);
                    aggregates.add(aggregateKey);
                    const redrivable = d.state === ProcessingState.DEAD_LETTERED || d.state === ProcessingState.PARKED;
                    const selection: DeadLetterSelection["target"] = { case: "eventId", value: d.eventId };
                    return (
                      <tr key={`${d.handler}/${d.eventId}`} data-event-id={d.eventId}>
                        <td>{d.handler}</td>
                        <td>
                          <StreamLink aggregateType={d.aggregateType} aggregateId={d.aggregateId} />
                        </td>
                        <td class="num">{String(d.sequenceNumber)}</td>
                        <td>
                          <a href={link("event", d.eventId)}>{d.eventId}</a>
                        </td>
                        <td>
                          <State name={ProcessingState[d.state]} />
                        </td>
                        <td class="num">{d.attempts}</td>
                        <td class="mono">{d.cause}</td>
                        <td>
                          {when(d.firstFailedAt)}
                          <br />
                          {when(d.lastFailedAt)}
                        </td>
                        <td>
                          {redrivable && d.state === ProcessingState.DEAD_LETTERED && <DeadLetterActions selection={{ handler: d.handler, target: selection }} onDone={done} />}
                          {redrivable && firstOfAggregate && (
                            <DeadLetterActions
                              selection={{ handler: d.handler, target: { case: "aggregate", value: { aggregateType: d.aggregateType, aggregateId: d.aggregateId } } }}
                              label="aggregate"
                              onDone={done}
                            />
                          )}
                        </td>
                      </tr>
                    );
                  })}
                </Table>
            )}
            <TokenPager pages={pages} setPages={setPages} next={call.value!.nextPageToken} />
          </>
        );
      }}
    </Loaded>
  );
}

function Relay() {
  const call = useCall((signal) => inspection.getRelayStatus({}, { signal }), []);
  if (call.error instanceof ConnectError && call.error.code === Code.PermissionDenied) {
    return <p class="note">The relay's store-wide figures need a token with the admin scope.</p>;
  }
  return (
    <Loaded {...call} retry={call.reload}>
      {() => (
        <>
          <p>
            committed head <strong id="head-position">{String(call.value!.headPosition)}</strong> <button onClick={call.reload}>Refresh</button>
          </p>
          <Table id="relay" columns={["checkpoint", num("position"), num("lag (positions)"), "oldest pending since", "lease holder", "lease expires", "updated"]}>
              {call.value!.checkpoints.map((c) => (
                <tr key={c.name}>
                  <td>{c.name}</td>
                  <td class="num">{String(c.position)}</td>
                  <td class="num">{String(c.lagPositions)}</td>
                  <td>{when(c.oldestPendingAt)}</td>
                  <td>{c.leaseHolder}</td>
                  <td>{when(c.leaseExpiresAt)}</td>
                  <td>{when(c.updatedAt)}</td>
                </tr>
              ))}
            </Table>
        </>
      )}
    </Loaded>
  );
}

function Handlers() {
  const call = useCall((signal) => inspection.listHandlers({}, { signal }), []);
  return (
    <Loaded {...call} retry={call.reload}>
      {() => {
        const head = call.value!.headPosition;
        return (
          <>
            <p>
              <button onClick={call.reload}>Refresh</button>
            </p>
            <Table id="handlers" columns={["handler", num("applied up to"), num("lag"), num("processing"), num("retry scheduled"), num("dead lettered"), num("parked"), num("replay requested"), num("done"), num("skipped stale"), num("discarded"), "last change"]}>
                {call.value!.handlers.map((h) => (
                  <tr key={h.handler}>
                    <td>{h.handler}</td>
                    <td class="num">{String(h.appliedPosition)}</td>
                    <td class="num">{head === 0n ? "" : String(head > h.appliedPosition ? head - h.appliedPosition : 0n)}</td>
                    <td class="num">{String(h.processing)}</td>
                    <td class="num">{String(h.retryScheduled)}</td>
                    <td class="num">{String(h.deadLettered)}</td>
                    <td class="num">{String(h.parked)}</td>
                    <td class="num">{String(h.replayRequested)}</td>
                    <td class="num">{String(h.done)}</td>
                    <td class="num">{String(h.skippedStale)}</td>
                    <td class="num">{String(h.discarded)}</td>
                    <td>{when(h.lastUpdatedAt)}</td>
                  </tr>
                ))}
              </Table>
            {call.value!.handlers.length === 0 && <p class="note">No handler has recorded anything yet.</p>}
          </>
        );
      }}
    </Loaded>
  );
}

/** Relay, handlers and dead letters. */
export function Processing() {
  return (
    <>
      <h1>Processing</h1>
      <h2>Relay</h2>
      <Relay />
      <h2>Handlers</h2>
      <Handlers />
      <h2>Dead letters and parked events</h2>
      <DeadLetters />
    </>
  );
}
