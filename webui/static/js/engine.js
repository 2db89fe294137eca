// Engine panel: the sensor's live counters (GET /api/status) as an operator reads them to tune
// the worker count: packets per second, per-worker load and share, ring occupancy and drops.

import {api} from './api.js';
import {h, svg, $, clear} from './dom.js';
import {ago, bytes, compact, fmtDateTime, num, pct, span} from './format.js';

const OPEN_MS = 2000;
const IDLE_MS = 15000;
const HISTORY = 90;
let timer = 0;
let history = [];
let last = null;
let loads = [];
let previous = null;  // {updated, busy[]} of the snapshot before `last`

/** Per-worker load (busy fraction): from the last two snapshots while running, else over the run. */
function computeLoads(s) {
  const busy = (s.per_worker || []).map((w) => Number(w.busy) || 0);
  if (previous && s.running && s.updated > previous.updated && previous.busy.length === busy.length) {
    const dt = s.updated - previous.updated;
    loads = busy.map((b, i) => Math.min(1, Math.max(0, (b - previous.busy[i]) / dt)));
  } else if (!previous || s.updated !== previous.updated) {
    const wall = (s.updated || 0) - (s.started || 0);
    loads = busy.map((b) => (wall > 0 ? Math.min(1, b / wall) : 0));
  }
  if (!previous || s.updated !== previous.updated) previous = {updated: s.updated, busy};
}

function fraction(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

function meter(value, cls, label) {
  const fill = h('span', {class: ['meter-fill', cls]});
  fill.style.width = `${Math.min(100, Math.max(0, 100 * value))}%`;
  return h('span', {class: 'meter', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 100,
    'aria-valuenow': Math.round(100 * value), 'aria-label': label}, fill);
}

function stat(label, value, sub) {
  return h('div', {class: 'stat'}, h('span', {class: 'stat-label', text: label}), h('span', {class: 'stat-value mono', text: value}),
    sub ? h('span', {class: 'stat-sub muted', text: sub}) : null);
}

function ppsChart() {
  const w = 320;
  const ht = 48;
  const max = Math.max(1, ...history);
  const pts = history.map((v, i) => `${(w * i) / Math.max(1, HISTORY - 1)},${ht - (ht * v) / max}`).join(' ');
  return svg('svg', {class: 'pps-chart', viewBox: `0 0 ${w} ${ht}`, preserveAspectRatio: 'none', 'aria-hidden': 'true'},
    svg('polyline', {points: pts}));
}

function advice(workers, drops, running) {
  const notes = [];
  if (!workers.length) return notes;
  const busy = workers.map((w, i) => loads[i] || 0);
  const mean = busy.reduce((a, b) => a + b, 0) / busy.length;
  const shares = workers.map((w) => fraction(w.share));
  const dropTotal = Object.values(drops || {}).reduce((a, b) => a + (typeof b === 'number' ? b : 0), 0);
  if (dropTotal > 0) notes.push(['warn', `${num(dropTotal)} dropped: capture outpaced the workers at some point.`]);
  if (!running) {
    notes.push(['info', `The sensor is not running: these are the figures of its last run (average worker load ${pct(mean)}; `
      + 'a capture-file replay keeps workers busy by design).']);
  } else if (mean > 0.8) {
    notes.push(['warn', `Workers are ${pct(mean)} busy: more workers (if cores are free) would help.`]);
  } else if (workers.length > 1 && mean < 0.25) {
    notes.push(['ok', `Workers are only ${pct(mean)} busy: fewer workers would keep up.`]);
  }
  const top = Math.max(...shares);
  if (workers.length > 1 && top > 1.5 / workers.length) {
    notes.push(['info', `Uneven load: one worker takes ${pct(top)} of the packets (flows hash to workers).`]);
  }
  if (!notes.length) notes.push(['ok', 'No drops and the load is balanced.']);
  return notes;
}

function render(s) {
  const body = clear($('engine-body'));
  if (s && s.scoped) {
    body.append(h('p', {class: 'empty', text: `The sensor is ${s.running ? 'running' : 'not running'}. `
      + 'Engine figures cover every network, so accounts limited to a network scope do not see them.'}));
    return;
  }
  if (!s || s.running === undefined || (!s.running && !s.counters)) {
    body.append(h('p', {class: 'empty', text: 'No sensor has reported status to this log directory yet.'}));
    return;
  }
  const c = s.counters || {};
  const workers = s.per_worker || [];
  const events = s.events || {};
  body.append(h('div', {class: 'engine-state'},
    h('span', {class: ['pill', s.running ? 'pill-ok' : 'pill-off'], text: s.running ? 'running' : 'stopped'}),
    h('span', {class: 'mono', text: s.sensor || ''}),
    s.updated ? h('span', {class: 'muted', text: `updated ${ago(s.updated)}`, title: fmtDateTime(s.updated)}) : null,
    s.started ? h('span', {class: 'muted', text: `started ${fmtDateTime(s.started)}`}) : null));
  body.append(h('div', {class: 'stats'},
    stat('Packets/s', compact(s.packets_per_second), s.running ? 'now' : 'average of the run'),
    stat('Packets', compact(c.packets), num(c.packets)),
    stat('Bytes', bytes(c.bytes)),
    stat('Events', compact(events.written), `${num(events.suppressed)} collapsed`)));
  if (history.length > 1) body.append(h('div', {class: 'engine-sec'}, h('h3', {text: 'Packets/s'}), ppsChart()));

  const table = h('table', {class: 'grid workers', id: 'engine-workers'},
    h('thead', {}, h('tr', {}, ...['Worker', 'Packets', 'Share', s.running ? 'Load now' : 'Load (run)'].map((t) => h('th', {scope: 'col', text: t})))));
  const tbody = h('tbody');
  workers.forEach((w, i) => {
    const busy = loads[i] || 0;
    tbody.append(h('tr', {},
      h('td', {class: 'mono', text: `w${i}`}),
      h('td', {class: 'mono c-num', text: num(w.packets)}),
      h('td', {}, h('div', {class: 'meter-cell'}, meter(fraction(w.share), 'm-share', `share of worker ${i}`),
        h('span', {class: 'mono', text: pct(fraction(w.share))}))),
      h('td', {}, h('div', {class: 'meter-cell'}, meter(busy, busy > 0.8 ? 'm-hot' : 'm-busy', `load of worker ${i}`),
        h('span', {class: 'mono', text: pct(busy)})))));
  });
  table.append(tbody);
  body.append(h('div', {class: 'engine-sec'}, h('h3', {text: `Workers (${workers.length})`}), table));

  const rings = s.rings || [];
  if (rings.length) {
    const rt = h('table', {class: 'grid workers'},
      h('thead', {}, h('tr', {}, ...['Ring', 'Fill', 'Peak', 'Published', 'Dropped'].map((t) => h('th', {scope: 'col', text: t})))));
    const rb = h('tbody');
    rings.forEach((r, i) => {
      const slots = r.slots || 1;
      rb.append(h('tr', {},
        h('td', {class: 'mono', text: `r${i}`}),
        h('td', {}, h('div', {class: 'meter-cell'}, meter((r.occupancy || 0) / slots, 'm-busy', `ring ${i} fill`),
          h('span', {class: 'mono', text: `${r.occupancy || 0}/${slots}`}))),
        h('td', {class: 'mono c-num', text: `${r.peak_occupancy ?? '–'}`}),
        h('td', {class: 'mono c-num', text: num(r.published)}),
        h('td', {class: ['mono c-num', (r.dropped_packets || 0) > 0 && 'warn'],
          text: `${num(r.dropped_packets)} pkts / ${num(r.dropped_batches)} batches`})));
    });
    rt.append(rb);
    body.append(h('div', {class: 'engine-sec'}, h('h3', {text: 'Rings (capture → workers)'}), rt));
  }
  const outputs = s.outputs || [];
  if (outputs.length || s.local_log === false) {
    const ot = h('table', {class: 'grid workers', id: 'engine-outputs'},
      h('thead', {}, h('tr', {}, ...['Output', 'Sent', 'Dropped', 'Queued', 'Retries', 'State'].map((t) => h('th', {scope: 'col', text: t})))));
    const ob = h('tbody');
    outputs.forEach((o) => {
      ob.append(h('tr', {},
        h('td', {class: 'mono', text: `${o.name} (${o.type})`, title: o.target}),
        h('td', {class: 'mono c-num', text: num(o.sent)}),
        h('td', {class: ['mono c-num', o.dropped > 0 && 'warn'], text: num(o.dropped),
          title: `${num(o.dropped_queue_full)} queue full, ${num(o.failed)} failed, ${num(o.abandoned_at_exit)} unsent at exit, ${num(o.unacknowledged || 0)} unacknowledged`}),
        h('td', {class: 'mono c-num', text: `${num(o.queued)}/${num(o.queue_size)}`}),
        h('td', {class: 'mono c-num', text: num(o.retries)}),
        h('td', {class: ['mono', o.retrying && 'warn'], text: o.retrying ? `retrying: ${o.last_error}` : 'ok'})));
    });
    ot.append(ob);
    body.append(h('div', {class: 'engine-sec'},
      h('h3', {text: s.local_log === false ? 'Outputs (local log disabled)' : 'Outputs'}), ot));
  }
  const drops = s.drops || {};
  body.append(h('div', {class: 'engine-sec'}, h('h3', {text: 'Drops'}),
    h('dl', {class: 'facts'}, ...Object.entries(drops).flatMap(([k, v]) => [h('dt', {text: k.replaceAll('_', ' ')}),
      h('dd', {class: ['mono', v > 0 && 'warn'], text: typeof v === 'number' ? num(v) : String(v)})]))));
  const extra = Object.fromEntries(Object.entries(events).map(([k, v]) => [`events ${k}`, v]));
  body.append(h('div', {class: 'engine-sec'}, h('h3', {text: 'Traffic and events'}),
    h('dl', {class: 'facts'}, ...Object.entries({...c, ...extra})
      .filter(([k, v]) => typeof v === 'number' && !['packets', 'bytes', 'busy_ns', 'malformed'].includes(k))
      .flatMap(([k, v]) => [h('dt', {text: k.replaceAll('_', ' ')}), h('dd', {class: 'mono', text: num(v)})]))));
  body.append(h('ul', {class: 'advice'}, ...advice(workers, drops, s.running)
    .map(([cls, text]) => h('li', {class: cls, text}))));
}

/** One row per sensor status file the server reads (several sensors on one log directory). */
function renderSensors(sensors) {
  const body = $('engine-body');
  const old = $('engine-sensors');
  if (old) old.remove();
  const cell = (text, cls) => h('td', {class: cls, text});
  const table = h('table', {class: 'grid workers', id: 'sensors-table'},
    h('thead', {}, h('tr', {}, ...['Sensor', 'State', 'Last event', 'Events/s', 'Packets/s', 'Drops', 'Index age']
      .map((t) => h('th', {scope: 'col', text: t})))),
    h('tbody', {}, ...sensors.map((x) => h('tr', {dataset: {sensor: x.sensor || ''}},
      cell(x.sensor || x.file || '?', 'mono'),
      cell(x.running ? 'running' : 'stopped'),
      cell(x.last_event ? `${ago(x.last_event)}` : '–', 'mono'),
      cell(x.events_per_second === undefined ? '–' : compact(x.events_per_second), 'mono'),
      cell(x.packets_per_second === undefined ? '–' : compact(x.packets_per_second), 'mono'),
      cell(x.drops ? num((x.drops.ring_packets || 0) + (x.drops.ring_batches || 0)) : '–', 'mono'),
      cell(x.index && x.index.age_seconds !== null && x.index.age_seconds !== undefined
        ? span(x.index.age_seconds) : '–', 'mono')))));
  body.append(h('div', {class: 'engine-sec', id: 'engine-sensors'}, h('h3', {text: `Sensors (${sensors.length})`}),
    sensors.length ? table : h('p', {class: 'muted', text: 'No sensor status file in the log directory.'})));
}

function header(s) {
  const dot = $('engine-dot');
  dot.className = `dot ${s && s.running ? 'dot-ok' : 'dot-off'}`;
  $('engine-pps').textContent = s && s.running ? `${compact(s.packets_per_second)} pps` : '';
}

async function poll() {
  clearTimeout(timer);
  try {
    last = await api.get('/api/status');
    if (last && last.per_worker) computeLoads(last);
    if (last && last.running) {
      history.push(fraction(last.packets_per_second));
      if (history.length > HISTORY) history = history.slice(-HISTORY);
    }
    header(last);
    if (isOpen()) {
      render(last);
      renderSensors((await api.get('/api/sensors')).sensors || []);
    }
  } catch (err) {
    if (isOpen()) clear($('engine-body')).append(h('p', {class: 'form-error', text: `Status unavailable: ${err.message}`}));
  }
  timer = setTimeout(poll, isOpen() ? OPEN_MS : IDLE_MS);
}

export function isOpen() {
  return !$('engine-panel').hidden;
}

export function toggleEngine(open = !isOpen()) {
  $('engine-panel').hidden = !open;
  $('engine-btn').setAttribute('aria-expanded', String(open));
  if (open) {
    render(last);
    poll();
  }
}

export function initEngine() {
  $('engine-btn').addEventListener('click', () => toggleEngine());
  $('engine-close').addEventListener('click', () => toggleEngine(false));
}

export function startEngine() {
  history = [];
  previous = null;
  poll();
}

export function stopEngine() {
  clearTimeout(timer);
}
