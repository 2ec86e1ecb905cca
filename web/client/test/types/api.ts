// A TypeScript program against the public API: it must compile (tsc
// --noEmit, strict). It is type-checked, never run.
import { connect, Client, OrchestratorError, memoryStorage } from "../../orchestrator.js";
import type { ConnectOptions, RequestHandle, StateEvent, StorageLike } from "../../orchestrator.js";

const storage: StorageLike = memoryStorage();
const opts: ConnectOptions = {
  getToken: async () => "jwt",
  storage,
  offline: "queue",
  queueMax: 16,
  unreceived: "resend",
  retryDraining: true,
  backoffMin: 100,
  backoffMax: 10_000,
};
const c: Client = connect("wss://example.test/ws", opts);
const off: () => void = c.on("state", (s: StateEvent) => {
  const st: "connecting" | "open" | "resuming" | "closed" = s.state;
  if (s.state === "closed") console.log(s.reason, s.code);
  void st;
});
off();

async function ask(text: string, signal: AbortSignal): Promise<string> {
  const r: RequestHandle = c.request("chat", { text }, { signal, onChunk: (d, seq: number) => void [d, seq] });
  let out = "";
  for await (const chunk of r.chunks) out += (chunk as { text: string }).text;
  try {
    const res: unknown = await r.result;
    void res;
  } catch (e) {
    if (e instanceof OrchestratorError) {
      const code: string = e.code;
      const close: number | undefined = e.closeCode;
      const pos: number | undefined = e.pos;
      void [code, close, pos];
    }
  }
  return out;
}
void ask("hi", new AbortController().signal);
for (const h of c.restored) void h.result;
const session: string = c.session;
const pos: number = c.pos;
c.cancel("id");
c.reconnect();
c.reset();
c.close();
void [session, pos];
// @ts-expect-error: the offline policy is "queue" or "reject"
connect("ws://x/ws", { offline: "drop" });
