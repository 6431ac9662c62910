// The Workers entry module of atp-worker: instantiates the Rust relay (wasm-bindgen `--target web`
// output next to this file) and hands it the `fetch` and `scheduled` events, and exports the
// domain's Durable Object class (`DomainStore`, atp-worker/src/cf.rs).
//
// A Rust panic aborts (wasm32 has no unwinding) and leaves the instance's memory in an unknown
// state; the glue is built with `--experimental-reset-state-function`, so such a trap resets the
// instance before the next event instead of poisoning the isolate. The request that trapped gets a
// JSON 503 with atp's "temporary failure, retry later" code. A reset invalidates every Rust object
// of the instance, so the Durable Object class below re-creates its Rust half after one.
import wasmModule from "./atp_worker_bg.wasm";
import {
  initSync,
  fetch as rsFetch,
  scheduled as rsScheduled,
  DomainStore as RsDomainStore,
  __wbg_reset_state,
} from "./atp_worker.js";

initSync({ module: wasmModule });

/** How many times the instance was reset: Rust objects made before the last reset are gone. */
let generation = 0;

async function guarded(run, onTrap) {
  try {
    return await run();
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) {
      console.error("atp-worker: wasm trap; resetting the instance:", e);
      __wbg_reset_state();
      generation++;
      return onTrap(e);
    }
    throw e;
  }
}

function trapResponse() {
  const body = { error: "Internal error, retry later", error_code: "451 4.3.0" };
  return new Response(JSON.stringify(body), { status: 503, headers: { "content-type": "application/json" } });
}

/** The domain's Durable Object (SQLite storage): its state and queries are in Rust. */
export class DomainStore {
  constructor(state, env) {
    this.state = state;
    this.env = env;
    this.generation = -1;
  }

  rust() {
    if (this.generation !== generation) {
      this.inner = new RsDomainStore(this.state, this.env);
      this.generation = generation;
    }
    return this.inner;
  }

  fetch(request) {
    return guarded(() => this.rust().fetch(request), trapResponse);
  }
}

export default {
  fetch: (request, env, ctx) => guarded(() => rsFetch(request, env, ctx), trapResponse),
  scheduled: (event, env, ctx) => guarded(() => rsScheduled(event, env, ctx), () => undefined),
};
