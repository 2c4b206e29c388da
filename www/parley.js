/* parley.js — Parley's browser client: one connection API over WebSocket or
 * long-polling, and a Server-Sent Events reader. No dependencies, no build
 * step; works under a strict Content-Security-Policy (no eval, no inline
 * code, never touches the DOM). docs/browser-client.md is the manual.
 *
 *   const c = Parley.connect('/ws/chat/techpro', { transport: 'auto', token, base });
 *   c.onopen = () => c.send({ type: 'ping', data: {} });
 *   c.onmessage = (frame) => ...;        // a parsed JSON frame of the protocol
 *   c.onclose = ({ code, reason }) => ...;
 *   c.onerror = (err) => ...;            // { message, status?, transport }
 *   c.transport                          // 'websocket' | 'longpoll' (null before the first try)
 *
 * Transports
 *   websocket  ws(s)://<base><path>, the token as ?token= (browsers cannot
 *              set headers on a WebSocket).
 *   longpoll   Parley's generic long-poll transport (DESIGN §3):
 *                POST /api/poll/open {"path"} → {sid, cursor}
 *                GET  /api/poll/{sid}?cursor=N&wait=W → {messages, cursor, closed}
 *                POST /api/poll/{sid}  one frame, or several as NDJSON → 202
 *                DELETE /api/poll/{sid} → 204; 410 once the session is gone
 *              It carries exactly the frames of the WebSocket endpoint.
 *   auto       WebSocket first; when the upgrade fails (no bridge behind the
 *              web server, a proxy that refuses it, no answer within
 *              wsTimeout) it continues over long-poll, and the application
 *              sees the same frames. Frames sent before the open are queued.
 *
 * Long-poll guarantees: one GET at a time; the cursor moves only after a
 * response was read whole, so a GET lost to a network error is repeated from
 * the same cursor — no frame lost, none delivered twice. Sends are POSTed
 * one request at a time, in order (what queued meanwhile goes as one NDJSON
 * body); a POST that fails on the network or with 409/5xx is retried
 * (at-least-once: a request that reached the server before the network
 * failed may be applied twice). Retries back off from 250 ms to 5 s and
 * give up after retryFor ms (default 60 s, the server's idle expiry).
 */
(function (global) {
  'use strict';

  var DEFAULTS = {
    transport: 'auto',
    token: null,
    base: null,        // 'https://host[:port][/prefix]'; default: this page's origin
    wait: 25,          // seconds a long-poll GET may wait on the server (max 30)
    wsTimeout: 5000,   // ms the WebSocket upgrade may take before 'auto' falls back
    retryFor: 60000,   // ms of failed retries before a long-poll connection gives up
    rememberFallback: true  // 'auto': after one failed upgrade, go to long-poll directly
  };

  // Close codes this client reports itself (the server's own pass through).
  var CLOSE = {
    NORMAL: 1000,        // closed by the client, or the server ended the session
    ABNORMAL: 1006,      // network gone and retries exhausted; upgrade failed
    SERVER_ERROR: 1011,  // the server answered with an unexpected 5xx
    GONE: 4410           // long-poll session unknown or expired (HTTP 410)
  };

  // Bases where a WebSocket upgrade failed in this page ('auto' remembers).
  var wsFailedAt = Object.create(null);

  function assign(dst) {
    for (var i = 1; i < arguments.length; i++) {
      var src = arguments[i];
      if (!src) continue;
      for (var k in src) if (Object.prototype.hasOwnProperty.call(src, k) && src[k] !== undefined) dst[k] = src[k];
    }
    return dst;
  }

  function httpBase(base) {
    var b = base || (global.location ? global.location.origin : '');
    return String(b).replace(/\/+$/, '');
  }

  function wsBase(base) {
    return httpBase(base).replace(/^http(s?):/i, 'ws$1:');
  }

  // The value of query parameter name in path ("/ws/x?token=abc"), or null.
  function queryParam(path, name) {
    var q = path.indexOf('?');
    if (q < 0) return null;
    var parts = path.slice(q + 1).split('#')[0].split('&');
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf('=');
      var k = eq < 0 ? parts[i] : parts[i].slice(0, eq);
      if (decodeURIComponent(k) === name) {
        try { return decodeURIComponent((eq < 0 ? '' : parts[i].slice(eq + 1)).replace(/\+/g, ' ')); }
        catch (e) { return null; }
      }
    }
    return null;
  }

  function withQuery(path, name, value) {
    return path + (path.indexOf('?') < 0 ? '?' : '&') + encodeURIComponent(name) + '=' + encodeURIComponent(value);
  }

  // Calls an application callback; an exception in it is reported (console)
  // but never breaks the transport's own loop.
  function callApp(fn, self, arg) {
    if (typeof fn !== 'function') return;
    try { fn.call(self, arg); }
    catch (e) {
      if (typeof global.reportError === 'function') global.reportError(e);
      else setTimeout(function () { throw e; }, 0);
    }
  }

  function sleep(ms) { return new Promise(function (res) { setTimeout(res, ms); }); }

  // Backoff: 250 ms doubling to 5 s, with ±20 % jitter.
  function backoff(attempt) {
    var ms = Math.min(5000, 250 * Math.pow(2, Math.min(attempt, 5)));
    return Math.round(ms * (0.8 + 0.4 * Math.random()));
  }

  // fetch + JSON body, bounded by timeoutMs and an outer AbortSignal.
  // Resolves {status, json, text}; rejects on network errors and aborts.
  function fetchJson(url, init, timeoutMs, outer) {
    var ctl = new AbortController();
    var timer = timeoutMs ? setTimeout(function () { ctl.abort(); }, timeoutMs) : null;
    var onOuter = function () { ctl.abort(); };
    if (outer) {
      if (outer.aborted) ctl.abort();
      else outer.addEventListener('abort', onOuter);
    }
    init = assign({}, init, { signal: ctl.signal, cache: 'no-store', credentials: 'same-origin' });
    return fetch(url, init).then(function (res) {
      return res.text().then(function (text) {
        var json = null;
        try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
        return { status: res.status, json: json, text: text };
      });
    }).finally(function () {
      if (timer) clearTimeout(timer);
      if (outer) outer.removeEventListener('abort', onOuter);
    });
  }

  function serverMessage(r) {
    if (r && r.json && typeof r.json.message === 'string') return r.json.message;
    return r ? 'HTTP ' + r.status : 'network error';
  }

  // One frame as a single line of JSON (NDJSON needs one frame per line).
  function frameText(obj) {
    if (typeof obj !== 'string') return JSON.stringify(obj);
    if (obj.indexOf('\n') < 0 && obj.indexOf('\r') < 0) return obj;
    try { return JSON.stringify(JSON.parse(obj)); } catch (e) { return obj; }
  }

  /* ------------------------------------------------------------------ */
  /* Connection                                                          */
  /* ------------------------------------------------------------------ */

  function Connection(path, opts) {
    if (typeof path !== 'string' || path.charAt(0) !== '/')
      throw new TypeError('Parley.connect: path must start with "/" (a WebSocket path such as /ws/chat/techpro)');
    this.path = path;
    this.options = assign({}, DEFAULTS, opts);
    var t = this.options.transport;
    if (t !== 'auto' && t !== 'websocket' && t !== 'longpoll')
      throw new TypeError("Parley.connect: transport must be 'auto', 'websocket' or 'longpoll'");
    this.token = this.options.token || queryParam(path, 'token');
    this.transport = null;         // 'websocket' | 'longpoll' once tried
    this.readyState = 'connecting'; // 'connecting' | 'open' | 'closing' (WebSocket) | 'closed'
    this.sid = null;               // long-poll session id
    this.cursor = 0;               // long-poll cursor (frames received)
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this._pending = [];            // frames sent before the open
    this._outbox = [];             // long-poll: frames waiting for a POST
    this._posting = false;
    this._ws = null;
    this._abort = new AbortController();  // aborts every long-poll request
    this._lastError = null;        // message of the last {"type":"error"} frame
    this._finished = false;
    var self = this;
    var base = httpBase(this.options.base);
    var skipWs = t === 'auto' && this.options.rememberFallback && wsFailedAt[base];
    // Start after the caller has set its handlers.
    setTimeout(function () {
      if (self._finished) return;
      if (t === 'longpoll' || skipWs) self._startPoll();
      else self._startWs(t === 'auto');
    }, 0);
  }

  Connection.prototype.send = function (obj) {
    if (this.readyState === 'closed' || this.readyState === 'closing') return false;
    var text = frameText(obj);
    if (this.readyState === 'connecting') { this._pending.push(text); return true; }
    if (this.transport === 'websocket') {
      this._ws.send(text);
    } else {
      this._outbox.push(text);
      this._pumpPosts();
    }
    return true;
  };

  Connection.prototype.close = function () {
    if (this._finished) return;
    if (this._ws && this.readyState === 'open') {
      this._closing = true;
      this.readyState = 'closing';
      try { this._ws.close(1000, 'client closed'); } catch (e) { /* already closing */ }
      // The WebSocket's close event ends it; do not wait forever for one.
      var self = this;
      setTimeout(function () { self._finish({ code: CLOSE.NORMAL, reason: 'closed by client', wasClean: true }); }, 3000);
      return;
    }
    if (this._ws) { this._detachWs(); }
    if (this.sid) {
      // Tell the server (best effort; keepalive survives a page unload).
      fetch(this._url('/api/poll/' + encodeURIComponent(this.sid)),
            { method: 'DELETE', headers: this._headers(), keepalive: true, cache: 'no-store' })
        .catch(function () { /* the session expires by itself */ });
    }
    this._finish({ code: CLOSE.NORMAL, reason: 'closed by client', wasClean: true });
  };

  Connection.prototype._url = function (p) { return httpBase(this.options.base) + p; };

  Connection.prototype._headers = function (extra) {
    var h = assign({}, extra);
    if (this.token) h.Authorization = 'Bearer ' + this.token;
    return h;
  };

  Connection.prototype._error = function (message, status) {
    var e = { message: message, transport: this.transport };
    if (status) e.status = status;
    callApp(this.onerror, this, e);
  };

  Connection.prototype._finish = function (ev) {
    if (this._finished) return;
    this._finished = true;
    this.readyState = 'closed';
    this._abort.abort();
    if (this._ws) this._detachWs();
    var e = { code: ev.code, reason: ev.reason || '', wasClean: !!ev.wasClean, transport: this.transport };
    callApp(this.onclose, this, e);
  };

  Connection.prototype._opened = function (transport) {
    this.transport = transport;
    this.readyState = 'open';
    callApp(this.onopen, this, { transport: transport });
    var pending = this._pending;
    this._pending = [];
    for (var i = 0; i < pending.length && this.readyState === 'open'; i++) this.send(pending[i]);
  };

  Connection.prototype._deliver = function (frame) {
    if (frame && frame.type === 'error') {
      var m = frame.message || (frame.data && frame.data.message);
      if (typeof m === 'string') this._lastError = m;
    }
    callApp(this.onmessage, this, frame);
  };

  /* ---- WebSocket ---- */

  Connection.prototype._detachWs = function () {
    var ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try { if (ws.readyState < 2) ws.close(1000); } catch (e) { /* ignore */ }
  };

  Connection.prototype._startWs = function (fallback) {
    var self = this;
    var url = wsBase(this.options.base) + this.path;
    if (this.options.token && queryParam(this.path, 'token') === null)
      url = withQuery(url, 'token', this.options.token);
    this.transport = 'websocket';
    var ws, opened = false, failed = false, timer = null;

    function upgradeFailed(why) {
      if (failed || self._finished) return;
      failed = true;
      clearTimeout(timer);
      if (self._ws === ws) self._detachWs();
      if (fallback) {
        if (self.options.rememberFallback) wsFailedAt[httpBase(self.options.base)] = true;
        self._startPoll();
      } else {
        self._error('WebSocket connection failed: ' + why);
        self._finish({ code: CLOSE.ABNORMAL, reason: 'WebSocket connection failed: ' + why });
      }
    }

    try { ws = new WebSocket(url); }
    catch (e) { upgradeFailed(e && e.message ? e.message : 'refused'); return; }
    this._ws = ws;
    timer = setTimeout(function () { if (!opened) upgradeFailed('no answer within ' + self.options.wsTimeout + ' ms'); },
                       this.options.wsTimeout);
    ws.onopen = function () {
      opened = true;
      clearTimeout(timer);
      self._opened('websocket');
    };
    ws.onmessage = function (ev) {
      if (typeof ev.data !== 'string') return;   // Parley's protocols are text frames
      var frame;
      try { frame = JSON.parse(ev.data); }
      catch (e) { self._error('a frame that is not JSON: ' + ev.data.slice(0, 80)); return; }
      self._deliver(frame);
    };
    ws.onerror = function () {
      if (!opened) { upgradeFailed('the upgrade was refused or the network failed'); return; }
      self._error('WebSocket error');
    };
    ws.onclose = function (ev) {
      if (!opened) { upgradeFailed('closed before opening (code ' + ev.code + ')'); return; }
      self._finish({ code: ev.code, reason: ev.reason || (self._closing ? 'closed by client' : self._lastError || ''),
                     wasClean: ev.wasClean });
    };
  };

  /* ---- long-poll ---- */

  // Runs request() until it returns a result other than 'retry', backing off
  // between attempts; gives up (returns null) after retryFor ms.
  Connection.prototype._retrying = function (request) {
    var self = this, attempt = 0, started = Date.now();
    function once() {
      if (self._finished) return Promise.resolve(null);
      return request().then(function (r) {
        if (r !== 'retry') return r;
        return again();
      }, function (err) {
        if (self._finished) return null;
        return again();
      });
    }
    function again() {
      if (Date.now() - started > self.options.retryFor) {
        self._error('the server cannot be reached (gave up after ' + Math.round(self.options.retryFor / 1000) + ' s)');
        self._finish({ code: CLOSE.ABNORMAL, reason: 'network: the server cannot be reached' });
        return null;
      }
      return sleep(backoff(attempt++)).then(once);
    }
    return once();
  };

  function retryable(status) {
    return status === 409 || status === 429 || status === 502 || status === 503 || status === 504 || status === 0;
  }

  // A long-poll request answered with an error that ends the connection.
  Connection.prototype._failHttp = function (r, what) {
    var msg = what + ': ' + serverMessage(r);
    this._error(msg, r.status);
    var code = r.status === 410 ? CLOSE.GONE : r.status >= 400 && r.status < 500 ? 4000 + r.status : CLOSE.SERVER_ERROR;
    this._finish({ code: code, reason: serverMessage(r) });
  };

  Connection.prototype._startPoll = function () {
    var self = this;
    this.transport = 'longpoll';
    var signal = this._abort.signal;
    this._retrying(function () {
      return fetchJson(self._url('/api/poll/open'), {
        method: 'POST',
        headers: self._headers({ 'Content-Type': 'application/json' }),
        body: JSON.stringify({ path: self.path })
      }, 20000, signal).then(function (r) {
        if (r.status === 200 && r.json && typeof r.json.sid === 'string') return r;
        if (retryable(r.status) || r.status >= 500 && r.status !== 501) return 'retry';
        self._failHttp(r, 'long-poll open');
        return null;
      });
    }).then(function (r) {
      if (!r || self._finished) return;
      self.sid = r.json.sid;
      self.cursor = r.json.cursor || 0;
      self._opened('longpoll');
      self._pollLoop();
    });
  };

  Connection.prototype._pollLoop = function () {
    var self = this, signal = this._abort.signal;
    var wait = Math.max(0, Math.min(30, this.options.wait | 0));
    function next() {
      if (self._finished) return;
      self._retrying(function () {
        var url = self._url('/api/poll/' + encodeURIComponent(self.sid) + '?cursor=' + self.cursor + '&wait=' + wait);
        return fetchJson(url, { headers: self._headers() }, (wait + 15) * 1000, signal).then(function (r) {
          if (r.status === 200 && r.json && Array.isArray(r.json.messages)) return r;
          if (retryable(r.status) || r.status >= 500 && r.status !== 501) return 'retry';
          self._failHttp(r, 'long-poll');
          return null;
        });
      }).then(function (r) {
        if (!r || self._finished) return;
        var j = r.json;
        // Frames after our cursor, in order; the cursor then moves past them.
        for (var i = 0; i < j.messages.length && !self._finished; i++) self._deliver(j.messages[i]);
        if (typeof j.cursor === 'number' && j.cursor > self.cursor) self.cursor = j.cursor;
        if (self._finished) return;
        if (j.closed) {
          var code = j.close_code || j.code || CLOSE.NORMAL;
          var reason = j.close_reason || j.reason || self._lastError || 'the server closed the session';
          fetch(self._url('/api/poll/' + encodeURIComponent(self.sid)),
                { method: 'DELETE', headers: self._headers(), cache: 'no-store' }).catch(function () {});
          self._finish({ code: code, reason: reason, wasClean: true });
          return;
        }
        next();
      });
    }
    next();
  };

  Connection.prototype._pumpPosts = function () {
    if (this._posting || !this._outbox.length || this._finished) return;
    var self = this, signal = this._abort.signal;
    this._posting = true;
    var batch = this._outbox.splice(0, this._outbox.length);
    var body = batch.join('\n');
    var url = this._url('/api/poll/' + encodeURIComponent(this.sid));
    var type = batch.length > 1 ? 'application/x-ndjson' : 'application/json';
    this._retrying(function () {
      return fetchJson(url, { method: 'POST', headers: self._headers({ 'Content-Type': type }), body: body },
                       20000, signal).then(function (r) {
        if (r.status === 202 || r.status === 200) return r;
        if (retryable(r.status) || r.status >= 500 && r.status !== 501) return 'retry';
        if (r.status === 410 || r.status === 401 || r.status === 403) { self._failHttp(r, 'long-poll send'); return null; }
        self._error('the server refused a frame: ' + serverMessage(r), r.status);   // 400: this batch only
        return r;
      });
    }).then(function () {
      self._posting = false;
      self._pumpPosts();
    });
  };

  /* ------------------------------------------------------------------ */
  /* Server-Sent Events                                                  */
  /* ------------------------------------------------------------------ */

  /* Parley.sse(url, opts) reads a text/event-stream with fetch, so it can send
   * a token header and a POST body (seed 004), and resumes a GET stream with
   * Last-Event-ID after a cut (the ticket stream, seed 000).
   *   opts.onevent(data, {id, event})  data: the parsed JSON (or the raw text)
   *   opts.onopen({status}), opts.onerror({message, status?}), opts.onclose({reason})
   *   opts.method ('GET'), opts.body (object → JSON), opts.token, opts.headers,
   *   opts.base, opts.lastEventId (start after this id),
   *   opts.reconnect (default: true for GET, false otherwise), opts.retry (ms, 2000;
   *   the server's "retry:" field overrides), opts.retryFor (60000)
   * A GET stream that ends is reopened with Last-Event-ID, as EventSource does,
   * until the server answers 204 or close() is called. Returns {close(), lastEventId}.
   */
  function sse(url, opts) {
    opts = assign({ method: 'GET', retry: 2000, retryFor: 60000 }, opts);
    var method = String(opts.method).toUpperCase();
    var reconnect = opts.reconnect === undefined ? method === 'GET' : !!opts.reconnect;
    var full = /^[a-z][a-z0-9+.-]*:/i.test(url) ? url : httpBase(opts.base) + url;
    var ctl = new AbortController();
    var handle = { lastEventId: opts.lastEventId != null ? String(opts.lastEventId) : '', readyState: 'connecting' };
    var done = false, retryMs = opts.retry, failingSince = 0;

    function finish(reason) {
      if (done) return;
      done = true;
      handle.readyState = 'closed';
      ctl.abort();
      callApp(opts.onclose, handle, { reason: reason });
    }
    function fail(message, status) {
      var e = { message: message };
      if (status) e.status = status;
      callApp(opts.onerror, handle, e);
    }
    handle.close = function () { finish('closed by client'); };

    // Parses the stream; dispatches events as the spec says (data lines
    // joined by "\n", "id" remembered, "retry" obeyed, comments ignored).
    function readStream(body) {
      var reader = body.getReader();
      var decoder = new TextDecoder();
      var buf = '', data = [], hasData = false, evName = '', id = null;
      function line(l) {
        if (l === '') {
          if (id !== null) handle.lastEventId = id;
          if (hasData) {
            var text = data.join('\n'), parsed = text;
            try { parsed = JSON.parse(text); } catch (e) { /* not JSON: hand over the text */ }
            callApp(opts.onevent, handle, parsed, { id: handle.lastEventId, event: evName || 'message' });
          }
          data = []; hasData = false; evName = ''; id = null;
          return;
        }
        if (l.charAt(0) === ':') return;
        var c = l.indexOf(':');
        var field = c < 0 ? l : l.slice(0, c);
        var value = c < 0 ? '' : l.slice(c + 1);
        if (value.charAt(0) === ' ') value = value.slice(1);
        if (field === 'data') { data.push(value); hasData = true; }
        else if (field === 'event') evName = value;
        else if (field === 'id') { if (value.indexOf('\0') < 0) id = value; }
        else if (field === 'retry') { if (/^\d+$/.test(value)) retryMs = parseInt(value, 10); }
      }
      function drain(final) {
        for (;;) {
          var m = /\r\n|\r|\n/.exec(buf);
          if (!m) break;
          // A lone "\r" at the end may be the first half of "\r\n".
          if (m[0] === '\r' && m.index === buf.length - 1 && !final) break;
          var l = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          line(l);
          if (done) return;
        }
      }
      function pump() {
        return reader.read().then(function (r) {
          if (done) { reader.cancel().catch(function () {}); return; }
          if (r.done) { buf += decoder.decode(); drain(true); return; }   // an unfinished event is dropped
          buf += decoder.decode(r.value, { stream: true });
          drain(false);
          return pump();
        });
      }
      return pump();
    }

    // callApp with two arguments (onevent gets data and meta).
    function callApp(fn, self, a, b) {
      if (typeof fn !== 'function') return;
      try { fn.call(self, a, b); }
      catch (e) {
        if (typeof global.reportError === 'function') global.reportError(e);
        else setTimeout(function () { throw e; }, 0);
      }
    }

    function attempt() {
      if (done) return;
      var headers = assign({ Accept: 'text/event-stream' }, opts.headers);
      if (opts.token) headers.Authorization = 'Bearer ' + opts.token;
      if (handle.lastEventId) headers['Last-Event-ID'] = handle.lastEventId;
      var body;
      if (opts.body !== undefined && method !== 'GET') {
        body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
        if (!headers['Content-Type']) headers['Content-Type'] = 'application/json';
      }
      fetch(full, { method: method, headers: headers, body: body, signal: ctl.signal, cache: 'no-store',
                    credentials: 'same-origin' }).then(function (res) {
        if (done) return;
        if (res.status === 204) { finish('the stream is over (204)'); return; }
        var ct = res.headers.get('Content-Type') || '';
        if (res.status !== 200 || ct.indexOf('text/event-stream') < 0) {
          return res.text().then(function (text) {
            var msg = 'HTTP ' + res.status;
            try { var j = JSON.parse(text); if (j && typeof j.message === 'string') msg = j.message; } catch (e) { /* keep */ }
            fail(msg, res.status);
            if (reconnect && (res.status >= 500 || res.status === 429)) return retryLater();
            finish(msg);
          });
        }
        failingSince = 0;
        handle.readyState = 'open';
        callApp(opts.onopen, handle, { status: res.status });
        return readStream(res.body).then(function () {
          if (done) return;
          if (!reconnect) { finish('the stream ended'); return; }
          handle.readyState = 'connecting';
          setTimeout(attempt, retryMs);
        }, function () { return retryLater(); });
      }, function () { return retryLater(); });
    }

    function retryLater() {
      if (done) return;
      if (!reconnect) { fail('network error'); finish('network error'); return; }
      if (!failingSince) failingSince = Date.now();
      if (Date.now() - failingSince > opts.retryFor) { fail('the server cannot be reached'); finish('network error'); return; }
      handle.readyState = 'connecting';
      setTimeout(attempt, retryMs);
    }

    setTimeout(attempt, 0);
    return handle;
  }

  var Parley = {
    version: '1.0',
    connect: function (path, opts) { return new Connection(path, opts); },
    sse: sse,
    CLOSE: CLOSE,
    // Forgets which bases failed a WebSocket upgrade ('auto' tries again).
    resetFallback: function () { wsFailedAt = Object.create(null); },
    Connection: Connection
  };
  global.Parley = Parley;
})(typeof window !== 'undefined' ? window : globalThis);
