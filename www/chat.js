/* chat.js — the chat session page (seed 001).
 *
 * A session is created with POST /api/chat/sessions (or picked from
 * GET /api/chat/sessions); connecting shows its stored history
 * (GET /api/chat/sessions/{id}/messages), then opens /ws/{session_id}
 * (?token= when a token is set) over the selected transport. Frames:
 * connected; stream_start → a new answer; stream_chunk → appended to the
 * answer with that message_id; stream_end → its metadata (tokens,
 * processing time, model); error; pong. Messages go out as
 * {"type":"message","content","metadata","timestamp"}. Text only.
 */
(function () {
  'use strict';
  var D = window.Demo, $ = D.$, el = D.el;
  var conn = null;
  var sessionId = null;

  function messages() { return $('#messages'); }

  function clearEmpty() {
    var e = messages().querySelector('.empty');
    if (e) e.remove();
  }

  function scrollDown() {
    var m = messages();
    m.scrollTop = m.scrollHeight;
  }

  function setConnected(on) {
    $('#send').disabled = !on;
    $('#disconnect').disabled = !on;
  }

  function metaLine(meta) {
    if (!meta || typeof meta !== 'object') return null;
    var parts = [];
    if (meta.tokens_used != null) parts.push(meta.tokens_used + ' tokens');
    if (typeof meta.processing_time === 'number') parts.push(D.formatNumber(meta.processing_time, 2) + ' s');
    var model = meta.model || meta.agent_used;
    if (model) parts.push(String(model));
    return parts.length ? el('div', { className: 'meta' }, parts.join(' · ')) : null;
  }

  function bubble(role, text, attrs) {
    clearEmpty();
    var b = el('div', assign({ className: 'msg ' + role }, attrs),
               el('div', { className: 'who' }, role === 'user' ? 'You' : role === 'assistant' ? 'Assistant' : role),
               el('div', { className: 'text' }, text || ''));
    messages().appendChild(b);
    scrollDown();
    return b;
  }

  function assign(a, b) { for (var k in b) a[k] = b[k]; return a; }

  function notice(text, kind) {
    clearEmpty();
    messages().appendChild(el('p', { className: 'notice ' + (kind || '') }, text));
    scrollDown();
  }

  function reactions(b, messageId) {
    if (!messageId || !sessionId) return;
    var sid = sessionId;
    function react(helpful, btn) {
      D.api('POST', '/api/chat/sessions/' + encodeURIComponent(sid) + '/messages/' + encodeURIComponent(messageId) + '/reactions',
            { helpful: helpful }).then(function (r) {
        if (r.status === 200) {
          b.querySelectorAll('.react button').forEach(function (x) { x.setAttribute('aria-pressed', 'false'); });
          btn.setAttribute('aria-pressed', 'true');
        }
      });
    }
    var yes = el('button', { type: 'button', className: 'link' }, 'Helpful');
    var no = el('button', { type: 'button', className: 'link' }, 'Not helpful');
    yes.addEventListener('click', function () { react(true, yes); });
    no.addEventListener('click', function () { react(false, no); });
    b.appendChild(el('div', { className: 'react' }, yes, no));
  }

  function answerBubble(id) {
    var found = null;
    messages().querySelectorAll('.msg.assistant').forEach(function (b) { if (b.dataset.messageId === id) found = b; });
    return found;
  }

  function onFrame(f) {
    if (!f || typeof f !== 'object') return;
    var b;
    switch (f.type) {
    case 'connected':
      D.status('open', 'Connected to session ' + (f.session_id || sessionId), conn && conn.transport);
      setConnected(true);
      break;
    case 'stream_start':
      b = bubble('assistant', '', { dataset: { messageId: f.message_id || '', state: 'streaming' } });
      b.classList.add('streaming');
      break;
    case 'stream_chunk':
      b = answerBubble(f.message_id || '') ||
          bubble('assistant', '', { dataset: { messageId: f.message_id || '', state: 'streaming' } });
      b.querySelector('.text').append(String(f.content || ''));
      scrollDown();
      break;
    case 'stream_end':
      b = answerBubble(f.message_id || '');
      if (!b) break;
      b.querySelector('.text').normalize();
      b.classList.remove('streaming');
      b.dataset.state = 'done';
      var m = metaLine(f.metadata);
      if (m) b.appendChild(m);
      reactions(b, f.message_id);
      scrollDown();
      break;
    case 'error':
      // An answer that was streaming stops here.
      messages().querySelectorAll('.msg.assistant.streaming').forEach(function (x) {
        x.classList.remove('streaming');
        x.dataset.state = 'error';
      });
      bubble('error', String(f.message || 'Unknown error'), { dataset: { state: 'error' } });
      break;
    case 'pong':
      break;
    default:
      break;
    }
  }

  function disconnect() {
    if (conn) { var c = conn; conn = null; c.onclose = null; c.close(); D.status('closed', 'Disconnected', c.transport); }
    setConnected(false);
  }

  function showHistory(list) {
    messages().replaceChildren();
    if (!list.length) { notice('No messages yet in this session.', 'muted empty'); return; }
    list.forEach(function (m) {
      var b = bubble(m.role, m.content, { dataset: { messageId: m.message_id || '', state: 'done', history: '1' } });
      if (m.role === 'assistant') {
        var line = metaLine(m.metadata);
        if (line) b.appendChild(line);
      }
    });
  }

  function connect(id) {
    disconnect();
    id = (id || $('#session-id').value).trim();
    if (!id) { D.status('error', 'Enter a session id, or start a new session'); return; }
    sessionId = id;
    $('#session-id').value = id;
    var s = D.settings();
    D.status('connecting', 'Loading session ' + id + '…');
    D.api('GET', '/api/chat/sessions/' + encodeURIComponent(id) + '/messages?limit=100').then(function (r) {
      if (r.status === 200 && r.json && Array.isArray(r.json.messages)) showHistory(r.json.messages);
      else { messages().replaceChildren(); notice('History not available: ' + D.errorText(r), 'error'); }
    }, function () {
      messages().replaceChildren();
      notice('History not available (network error).', 'error');
    }).then(function () {
      var path = '/ws/' + encodeURIComponent(id);
      var c = Parley.connect(path, { transport: s.transport, token: s.token });
      conn = c;
      c.onmessage = onFrame;
      c.onerror = function (e) { if (conn === c) notice(e.message, 'error'); };
      c.onclose = function () { if (conn === c) { conn = null; setConnected(false); } };
      D.track(c, 'session ' + id);
    });
  }

  function newSession() {
    D.api('POST', '/api/chat/sessions', { settings: { stream_responses: true }, metadata: { client_version: 'parley-demo/1' } })
      .then(function (r) {
        if ((r.status === 201 || r.status === 200) && r.json && (r.json.session_id || r.json.id)) {
          connect(r.json.session_id || r.json.id);
          loadSessions();
        } else {
          D.status('error', 'Could not create a session: ' + D.errorText(r));
        }
      }, function () { D.status('error', 'Could not create a session (network error)'); });
  }

  function loadSessions() {
    D.api('GET', '/api/chat/sessions?limit=20&kind=chat').then(function (r) {
      var ul = $('#sessions');
      ul.replaceChildren();
      if (r.status !== 200 || !r.json || !Array.isArray(r.json.sessions)) {
        ul.appendChild(el('li', { className: 'muted' }, 'Not available: ' + D.errorText(r)));
        return;
      }
      if (!r.json.sessions.length) ul.appendChild(el('li', { className: 'muted' }, 'None yet.'));
      r.json.sessions.forEach(function (s) {
        var b = el('button', { type: 'button', className: 'link' }, s.session_id);
        b.addEventListener('click', function () { connect(s.session_id); });
        ul.appendChild(el('li', null, b, el('span', { className: 'muted' },
          ' — ' + s.message_count + ' messages, last ' + String(s.last_activity || '').replace('T', ' ').slice(0, 19))));
      });
    }, function () { /* the list is optional */ });
  }

  function send() {
    var box = $('#message');
    var text = box.value.trim();
    if (!text || !conn) return;
    bubble('user', text, { dataset: { state: 'sent' } });
    conn.send({ type: 'message', content: text, metadata: {}, timestamp: new Date().toISOString() });
    box.value = '';
    box.focus();
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('#new-session').addEventListener('click', newSession);
    $('#connect').addEventListener('click', function () { connect(); });
    $('#disconnect').addEventListener('click', disconnect);
    $('#chat-form').addEventListener('submit', function (ev) { ev.preventDefault(); send(); });
    $('#message').addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); send(); }
    });
    $('#sessions-box').addEventListener('toggle', function () { if ($('#sessions-box').open) loadSessions(); });
    var id = D.params.get('session');
    if (id) connect(id);
    window.addEventListener('pagehide', disconnect);
  });
})();
