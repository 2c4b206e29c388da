/* tickets.js — the help-desk ticket page (seed 000).
 *
 * Open: GET /api/tickets/{id}/ai says whether an answer exists; then the
 * ticket's WebSocket path (/api/websocket/chat/{id}, over the transport the
 * selector names) gets {"ticketBody"} once, and the page shows what comes
 * back: "stream" chunks appended, or the whole "cached" answer, until
 * "done"; "error" is shown as such. Follow over SSE reads the same frames
 * from GET /api/tickets/{id}/ai/stream (resuming with Last-Event-ID).
 * Answers are put in the page as text only.
 */
(function () {
  'use strict';
  var D = window.Demo, $ = D.$;
  var conn = null, stream = null;

  function ui() {
    return {
      id: $('#ticket-id'), body: $('#ticket-body'), answer: $('#answer'), badge: $('#answer-badge'),
      info: $('#ticket-info'), error: $('#error'), spinner: $('#spinner')
    };
  }

  // Closes the connection or stream in use; note says why on the status line.
  function stop(note) {
    var t = null;
    if (conn) { var c = conn; conn = null; t = c.transport; c.onclose = null; c.close(); }
    if (stream) { var s = stream; stream = null; t = 'sse'; s.close(); }
    if (t && note) D.status('closed', note, t);
  }

  function setState(state) {
    var u = ui();
    u.answer.dataset.state = state;
    u.spinner.hidden = !(state === 'loading' || state === 'streaming');
    document.querySelectorAll('#ticket-form button').forEach(function (b) { b.disabled = state === 'loading' || state === 'streaming'; });
  }

  function badge(text, kind) {
    var b = ui().badge;
    b.hidden = !text;
    b.textContent = text || '';
    b.dataset.kind = kind || '';
  }

  function showError(msg) {
    var e = ui().error;
    e.hidden = !msg;
    e.textContent = msg || '';
  }

  function reset() {
    stop();
    var u = ui();
    D.setText(u.answer, '');
    u.answer.dataset.source = '';
    badge(null);
    showError(null);
    setState('loading');
  }

  // One seed 000 frame, from any transport.
  function onFrame(f) {
    var u = ui();
    if (!f || typeof f !== 'object') return;
    switch (f.type) {
    case 'stream':
      if (u.answer.dataset.state !== 'streaming') {
        setState('streaming');
        u.answer.dataset.source = 'stream';
        badge('live', 'live');
      }
      u.answer.append(String(f.content || ''));
      break;
    case 'cached':
      D.setText(u.answer, String(f.response || ''));
      u.answer.dataset.source = 'cached';
      badge('cached', 'cached');
      if (f.message) u.info.textContent = String(f.message);
      break;
    case 'done':
      u.answer.normalize();
      setState('done');
      if (u.answer.dataset.source === 'stream') badge('new answer', 'done');
      stop('Answer complete');
      break;
    case 'error':
      showError(String(f.message || 'Unknown error'));
      setState('error');
      stop('Stopped by an error');
      break;
    default:
      break;   // frames of a later protocol version: ignored
    }
  }

  function ticketId() {
    var id = ui().id.value.trim();
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(id)) {
      showError("A ticket ID is 1 to 64 letters, digits, '.', '_' or '-'.");
      return null;
    }
    return id;
  }

  function describe(r) {
    if (r.status !== 200 || !r.json) return 'Could not check the ticket: ' + D.errorText(r);
    if (r.json.status === 'cached') return 'An AI answer is stored for this ticket.';
    if (r.json.status === 'running') return 'An answer is being generated: following it.';
    return 'No AI session yet: sending the ticket body.';
  }

  function openTicket() {
    var id = ticketId();
    if (!id) return;
    var body = ui().body.value.trim();
    if (!body) { showError('Write the ticket body first.'); return; }
    reset();
    var s = D.settings();
    // Seed 000 step 2: does an AI session exist for this ticket?
    D.api('GET', '/api/tickets/' + encodeURIComponent(id) + '/ai').then(function (r) {
      ui().info.textContent = describe(r);
    }, function () {
      ui().info.textContent = 'Could not check the ticket (network error).';
    }).then(function () {
      var c = Parley.connect('/api/websocket/chat/' + encodeURIComponent(id), { transport: s.transport, token: s.token });
      conn = c;
      c.onopen = function () { c.send({ ticketBody: body }); };
      c.onmessage = onFrame;
      c.onerror = function (e) { if (conn === c) showError(e.message); };
      c.onclose = function (ev) {
        if (conn !== c) return;
        conn = null;
        if (ui().answer.dataset.state !== 'done') {
          setState('error');
          if (ui().error.hidden) showError('The connection closed before the answer was complete (' + ev.code + (ev.reason ? ': ' + ev.reason : '') + ').');
        }
      };
      D.track(c, 'ticket ' + id);
    });
  }

  function follow() {
    var id = ticketId();
    if (!id) return;
    reset();
    var s = D.settings();
    ui().info.textContent = 'Following the ticket\'s stream (Server-Sent Events).';
    D.status('connecting', 'Opening the SSE stream of ticket ' + id + '…');
    var h = Parley.sse('/api/tickets/' + encodeURIComponent(id) + '/ai/stream', {
      token: s.token,
      onopen: function () { D.status('open', 'Following ticket ' + id, 'sse'); },
      onevent: onFrame,
      onerror: function (e) { if (stream === h) { showError(e.message); setState('error'); } },
      onclose: function (ev) {
        if (stream !== h) return;   // stopped by the page
        stream = null;
        D.status('closed', 'Stream closed (' + ev.reason + ')', 'sse');
        if (ui().answer.dataset.state === 'loading') setState('idle');
      }
    });
    stream = h;
  }

  function forget() {
    var id = ticketId();
    if (!id) return;
    stop();
    D.api('DELETE', '/api/tickets/' + encodeURIComponent(id) + '/ai').then(function (r) {
      ui().info.textContent = r.status === 200 ? 'The stored answer was forgotten: the next opening asks the AI again.'
                                              : 'Could not forget the answer: ' + D.errorText(r);
    });
    var u = ui();
    D.setText(u.answer, '');
    badge(null);
    showError(null);
    setState('idle');
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('#ticket-form').addEventListener('submit', function (ev) { ev.preventDefault(); openTicket(); });
    $('#watch').addEventListener('click', follow);
    $('#forget').addEventListener('click', forget);
    var id = D.params.get('ticket');
    if (id) ui().id.value = id;
    window.addEventListener('pagehide', stop);
  });
})();
