/* send.js — the send-and-stream page (seed 004).
 *
 * A conversation comes from POST /api/chat/sessions {"kind":"sse"} ("id" is
 * the conversationId). With the Server-Sent Events transport each message
 * is POST /api/chat/send {conversationId, content}, answered with
 * data: {"content"} events, then data: {"done": true, ...} — or
 * data: {"error", "done": true}. The other transports continue the same
 * conversation over the chat protocol (/ws/{id}, seed 001 frames), since a
 * conversation is one thing whatever the transport. Text only.
 */
(function () {
  'use strict';
  var D = window.Demo, $ = D.$, el = D.el;
  var conversationId = null;
  var stream = null;            // the SSE request in flight
  var conn = null, connTransport = null, current = null;

  function messages() { return $('#messages'); }
  function clearEmpty() { var e = messages().querySelector('.empty'); if (e) e.remove(); }
  function scrollDown() { var m = messages(); m.scrollTop = m.scrollHeight; }

  function bubble(role, text, state) {
    clearEmpty();
    var b = el('div', { className: 'msg ' + role, dataset: { state: state || 'done' } },
               el('div', { className: 'who' }, role === 'user' ? 'You' : role === 'assistant' ? 'Assistant' : role),
               el('div', { className: 'text' }, text || ''));
    messages().appendChild(b);
    scrollDown();
    return b;
  }

  function busy(on) { $('#send').disabled = on || !conversationId; }

  function finishAnswer(b, state, meta) {
    if (!b) return;
    b.querySelector('.text').normalize();
    b.classList.remove('streaming');
    b.dataset.state = state;
    if (meta) b.appendChild(el('div', { className: 'meta' }, meta));
  }

  function metaText(m) {
    if (!m || typeof m !== 'object') return null;
    var parts = [];
    var tokens = m.tokens_used != null ? m.tokens_used : m.tokens;
    if (tokens != null) parts.push(tokens + ' tokens');
    if (typeof m.processing_time === 'number') parts.push(D.formatNumber(m.processing_time, 2) + ' s');
    else if (typeof m.processing_time_ms === 'number') parts.push(D.formatNumber(m.processing_time_ms / 1000, 2) + ' s');
    var model = m.model || m.agent_used;
    if (model) parts.push(String(model));
    return parts.length ? parts.join(' · ') : null;
  }

  /* ---- seed 004: POST + Server-Sent Events ---- */

  function sendSse(text) {
    var s = D.settings();
    var b = bubble('assistant', '', 'streaming');
    b.classList.add('streaming');
    busy(true);
    D.status('connecting', 'Sending…');
    var h = Parley.sse('/api/chat/send', {
      method: 'POST',
      body: { conversationId: conversationId, content: text },
      token: s.token,
      onopen: function () { D.status('open', 'Streaming the answer', 'sse'); },
      onevent: function (d) {
        if (!d || typeof d !== 'object') return;
        if (typeof d.content === 'string' && d.content) { b.querySelector('.text').append(d.content); scrollDown(); }
        if (d.error) {
          finishAnswer(b, 'error');
          bubble('error', String(d.error), 'error');
        } else if (d.done) {
          finishAnswer(b, 'done', metaText(d.metadata));
        }
      },
      onerror: function (e) {
        finishAnswer(b, 'error');
        bubble('error', e.message, 'error');
      },
      onclose: function () {
        if (stream === h) stream = null;
        if (b.dataset.state === 'streaming') {
          finishAnswer(b, 'error');
          bubble('error', 'The stream ended before the answer was complete.', 'error');
        }
        D.status('closed', b.dataset.state === 'done' ? 'Answer complete' : 'Stopped', 'sse');
        busy(false);
      }
    });
    stream = h;
  }

  /* ---- the same conversation over the chat protocol (seed 001 frames) ---- */

  function onChatFrame(f) {
    if (!f || typeof f !== 'object') return;
    switch (f.type) {
    case 'connected':
      D.status('open', 'Connected to conversation ' + conversationId, conn && conn.transport);
      break;
    case 'stream_start':
      current = bubble('assistant', '', 'streaming');
      current.classList.add('streaming');
      break;
    case 'stream_chunk':
      if (!current) { current = bubble('assistant', '', 'streaming'); current.classList.add('streaming'); }
      current.querySelector('.text').append(String(f.content || ''));
      scrollDown();
      break;
    case 'stream_end':
      finishAnswer(current, 'done', metaText(f.metadata));
      current = null;
      busy(false);
      break;
    case 'error':
      if (current) { finishAnswer(current, 'error'); current = null; }
      bubble('error', String(f.message || 'Unknown error'), 'error');
      busy(false);
      break;
    default:
      break;
    }
  }

  function chatConnection(transport) {
    if (conn && connTransport === transport) return conn;
    closeChat();
    var s = D.settings();
    var c = Parley.connect('/ws/' + encodeURIComponent(conversationId), { transport: transport, token: s.token });
    conn = c;
    connTransport = transport;
    c.onmessage = onChatFrame;
    c.onerror = function (e) { if (conn === c) bubble('error', e.message, 'error'); };
    c.onclose = function () { if (conn === c) { conn = null; busy(false); } };
    D.track(c, 'conversation ' + conversationId);
    return c;
  }

  function closeChat() {
    if (conn) { var c = conn; conn = null; c.onclose = null; c.close(); }
    current = null;
  }

  /* ---- page ---- */

  function useConversation(id) {
    closeChat();
    conversationId = id || null;
    $('#conversation-id').value = id || '';
    messages().replaceChildren();
    if (id) D.status('idle', 'Conversation ' + id + ': ready');
    busy(false);
  }

  function newConversation() {
    D.api('POST', '/api/chat/sessions', { kind: 'sse', title: 'Demo conversation' }).then(function (r) {
      var id = r.json && (r.json.id || r.json.session_id);
      if ((r.status === 201 || r.status === 200) && id) useConversation(id);
      else D.status('error', 'Could not create a conversation: ' + D.errorText(r));
    }, function () { D.status('error', 'Could not create a conversation (network error)'); });
  }

  function send() {
    var box = $('#message');
    var text = box.value.trim();
    if (!text || !conversationId || stream) return;
    bubble('user', text, 'sent');
    box.value = '';
    var t = D.settings().transport;
    if (t === 'sse') {
      closeChat();
      sendSse(text);
    } else {
      busy(true);
      chatConnection(t).send({ type: 'message', content: text, metadata: {}, timestamp: new Date().toISOString() });
    }
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('#new-conversation').addEventListener('click', newConversation);
    $('#conversation-id').addEventListener('change', function () { useConversation($('#conversation-id').value.trim()); });
    $('#chat-form').addEventListener('submit', function (ev) { ev.preventDefault(); send(); });
    $('#message').addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); send(); }
    });
    $('#transport').addEventListener('change', closeChat);
    var id = D.params.get('conversation');
    if (id) useConversation(id);
    window.addEventListener('pagehide', function () { closeChat(); if (stream) stream.close(); });
  });
})();
