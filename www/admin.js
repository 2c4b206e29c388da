/* admin.js — the admin page (docs/admin.md): what runs now, with a stop
 * button per running generation (POST /api/admin/generations/{id}/stop).
 * While "Live" is checked: GET /api/admin/generations and
 * /api/admin/connections every 2 seconds (cheap: running jobs, presence
 * rows), GET /api/admin/overview (which also counts every stored row)
 * every 10 seconds and at once.
 *
 * Everything the server sends — channels, user names, model output in
 * "Latest text", upstream names — goes into the page as text only
 * (Demo.el / textContent): the page's Content-Security-Policy requires
 * Trusted Types, so an innerHTML assignment would throw anyway.
 */
(function () {
  'use strict';
  var D = window.Demo, el = D.el, $ = D.$;
  var FAST_MS = 2000, SLOW_MS = 10000;
  var timer = null, busy = false, lastSlow = 0;
  var thisProcess = [];           // the overview's upstreams.this_process, kept between overviews

  function showError(msg) {
    var e = $('#error');
    e.hidden = !msg;
    e.textContent = msg || '';
  }

  function num(n) { return typeof n === 'number' ? D.formatNumber(n, 0) : '—'; }

  function age(ms) {
    if (typeof ms !== 'number' || ms < 0) return '—';
    var s = Math.floor(ms / 1000);
    if (s < 60) return s + ' s';
    var m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + (s % 60) + ' s';
    return Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
  }

  function fillBody(table, rows) {
    var tb = table.querySelector('tbody');
    tb.replaceChildren.apply(tb, rows);
  }

  function kv(dl, pairs) {
    var nodes = [];
    pairs.forEach(function (p) {
      nodes.push(el('dt', null, p[0]), el('dd', { dataset: { key: p[2] || '' } }, p[1]));
    });
    dl.replaceChildren.apply(dl, nodes);
  }

  function stopJob(id, button) {
    button.disabled = true;
    button.textContent = 'Stopping…';
    D.api('POST', '/api/admin/generations/' + encodeURIComponent(String(id)) + '/stop').then(function (r) {
      if (r.status === 202) { button.textContent = 'Stop asked'; refresh(); return; }
      button.disabled = false;
      button.textContent = 'Stop';
      showError('Stop of job ' + id + ': ' + D.errorText(r));
    }, function () {
      button.disabled = false;
      button.textContent = 'Stop';
      showError('Stop of job ' + id + ': the server does not answer');
    });
  }

  function renderGenerations(list) {
    var t = $('#generations');
    $('#gen-count').textContent = String(list.length);
    $('#gen-empty').hidden = list.length > 0;
    t.hidden = list.length === 0;
    fillBody(t, list.map(function (g) {
      var b = el('button', { type: 'button', className: 'secondary small', dataset: { job: g.job_id },
                             title: 'POST /api/admin/generations/' + g.job_id + '/stop' },
                 g.stop_requested ? 'Stop asked' : 'Stop');
      b.disabled = !!g.stop_requested;
      b.addEventListener('click', function () { stopJob(g.job_id, b); });
      return el('tr', { dataset: { job: g.job_id } },
        el('td', { className: 'num' }, String(g.job_id)),
        el('td', { className: 'mono' }, g.channel),
        el('td', null, g.user == null ? '—' : (g.user === '' ? '(open mode)' : g.user)),
        el('td', null, g.upstream == null ? '(one of several)' : g.upstream),
        el('td', null, g.model || '—'),
        el('td', { className: 'num', title: (g.streamed_bytes || 0) + ' bytes streamed' }, num(g.tokens_so_far)),
        el('td', { className: 'num' }, age(g.age_ms)),
        el('td', { className: 'tail' }, g.text_tail || ''),
        el('td', null, b));
    }));
  }

  var TRANSPORTS = [
    ['websocket', 'WebSocket (bridge)'], ['phoenix_websocket', 'Phoenix WebSocket (bridge)'],
    ['longpoll', 'Long-poll sessions'], ['phoenix_longpoll', 'Phoenix LongPoll sessions'],
    ['sse', 'SSE streams'], ['longpoll_waiting', 'Long-poll requests waiting']
  ];

  function renderConnections(c) {
    var totals = c.totals || {};
    kv($('#connections'), TRANSPORTS.map(function (t) { return [t[1], num(totals[t[0]]), t[0]]; }));
    var now = Date.now();
    fillBody($('#processes'), (c.processes || []).map(function (p) {
      var counts = Object.keys(p.counts || {}).sort().map(function (k) { return k + ' ' + p.counts[k]; }).join(', ');
      return el('tr', null, el('td', null, p.node), el('td', null, p.program),
        el('td', { className: 'num' }, String(p.pid)), el('td', null, counts || '—'),
        el('td', { className: 'num' }, age(now - p.updated_at) + ' ago'));
    }));
  }

  function renderStats(s) {
    var c = s.counts || {}, g = s.generations || {}, cache = s.cache || {}, e = s.errors_last_hour || {};
    var rate = typeof cache.hit_rate === 'number' ? D.formatNumber(cache.hit_rate * 100, 1) + ' %' : '—';
    kv($('#stats'), [
      ['Cache hit rate', rate + ' (' + num(cache.hits) + ' hits, ' + num(cache.answers) + ' answers)', 'cache'],
      ['Errors in the last hour', num(e.total), 'errors'],
      ['Generations', num(g.running) + ' running · ' + num(g.done) + ' done · ' + num(g.stopped) +
        ' stopped · ' + num(g.failed) + ' failed', 'generations'],
      ['Tickets', num(c.tickets), 'tickets'],
      ['Conversations', num(c.conversations), 'conversations'],
      ['Messages', num(c.messages), 'messages'],
      ['Cached answers', num(c.answers_cached), 'answers']
    ]);
    var tok = (s.tokens_today && s.tokens_today.users) || [];
    $('#tokens-day').textContent = (s.tokens_today && s.tokens_today.day) || '';
    $('#tokens-empty').hidden = tok.length > 0;
    $('#tokens').hidden = tok.length === 0;
    fillBody($('#tokens'), tok.map(function (u) {
      return el('tr', null, el('td', null, u.user === '' ? '(open mode)' : u.user),
        el('td', { className: 'num' }, num(u.prompt_tokens)), el('td', { className: 'num' }, num(u.completion_tokens)),
        el('td', { className: 'num' }, num(u.tokens)), el('td', { className: 'num' }, num(u.generations)));
    }));
  }

  function upstreamRows(who, list) {
    return (list || []).map(function (u) {
      return el('tr', { dataset: { breaker: u.breaker } }, el('td', null, who), el('td', { title: u.url }, u.name),
        el('td', null, el('span', { className: 'badge ' + (u.breaker === 'closed' ? 'ok' : 'out') }, u.breaker)),
        el('td', { className: 'num' }, num(u.consecutive_failures)), el('td', { className: 'num' }, num(u.requests)),
        el('td', { className: 'num' }, num(u.successes)),
        el('td', { className: 'num' }, u.first_token_ms_mean == null ? '—' : num(u.first_token_ms_mean) + ' ms'));
    });
  }

  function renderUpstreams(o) {
    var rows = upstreamRows('this answer\'s parley.fcgi', o.upstreams && o.upstreams.this_process);
    ((o.connections && o.connections.processes) || []).forEach(function (p) {
      rows = rows.concat(upstreamRows(p.program + ' ' + p.pid + ' @ ' + p.node, p.upstreams));
    });
    fillBody($('#upstreams'), rows);
  }

  // Answers 401/403/errors on the status line; true when r is usable.
  function usable(r) {
    if (r.status === 401) {
      D.status('error', 'Paste a token with role "admin" in the Token field (HTTP 401)');
      return false;
    }
    if (r.status !== 200 || !r.json) {
      D.status('error', D.errorText(r));
      return false;
    }
    return true;
  }

  function updated(at) {
    showError(null);
    D.status('open', 'Updated ' + new Date(at).toLocaleTimeString());
  }

  // Everything (the overview), or only what changes fast (generations and
  // connections) when the overview is recent.
  function refresh() {
    if (busy) return;
    busy = true;
    var done = function () { busy = false; };
    var failed = function () { busy = false; D.status('error', 'The API does not answer'); };
    if (Date.now() - lastSlow >= SLOW_MS) {
      D.api('GET', '/api/admin/overview').then(function (r) {
        done();
        if (!usable(r)) return;
        lastSlow = Date.now();
        var o = r.json;
        renderGenerations(o.generations || []);
        renderConnections(o.connections || {});
        renderStats(o.stats || {});
        thisProcess = (o.upstreams && o.upstreams.this_process) || [];
        renderUpstreams(o);
        updated(o.at);
      }, failed);
      return;
    }
    Promise.all([D.api('GET', '/api/admin/generations'), D.api('GET', '/api/admin/connections')]).then(function (rs) {
      done();
      if (!usable(rs[0]) || !usable(rs[1])) return;
      renderGenerations(rs[0].json.generations || []);
      renderConnections(rs[1].json);
      renderUpstreams({ upstreams: { this_process: thisProcess }, connections: rs[1].json });
      updated(rs[0].json.at);
    }, failed);
  }

  function schedule() {
    if (timer) { clearInterval(timer); timer = null; }
    if ($('#live').checked) timer = setInterval(refresh, FAST_MS);
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('#live').addEventListener('change', schedule);
    $('#token').addEventListener('change', function () { lastSlow = 0; refresh(); });
    refresh();
    schedule();
  });
})();
