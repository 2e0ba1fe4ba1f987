/** The global log, live: Subscribe from the end (or a position), newest first, with pause. */
import { useEffect, useState } from "preact/hooks";
import type { EventEnvelope } from "../../gen/tidemark/v1/envelope_pb.js";
import { eventStore } from "./api.js";
import { EventRow, eventColumns, Failure, Table } from "./common.jsx";

const KEEP = 200;

/** Follows Subscribe; `from` is a position to start after, or "" for new events only. */
export function Live() {
  const [from, setFrom] = useState("");
  const [start, setStart] = useState<{ after: string; round: number }>({ after: "", round: 0 });
  const [events, setEvents] = useState<EventEnvelope[]>([]);
  const [status, setStatus] = useState("connecting");
  const [error, setError] = useState<unknown>(undefined);
  const [paused, setPaused] = useState(false);
  useEffect(() => {
    if (paused) return;
    const abort = new AbortController();
    setError(undefined);
    setStatus("connecting");
    const request = start.after === "" ? { start: { case: "fromEnd" as const, value: {} } } : { start: { case: "afterPosition" as const, value: BigInt(start.after) } };
    (async () => {
      for await (const message of eventStore.subscribe(request, { signal: abort.signal })) {
        if (message.message.case === "caughtUp") setStatus(`following (caught up at position ${String(message.position)})`);
        else if (message.message.case === "event") {
          const event = message.message.value;
          setEvents((list) => [event, ...list].slice(0, KEEP));
        }
      }
      setStatus("ended");
    })().catch((e: unknown) => {
      if (abort.signal.aborted) return;
      setError(e);
      setStatus("stopped");
    });
    return () => abort.abort();
  }, [start, paused]);
  return (
    <>
      <h1>Live log</h1>
      <form
        class="inline"
        onSubmit={(e) => {
          e.preventDefault();
          if (from !== "" && !/^\d+$/.test(from)) return;
          setEvents([]);
          setStart({ after: from, round: start.round + 1 });
        }}
      >
        <input type="text" name="after-position" placeholder="after position (empty: new events only)" value={from} onInput={(e) => setFrom((e.target as HTMLInputElement).value)} />
        <button type="submit">Follow</button>
        <button type="button" onClick={() => setPaused(!paused)}>
          {paused ? "Resume" : "Pause"}
        </button>
        <span class="status" id="live-status">
          {paused ? "paused" : status}
        </span>
      </form>
      {error !== undefined && <Failure error={error} retry={() => setStart({ ...start, round: start.round + 1 })} />}
      <Table id="live" columns={eventColumns(true)}>
        {events.map((e) => (
          <EventRow key={e.eventId} event={e} withStream={true} />
        ))}
      </Table>
    </>
  );
}
