/* brands.js — the brand assistant page (seed 002).
 *
 * GET /brands/active fills the brand picker; Start chat opens
 * /ws/chat/{brand_id} over the selected transport. Frames: welcome (shown
 * as the assistant's first message), chunk (appended; carries the
 * conversation_id sent back with the next message), complete (suggested
 * products as cards, confidence score), error (an unknown brand also ends
 * the connection), pong. The voice checkbox asks for a one-sentence
 * answer. Everything from the server is put in the page as text.
 */
(function () {
  'use strict';
  var D = window.Demo, $ = D.$, el = D.el;
  var conn = null, conversationId = null, current = null;

  function messages() { return $('#messages'); }

  function clearEmpty() {
    var e = messages().querySelector('.empty');
    if (e) e.remove();
  }

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

  function setConnected(on) {
    $('#send').disabled = !on;
    $('#ping').disabled = !on;
  }

  function price(p) {
    if (typeof p !== 'number') return p == null ? '' : String(p);
    return D.formatNumber(p, 2);
  }

  function productCard(p) {
    p = p || {};
    var card = el('article', { className: 'product', dataset: { productId: p.id || '' } },
      el('header', null,
         el('h3', null, String(p.name || p.id || 'Product')),
         el('span', { className: 'badge ' + (p.availability ? 'ok' : 'out') }, p.availability ? 'in stock' : 'unavailable')),
      el('p', { className: 'category muted' }, String(p.category || '')),
      el('p', { className: 'price' }, price(p.price)),
      el('p', { className: 'description' }, String(p.description || '')));
    if (Array.isArray(p.features) && p.features.length) {
      card.appendChild(el('ul', { className: 'features' }, p.features.map(function (f) { return el('li', null, String(f)); })));
    }
    if (p.specifications && typeof p.specifications === 'object') {
      var dl = el('dl', { className: 'specs' });
      Object.keys(p.specifications).forEach(function (k) {
        dl.appendChild(el('dt', null, k.replace(/_/g, ' ')));
        dl.appendChild(el('dd', null, String(p.specifications[k])));
      });
      if (dl.childNodes.length) card.appendChild(dl);
    }
    return card;
  }

  function onComplete(d) {
    var b = current || bubble('assistant', '', 'streaming');
    current = null;
    if (d.content) b.querySelector('.text').append(String(d.content));
    b.querySelector('.text').normalize();
    b.dataset.state = 'done';
    b.classList.remove('streaming');
    if (d.conversation_id) conversationId = d.conversation_id;
    var products = Array.isArray(d.suggested_products) ? d.suggested_products : [];
    if (products.length) {
      b.appendChild(el('div', { className: 'products' }, products.map(productCard)));
    }
    if (typeof d.confidence_score === 'number') {
      b.appendChild(el('div', { className: 'confidence', dataset: { score: d.confidence_score } },
                       'Match confidence: ' + Math.round(d.confidence_score * 100) + '%'));
    }
    scrollDown();
  }

  function onFrame(f) {
    if (!f || typeof f !== 'object') return;
    var d = f.data && typeof f.data === 'object' ? f.data : {};
    switch (f.type) {
    case 'welcome':
      var h = $('#brand-name');
      h.textContent = String(d.brand_name || d.brand_id || '');
      h.hidden = false;
      bubble('assistant', String(d.message || ''), 'welcome').classList.add('welcome');
      setConnected(true);
      break;
    case 'chunk':
      if (!current) { current = bubble('assistant', '', 'streaming'); current.classList.add('streaming'); }
      if (d.conversation_id) conversationId = d.conversation_id;
      current.querySelector('.text').append(String(d.content || ''));
      scrollDown();
      break;
    case 'complete':
      onComplete(d);
      break;
    case 'error':
      if (current) { current.dataset.state = 'error'; current.classList.remove('streaming'); current = null; }
      bubble('error', String(d.message || f.message || 'Unknown error'), 'error');
      break;
    case 'pong':
      var p = el('p', { className: 'notice muted' }, 'pong ' + String(d.timestamp || ''));
      messages().appendChild(p);
      scrollDown();
      break;
    default:
      break;
    }
  }

  function disconnect() {
    if (conn) { var c = conn; conn = null; c.onclose = null; c.close(); D.status('closed', 'Disconnected', c.transport); }
    setConnected(false);
    current = null;
  }

  function start() {
    var brand = $('#brand').value;
    if (!brand) { D.status('error', 'Pick a brand first'); return; }
    disconnect();
    conversationId = null;
    messages().replaceChildren();
    $('#brand-name').hidden = true;
    var s = D.settings();
    var c = Parley.connect('/ws/chat/' + encodeURIComponent(brand), { transport: s.transport, token: s.token });
    conn = c;
    c.onmessage = onFrame;
    c.onerror = function (e) { if (conn === c) bubble('error', e.message, 'error'); };
    c.onclose = function () { if (conn === c) { conn = null; setConnected(false); } };
    D.track(c, 'brand ' + brand);
  }

  function send() {
    var box = $('#message');
    var text = box.value.trim();
    if (!text || !conn) return;
    bubble('user', text, 'sent');
    current = null;
    var data = { message: text, voice: $('#voice').checked };
    if (conversationId) data.conversation_id = conversationId;
    conn.send({ type: 'chat', data: data });
    box.value = '';
    box.focus();
  }

  function loadBrands() {
    var sel = $('#brand');
    D.api('GET', '/brands/active').then(function (r) {
      sel.replaceChildren();
      var list = r.status === 200 && Array.isArray(r.json) ? r.json : null;
      if (!list) { sel.appendChild(el('option', { value: '' }, 'Brands not available (' + D.errorText(r) + ')')); return; }
      if (!list.length) sel.appendChild(el('option', { value: '' }, 'No active brand'));
      list.forEach(function (b) {
        sel.appendChild(el('option', { value: b.brand_id }, String(b.brand_name || b.brand_id)));
      });
      var want = D.params.get('brand');
      if (want) sel.value = want;
      sel.dataset.loaded = '1';
      if (want && D.params.get('start') === '1') start();
    }, function () {
      sel.replaceChildren(el('option', { value: '' }, 'Brands not available (network error)'));
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('#connect').addEventListener('click', start);
    $('#chat-form').addEventListener('submit', function (ev) { ev.preventDefault(); send(); });
    $('#ping').addEventListener('click', function () { if (conn) conn.send({ type: 'ping', data: {} }); });
    loadBrands();
    window.addEventListener('pagehide', disconnect);
  });
})();
