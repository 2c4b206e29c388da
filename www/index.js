/* index.js — the demo's home page: says whether the server answers
 * (GET /api/health). Text only; no other dependency. */
(function () {
  'use strict';
  function show(state, text) {
    var p = document.getElementById('health');
    p.dataset.state = state;
    p.textContent = text;
  }
  document.addEventListener('DOMContentLoaded', function () {
    fetch('/api/health', { cache: 'no-store' }).then(function (res) {
      return res.json().then(function (j) {
        if (res.status !== 200) { show('error', 'The server answers, with a problem: HTTP ' + res.status); return; }
        var parts = ['Server ' + (j.status || 'ok')];
        if (j.upstream) parts.push('LLM ' + (j.upstream.provider || '?') + (j.upstream.reachable ? ' reachable' : ' NOT reachable'));
        if (j.auth) parts.push(j.auth === 'open' ? 'open mode (no token needed)' : 'tokens required');
        show(j.status === 'ok' ? 'open' : 'error', parts.join(' · '));
      });
    }).catch(function () { show('error', 'The API does not answer at /api/health'); });
  });
})();
