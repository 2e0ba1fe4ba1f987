/** A hook that runs one call for the current arguments and tracks its result, error and reload. */
import { useEffect, useState } from "preact/hooks";

/** The state of a call: the value once it answered, or the error it failed with. */
export interface CallState<T> {
  readonly value: T | undefined;
  readonly error: unknown;
  readonly loading: boolean;
  reload(): void;
}

/** Runs `call` whenever `deps` change (and on reload); a later run supersedes an earlier one. */
export function useCall<T>(call: (signal: AbortSignal) => Promise<T>, deps: readonly unknown[]): CallState<T> {
  const [state, setState] = useState<{ value: T | undefined; error: unknown; loading: boolean }>({ value: undefined, error: undefined, loading: true });
  const [round, setRound] = useState(0);
  useEffect(() => {
    const abort = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    call(abort.signal).then(
      (value) => abort.signal.aborted || setState({ value, error: undefined, loading: false }),
      (error: unknown) => abort.signal.aborted || setState({ value: undefined, error, loading: false }),
    );
    return () => abort.abort();
  }, [...deps, round]);
  return { ...state, reload: () => setRound((r) => r + 1) };
}
