/**
 * The Tidemark web console (docs/CONSOLE.md): a hash-routed Preact page over the public API through
 * gRPC-Web. Every value it shows is rendered as text by Preact (event data is user input): nothing
 * is ever inserted as HTML.
 */
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { currentToken, setToken } from "./api.js";
import { AggregateTypes, Databases, Event, Stream, Streams } from "./browse.jsx";
import { TokenForm } from "./common.jsx";
import { Live } from "./live.jsx";
import { Processing } from "./processing.jsx";

function route(): string[] {
  return location.hash.replace(/^#\/?/, "").split("/").filter((p) => p !== "").map((p) => decodeURIComponent(p));
}

function Page(props: { readonly path: readonly string[] }) {
  const [a, b, c] = props.path;
  if (a === "db" && b !== undefined && c !== undefined) return <Streams database={b} aggregateType={c} />;
  if (a === "db" && b !== undefined) return <AggregateTypes database={b} />;
  if (a === "db") return <AggregateTypes database="" />;
  if (a === "stream" && b !== undefined && c !== undefined) return <Stream aggregateType={b} aggregateId={props.path.slice(2).join("/")} />;
  if (a === "event" && b !== undefined) return <Event eventId={props.path.slice(1).join("/")} />;
  if (a === "live") return <Live />;
  if (a === "processing") return <Processing />;
  if (a === "token") return <TokenForm onSaved={() => (location.hash = "#/")} reason="The token this tab sends (empty: none):" />;
  return <Databases />;
}

function App() {
  const [path, setPath] = useState(route());
  // A new token re-renders every page from scratch, so each call runs again with it.
  const [session, setSession] = useState(0);
  useEffect(() => {
    const onChange = () => setPath(route());
    addEventListener("hashchange", onChange);
    return () => removeEventListener("hashchange", onChange);
  }, []);
  const section = path[0] ?? "";
  const nav = (href: string, name: string, active: boolean) => (
    <a href={href} class={active ? "active" : ""}>
      {name}
    </a>
  );
  return (
    <>
      <header>
        <strong>Tidemark</strong>
        <nav>
          {nav("#/", "Browse", section === "" || section === "db" || section === "stream" || section === "event")}
          {nav("#/live", "Live log", section === "live")}
          {nav("#/processing", "Processing", section === "processing")}
          {nav("#/token", "Token", section === "token")}
        </nav>
        <span class="who">
          {currentToken() === "" ? "no token" : `token ${currentToken().slice(0, 19)}…`}
          {currentToken() !== "" && (
            <button
              onClick={() => {
                setToken("");
                setSession(session + 1);
              }}
            >
              Forget
            </button>
          )}
        </span>
      </header>
      <main key={`${session}:${path.join("/")}`} onSubmitCapture={(e) => (e.target as HTMLElement).id === "token-form" && setSession(session + 1)}>
        <Page path={path} />
      </main>
    </>
  );
}

const root = document.getElementById("app")!;
// The page's "Loading…" placeholder is not Preact's to diff: clear it.
root.textContent = "";
render(<App />, root);
