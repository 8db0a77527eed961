/*
 * dmp-faust live dashboard: fetches GET dashboard/summary every 5 s and draws it.
 *
 * Plain JavaScript (ES2017), no build step, nothing loaded from outside the
 * worker. Charts: uPlot 1.6.32 (MIT licence, vendor/uPlot.LICENSE), vendored
 * from the npm package "uplot" as vendor/uPlot.iife.min.js and
 * vendor/uPlot.min.css, served as static/vendor/uPlot.iife.min.js and
 * static/vendor/uPlot.min.css.
 *
 * Everything that comes from the summary (campaign ids, segment names,
 * reasons, URLs) reaches the page through textContent or setAttribute only:
 * this file never assigns innerHTML.
 *
 * Every figure carries data-field (what it is) and data-value (the exact
 * number of the JSON, "null" when absent); per-item figures also carry
 * data-campaign, data-segment, data-reason, data-worker, data-stage or
 * data-source. <body> carries data-state (loading|live|stale|error) and
 * data-refreshes (successful fetches so far).
 */
(function () {
  'use strict';

  const SUMMARY_URL = 'dashboard/summary';
  const REFRESH_MS = 5000;
  const TIMEOUT_MS = 4500;
  const STALE_AFTER_MS = 3 * REFRESH_MS + 1000;
  const CHART_HEIGHT = 190;
  const MINUTE_S = 60;

  const STAGES = [
    ['validate_events', 'valid.'],
    ['deduplicate_events', 'dedup'],
    ['count_campaign_stats', 'camp.'],
    ['build_profiles', 'prof.'],
    ['count_segment_sizes', 'segm.'],
    ['read_history', 'hist.'],
  ];

  const COLOURS = {
    axis: '#8d99a8',
    grid: 'rgba(141, 153, 168, 0.14)',
    impressions: '#58a6ff',
    impressionsFill: 'rgba(88, 166, 255, 0.16)',
    clicks: '#f0a742',
    ctr: '#c297ff',
    critical: 'rgba(248, 81, 73, 0.42)',
    criticalAfter: 'rgba(248, 81, 73, 0.10)',
    criticalLine: '#f85149',
    warning: 'rgba(210, 153, 34, 0.40)',
    warningAfter: 'rgba(210, 153, 34, 0.10)',
    warningLine: '#d29922',
  };

  // ---- formatting ---------------------------------------------------------

  const NF0 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const NF1 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const NF2 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const DASH = '—';

  function isNum(v) {
    return typeof v === 'number' && Number.isFinite(v);
  }
  function fmtInt(v) {
    return isNum(v) ? NF0.format(v) : DASH;
  }
  function fmtRate(v) {
    if (!isNum(v)) return DASH;
    return v >= 1000 ? NF0.format(v) : NF1.format(v);
  }
  function fmtPct(ratio) {
    return isNum(ratio) ? NF2.format(ratio * 100) + ' %' : DASH;
  }
  function fmtMoney(v) {
    return isNum(v) ? NF2.format(v) : DASH;
  }
  function fmtRho(v) {
    return isNum(v) ? v.toFixed(2) : DASH;
  }
  function fmtSeconds(s) {
    if (!isNum(s)) return DASH;
    if (s < 1e-3) return (s * 1e6).toFixed(0) + ' µs';
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : s < 0.1 ? 1 : 0) + ' ms';
    if (s < 60) return s.toFixed(2) + ' s';
    if (s < 3600) return (s / 60).toFixed(1) + ' min';
    if (s < 86400) return (s / 3600).toFixed(1) + ' h';
    return NF1.format(s / 86400) + ' d';
  }
  function fmtP(p) {
    if (!isNum(p)) return DASH;
    return p < 0.001 ? p.toExponential(1) : p.toFixed(3);
  }
  function fmtObserved(metric, v) {
    if (!isNum(v)) return DASH;
    if (metric === 'ctr') return fmtPct(v);
    if (metric === 'capacity') return v.toFixed(2);
    return Number.isInteger(v) ? NF0.format(v) : NF1.format(v);
  }
  function pad2(n) {
    return String(n).padStart(2, '0');
  }
  function localClock(date) {
    return pad2(date.getHours()) + ':' + pad2(date.getMinutes()) + ':' + pad2(date.getSeconds());
  }
  /** "2021-03-01T12:34:56Z" -> {date: "2021-03-01", time: "12:34:56", hm: "12:34"} (UTC). */
  function utcParts(text) {
    const ms = typeof text === 'string' ? Date.parse(text) : NaN;
    if (!Number.isFinite(ms)) return null;
    const iso = new Date(ms).toISOString();
    return { date: iso.slice(0, 10), time: iso.slice(11, 19), hm: iso.slice(11, 16) };
  }
  function fmtUtcTime(text) {
    const p = utcParts(text);
    return p ? p.time + 'Z' : DASH;
  }
  function fmtUtcMinute(text, sameDayAs) {
    const p = utcParts(text);
    if (!p) return DASH;
    const ref = utcParts(sameDayAs);
    return (ref && ref.date === p.date ? '' : p.date + ' ') + p.hm + 'Z';
  }
  /** "2021-03-01 11:34–12:34 UTC" (the date of the end too when it differs). */
  function fmtRange(from, to) {
    const a = utcParts(from);
    const b = utcParts(to);
    if (!a || !b) return DASH;
    return a.date + ' ' + a.hm + '–' + (a.date === b.date ? '' : b.date + ' ') + b.hm + ' UTC';
  }
  function fmtPartitions(list) {
    if (!Array.isArray(list) || list.length === 0) return DASH;
    const sorted = list.slice().sort((a, b) => a - b);
    const runs = [];
    let start = sorted[0];
    let prev = sorted[0];
    for (const p of sorted.slice(1).concat([null])) {
      if (p !== null && p === prev + 1) {
        prev = p;
        continue;
      }
      runs.push(start === prev ? String(start) : start + '–' + prev);
      start = prev = p;
    }
    return runs.join(', ');
  }
  function dataValue(v) {
    if (v === null || v === undefined) return 'null';
    if (typeof v === 'number' && !Number.isFinite(v)) return 'null';
    return String(v);
  }

  // ---- DOM helpers (text only: never innerHTML) ----------------------------

  function el(tag, attrs) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const key of Object.keys(attrs)) {
        const v = attrs[key];
        if (v === undefined || v === null || v === false) continue;
        if (key === 'class') node.className = v;
        else if (key === 'text') node.textContent = String(v);
        else node.setAttribute(key, v === true ? '' : String(v));
      }
    }
    for (let i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }
  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach((c) => append(node, c));
    else node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  /** A figure: its text formatted, its exact value in data-value. */
  function figure(tag, field, value, text, extra) {
    return el(tag, Object.assign({ 'data-field': field, 'data-value': dataValue(value), text: text }, extra || {}));
  }
  function setFigure(node, value, text) {
    node.setAttribute('data-value', dataValue(value));
    node.textContent = text;
  }
  function byField(field, root) {
    return (root || document).querySelector('[data-field="' + field + '"]');
  }
  function num(v) {
    return isNum(v) ? v : 0;
  }

  // ---- state ------------------------------------------------------------------

  const state = {
    last: null, // the last summary drawn
    lastOk: null, // Date of the last successful fetch
    error: null, // text of the last failure, null after a success
    refreshes: 0,
    cards: new Map(), // campaign id -> card
  };

  // ---- header, connection, banner ----------------------------------------------

  function renderHeader(s) {
    const workers = Array.isArray(s.workers) ? s.workers : [];
    const ok = workers.filter((w) => w && w.status === 'ok').length;
    setFigure(byField('cluster-workers-ok'), ok, fmtInt(ok));
    setFigure(byField('cluster-workers-total'), workers.length, fmtInt(workers.length));
    const tileWorkers = document.getElementById('tile-workers');
    tileWorkers.className = 'tile ' + (workers.length && ok === workers.length ? 'ok' : ok ? 'warn' : 'bad');

    setFigure(byField('throughput'), s.throughput, fmtRate(s.throughput));
    const acc = s.accounting || {};
    setFigure(byField('cluster-accepted'), acc.accepted, fmtInt(acc.accepted));
    setFigure(byField('alerts-open'), s.alerts_open, fmtInt(s.alerts_open));
    document.getElementById('tile-alerts').className = 'tile ' + (num(s.alerts_open) > 0 ? 'bad' : 'ok');
    const generated = byField('generated-at');
    const g = utcParts(s.generated_at);
    setFigure(generated, s.generated_at, g ? g.date + ' ' + g.time + 'Z' : DASH);
  }

  function renderConnection() {
    const now = Date.now();
    const age = state.lastOk ? Math.round((now - state.lastOk.getTime()) / 1000) : null;
    let mode;
    if (state.error) mode = 'error';
    else if (!state.lastOk) mode = 'loading';
    else if (now - state.lastOk.getTime() > STALE_AFTER_MS) mode = 'stale';
    else mode = 'live';

    const box = document.querySelector('[data-testid="connection"]');
    box.setAttribute('data-state', mode);
    document.body.setAttribute('data-state', mode);
    const text = byField('connection-text');
    if (mode === 'live') text.textContent = 'live';
    else if (mode === 'loading') text.textContent = 'connecting…';
    else if (mode === 'stale') text.textContent = 'stale · ' + age + ' s';
    else text.textContent = 'error';

    const updated = byField('updated-at');
    if (state.lastOk) {
      setFigure(updated, state.lastOk.getTime(), localClock(state.lastOk) + (mode === 'live' ? '' : ' (' + age + ' s ago)'));
    }

    const banner = document.getElementById('banner');
    if (mode === 'error' || mode === 'stale') {
      const shown = state.lastOk
        ? 'Showing the data of ' + localClock(state.lastOk) + ' (' + age + ' s old).'
        : 'No data yet.';
      const why = mode === 'error'
        ? 'Could not refresh the summary: ' + state.error + '.'
        : 'No answer from the summary for ' + age + ' s.';
      banner.textContent = why + ' ' + shown + ' Retrying every ' + REFRESH_MS / 1000 + ' s.';
      banner.className = 'banner' + (mode === 'stale' ? ' stale' : '');
      banner.setAttribute('data-state', mode);
      banner.hidden = false;
    } else {
      banner.hidden = true;
      banner.removeAttribute('data-state');
      banner.textContent = '';
    }
  }

  // ---- accounting ------------------------------------------------------------------

  function renderAccounting(s) {
    const acc = s.accounting || {};
    for (const key of ['received', 'invalid', 'duplicate', 'bot', 'accepted']) {
      setFigure(byField('accounting-' + key), acc[key], fmtInt(acc[key]));
    }
    const sources = document.getElementById('sources');
    const bySource = acc.received_by_source || {};
    const names = ['kafka', 'http', 'replay'].concat(Object.keys(bySource).filter((k) => !['kafka', 'http', 'replay'].includes(k)).sort());
    sources.replaceChildren(
      el('span', { class: 'src', text: 'received by source:' }),
      ...names.map((name) =>
        el('span', { class: 'src' }, name + ' ',
          figure('b', 'accounting-received-by-source', bySource[name], fmtInt(num(bySource[name])), { 'data-source': name })))
    );

    renderShares(acc);

    const check = document.getElementById('identity-check');
    const parts = ['received', 'invalid', 'duplicate', 'bot', 'accepted'];
    if (parts.every((k) => isNum(acc[k]))) {
      const diff = acc.received - (acc.invalid + acc.duplicate + acc.bot + acc.accepted);
      check.setAttribute('data-value', String(diff));
      if (diff === 0) {
        check.className = 'check ok';
        check.textContent = '✓ the identity holds';
        check.title = 'received = invalid + duplicate + bot + accepted';
      } else {
        check.className = 'check off';
        check.textContent = 'off by ' + (diff > 0 ? '+' : '−') + fmtInt(Math.abs(diff));
        check.title =
          'received − (invalid + duplicate + bot + accepted) = ' + diff +
          (diff > 0 ? ': events received and not yet judged (in flight)' : ': counters read at slightly different moments') +
          ', or a worker\'s counters missing';
      }
    } else {
      check.className = 'check';
      check.setAttribute('data-value', 'null');
      check.textContent = DASH;
    }
  }

  /** received as a stacked bar: the share of each outcome. */
  function renderShares(acc) {
    const outcomes = [['accepted', 'accepted'], ['invalid', 'invalid'], ['duplicate', 'duplicate'], ['bot', 'bot']];
    const total = outcomes.reduce((sum, o) => sum + num(acc[o[0]]), 0);
    const bar = document.getElementById('shares');
    const legend = document.getElementById('shares-legend');
    if (!total) {
      bar.replaceChildren();
      legend.replaceChildren(el('span', { class: 'empty', text: 'no events judged yet' }));
      return;
    }
    bar.replaceChildren(...outcomes.map((o) => {
      const part = el('span', { class: 'share share-' + o[0], title: o[1] + ' ' + fmtInt(num(acc[o[0]])) });
      part.style.width = ((100 * num(acc[o[0]])) / total).toFixed(3) + '%';
      return part;
    }));
    legend.replaceChildren(...outcomes.map((o) => {
      const pct = (100 * num(acc[o[0]])) / total;
      return el('span', { class: 'share-key' },
        el('span', { class: 'swatch share-' + o[0] }),
        o[1] + ' ' + (pct > 0 && pct < 0.01 ? '<0.01' : NF2.format(pct)) + ' %');
    }));
  }

  // ---- bar lists: dead letters, segments ----------------------------------------

  function renderBars(containerId, rows, field, attr, emptyText, withTotal) {
    const box = document.getElementById(containerId);
    if (!rows.length) {
      box.replaceChildren(el('div', { class: 'empty', text: emptyText }));
      return;
    }
    const max = Math.max(1, ...rows.map((r) => num(r.value)));
    const list = rows.map((r) => {
      const fill = el('span', { class: 'bar-fill' });
      fill.style.width = ((100 * num(r.value)) / max).toFixed(1) + '%';
      const extra = {};
      extra[attr] = r.name;
      return el('div', { class: 'bar-row' },
        el('span', { class: 'bar-name', title: r.name, text: r.name }),
        el('span', { class: 'bar-track' }, fill),
        figure('span', field, r.value, fmtInt(r.value), Object.assign({ class: 'bar-count' }, extra)));
    });
    if (withTotal) {
      const total = rows.reduce((a, r) => a + num(r.value), 0);
      list.push(el('div', { class: 'bar-row bar-total' },
        el('span', { class: 'bar-name', text: 'total' }), el('span'),
        el('span', { class: 'bar-count', text: fmtInt(total) })));
    }
    box.replaceChildren(...list);
  }

  function renderDeadLetters(s) {
    const reasons = (s.accounting && s.accounting.invalid_by_reason) || {};
    const rows = Object.keys(reasons)
      .map((name) => ({ name: name, value: reasons[name] }))
      .sort((a, b) => num(b.value) - num(a.value) || (a.name < b.name ? -1 : 1));
    const counted = rows.filter((r) => num(r.value) > 0);
    renderBars('dlq', counted, 'invalid-reason', 'data-reason', 'no invalid events', counted.length > 1);
    const box = document.getElementById('dlq');
    box.classList.add('dlq');
    // reasons never seen: one dim line, each still a figure
    const zeros = rows.filter((r) => !(num(r.value) > 0));
    if (zeros.length) {
      const line = el('div', { class: 'zero-reasons' }, el('span', { text: 'none yet: ' }));
      zeros.forEach((r, i) => {
        if (i) line.appendChild(document.createTextNode(', '));
        line.appendChild(figure('span', 'invalid-reason', r.value, r.name, { 'data-reason': r.name, title: r.name + ': ' + fmtInt(r.value) }));
      });
      box.appendChild(line);
    }
  }

  function renderSegments(s) {
    const rows = (Array.isArray(s.segments) ? s.segments : [])
      .filter((x) => x && typeof x.segment === 'string')
      .map((x) => ({ name: x.segment, value: x.size }));
    renderBars('segments', rows, 'segment-size', 'data-segment', 'no segments defined', false);
  }

  // ---- campaigns -----------------------------------------------------------------------

  function alertBandsPlugin(card) {
    function draw(u) {
      const alerts = card.alerts;
      if (!alerts.length) return;
      const ctx = u.ctx;
      const left = u.bbox.left;
      const right = u.bbox.left + u.bbox.width;
      const top = u.bbox.top;
      const height = u.bbox.height;
      ctx.save();
      for (const a of alerts) {
        const w = a.opened_window || {};
        const s0 = Date.parse(w.start) / 1000;
        const s1 = Date.parse(w.end) / 1000;
        if (!Number.isFinite(s0) || !Number.isFinite(s1)) continue;
        const critical = a.severity === 'critical';
        let x0 = Math.round(u.valToPos(s0, 'x', true));
        let x1 = Math.round(u.valToPos(s1, 'x', true));
        x0 = Math.max(left, Math.min(right, x0));
        x1 = Math.max(left, Math.min(right, x1));
        // still open: a light band from the window it opened at to now
        ctx.fillStyle = critical ? COLOURS.criticalAfter : COLOURS.warningAfter;
        ctx.fillRect(x1, top, right - x1, height);
        if (x1 > x0) {
          ctx.fillStyle = critical ? COLOURS.critical : COLOURS.warning;
          ctx.fillRect(x0, top, Math.max(2, x1 - x0), height);
        }
        if (x0 > left) {
          ctx.strokeStyle = critical ? COLOURS.criticalLine : COLOURS.warningLine;
          ctx.lineWidth = Math.max(1, Math.round(devicePixelRatio || 1));
          ctx.beginPath();
          ctx.moveTo(x0 + 0.5, top);
          ctx.lineTo(x0 + 0.5, top + height);
          ctx.stroke();
        }
      }
      ctx.restore();
    }
    return { hooks: { drawClear: [draw] } };
  }

  function chartData(card) {
    const minutes = card.minutes;
    const xs = minutes.map((m) => Date.parse(m.start) / 1000);
    const impressions = minutes.map((m) => (isNum(m.impressions) ? m.impressions : null));
    const clicks = minutes.map((m) => (isNum(m.clicks) ? m.clicks : null));
    const ctr = minutes.map((m) => (isNum(m.ctr) ? m.ctr * 100 : null));
    const none = minutes.map(() => null);
    return [xs, impressions, clicks, ctr, none];
  }

  const COUNT_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2500, 5e3, 1e4, 2e4, 25e3, 5e4, 1e5, 2e5, 25e4, 5e5, 1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8];
  const PCT_INCRS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10, 20, 25, 50, 100];

  function makeChart(card) {
    const axisFont = '11px system-ui, "DejaVu Sans", sans-serif';
    const base = {
      stroke: COLOURS.axis,
      font: axisFont,
      grid: { stroke: COLOURS.grid, width: 1 },
      ticks: { stroke: COLOURS.grid, width: 1, size: 4 },
    };
    const opts = {
      width: Math.max(240, card.chartBox.clientWidth),
      height: CHART_HEIGHT,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC'),
      legend: { live: false },
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      scales: {
        x: { time: true, range: () => [card.fromS, card.toS] },
        n: { range: (u, min, max) => [0, isNum(max) && max > 0 ? max * 1.12 : 5] },
        pct: { range: (u, min, max) => [0, isNum(max) && max > 0 ? max * 1.25 : 1] },
      },
      series: [
        {},
        { label: 'impressions', scale: 'n', stroke: COLOURS.impressions, fill: COLOURS.impressionsFill, width: 2, points: { show: false } },
        { label: 'clicks', scale: 'n', stroke: COLOURS.clicks, width: 2, points: { show: false } },
        { label: 'CTR %', scale: 'pct', stroke: COLOURS.ctr, width: 1.25, dash: [5, 4], points: { show: false }, spanGaps: false },
        { label: 'open alert', scale: 'n', stroke: COLOURS.criticalLine, fill: COLOURS.critical, width: 0, points: { show: false }, class: 'legend-alert' },
      ],
      axes: [
        Object.assign({}, base, {
          space: 56,
          size: 30,
          incrs: [60, 300, 600, 900, 1800, 3600],
          values: (u, vals) => vals.map((v) => new Date(v * 1000).toISOString().slice(11, 16)),
        }),
        Object.assign({}, base, { scale: 'n', size: 48, incrs: COUNT_INCRS, values: (u, vals) => vals.map((v) => NF0.format(v)) }),
        Object.assign({}, base, {
          scale: 'pct',
          side: 1,
          size: 52,
          incrs: PCT_INCRS,
          grid: { show: false },
          values: (u, vals) => vals.map((v) => (v === 0 || v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2)) + '%'),
        }),
      ],
      plugins: [alertBandsPlugin(card)],
    };
    const chart = new uPlot(opts, chartData(card), card.chartBox);
    const legendAlert = chart.root.querySelectorAll('.u-legend .u-series')[4];
    if (legendAlert) legendAlert.classList.add('legend-alert');
    return chart;
  }

  function totalsGrid(c) {
    const t = c.totals || {};
    const id = c.campaign_id;
    const cell = (label, field, value, text, cls) =>
      el('div', { class: 'total' },
        el('div', { class: 'total-label', text: label }),
        figure('div', field, value, text, { class: 'total-value ' + (cls || ''), 'data-campaign': id }));
    return el('div', { class: 'totals' },
      cell('Impressions', 'campaign-impressions', t.impressions, fmtInt(t.impressions), 'impressions'),
      cell('Clicks', 'campaign-clicks', t.clicks, fmtInt(t.clicks), 'clicks'),
      cell('CTR', 'campaign-ctr', t.ctr, fmtPct(t.ctr), 'ctr'),
      cell('Conversions', 'campaign-conversions', t.conversions, fmtInt(t.conversions)),
      cell('Revenue', 'campaign-revenue', t.revenue, fmtMoney(t.revenue)),
      cell('Unique users', 'campaign-unique-users', t.unique_users, fmtInt(t.unique_users)));
  }

  function alertsList(c, alerts) {
    if (!alerts.length) {
      return el('p', { class: 'no-alerts', 'data-field': 'campaign-no-alerts', 'data-campaign': c.campaign_id, text: 'no open alerts' });
    }
    return el('ul', { class: 'alerts' },
      alerts.map((a) => {
        const w = a.opened_window || {};
        const nb = (text) => text.replace(/ /g, '\u00a0');
        const detail = [
          nb('opened ' + fmtUtcMinute(w.start, c.to)),
          nb('observed ' + fmtObserved(a.metric, a.observed)) + ' ' + nb('vs expected ' + fmtObserved(a.metric, a.expected)),
          nb('p ' + fmtP(a.p_value)),
          a.model && typeof a.model.test === 'string' ? a.model.test : null,
        ].filter(Boolean).join(' · ');
        return el('li', {
          class: 'alert ' + (a.severity === 'critical' ? 'critical' : 'warning'),
          'data-testid': 'campaign-alert',
          'data-campaign': c.campaign_id,
          'data-alert-id': a.alert_id,
          'data-metric': a.metric,
          'data-direction': a.direction,
          'data-severity': a.severity,
          'data-opened': w.start,
        },
        el('span', { class: 'sev', text: a.severity || 'alert' }),
        el('span', { class: 'alert-what', text: (a.metric || '?') + ' ' + (a.direction || '') }),
        el('span', { class: 'alert-detail', text: detail }));
      }));
  }

  function updateCard(card, c) {
    const alerts = (Array.isArray(c.open_alerts) ? c.open_alerts : []).filter((a) => a && typeof a === 'object');
    card.minutes = (Array.isArray(c.minutes) ? c.minutes : []).filter((m) => m && Number.isFinite(Date.parse(m.start)));
    card.alerts = alerts;
    const toS = Date.parse(c.to) / 1000;
    const fromS = Date.parse(c.from) / 1000;
    card.toS = Number.isFinite(toS) ? toS : card.minutes.length ? Date.parse(card.minutes[card.minutes.length - 1].end) / 1000 : Date.now() / 1000;
    card.fromS = Number.isFinite(fromS) ? fromS : card.toS - 60 * MINUTE_S;

    const node = card.node;
    node.setAttribute('data-from', c.from || '');
    node.setAttribute('data-to', c.to || '');
    node.setAttribute('data-stream-time', c.stream_time || '');
    node.classList.toggle('alerting', alerts.length > 0);

    const badge = figure('span', 'campaign-alerts-open', alerts.length,
      alerts.length ? alerts.length + ' open alert' + (alerts.length > 1 ? 's' : '') : 'ok',
      { class: 'badge' + (alerts.some((a) => a.severity === 'critical') ? ' bad' : alerts.length ? ' warn' : ''), 'data-campaign': c.campaign_id });
    card.badge.replaceWith(badge);
    card.badge = badge;

    card.range.textContent =
      fmtRange(c.from, c.to) + ' · stream time ' + (c.stream_time ? fmtUtcTime(c.stream_time) : DASH);

    const totals = totalsGrid(c);
    card.totals.replaceWith(totals);
    card.totals = totals;

    const list = alertsList(c, alerts);
    card.alertsBox.replaceChildren(list);

    card.chartBox.setAttribute('data-alert-bands', String(alerts.length));
    card.chartBox.setAttribute('data-points', String(card.minutes.length));
    if (card.chart) {
      card.chart.setData(chartData(card));
    } else {
      card.chart = makeChart(card);
    }
  }

  function newCard(id) {
    const title = el('h3', { class: 'card-title', title: id, text: id });
    const badge = el('span', { class: 'badge' });
    const range = el('div', { class: 'card-range' });
    const totals = el('div', { class: 'totals' });
    const chartBox = el('div', { class: 'chart', 'data-testid': 'campaign-chart', 'data-campaign': id, role: 'img', 'aria-label': 'impressions, clicks and CTR per minute over the last hour of ' + id });
    const alertsBox = el('div', { class: 'card-alerts' });
    const node = el('article', { class: 'card', 'data-testid': 'campaign-card', 'data-campaign': id },
      el('div', { class: 'card-head' }, title, badge), range, totals, chartBox, alertsBox);
    const card = { id: id, node: node, badge: badge, range: range, totals: totals, chartBox: chartBox, alertsBox: alertsBox, chart: null, minutes: [], alerts: [], fromS: 0, toS: 0, width: 0 };
    if (typeof ResizeObserver === 'function') {
      let pending = false;
      card.observer = new ResizeObserver(() => {
        if (pending) return;
        pending = true;
        requestAnimationFrame(() => {
          pending = false;
          const width = Math.max(240, chartBox.clientWidth);
          if (card.chart && width !== card.width) {
            card.width = width;
            card.chart.setSize({ width: width, height: CHART_HEIGHT });
          }
        });
      });
      card.observer.observe(chartBox);
    }
    return card;
  }

  function renderCampaigns(s) {
    const grid = document.getElementById('campaigns');
    const campaigns = (Array.isArray(s.campaigns) ? s.campaigns : []).filter((c) => c && typeof c.campaign_id === 'string');
    const seen = new Set();
    campaigns.forEach((c, index) => {
      seen.add(c.campaign_id);
      let card = state.cards.get(c.campaign_id);
      if (!card) {
        card = newCard(c.campaign_id);
        state.cards.set(c.campaign_id, card);
      }
      if (grid.children[index] !== card.node) grid.insertBefore(card.node, grid.children[index] || null);
      updateCard(card, c);
    });
    for (const [id, card] of state.cards) {
      if (seen.has(id)) continue;
      if (card.observer) card.observer.disconnect();
      if (card.chart) card.chart.destroy();
      card.node.remove();
      state.cards.delete(id);
    }
    const empty = grid.querySelector('.empty');
    if (!campaigns.length && !empty) grid.appendChild(el('div', { class: 'empty', text: 'no campaign events in the last hour' }));
    if (campaigns.length && empty) empty.remove();

    const hint = document.getElementById('campaigns-hint');
    const total = isNum(s.campaigns_total) ? s.campaigns_total : campaigns.length;
    hint.replaceChildren(
      'the busiest of the last hour: ' + campaigns.length + ' shown of ',
      figure('span', 'campaigns-total', s.campaigns_total, fmtInt(total)),
      ' known');
  }

  // ---- workers -------------------------------------------------------------------------------

  /** The worker's own open alerts (capacity), when the summary lists them. */
  function workerAlerts(w, url) {
    if (!Array.isArray(w.open_alerts)) return null;
    const alerts = w.open_alerts.filter((a) => a && typeof a === 'object');
    if (!alerts.length) return null;
    const title = alerts.map((a) => (a.metric || '?') + ' ' + (a.direction || '') + ': observed ' + fmtObserved(a.metric, a.observed) + ', threshold ' + fmtObserved(a.metric, a.expected)).join('; ');
    return figure('span', 'worker-alerts-open', alerts.length, alerts.length + ' alert' + (alerts.length > 1 ? 's' : ''), { class: 'badge bad', 'data-worker': url, title: title });
  }

  function renderWorkers(s) {
    const workers = (Array.isArray(s.workers) ? s.workers : []).filter((w) => w && typeof w === 'object');
    const box = document.getElementById('workers');
    if (!workers.length) {
      box.replaceChildren(el('div', { class: 'empty', text: 'no workers reported' }));
      return;
    }
    const known = STAGES.map((x) => x[0]);
    const extra = new Set();
    for (const w of workers) {
      for (const stage of Object.keys(w.stage_lag || {})) if (!known.includes(stage)) extra.add(stage);
    }
    const stages = STAGES.concat(Array.from(extra).sort().map((name) => [name, name]));

    const head = el('thead', null,
      el('tr', { class: 'group' },
        el('th', { colspan: 8 }),
        el('th', { colspan: stages.length + 1, class: 'lag-group', text: 'stage lag (records)' })),
      el('tr', null,
        el('th', { class: 'left', text: 'worker' }),
        el('th', { class: 'left', text: 'status' }),
        el('th', { class: 'left', text: 'partitions' }),
        el('th', { text: 'events/s in', title: 'arrival rate over about the last 30 s' }),
        el('th', { text: 'ρ', title: 'utilisation: arrival rate / service rate' }),
        el('th', { text: 'W', title: 'expected sojourn 1 / (μ − λ), M/M/1' }),
        el('th', { text: 'lat. p50', title: 'latency, event time to processed: median' }),
        el('th', { text: 'p99', title: 'latency, event time to processed: 99th percentile' }),
        stages.map((st) => el('th', { class: 'lag', text: st[1], title: st[0] })),
        el('th', { text: 'total' })));

    const rows = workers.map((w) => {
      const url = typeof w.url === 'string' ? w.url : '?';
      const cap = w.capacity || {};
      const lat = w.latency_s || {};
      const lag = w.stage_lag || {};
      const attrs = { 'data-worker': url };
      const td = (field, value, text, cls, title) =>
        el('td', Object.assign({ 'data-field': field, 'data-value': dataValue(value), class: cls, title: title, text: text }, attrs));
      const rho = cap.utilisation;
      const rhoClass = isNum(rho) ? (rho >= 0.9 ? 'very-hot' : rho >= 0.7 ? 'hot' : '') : '';
      const parts = Array.isArray(w.active_partitions) ? w.active_partitions : [];
      let lagTotal = 0;
      let anyLag = false;
      const lagCells = stages.map((st) => {
        const entry = lag[st[0]];
        if (!entry || typeof entry !== 'object') {
          return el('td', { 'data-field': 'worker-lag', 'data-stage': st[0], 'data-worker': url, 'data-value': 'null', class: 'zero', text: DASH });
        }
        anyLag = true;
        lagTotal += num(entry.total);
        const per = entry.partitions || {};
        const title = st[0] + ': ' + (Object.keys(per).sort((a, b) => a - b).map((p) => 'p' + p + ' ' + fmtInt(per[p])).join(', ') || 'no partitions');
        return el('td', {
          'data-field': 'worker-lag', 'data-stage': st[0], 'data-worker': url, 'data-value': dataValue(entry.total),
          class: num(entry.total) === 0 ? 'zero' : num(entry.total) >= 10000 ? 'hot' : '', title: title, text: fmtInt(entry.total),
        });
      });
      const status = w.status === 'ok' ? 'ok' : 'unavailable';
      return el('tr', { 'data-testid': 'worker-row', 'data-worker': url, class: status },
        el('td', { class: 'left url', title: url, text: url }),
        el('td', { class: 'left' },
          el('span', { class: 'status ' + status, 'data-field': 'worker-status', 'data-value': String(w.status), 'data-worker': url, text: String(w.status || 'unknown') }),
          workerAlerts(w, url)),
        td('worker-partitions', parts.join(','), fmtPartitions(parts), 'left', parts.length + ' partition' + (parts.length === 1 ? '' : 's')),
        td('worker-arrival-rate', cap.arrival_rate, fmtRate(cap.arrival_rate)),
        td('worker-utilisation', rho, fmtRho(rho), rhoClass, isNum(cap.service_rate) ? 'service rate ' + fmtRate(cap.service_rate) + ' events/s' : 'not measured yet'),
        td('worker-sojourn', cap.expected_sojourn_s, fmtSeconds(cap.expected_sojourn_s)),
        td('worker-latency-p50', lat.p50, fmtSeconds(lat.p50), '', isNum(lat.count) ? fmtInt(lat.count) + ' events measured' : undefined),
        td('worker-latency-p99', lat.p99, fmtSeconds(lat.p99)),
        lagCells,
        td('worker-lag-total', anyLag ? lagTotal : null, anyLag ? fmtInt(lagTotal) : DASH, anyLag && lagTotal === 0 ? 'zero' : ''));
    });
    box.replaceChildren(el('table', { class: 'workers' }, head, el('tbody', null, rows)));
  }

  // ---- the loop ------------------------------------------------------------------------------

  function render(s) {
    renderHeader(s);
    renderAccounting(s);
    renderDeadLetters(s);
    renderSegments(s);
    renderCampaigns(s);
    renderWorkers(s);
  }

  async function fetchSummary() {
    const controller = typeof AbortController === 'function' ? new AbortController() : null;
    const timer = controller ? setTimeout(() => controller.abort(), TIMEOUT_MS) : null;
    try {
      const response = await fetch(SUMMARY_URL, {
        headers: { Accept: 'application/json' },
        cache: 'no-store',
        credentials: 'same-origin',
        signal: controller ? controller.signal : undefined,
      });
      if (!response.ok) throw new Error('HTTP ' + response.status + (response.statusText ? ' ' + response.statusText : ''));
      const body = await response.json();
      if (!body || typeof body !== 'object' || Array.isArray(body)) throw new Error('the answer is not a JSON object');
      return body;
    } catch (exc) {
      if (exc && exc.name === 'AbortError') throw new Error('no answer within ' + TIMEOUT_MS / 1000 + ' s');
      if (exc instanceof SyntaxError) throw new Error('the answer is not JSON');
      throw exc;
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  async function refresh() {
    const started = Date.now();
    try {
      const summary = await fetchSummary();
      state.last = summary;
      state.lastOk = new Date();
      state.error = null;
      try {
        render(summary);
      } catch (exc) {
        state.error = 'the page could not draw it (' + (exc && exc.message) + ')';
        console.error('dashboard: render failed', exc);
      }
      if (!state.error) {
        state.refreshes += 1;
        document.body.setAttribute('data-refreshes', String(state.refreshes));
      }
    } catch (exc) {
      state.error = (exc && exc.message) || String(exc);
    }
    renderConnection();
    setTimeout(refresh, Math.max(250, REFRESH_MS - (Date.now() - started)));
  }

  function start() {
    if (typeof uPlot !== 'function') {
      state.error = 'the chart library (static/vendor/uPlot.iife.min.js) did not load';
      renderConnection();
      console.error('dashboard: ' + state.error);
      return;
    }
    setInterval(renderConnection, 1000);
    refresh();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
