/** The processing page: the relay's checkpoints and lag, each handler's progress, and dead letters. */
import { Code, ConnectError } from "@connectrpc/connect";
import { inspection, when } from "./api.js";
import { Loaded } from "./common.jsx";
import { useCall } from "./use-call.js";

/** Replay and discard of one dead-lettered event for one handler. */
export function DeadLetterActions(_props: { readonly handler: string; readonly eventId: string; readonly onDone: () => void }) {
  return null;
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
          <table id="relay">
            <thead>
              <tr>
                <th>checkpoint</th>
                <th class="num">position</th>
                <th class="num">lag (positions)</th>
                <th>oldest pending since</th>
                <th>lease holder</th>
                <th>lease expires</th>
                <th>updated</th>
              </tr>
            </thead>
            <tbody>
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
            </tbody>
          </table>
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
            <table id="handlers">
              <thead>
                <tr>
                  <th>handler</th>
                  <th class="num">applied up to</th>
                  <th class="num">lag</th>
                  <th class="num">processing</th>
                  <th class="num">retry scheduled</th>
                  <th class="num">dead lettered</th>
                  <th class="num">done</th>
                  <th class="num">skipped stale</th>
                  <th>last change</th>
                </tr>
              </thead>
              <tbody>
                {call.value!.handlers.map((h) => (
                  <tr key={h.handler}>
                    <td>{h.handler}</td>
                    <td class="num">{String(h.appliedPosition)}</td>
                    <td class="num">{head === 0n ? "" : String(head > h.appliedPosition ? head - h.appliedPosition : 0n)}</td>
                    <td class="num">{String(h.processing)}</td>
                    <td class="num">{String(h.retryScheduled)}</td>
                    <td class="num">{String(h.deadLettered)}</td>
                    <td class="num">{String(h.done)}</td>
                    <td class="num">{String(h.skippedStale)}</td>
                    <td>{when(h.lastUpdatedAt)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
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
    </>
  );
}
