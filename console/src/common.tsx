/** Pieces every page uses: failures (with the token form when a call needs one) and small tables. */
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import type { EventEnvelope } from "../../gen/tidemark/v1/envelope_pb.js";
import { currentToken, describeError, link, needsToken, setToken, when } from "./api.js";

/** Asks for a token and keeps it for this tab; `onSaved` re-runs what needed it. */
export function TokenForm(props: { readonly onSaved: () => void; readonly reason?: string }) {
  const [value, setValue] = useState(currentToken());
  return (
    <form
      class="inline"
      id="token-form"
      onSubmit={(e) => {
        e.preventDefault();
        setToken(value.trim());
        props.onSaved();
      }}
    >
      <span>{props.reason ?? "This server needs a token (tidemark token create)."}</span>
      <input type="password" name="token" placeholder="tm_…" autocomplete="off" value={value} onInput={(e) => setValue((e.target as HTMLInputElement).value)} />
      <button type="submit">Use token</button>
    </form>
  );
}

/** A failed call: the token form for UNAUTHENTICATED, else the status and message. */
export function Failure(props: { readonly error: unknown; readonly retry: () => void }) {
  if (needsToken(props.error)) return <TokenForm onSaved={props.retry} reason={`${describeError(props.error)} — enter a token:`} />;
  return <p class="error">{describeError(props.error)}</p>;
}

/** Loading (the first time), failed, or the children. */
export function Loaded(props: { readonly loading: boolean; readonly value: unknown; readonly error: unknown; readonly retry: () => void; readonly children: () => ComponentChildren }) {
  if (props.error !== undefined) return <Failure error={props.error} retry={props.retry} />;
  // A reload keeps the last answer on screen until the new one replaces it.
  if (props.value === undefined) return <p class="note">Loading…</p>;
  return <>{props.children()}</>;
}

/** A registry state's CSS class and name (lower case, as in docs/CONSUMERS.md). */
export function State(props: { readonly name: string }) {
  const name = props.name.toLowerCase();
  return <span class={`state-${name}`}>{name}</span>;
}

/** One column heading: its title, right-aligned for numbers. */
export type Column = string | { readonly title: string; readonly num: true };

/** A table with its headings; the children are its body rows. */
export function Table(props: { readonly id: string; readonly columns: readonly Column[]; readonly children: ComponentChildren }) {
  return (
    <table id={props.id}>
      <thead>
        <tr>
          {props.columns.map((c, i) => (typeof c === "string" ? <th key={i}>{c}</th> : <th key={i} class="num">{c.title}</th>))}
        </tr>
      </thead>
      <tbody>{props.children}</tbody>
    </table>
  );
}

/** A right-aligned number heading. */
export function num(title: string): Column {
  return { title, num: true };
}

/** Previous / Next buttons of a paged listing. */
export function Pager(props: { readonly canBack: boolean; readonly canForward: boolean; readonly back: () => void; readonly forward: () => void }) {
  return (
    <p>
      <button disabled={!props.canBack} onClick={props.back}>
        Previous
      </button>{" "}
      <button disabled={!props.canForward} onClick={props.forward}>
        Next
      </button>
    </p>
  );
}

/** Previous / Next of a listing paged by tokens: `pages` holds the token of each page up to the one shown ("" the first). */
export function TokenPager(props: { readonly pages: readonly string[]; readonly setPages: (pages: string[]) => void; readonly next: string }) {
  return <Pager canBack={props.pages.length > 1} back={() => props.setPages(props.pages.slice(0, -1))} canForward={props.next !== ""} forward={() => props.setPages([...props.pages, props.next])} />;
}

/** A database as the pages name it: the aggregates of none are "(no database)". */
export function databaseLabel(database: string): string {
  return database === "" ? "(no database)" : database;
}

/** A link to a stream's page, named by its type and id. */
export function StreamLink(props: { readonly aggregateType: string; readonly aggregateId: string }) {
  return (
    <a href={link("stream", props.aggregateType, props.aggregateId)}>
      {props.aggregateType} {props.aggregateId}
    </a>
  );
}

/** The headings of {@link EventRow}, with the stream's column first when `withStream`. */
export function eventColumns(withStream: boolean): Column[] {
  return [...(withStream ? ["stream"] : []), num("seq"), "event type", "event id", "occurred", num("position")];
}

/** One event in a list: (its stream,) seq, type, a link to its page, when it occurred, its position. */
export function EventRow(props: { readonly event: EventEnvelope; readonly withStream: boolean }) {
  const e = props.event;
  return (
    <tr>
      {props.withStream && (
        <td>
          <StreamLink aggregateType={e.aggregateType} aggregateId={e.aggregateId} />
        </td>
      )}
      <td class="num">{String(e.sequenceNumber)}</td>
      <td>{e.eventType}</td>
      <td>
        <a href={link("event", e.eventId)}>{e.eventId}</a>
      </td>
      <td>{when(e.occurredAt)}</td>
      <td class="num">{String(e.globalPosition)}</td>
    </tr>
  );
}
