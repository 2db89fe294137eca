// Remote sensors ([collect], GET /api/sensors/remote): shown under the Engine panel while it is open, one
// row per sensor with its heartbeat; a click filters the threats by that sensor (sensor:NAME).

import {api} from './api.js';
import {h, $, clear} from './dom.js';
import {ago, compact, num, span} from './format.js';

const POLL_MS = 3000;

function drops(d) {
  if (!d) return '–';
  return [d.ring, d.kernel, d.interface].filter((v) => typeof v === 'number').map(num).join(' / ') || '0';
}

function outputs(o) {
  if (!o || typeof o !== 'object') return '–';
  return Object.entries(o).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
}

function filterBy(name) {
  const input = $('search-input');
  input.value = `sensor:${name}`;
  $('search-form').requestSubmit();
}

function render(body) {
  const box = $('sensors-body');
  if (!body || !body.collect) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const rows = body.sensors.map((s) => h('tr', {},
    h('td', {}, h('button', {type: 'button', class: 'link-btn', text: s.sensor, title: `Show threats of ${s.sensor}`,
      onclick: () => filterBy(s.sensor)})),
    h('td', {}, h('span', {class: ['dot', s.connected ? 'dot-ok' : 'dot-off']}), s.connected ? ' connected' : ' stale'),
    h('td', {class: 'mono', text: s.last_heartbeat ? ago(s.last_heartbeat) : 'never'}),
    h('td', {class: 'mono', text: s.index_generation == null ? '–'
      : `${s.index_generation} (${s.index_age_seconds == null ? '?' : span(s.index_age_seconds)})`}),
    h('td', {class: 'mono', text: s.packets_per_second == null ? '–' : compact(s.packets_per_second)}),
    h('td', {class: 'mono', text: drops(s.drops)}),
    h('td', {class: 'mono', text: s.workers == null ? '–' : String(s.workers)}),
    h('td', {text: outputs(s.outputs)}),
    h('td', {class: 'form-error', text: s.ship_error || ''})));
  const c = body.collector || {};
  clear(box).append(
    h('h3', {text: 'Sensors'}),
    h('p', {class: 'muted', text: `collector ${c.connected === false ? 'not connected' : 'running'}: ${num(c.written || 0)} events written, `
      + `${num(c.rejected || 0)} rejected${c.last_error ? ` — ${c.last_error}` : ''}`}),
    h('table', {class: 'sensors-table'},
      h('thead', {}, h('tr', {}, ['Sensor', 'State', 'Heartbeat', 'Index gen (age)', 'pps', 'Drops', 'Workers', 'Outputs', '']
        .map((t) => h('th', {text: t})))),
      h('tbody', {}, rows)));
}

async function poll() {
  if ($('engine-panel').hidden) return;
  try {
    render(await api.get('/api/sensors/remote'));
  } catch (err) {
    clear($('sensors-body')).append(h('p', {class: 'form-error', text: `Sensors unavailable: ${err.message}`}));
  }
}

export function initSensors() {
  setInterval(poll, POLL_MS);
  $('engine-btn').addEventListener('click', () => setTimeout(poll, 0));
}
