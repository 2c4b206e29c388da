/* neuralbridge.js — the NeuralBridge chat page (seed 003, Phoenix Channels).
 *
 * Uses the official phoenix client (vendor/phoenix.js: the npm package's
 * browser build, the global `Phoenix`, copied there by `make run` and the
 * tests, never committed). One Socket on /socket (the client adds
 * /websocket or /longpoll), one channel proxy:{session}:
 *   - "Force LongPoll" on: `transport: Phoenix.LongPoll`; off: WebSocket
 *     with `longPollFallbackMs` (?fallback=MS, default 3000; 0: none), so a
 *     WebSocket that fails or does not answer its first heartbeat in time
 *     ends up on LongPoll. (phoenix.js remembers a fallback for the tab in
 *     sessionStorage, as it does in any application.)
 *   - the JWT of the token field travels as the connect param auth_token;
 *   - pushes: query or stream_query {query} (the Stream toggle),
 *     get_history, ping; events: response (answer + metadata line),
 *     stream_start / stream_token / stream_complete / stream_error,
 *     history, pong, error.
 * The status line names the transport in use (body[data-transport]:
 * websocket or longpoll). Server strings only ever enter the page as text
 * (demo.js el/append, textContent): the CSP requires Trusted Types.
 * URL: ?session=ID joins at once, ?transport=longpoll forces LongPoll,
 * ?stream=1 starts with streaming on, ?token= as on every page.
 */
(function () {
  'use strict';
  var D = window.Demo, $ = D.$, el = D.el;
  var P = window.Phoenix;
  var SESSION_RE = /^[A-Za-z0-9._-]{1,63}$/;
  var fb = parseInt(D.params.get('fallback') || '', 10);
  var FALLBACK_MS = isFinite(fb) && fb >= 0 ? fb : 3000;

  var socket = null;     // the current Phoenix.Socket
  var channel = null;    // its proxy:{session} channel
  var sessionId = null;
  var joined = false;
  var liveTokens = 0;       // stream_token frames received (settleAfterRejoin)
  var streamMode = false;
  var pending = false;   // a query is waiting for its answer
  var live = null;       // the assistant bubble being streamed

  function messages() { return $('#messages'); }
  function scrollDown() { var m = messages(); m.scrollTop = m.scrollHeight; }
  function clearEmpty() { var e = messages().querySelector('.empty'); if (e) e.remove(); }

  function transportOf(sock) { return sock && sock.transport === P.LongPoll ? 'longpoll' : 'websocket'; }
  function forced() { return $('#force-longpoll').checked; }

  function updateControls() {
    $('#send').disabled = !joined || pending;
    $('#history').disabled = !joined;
    $('#ping').disabled = !joined;
    $('#disconnect').disabled = !socket;
  }

  function showError(text) {
    var e = $('#error');
    D.setText(e, text || '');
    e.hidden = !text;
  }

  function bubble(role, text, data) {
    clearEmpty();
    var b = el('div', { className: 'msg ' + role, dataset: data || {} },
               el('div', { className: 'who' }, role === 'user' ? 'You' : role === 'assistant' ? 'NeuralBridge' : role),
               el('div', { className: 'text' }, text == null ? '' : String(text)));
    messages().appendChild(b);
    scrollDown();
    return b;
  }

  function notice(text, kind) {
    clearEmpty();
    messages().appendChild(el('p', { className: 'notice ' + (kind || '') }, text));
    scrollDown();
  }

  // "source llm · confidence 89.0% · 1,250 ms · RAG context 3 · model gpt-4"
  function metaLine(m) {
    if (!m || typeof m !== 'object') return null;
    var parts = [];
    parts.push('source ' + String(m.source));
    parts.push('confidence ' + (typeof m.confidence_score === 'number'
      ? D.formatNumber(m.confidence_score * 100, 1) + '%' : '—'));
    if (m.processing_time_ms != null) parts.push(D.formatNumber(m.processing_time_ms, 0) + ' ms');
    if (m.rag_context_used != null) parts.push('RAG context ' + String(m.rag_context_used));
    if (m.model_used != null) parts.push('model ' + String(m.model_used));
    return el('div', { className: 'meta' }, parts.join(' · '));
  }

  function stamp(ts) {
    if (typeof ts !== 'string') return null;
    var d = new Date(ts);
    return el('div', { className: 'meta' }, isNaN(d.getTime()) ? ts : d.toLocaleString());
  }

  function finishLive(state) {
    if (!live) return;
    live.querySelector('.text').normalize();
    live.classList.remove('streaming');
    live.dataset.state = state;
    live = null;
  }

  function setPending(on) { pending = on; updateControls(); }

  function status(state, text) { D.status(state, text, socket ? transportOf(socket) : null); }

  function joinedText() {
    var t = 'Joined session ' + sessionId;
    if (!forced() && socket && transportOf(socket) === 'longpoll') t += ' (the WebSocket did not answer: fell back to LongPoll)';
    return t;
  }

  // Rejoined (after a lost connection, e.g. the fallback to LongPoll) while
  // an answer was streaming: the server replays an answer still running
  // (stream_start, every token), but one that ended meanwhile is not
  // replayed (a join cannot tell a rejoin from a new page). So when no
  // token comes soon after the rejoin, the history is loaded: it holds the
  // finished answer, shown once, whole.
  function settleAfterRejoin(ch) {
    var was = live, seen = liveTokens;
    setTimeout(function () {
      if (channel !== ch || !joined || live !== was || liveTokens !== seen) return;
      ch.push('get_history', {});
      setPending(false);
    }, 1500);
  }

  function bind(ch) {
    ch.on('response', function (p) {
      var m = p && p.metadata;
      var b = bubble('assistant', p && p.response, { state: 'done', source: m && m.source ? m.source : '' });
      var line = metaLine(m);
      if (line) b.appendChild(line);
      setPending(false);
      scrollDown();
    });
    ch.on('stream_start', function () {
      // A topic streams one answer at a time (a second query is refused
      // "busy"), so a stream_start while a bubble is still streaming is that
      // same answer replayed from its start (the server's replay after a
      // rejoin, e.g. a WebSocket cut and the fallback to LongPoll): restart
      // that bubble instead of finishing it and opening a second one.
      if (live) live.querySelector('.text').replaceChildren();
      else { live = bubble('assistant', '', { state: 'streaming' }); live.classList.add('streaming'); }
      setPending(true);
      scrollDown();
    });
    ch.on('stream_token', function (p) {
      liveTokens++;
      if (!live) { live = bubble('assistant', '', { state: 'streaming' }); live.classList.add('streaming'); }
      live.querySelector('.text').append(String(p && p.token != null ? p.token : ''));
      scrollDown();
    });
    ch.on('stream_complete', function () { finishLive('done'); setPending(false); });
    ch.on('stream_error', function (p) {
      finishLive('error');
      bubble('error', String(p && p.error || 'stream failed'), { state: 'error' });
      setPending(false);
    });
    ch.on('history', function (p) {
      var list = p && Array.isArray(p.messages) ? p.messages : [];
      live = null;
      messages().replaceChildren();
      messages().dataset.history = String(list.length);
      if (!list.length) notice('No messages yet in this session.', 'muted empty');
      list.forEach(function (m) {
        var b = bubble(String(m.role), m.content, { state: 'done', history: '1' });
        var t = stamp(m.timestamp);
        if (t) b.appendChild(t);
      });
    });
    ch.on('pong', function (p) { notice('pong ' + String(p && p.timestamp || ''), 'muted pong'); });
    ch.on('error', function (p) {
      var code = p && p.error ? String(p.error) : 'error';
      bubble('error', code + ': ' + String(p && p.message || ''), { state: 'error', code: code });
      if (code === 'processing_failed') finishLive('error');
      if (!live) setPending(false);
    });
    ch.onError(function () {
      if (channel !== ch) return;
      joined = false; updateControls();
      status('connecting', 'Connection to session ' + sessionId + ' lost — rejoining…');
    });
  }

  function disconnect() {
    var s = socket, ch = channel;
    socket = null; channel = null; joined = false; live = null;
    setPending(false);
    if (ch) ch.leave();
    if (s) { s.disconnect(); D.status('closed', 'Left session ' + sessionId, transportOf(s)); }
  }

  function connect(id) {
    disconnect();
    showError('');
    id = (id || $('#session-id').value).trim();
    if (!SESSION_RE.test(id)) { D.status('error', 'A session id is 1–63 letters, digits, "-", "_" or "."'); return; }
    if (id !== sessionId) {      // the same session again (the LongPoll switch) keeps the page's messages
      messages().replaceChildren(el('p', { className: 'empty muted' }, 'Ask something, or load the history.'));
      delete messages().dataset.history;
    }
    sessionId = id;
    $('#session-id').value = id;

    var s = D.settings();
    var opts = { params: s.token ? { auth_token: s.token } : {} };
    if (forced()) opts.transport = P.LongPoll;
    else if (FALLBACK_MS > 0) opts.longPollFallbackMs = FALLBACK_MS;
    var sock = new P.Socket('/socket', opts);
    var ch = sock.channel('proxy:' + id, {});
    socket = sock; channel = ch;
    bind(ch);
    sock.onOpen(function () {
      if (socket !== sock) return;
      if (joined) status('open', joinedText());
      else status('connecting', 'Connected, joining session ' + id + '…');
    });
    sock.onError(function () {
      if (socket !== sock) return;
      status('connecting', 'The connection failed — retrying…');
    });
    sock.onClose(function (ev) {
      if (socket !== sock) return;
      if (ev && ev.code === 1008) {           // a refused connect (403): phoenix.js does not retry
        socket = null; channel = null; joined = false; updateControls();
        D.status('error', 'The server refused the connection (token?)', transportOf(sock));
      }
    });
    status('connecting', 'Connecting…');
    sock.connect();
    ch.join()
      .receive('ok', function () {
        if (channel !== ch) return;
        joined = true; updateControls();
        status('open', joinedText());
        if (live) settleAfterRejoin(ch);
      })
      .receive('error', function (r) {
        if (channel !== ch) return;
        var why = r && r.reason ? String(r.reason) : 'refused';
        disconnect();
        D.status('error', 'Join refused: ' + why, transportOf(sock));
      })
      .receive('timeout', function () {
        if (channel === ch) status('connecting', 'No answer to the join yet — still trying…');
      });
    updateControls();
  }

  function send() {
    var box = $('#message');
    var text = box.value.trim();
    if (!text || !channel || !joined || pending) return;
    showError('');
    bubble('user', text, { state: 'sent' });
    box.value = '';
    setPending(true);
    var ch = channel;
    ch.push(streamMode ? 'stream_query' : 'query', { query: text })
      .receive('error', function () { if (channel === ch && !live) setPending(false); })
      .receive('timeout', function () {
        if (channel !== ch) return;
        showError('The server did not take the query in time; try again.');
        if (!live) setPending(false);
      });
    box.focus();
  }

  function setStream(on) {
    streamMode = on;
    var b = $('#stream');
    b.setAttribute('aria-pressed', on ? 'true' : 'false');
    b.textContent = 'Stream: ' + (on ? 'ON' : 'OFF');
  }

  document.addEventListener('DOMContentLoaded', function () {
    if (!P || !P.Socket) {
      D.status('error', 'vendor/phoenix.js is missing: run `make run` (it copies the npm package\'s phoenix.js there)');
      $('#connect').disabled = true;
      return;
    }
    if (D.params.get('transport') === 'longpoll') $('#force-longpoll').checked = true;
    setStream(D.params.get('stream') === '1');
    var id = D.params.get('session');
    if (!id) id = 'session_' + Math.random().toString(36).slice(2, 11);
    $('#session-id').value = id;
    $('#connect').addEventListener('click', function () { connect(); });
    $('#disconnect').addEventListener('click', disconnect);
    $('#chat-form').addEventListener('submit', function (ev) { ev.preventDefault(); send(); });
    $('#stream').addEventListener('click', function () { setStream(!streamMode); });
    $('#history').addEventListener('click', function () { if (channel && joined) channel.push('get_history', {}); });
    $('#ping').addEventListener('click', function () { if (channel && joined) channel.push('ping', {}); });
    $('#force-longpoll').addEventListener('change', function () { if (socket) connect(sessionId); });
    if (D.params.get('session')) connect(id);
    window.addEventListener('pagehide', disconnect);
  });
})();
