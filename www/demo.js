/* demo.js — what the demo pages share: building DOM nodes from text only,
 * the settings bar (transport selector, token), REST calls with the token,
 * the status line. Loaded before each page's own script; no dependencies
 * but parley.js.
 *
 * Server data is only ever put into the page as text (createTextNode /
 * textContent): model output may contain markup, and it must show as the
 * characters it is (DESIGN §8). The pages' Content-Security-Policy also
 * requires Trusted Types, so an innerHTML assignment would throw.
 */
(function (global) {
  'use strict';

  var params = new URLSearchParams(global.location.search);

  // el('div', {className: 'x', dataset: {k: 'v'}, title: 't'}, 'text', node...)
  function el(tag, attrs) {
    var n = document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        if (!Object.prototype.hasOwnProperty.call(attrs, k) || attrs[k] == null) continue;
        if (k === 'dataset') { for (var d in attrs.dataset) n.dataset[d] = String(attrs.dataset[d]); }
        else if (k === 'className' || k === 'title' || k === 'type' || k === 'value' || k === 'disabled' ||
                 k === 'htmlFor' || k === 'id') n[k] = attrs[k];
        else n.setAttribute(k, String(attrs[k]));
      }
    }
    for (var i = 2; i < arguments.length; i++) append(n, arguments[i]);
    return n;
  }

  function append(parent, child) {
    if (child == null || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(parent, c); }); return; }
    parent.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }

  function $(sel) { return document.querySelector(sel); }

  // The settings bar: <select id="transport"> and <input id="token">.
  // ?transport= and ?token= in the page URL preset them.
  function initSettings() {
    var form = $('#settings');
    if (form) form.addEventListener('submit', function (ev) { ev.preventDefault(); });
    var sel = $('#transport');
    var tok = $('#token');
    var t = params.get('transport');
    if (sel && t) {
      for (var i = 0; i < sel.options.length; i++) if (sel.options[i].value === t) sel.value = t;
    }
    if (tok) {
      var saved = params.get('token') || safeStorage('auth_token');
      if (saved) tok.value = saved;
      tok.addEventListener('change', function () { safeStorage('auth_token', tok.value.trim()); });
    }
  }

  function safeStorage(key, value) {
    try {
      if (value === undefined) return global.localStorage.getItem(key);
      if (value) global.localStorage.setItem(key, value); else global.localStorage.removeItem(key);
    } catch (e) { return null; }
    return null;
  }

  function settings() {
    var sel = $('#transport'), tok = $('#token');
    return {
      transport: sel ? sel.value : 'auto',
      token: tok && tok.value.trim() ? tok.value.trim() : null
    };
  }

  // REST call with the token; resolves {status, json}. Never rejects with a
  // server's answer; rejects on network errors only.
  function api(method, path, body) {
    var s = settings();
    var headers = {};
    if (s.token) headers.Authorization = 'Bearer ' + s.token;
    var init = { method: method, headers: headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (res) {
      return res.text().then(function (text) {
        var json = null;
        try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
        return { status: res.status, json: json };
      });
    });
  }

  function errorText(r) {
    if (r && r.json && typeof r.json.message === 'string') return r.json.message + ' (HTTP ' + r.status + ')';
    return 'HTTP ' + (r ? r.status : '?');
  }

  var TRANSPORT_NAMES = { websocket: 'WebSocket', longpoll: 'long-poll', sse: 'Server-Sent Events' };

  // The status line: state is 'idle' | 'connecting' | 'open' | 'closed' | 'error'.
  function status(state, text, transport) {
    var s = $('#status');
    if (!s) return;
    s.dataset.state = state;
    if (transport) document.body.dataset.transport = transport;
    var parts = [text];
    if (transport) parts.push('via ' + (TRANSPORT_NAMES[transport] || transport));
    s.textContent = parts.join(' — ');
  }

  // Watches a Parley connection: keeps the status line and body[data-transport] current.
  function track(conn, label) {
    status('connecting', 'Connecting to ' + label + '…');
    var prevOpen = conn.onopen, prevClose = conn.onclose;
    conn.onopen = function (ev) {
      status('open', 'Connected to ' + label, conn.transport);
      if (prevOpen) prevOpen.call(conn, ev);
    };
    conn.onclose = function (ev) {
      var why = ev.reason ? ': ' + ev.reason : '';
      status(ev.code === 1000 ? 'closed' : 'error', 'Disconnected (' + ev.code + why + ')', conn.transport);
      if (prevClose) prevClose.call(conn, ev);
    };
  }

  // Replaces the children of node by the given text (or nothing).
  function setText(node, text) {
    node.replaceChildren();
    if (text) node.appendChild(document.createTextNode(text));
  }

  function formatNumber(n, digits) {
    if (typeof n !== 'number' || !isFinite(n)) return String(n);
    try { return n.toLocaleString('en-US', { maximumFractionDigits: digits == null ? 2 : digits }); }
    catch (e) { return String(n); }
  }

  global.Demo = {
    el: el, append: append, $: $, params: params, initSettings: initSettings, settings: settings,
    api: api, errorText: errorText, status: status, track: track, setText: setText,
    formatNumber: formatNumber, storage: safeStorage
  };
  document.addEventListener('DOMContentLoaded', initSettings);
})(window);
