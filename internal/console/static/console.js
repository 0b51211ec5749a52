// Hongbao operator console. Hand-written, no dependencies: it renders
// everything with createElement and textContent (never innerHTML with
// data), draws charts as inline SVG, and talks to the same HTTP API as
// every other client with the operator's admin token, which lives in this
// tab's sessionStorage only: never in the page, never in a URL.
(function () {
  'use strict';

  var TOKEN_KEY = 'hongbao.console.token';
  var REFRESH_MS = 3000;
  // Thresholds above which a figure needs a person.
  var OLDEST_CLAIM_ALERT_S = 60;

  // ---- formatting (pure; exposed as window.HB for the tests) ----

  // clean makes any text safe to show: control characters (NUL included)
  // become U+FFFD; the rest is set with textContent, so markup stays text.
  function clean(v) {
    if (v === null || v === undefined) return '';
    return String(v).replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '\ufffd');
  }

  function group3(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  }

  // yuanFromFen formats integer fen (a number, a digit string or a BigInt)
  // as yuan with two decimals: 12345 -> "¥123.45", -5 -> "-¥0.05". String
  // arithmetic only, no float division.
  function yuanFromFen(v) {
    var s = typeof v === 'bigint' ? v.toString() : String(v).trim();
    if (typeof v === 'number' && !Number.isSafeInteger(v)) return '?';
    if (!/^-?\d+$/.test(s)) return '?';
    var neg = s.charAt(0) === '-';
    if (neg) s = s.slice(1);
    s = s.replace(/^0+(?=\d)/, '');
    while (s.length < 3) s = '0' + s;
    var out = '¥' + group3(s.slice(0, -2)) + '.' + s.slice(-2);
    if (neg && /[1-9]/.test(s)) out = '-' + out;
    return out;
  }

  // yuan formats an API amount, a decimal string in yuan ("123.4",
  // "-0.05"), exactly: it becomes fen as a string, then yuanFromFen.
  function yuan(v) {
    if (v === null || v === undefined || v === '') return '';
    var s = String(v).trim();
    var m = /^(-?)(\d+)(?:\.(\d{1,2}))?$/.exec(s);
    if (!m) return '?' + clean(s);
    var frac = (m[3] || '') + '00';
    return yuanFromFen(m[1] + m[2] + frac.slice(0, 2));
  }

  function count(v) {
    if (v === null || v === undefined) return '–';
    if (typeof v === 'number' && v < 0) return 'unknown';
    var s = String(v);
    return /^\d+$/.test(s) ? group3(s) : clean(s);
  }

  function rate(v) {
    if (typeof v !== 'number' || !isFinite(v)) return '–';
    return (v >= 100 ? Math.round(v).toString() : v.toFixed(1)) + '/s';
  }

  function pad(n, w) { n = String(n); while (n.length < (w || 2)) n = '0' + n; return n; }

  // utc renders a time as "2026-12-04 02:33:38 UTC".
  function utc(v) {
    if (!v) return '';
    var d = new Date(v);
    if (isNaN(d.getTime())) return clean(v);
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' +
      pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds()) + ' UTC';
  }

  function hms(d) {
    return pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds()) + ' UTC';
  }

  // age renders seconds as "45 s", "3 min 05 s", "2 h 04 min".
  function age(sec) {
    if (typeof sec !== 'number' || !isFinite(sec) || sec < 0) return '–';
    sec = Math.floor(sec);
    if (sec < 60) return sec + ' s';
    if (sec < 3600) return Math.floor(sec / 60) + ' min ' + pad(sec % 60) + ' s';
    if (sec < 86400) return Math.floor(sec / 3600) + ' h ' + pad(Math.floor(sec / 60) % 60) + ' min';
    return Math.floor(sec / 86400) + ' d ' + Math.floor(sec / 3600) % 24 + ' h';
  }

  function since(v) {
    var t = new Date(v).getTime();
    if (isNaN(t)) return '–';
    return age((Date.now() - t) / 1000);
  }

  // ---- DOM helpers ----

  var SVG = 'http://www.w3.org/2000/svg';

  // el builds an element: attrs (class, id, href, data-*, on* handlers)
  // and children (nodes or text, set as text).
  function el(tag, attrs) {
    var e = document.createElement(tag);
    setAttrs(e, attrs);
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }

  function setAttrs(e, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v === undefined || v === null || v === false) return;
      if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), v);
      else if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = clean(v);
      else if (k === 'href') e.setAttribute('href', safeHref(v));
      else e.setAttribute(k, v === true ? '' : String(v));
    });
  }

  function safeHref(v) { return String(v).charAt(0) === '#' ? String(v) : '#/'; }

  function add(parent, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) { c.forEach(function (x) { add(parent, x); }); return; }
    if (c instanceof Node) parent.appendChild(c);
    else parent.appendChild(document.createTextNode(clean(c)));
  }

  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    return e;
  }

  function td(v, cls) { return el('td', cls ? { class: cls } : null, v); }
  function th(v, cls) { return el('th', cls ? { class: cls } : null, v); }

  function table(heads, rows, id) {
    var tr = el('tr');
    heads.forEach(function (h) { tr.appendChild(typeof h === 'string' ? th(h) : th(h[0], h[1])); });
    return el('table', id ? { id: id } : null, el('thead', null, tr), el('tbody', null, rows));
  }

  function kv(pairs, id) {
    var dl = el('dl', { class: 'kv', id: id });
    pairs.forEach(function (p) {
      if (!p) return;
      dl.appendChild(el('dt', null, p[0]));
      dl.appendChild(el('dd', p[2] ? { class: p[2] } : null, p[1]));
    });
    return dl;
  }

  function tag(text, good) { return el('span', { class: 'tag ' + (good === true ? 'good' : good === false ? 'bad' : '') }, text); }

  function enc(s) { return encodeURIComponent(String(s)); }

  // ---- the API ----

  function ApiError(status, code, message) {
    this.status = status; this.code = code; this.message = message;
  }

  function token() { try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; } }

  function api(method, path, body, tok) {
    var h = { 'Accept': 'application/json', 'Authorization': 'Bearer ' + (tok || token()) };
    var opts = { method: method, headers: h, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
    if (body !== undefined) { h['Content-Type'] = 'application/json'; opts.body = JSON.stringify(body); }
    return fetch(path, opts).then(function (r) {
      return r.text().then(function (t) {
        var j = null;
        try { j = t ? JSON.parse(t) : null; } catch (e) { j = null; }
        if (!r.ok) {
          var code = j && j.code ? j.code : 'http_' + r.status;
          var msg = j && (j.detail || j.message) ? (j.detail || j.message) : r.statusText;
          if (r.status === 401 && tok === undefined) { signOut('Your token is no longer valid (' + code + '): sign in again.'); }
          throw new ApiError(r.status, code, msg);
        }
        return j;
      });
    }, function () { throw new ApiError(0, 'network', 'the server did not answer'); });
  }

  function errorBox(err) {
    if (err instanceof ApiError) {
      return el('div', { class: 'error', role: 'alert' }, 'Error ' + (err.status || '') + ' ' + err.code + ': ' + err.message);
    }
    return el('div', { class: 'error', role: 'alert' }, 'Error: ' + String(err && err.message || err));
  }

  // ---- pages ----

  var app, nav, signoutBtn, timer = null, view = 0;

  function page(title) {
    app.textContent = '';
    var args = [el('h1', null, title)];
    for (var i = 1; i < arguments.length; i++) args.push(arguments[i]);
    add(app, args);
  }

  function signInPage(message) {
    nav.hidden = true; signoutBtn.hidden = true;
    var input = el('input', { id: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', placeholder: 'paste an admin token' });
    var msg = el('div', { id: 'signin-message', role: 'alert' });
    if (message) msg.appendChild(el('div', { class: 'error' }, message));
    var btn = el('button', { id: 'signin', class: 'primary', type: 'submit' }, 'Sign in');
    var form = el('form', { class: 'signin', id: 'signin-form', autocomplete: 'off' },
      el('h1', null, 'Sign in'),
      el('p', null, 'Operators sign in with an admin token: hongbao token --admin (with the server\u2019s token secret). It is kept in this tab only and sent to the API on each call.'),
      el('label', { for: 'token' }, 'Admin token'), input,
      el('p', null, btn), msg);
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var t = input.value.trim();
      input.value = '';
      msg.textContent = '';
      if (!t) { msg.appendChild(el('div', { class: 'error' }, 'Paste a token first.')); return; }
      btn.disabled = true;
      api('GET', '/v1/admin/overview', undefined, t).then(function () {
        try { sessionStorage.setItem(TOKEN_KEY, t); } catch (e) { /* no storage: nothing to keep */ }
        if (!location.hash || location.hash === '#/' || location.hash === '#/signin') location.hash = '#/overview';
        route();
      }, function (err) {
        btn.disabled = false;
        var text;
        if (err.status === 403) text = 'This token is not an operator\u2019s: the console needs an admin token (403 ' + err.code + ').';
        else if (err.status === 401) text = 'This token is not valid or has expired (401 ' + err.code + ').';
        else text = 'Could not check the token: ' + err.code + ': ' + err.message;
        msg.appendChild(el('div', { class: 'error', id: 'signin-error' }, text));
      });
    });
    app.textContent = '';
    app.appendChild(form);
    input.focus();
  }

  function signOut(message) {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing kept */ }
    stopTimer();
    signInPage(message);
  }

  function stopTimer() { if (timer) { clearTimeout(timer); timer = null; } }

  // ---- overview ----

  function card(id, title, big, alert, rows) {
    var dl = el('dl');
    (rows || []).forEach(function (r) { dl.appendChild(el('dt', null, r[0])); dl.appendChild(el('dd', { id: r[2] }, r[1])); });
    return el('section', { class: 'card ' + (alert ? 'alert' : 'ok'), id: id, 'data-alert': alert ? 'true' : 'false' },
      el('h3', null, title), el('div', { class: 'big', id: id + '-value' }, big), dl);
  }

  // chart draws one series as an SVG line over the window, scaled to its
  // maximum.
  function chart(id, title, points, key, seconds) {
    var w = 360, h = 90, n = points.length;
    var maxV = 0;
    points.forEach(function (p) { if (p[key] > maxV) maxV = p[key]; });
    var top = maxV > 0 ? maxV * 1.1 : 1;
    var s = svg('svg', { viewBox: '0 0 ' + w + ' ' + h, preserveAspectRatio: 'none', role: 'img', 'aria-label': title });
    [0.25, 0.5, 0.75].forEach(function (f) { s.appendChild(svg('line', { class: 'grid', x1: 0, x2: w, y1: h * f, y2: h * f })); });
    if (n > 0) {
      var t0 = new Date(points[0].at).getTime(), t1 = new Date(points[n - 1].at).getTime();
      var span = Math.max(t1 - t0, 1);
      var pts = points.map(function (p, i) {
        var x = n === 1 ? w : ((new Date(p.at).getTime() - t0) / span) * w;
        var y = h - (p[key] / top) * (h - 4) - 2;
        return x.toFixed(1) + ',' + y.toFixed(1);
      });
      s.appendChild(svg('polygon', { class: 'area', points: '0,' + h + ' ' + pts.join(' ') + ' ' + w + ',' + h }));
      s.appendChild(svg('polyline', { class: 'line', points: pts.join(' ') }));
    }
    var last = n > 0 ? points[n - 1][key] : null;
    var spanS = n > 1 ? (new Date(points[n - 1].at) - new Date(points[0].at)) / 1000 : 0;
    return el('section', { class: 'chart', id: id },
      el('div', { class: 'head' }, el('b', null, title), el('span', { class: 'now', id: id + '-now' }, rate(last))),
      s,
      el('div', { class: 'axis' }, el('span', null, n > 1 ? age(spanS) + ' ago' : 'sampling…'), el('span', null, 'peak ' + rate(maxV)), el('span', null, 'now')));
  }

  function renderOverview(v, at) {
    // A figure of -1 could not be read: that needs a person too.
    var needs = (v.problems || []).slice();
    var oldest = v.claims.oldest_seconds;
    var claimsAlert = v.claims.waiting < 0 || (v.claims.waiting > 0 && oldest > OLDEST_CLAIM_ALERT_S);
    if (claimsAlert && v.claims.waiting > 0) needs.push('claims have waited ' + age(oldest) + ' for credit');
    var deadAlert = v.dead_letters.not_redriven !== 0;
    if (v.dead_letters.not_redriven > 0) needs.push(count(v.dead_letters.not_redriven) + ' dead letter(s) not re-driven');
    var txAlert = v.transactions.in_recovery !== 0 || v.transactions.stuck !== 0;
    if (txAlert && v.transactions.pending >= 0) needs.push(count(v.transactions.in_recovery) + ' global transaction(s) in recovery, ' + count(v.transactions.stuck) + ' stuck over 5 min');
    var hookAlert = v.deliveries.given_up !== 0;
    if (v.deliveries.given_up > 0) needs.push(count(v.deliveries.given_up) + ' webhook deliveries given up');
    var orderAlert = v.orders.unknown !== 0;
    if (v.orders.unknown > 0) needs.push(count(v.orders.unknown) + ' payment order(s) in an unknown state');
    var rc = v.recon;
    var reconAlert = !!rc && !rc.sound;
    if (reconAlert) needs.push('the last reconciliation (' + rc.day + ') is not sound: ' + rc.unresolved + ' unresolved');

    var banner = needs.length === 0
      ? el('div', { class: 'banner ok', id: 'status' }, 'All clear: nothing needs a person.')
      : el('div', { class: 'banner bad', id: 'status' }, needs.length + (needs.length === 1 ? ' thing needs' : ' things need') + ' a person',
        el('ul', null, needs.map(function (t) { return el('li', null, t); })));

    var cards = el('div', { class: 'cards' },
      card('ov-claims', 'Claims waiting for credit', count(v.claims.waiting), claimsAlert,
        [['oldest', v.claims.waiting > 0 ? age(oldest) : '–', 'ov-claims-oldest']]),
      card('ov-dead', 'Dead letters', count(v.dead_letters.not_redriven), deadAlert,
        [['not re-driven', count(v.dead_letters.not_redriven), 'ov-dead-open'], ['total kept', count(v.dead_letters.total), 'ov-dead-total']]),
      card('ov-tx', 'Global transactions', count(v.transactions.pending), txAlert,
        [['pending', count(v.transactions.pending), 'ov-tx-pending'], ['in recovery', count(v.transactions.in_recovery), 'ov-tx-recovery'],
          ['stuck > 5 min', count(v.transactions.stuck), 'ov-tx-stuck']]),
      card('ov-hooks', 'Webhook deliveries', count(v.deliveries.pending), hookAlert,
        [['pending', count(v.deliveries.pending), 'ov-hooks-pending'], ['given up', count(v.deliveries.given_up), 'ov-hooks-givenup']]),
      card('ov-orders', 'Payment orders unknown', count(v.orders.unknown), orderAlert, [['state unknown', count(v.orders.unknown), 'ov-orders-unknown']]),
      card('ov-recon', 'Last reconciliation', rc ? (rc.sound ? 'sound' : 'NOT sound') : 'none yet', reconAlert,
        rc ? [['day', rc.day, 'ov-recon-day'], ['ran', utc(rc.ran_at), 'ov-recon-at'], ['unresolved', count(rc.unresolved), 'ov-recon-unresolved']] : []));

    var rates = v.rates || [];
    var charts = el('div', { class: 'charts' },
      chart('chart-grabs', 'Grabs', rates, 'grabs'),
      chart('chart-sends', 'Packets sent', rates, 'sends'),
      chart('chart-transfers', 'Transfers', rates, 'transfers'));

    page('Overview', banner, cards, el('h2', null, 'Per second over the last ' + age(rates.length * (v.sample_seconds || 2)) + ' (one point every ' + (v.sample_seconds || 2) + ' s)'), charts,
      el('p', { class: 'note', id: 'ov-updated' }, 'Figures as of ' + utc(v.at) + '; refreshed every ' + REFRESH_MS / 1000 + ' s (last fetch ' + hms(at) + ').'));
  }

  function overview(my) {
    stopTimer();
    api('GET', '/v1/admin/overview').then(function (v) {
      if (my !== view) return;
      renderOverview(v, new Date());
      timer = setTimeout(function () { if (my === view) overview(my); }, REFRESH_MS);
    }, function (err) {
      if (my !== view) return;
      if (!token()) return;
      page('Overview', errorBox(err), el('p', { class: 'note' }, 'Trying again in ' + REFRESH_MS / 1000 + ' s.'));
      timer = setTimeout(function () { if (my === view) overview(my); }, REFRESH_MS);
    });
  }

  // ---- transactions ----

  var STATES = ['', 'trying', 'confirming', 'cancelling', 'committed', 'cancelled'];

  function select(id, values, current) {
    var s = el('select', { id: id, name: id });
    values.forEach(function (v) { var o = el('option', { value: v }, v || 'any'); if (v === current) o.selected = true; s.appendChild(o); });
    return s;
  }

  function params(q) {
    var out = {};
    (q || '').split('&').forEach(function (kvs) {
      if (!kvs) return;
      var i = kvs.indexOf('=');
      var k = decodeURIComponent(i < 0 ? kvs : kvs.slice(0, i)), v = i < 0 ? '' : decodeURIComponent(kvs.slice(i + 1));
      out[k] = v;
    });
    return out;
  }

  function query(o) {
    return Object.keys(o).filter(function (k) { return o[k] !== '' && o[k] !== undefined && o[k] !== null && o[k] !== false; })
      .map(function (k) { return enc(k) + '=' + enc(o[k]); }).join('&');
  }

  function transactions(my, q) {
    var f = params(q);
    var state = select('f-state', STATES, f.state || '');
    var kind = select('f-kind', ['', 'tcc', 'saga'], f.kind || '');
    var unfinished = el('input', { id: 'f-unfinished', type: 'checkbox' });
    unfinished.checked = f.unfinished === 'true';
    var older = el('input', { id: 'f-older', type: 'number', min: '0', step: '1', value: f.older_than_seconds || '', placeholder: 'seconds' });
    var form = el('form', { class: 'bar', id: 'tx-filter' },
      el('label', null, 'state', state), el('label', null, 'kind', kind),
      el('label', null, 'older than (s)', older), el('label', null, 'unfinished only', unfinished),
      el('button', { type: 'submit', class: 'primary', id: 'tx-apply' }, 'Apply'));
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      location.hash = '#/transactions?' + query({ state: state.value, kind: kind.value, unfinished: unfinished.checked ? 'true' : '', older_than_seconds: older.value });
    });
    var body = el('div', { id: 'tx-list' }, 'Loading…');
    page('Global transactions', form, body);
    var apiQ = query({ state: f.state, kind: f.kind, unfinished: f.unfinished, older_than_seconds: f.older_than_seconds, cursor: f.cursor, limit: 50 });
    api('GET', '/v1/admin/transactions?' + apiQ).then(function (r) {
      if (my !== view) return;
      body.textContent = '';
      var rows = r.transactions.map(function (g) {
        var bad = !isFinal(g.state) && g.attempts > 0;
        return el('tr', { class: bad ? 'bad' : '', 'data-gid': g.gid },
          td(el('a', { href: '#/transactions/' + enc(g.gid) }, g.gid), 'mono'), td(g.kind), td(tag(g.state, stateGood(g.state))),
          td(count(g.attempts), 'num'), td(utc(g.created_at), 'num'), td(since(g.created_at), 'num'),
          td(isFinal(g.state) ? '' : utc(g.next_attempt), 'num'), td(g.last_error || '', 'mono'));
      });
      body.appendChild(rows.length ? table(['gid', 'kind', 'state', ['attempts', 'num'], ['created', 'num'], ['age', 'num'], ['next attempt', 'num'], 'last error'], rows, 'tx-table')
        : el('p', { id: 'tx-empty' }, 'No global transaction matches.'));
      if (r.next) {
        f.cursor = r.next;
        body.appendChild(el('div', { class: 'pager' }, el('a', { href: '#/transactions?' + query(f), id: 'tx-older' }, 'Older →')));
      }
    }, function (err) { if (my === view) { body.textContent = ''; body.appendChild(errorBox(err)); } });
  }

  function isFinal(s) { return s === 'committed' || s === 'cancelled'; }
  function stateGood(s) { return s === 'committed' ? true : (s === 'cancelled' ? undefined : false); }

  function transaction(my, gid) {
    var body = el('div', { id: 'tx-detail' }, 'Loading…');
    var msg = el('div', { id: 'tx-message' });
    page('Global transaction', msg, body);
    function show(g) {
      body.textContent = '';
      var retry = null;
      if (!isFinal(g.state)) {
        retry = el('button', { class: 'primary', id: 'retry-now', type: 'button' }, 'Retry now');
        retry.addEventListener('click', function () {
          retry.disabled = true;
          msg.textContent = '';
          api('POST', '/v1/admin/transactions/' + enc(gid) + '/retry').then(function (after) {
            if (my !== view) return;
            msg.appendChild(el('div', { class: 'banner ' + (isFinal(after.state) ? 'ok' : 'bad'), id: 'retry-result' },
              'Retried: the transaction is now ' + after.state + (isFinal(after.state) ? '.' : ' (next attempt ' + utc(after.next_attempt) + ').')));
            show(after);
          }, function (err) { retry.disabled = false; msg.appendChild(errorBox(err)); });
        });
      }
      body.appendChild(kv([
        ['gid', g.gid, 'mono'], ['kind', g.kind], ['state', tag(g.state, stateGood(g.state))],
        ['reason', g.reason || '–'], ['attempts', count(g.attempts)], ['last error', g.last_error || '–', 'mono'],
        ['created', utc(g.created_at) + ' (' + since(g.created_at) + ' ago)'], ['updated', utc(g.updated_at)],
        isFinal(g.state) ? ['finished', utc(g.finished_at)] : ['next attempt', utc(g.next_attempt)],
        ['owner', g.owner || '–', 'mono']], 'tx-fields'));
      if (retry) body.appendChild(el('p', null, retry, ' ', el('span', { class: 'note' }, 'Drives it now, the way recovery does (safe: every branch call is idempotent).')));
      body.appendChild(el('h2', null, 'Branches'));
      body.appendChild(table(['#', 'participant', 'step', 'payload'], (g.branches || []).map(function (b, i) {
        return el('tr', null, td(String(i + 1), 'num'), td(b.participant, 'mono'), td(b.retryable ? 'retryable' : 'compensable/TCC'),
          td(el('pre', null, JSON.stringify(b.payload)), 'mono'));
      }), 'tx-branches'));
    }
    api('GET', '/v1/admin/transactions/' + enc(gid)).then(function (g) { if (my === view) show(g); },
      function (err) { if (my === view) { body.textContent = ''; body.appendChild(errorBox(err)); } });
  }

  // ---- packets ----

  function lookupForm(id, label, value, placeholder, go) {
    var input = el('input', { id: id, value: value || '', placeholder: placeholder, inputmode: 'numeric', autocomplete: 'off' });
    var form = el('form', { class: 'bar', id: id + '-form' }, el('label', null, label, input), el('button', { type: 'submit', class: 'primary', id: id + '-go' }, 'Look up'));
    form.addEventListener('submit', function (ev) { ev.preventDefault(); go(input.value.trim()); });
    return form;
  }

  function packets(my, id) {
    var body = el('div', { id: 'packet' });
    page('Packets', lookupForm('packet-id', 'packet id', id, 'e.g. 7405168293051392', function (v) { location.hash = '#/packets/' + enc(v); }), body);
    if (!id) { body.appendChild(el('p', { class: 'note' }, 'Look a packet up by its id: its shares, claims (credited or pending), best luck and refund.')); return; }
    body.textContent = 'Loading…';
    api('GET', '/v1/packets/' + enc(id)).then(function (d) {
      if (my !== view) return;
      body.textContent = '';
      var p = d.packet;
      var credited = 0, pending = 0;
      (d.claims || []).forEach(function (c) { if (c.credited) credited++; else pending++; });
      body.appendChild(kv([
        ['id', p.id, 'mono'], ['kind', p.kind], ['state', tag(p.state, p.state === 'finished' || p.state === 'active' ? true : undefined)],
        ['sender', 'user ' + p.sender],
        p.kind === 'single' ? ['receiver', 'user ' + p.receiver] : ['group', 'group ' + p.group],
        ['amount', yuan(p.amount), 'num'], ['shares', count(p.shares) + ' (' + count(p.remaining_count) + ' left)'],
        ['remaining', yuan(p.remaining_amount), 'num'], ['refunded', yuan(p.refunded), 'num'],
        ['greeting', p.greeting || '–'], ['created', utc(p.created_at)], ['expires', utc(p.expires_at)],
        ['best luck', d.best_luck ? 'user ' + d.best_luck.user + ' with ' + yuan(d.best_luck.amount) : '–'],
        ['claims', count(credited) + ' credited, ' + count(pending) + ' pending']], 'packet-fields'));
      body.appendChild(el('h2', null, 'Claims'));
      var rows = (d.claims || []).map(function (c) {
        var best = d.best_luck && d.best_luck.id === c.id;
        return el('tr', { 'data-claim': c.id, class: c.credited ? '' : 'pending' }, td(count(c.seq), 'num'), td(el('a', { href: '#/wallets/' + c.user }, 'user ' + c.user)),
          td(yuan(c.amount), 'num'), td(utc(c.at), 'num'), td(c.credited ? tag('credited', true) : tag('pending', false)), td(best ? 'best luck' : ''), td(c.id, 'mono'));
      });
      body.appendChild(rows.length ? table([['#', 'num'], 'user', ['amount', 'num'], ['at', 'num'], 'credit', '', 'claim id'], rows, 'claims-table') : el('p', null, 'No claims yet.'));
    }, function (err) { if (my === view) { body.textContent = ''; body.appendChild(errorBox(err)); } });
  }

  // ---- wallets ----

  function wallets(my, user, q) {
    var f = params(q);
    var body = el('div', { id: 'wallet' });
    page('Wallets', lookupForm('wallet-user', 'user id', user, 'e.g. 1001', function (v) { location.hash = '#/wallets/' + enc(v); }), body);
    if (!user) { body.appendChild(el('p', { class: 'note' }, 'A user\u2019s balance, what is held, and the statement, newest first.')); return; }
    body.textContent = 'Loading…';
    var u = enc(user);
    Promise.all([api('GET', '/v1/admin/wallets/' + u), api('GET', '/v1/admin/wallets/' + u + '/statement?' + query({ cursor: f.cursor, limit: 20 }))]).then(function (rs) {
      if (my !== view) return;
      var w = rs[0], st = rs[1];
      body.textContent = '';
      body.appendChild(kv([['user', 'user ' + w.user], ['balance', yuan(w.balance), 'num'], ['held', yuan(w.held), 'num'],
        ['available', yuan(w.available), 'num'], ['incoming', yuan(w.incoming || '0.00'), 'num']], 'wallet-fields'));
      body.appendChild(el('h2', null, 'Statement'));
      var rows = (st.entries || []).map(function (e) {
        return el('tr', null, td(utc(e.at), 'num'), td(e.description), td(e.kind), td(e.counterparty), td(yuan(e.amount), 'num'), td(yuan(e.balance), 'num'),
          td(e.shard + '/' + e.posting_id, 'num'));
      });
      body.appendChild(rows.length ? table([['at', 'num'], 'what', 'kind', 'counterparty', ['amount', 'num'], ['balance after', 'num'], ['shard/posting', 'num']], rows, 'statement-table')
        : el('p', null, 'No entries.'));
      var pager = el('div', { class: 'pager' });
      if (f.cursor) pager.appendChild(el('a', { href: '#/wallets/' + u, id: 'statement-newest' }, '← Newest'));
      if (st.next) pager.appendChild(el('a', { href: '#/wallets/' + u + '?' + query({ cursor: st.next }), id: 'statement-older' }, 'Older →'));
      if (st.archived_before) pager.appendChild(el('span', { class: 'note' }, 'Days before ' + st.archived_before + ' are archived.'));
      body.appendChild(pager);
    }, function (err) { if (my === view) { body.textContent = ''; body.appendChild(errorBox(err)); } });
  }

  // ---- reconciliation ----

  function recon(my, q) {
    var f = params(q);
    var body = el('div', { id: 'recon' }, 'Loading…');
    page('Reconciliation reports', body);
    api('GET', '/v1/admin/recon?' + query({ cursor: f.cursor, limit: 50 })).then(function (r) {
      if (my !== view) return;
      body.textContent = '';
      var rows = r.reports.map(function (s) {
        return el('tr', { class: s.sound ? '' : 'bad' }, td(el('a', { href: '#/recon/' + enc(s.day) }, s.day)), td(utc(s.ran_at), 'num'),
          td(s.sound ? tag('sound', true) : tag('not sound', false)), td(count(s.unresolved), 'num'), td(s.id, 'mono'));
      });
      body.appendChild(rows.length ? table(['day', ['ran at', 'num'], 'verdict', ['unresolved', 'num'], 'report id'], rows, 'recon-table')
        : el('p', null, 'No reconciliation has run yet (hongbao recon --date YYYY-MM-DD, or the daily schedule).'));
      if (r.next) body.appendChild(el('div', { class: 'pager' }, el('a', { href: '#/recon?' + query({ cursor: r.next }) }, 'Older →')));
    }, function (err) { if (my === view) { body.textContent = ''; body.appendChild(errorBox(err)); } });
  }

  function reconDay(my, day) {
    var body = el('div', { id: 'recon-detail' }, 'Loading…');
    page('Reconciliation of ' + day, body);
    api('GET', '/v1/admin/recon/' + enc(day)).then(function (rep) {
      if (my !== view) return;
      body.textContent = '';
      body.appendChild(kv([['day', rep.day], ['ran at', utc(rep.ran_at)], ['verdict', rep.sound ? tag('sound', true) : tag('not sound', false)],
        ['repaired', count(rep.repaired)], ['unresolved', count(rep.unresolved)],
        ['channel', count(rep.channel.pays) + ' pays ' + yuan(rep.channel.paid) + ', ' + count(rep.channel.payouts) + ' payouts ' + yuan(rep.channel.paid_out)],
        ['ours', count(rep.ours.pays) + ' pays ' + yuan(rep.ours.paid) + ', ' + count(rep.ours.payouts) + ' payouts ' + yuan(rep.ours.paid_out)]], 'recon-fields'));
      body.appendChild(el('h2', null, 'Checks'));
      body.appendChild(table(['check', 'result', 'detail'], (rep.checks || []).map(function (c) {
        return el('tr', { class: c.ok || c.skipped ? '' : 'bad' }, td(c.name), td(c.skipped ? tag('skipped') : c.ok ? tag('ok', true) : tag('failed', false)),
          td((c.detail || []).join('; ')));
      }), 'recon-checks'));
      body.appendChild(el('h2', null, 'Differences'));
      var diffs = (rep.differences || []).map(function (d) {
        return el('tr', { class: d.repaired || d.resolved ? '' : 'bad' }, td(d.kind), td(d.order, 'mono'), td(d.user ? 'user ' + d.user : ''), td(yuan(d.amount), 'num'),
          td(d.ours), td(d.channel), td(d.repaired ? 'repaired' : d.resolved ? 'resolved: ' + (d.note || '') : 'open'));
      });
      body.appendChild(diffs.length ? table(['kind', 'order', 'user', ['amount', 'num'], 'ours', 'channel', 'state'], diffs, 'recon-diffs') : el('p', null, 'No differences.'));
    }, function (err) { if (my === view) { body.textContent = ''; body.appendChild(errorBox(err)); } });
  }

  // ---- dead letters ----

  function deadSummary(d) {
    if (d.credits && d.credits.length) {
      var c = d.credits[0];
      var s = d.credits.length + (d.credits.length === 1 ? ' credit: ' : ' credits, first: ') + c.kind + ' of ' + yuan(c.amount) + ' to user ' + c.user + ' (' + c.key + ')';
      return s;
    }
    return 'not a credit batch: ' + (d.payload || '').slice(0, 120);
  }

  function deadLetters(my, q) {
    var f = params(q);
    var body = el('div', { id: 'dead' }, 'Loading…');
    page('Dead letters', el('p', { class: 'note' }, 'Messages a consumer could never apply, parked on a dead-letter subject. A re-drive publishes one back to its subject; the ledger applies a credit at most once however often it is re-driven.'), body);
    api('GET', '/v1/admin/dead-letters?' + query({ cursor: f.cursor, limit: 50 })).then(function (r) {
      if (my !== view) return;
      body.textContent = '';
      var rows = r.dead_letters.map(function (d) {
        return el('tr', { class: d.redriven ? '' : 'bad', 'data-seq': d.seq }, td(el('a', { href: '#/dead-letters/' + d.seq }, String(d.seq)), 'num'), td(utc(d.at), 'num'),
          td(d.subject, 'mono'), td(deadSummary(d)), td(d.redriven ? tag('re-driven ×' + d.redriven, true) : tag('parked', false)));
      });
      body.appendChild(rows.length ? table([['seq', 'num'], ['parked at', 'num'], 'subject', 'what it carries', 'state'], rows, 'dead-table')
        : el('p', { id: 'dead-empty' }, 'No dead letters.'));
      if (r.next) body.appendChild(el('div', { class: 'pager' }, el('a', { href: '#/dead-letters?' + query({ cursor: r.next }) }, 'Later →')));
    }, function (err) { if (my === view) { body.textContent = ''; body.appendChild(errorBox(err)); } });
  }

  function deadLetter(my, seq) {
    var body = el('div', { id: 'dead-detail' }, 'Loading…');
    var msg = el('div', { id: 'dead-message' });
    page('Dead letter ' + seq, msg, body);
    function show(d) {
      body.textContent = '';
      var btn = el('button', { class: 'primary', id: 'redrive', type: 'button' }, d.redriven ? 'Re-drive again' : 'Re-drive');
      btn.addEventListener('click', function () {
        btn.disabled = true;
        msg.textContent = '';
        api('POST', '/v1/admin/dead-letters/' + enc(seq) + '/redrive').then(function (after) {
          if (my !== view) return;
          msg.appendChild(el('div', { class: 'banner ok', id: 'redrive-result' }, 'Re-driven to ' + after.origin + ' (' + after.redriven + ' time(s) so far).'));
          show(after);
        }, function (err) { btn.disabled = false; msg.appendChild(errorBox(err)); });
      });
      body.appendChild(kv([['sequence', String(d.seq)], ['parked on', d.subject, 'mono'], ['came from', d.origin, 'mono'], ['parked at', utc(d.at)],
        ['size', count(d.size) + ' bytes'], ['re-driven', d.redriven ? count(d.redriven) + ' time(s), last ' + utc(d.redriven_at) : 'never']], 'dead-fields'));
      body.appendChild(el('p', null, btn));
      if (d.credits && d.credits.length) {
        body.appendChild(el('h2', null, 'Credits'));
        body.appendChild(table(['key', 'kind', 'user', ['amount', 'num'], 'from'], d.credits.map(function (c) {
          return el('tr', null, td(c.key, 'mono'), td(c.kind), td(el('a', { href: '#/wallets/' + c.user }, 'user ' + c.user)), td(yuan(c.amount), 'num'), td(c.from, 'mono'));
        }), 'dead-credits'));
      } else {
        body.appendChild(el('h2', null, 'Payload (as text)'));
        body.appendChild(el('pre', { class: 'mono', id: 'dead-payload' }, d.payload || ''));
      }
    }
    api('GET', '/v1/admin/dead-letters/' + enc(seq)).then(function (d) { if (my === view) show(d); },
      function (err) { if (my === view) { body.textContent = ''; body.appendChild(errorBox(err)); } });
  }

  // ---- routing ----

  function route() {
    stopTimer();
    var my = ++view;
    if (!token()) { signInPage(); return; }
    nav.hidden = false; signoutBtn.hidden = false;
    var h = location.hash.replace(/^#\/?/, '');
    var q = '';
    var qi = h.indexOf('?');
    if (qi >= 0) { q = h.slice(qi + 1); h = h.slice(0, qi); }
    var parts = h.split('/').map(function (p) { try { return decodeURIComponent(p); } catch (e) { return p; } });
    var name = parts[0] || 'overview';
    Array.prototype.forEach.call(nav.querySelectorAll('a'), function (a) { a.className = a.getAttribute('data-route') === name ? 'active' : ''; });
    var arg = parts.slice(1).join('/');
    switch (name) {
      case 'overview': return overview(my);
      case 'transactions': return arg ? transaction(my, arg) : transactions(my, q);
      case 'packets': return packets(my, arg);
      case 'wallets': return wallets(my, arg, q);
      case 'recon': return arg ? reconDay(my, arg) : recon(my, q);
      case 'dead-letters': return arg ? deadLetter(my, arg) : deadLetters(my, q);
    }
    page('Not found', el('p', null, 'No such page. '), el('a', { href: '#/overview' }, 'Go to the overview'));
  }

  function tick() {
    var c = document.getElementById('clock');
    if (c) c.textContent = hms(new Date());
  }

  window.HB = { yuan: yuan, yuanFromFen: yuanFromFen, utc: utc, age: age, count: count, clean: clean };

  // A blocked resource or script would fail silently: say so (the browser
  // tests fail on any console error).
  document.addEventListener('securitypolicyviolation', function (e) {
    console.error('Content-Security-Policy blocked ' + e.blockedURI + ' (' + e.violatedDirective + ')');
  });

  document.addEventListener('DOMContentLoaded', function () {
    app = document.getElementById('app');
    nav = document.getElementById('nav');
    signoutBtn = document.getElementById('signout');
    signoutBtn.addEventListener('click', function () { signOut(); });
    window.addEventListener('hashchange', route);
    tick();
    setInterval(tick, 1000);
    route();
  });
})();
