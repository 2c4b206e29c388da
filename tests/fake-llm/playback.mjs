// playback.mjs — plays one answer on one HTTP response, on the event loop.
//
// Owns the timing and the failure modes common to both wire formats: the
// first-token delay, the gap between tokens, and drop/hang/error/malformed
// after N tokens. The wire format itself (what a token, the final message
// or an error looks like) is given by the caller as callbacks.

import { failureAt } from './knobs.mjs';

export class Playback {
  // res: the http.ServerResponse; timers: a Set the server clears at exit.
  constructor(res, timers) {
    this.res = res;
    this.timers = timers;
    this.gone = false;       // the client went away (or we dropped it)
    this.pending = null;     // { timer, resolve } of the current wait
    res.on('close', () => {
      if (!res.writableFinished) this.gone = true;
      this.#wake(false);
    });
  }

  #wake(value) {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    p.clear(p.timer);
    this.timers.delete(p.timer);
    p.resolve(value);
  }

  // Resolves true after ms, or false at once/early when the client is gone.
  wait(ms) {
    if (this.gone || this.res.destroyed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = () => {
        this.timers.delete(timer);
        this.pending = null;
        resolve(!this.gone);
      };
      const timer = ms > 0 ? setTimeout(done, ms) : setImmediate(done);
      const clear = ms > 0 ? clearTimeout : clearImmediate;
      this.timers.add(timer);
      this.pending = { timer, clear, resolve };
    });
  }

  // Destroys the socket abruptly (no terminating chunk, no final message)
  // once the bytes already written have left, so the client sees exactly the
  // tokens sent so far and then a cut connection.
  async drop() {
    const sock = this.res.socket;
    for (let i = 0; sock && !sock.destroyed && sock.writableLength > 0 && i < 200; i++) {
      if (!(await this.wait(5))) break;
    }
    this.gone = true;
    if (sock && !sock.destroyed) sock.destroy();
  }
}

// Plays n tokens under knobs. Step i (0..n) happens first_ms (i = 0) or
// token_ms (i > 0) after the previous one; at each step the failure knobs
// are checked first (i tokens already sent), then step n sends the final
// message and steps below n send token i. Handlers: token(i), final(n),
// error(i), malformed(i); each writes on the response and final/error/
// malformed end it. Returns 'done', 'error', 'malformed', 'drop', 'hang'
// or 'gone' (the client left first). After 'hang' the response is left
// open until the client leaves or the server stops.
export async function play(pb, knobs, n, h) {
  for (let i = 0; i <= n; i++) {
    if (!(await pb.wait(i === 0 ? knobs.first_ms : knobs.token_ms))) return 'gone';
    const f = failureAt(knobs, i);
    if (f === 'drop') { await pb.drop(); return f; }
    if (f === 'hang') return f;
    if (f === 'error') { h.error(i); return f; }
    if (f === 'malformed') { h.malformed(i); return f; }
    if (i === n) { h.final(n); return 'done'; }
    h.token(i);
  }
  return 'done';
}
