// Charts drawn as SVG / plain elements (no library). Colours come from CSS classes so both
// themes apply; every mark carries a <title> tooltip and clicking a mark filters the view.

import {h, svg, clear} from './dom.js';
import {compact, fmtHour, num} from './format.js';

const KNOWN_TYPES = ['IP', 'DNS', 'URL', 'UA', 'HTTP', 'IPORT', 'PATH', 'CERT', 'QUIC', 'TLS'];

export function typeClass(type) {
  let i = KNOWN_TYPES.indexOf(String(type).toUpperCase());
  if (i < 0) {
    i = 0;
    for (const ch of String(type)) i = (i * 31 + ch.charCodeAt(0)) % 997;
  }
  return `t${i % 10}`;
}

function niceMax(value) {
  if (value <= 5) return 5;
  const p = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= value) return m * p;
  return 10 * p;
}

/**
 * Stacked bars of events per hour (per day for ranges over 3 days), one colour per type.
 * onType(type) filters on a type, onDay(date) narrows the range to a day.
 */
export function timeline(box, legend, rows, {axis, onType, onDay}) {
  clear(box);
  clear(legend);
  // The axis is the server's days (from /api/stats), whatever the browser's time zone.
  const days = (axis && axis.days) || [];
  const end = (axis && axis.end) || 0;
  const spanDays = Math.max(1, days.length);
  const daily = spanDays > 3;
  const start = days.length ? days[0][1] : 0;
  const starts = daily ? days.map((d) => d[1]) : [];
  for (let t = start; !daily && t < end && starts.length < 2000; t += 3600) starts.push(t);
  const buckets = Math.max(1, starts.length);
  const types = [...new Set(rows.map((r) => r.type))].sort();
  const grid = Array.from({length: buckets}, () => new Map());
  let outside = 0;
  for (const r of rows) {
    let i = starts.length - 1;
    while (i >= 0 && starts[i] > r.time) i -= 1;
    if (i < 0 || r.time >= end) { outside += r.count; continue; }
    grid[i].set(r.type, (grid[i].get(r.type) || 0) + r.count);
  }
  const totals = grid.map((m) => [...m.values()].reduce((a, b) => a + b, 0));
  const max = niceMax(Math.max(0, ...totals));
  const width = Math.max(box.clientWidth, 300);
  const height = Math.max(box.clientHeight, 140);
  const pad = {l: 36, r: 8, t: 8, b: 20};
  const iw = width - pad.l - pad.r;
  const ih = height - pad.t - pad.b;
  const bw = iw / buckets;
  const root = svg('svg', {class: 'chart-svg', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
    'aria-label': 'Events over time by type'});
  for (let k = 0; k <= 4; k++) {
    const y = pad.t + ih - (ih * k) / 4;
    root.append(svg('line', {class: 'gridline', x1: pad.l, x2: width - pad.r, y1: y, y2: y}));
    root.append(svg('text', {class: 'axis', x: pad.l - 4, y: y + 3, 'text-anchor': 'end', text: compact((max * k) / 4)}));
  }
  const labelEvery = Math.ceil(buckets / Math.max(1, Math.floor(iw / 46)));
  for (let i = 0; i < buckets; i++) {
    const t = starts[i] || start;
    const x = pad.l + i * bw;
    const day = daily ? days[i][0] : '';
    if (i % labelEvery === 0) {
      const label = daily ? day.slice(5) : fmtHour(t, spanDays > 1);
      root.append(svg('text', {class: 'axis', x: x + bw / 2, y: height - 5, 'text-anchor': 'middle', text: label}));
    }
    let y = pad.t + ih;
    const when = daily ? day : fmtHour(t, true);
    const group = svg('g', {class: 'stack'});
    for (const type of types) {
      const n = grid[i].get(type) || 0;
      if (!n) continue;
      const hgt = Math.max(1, (ih * n) / max);
      y -= hgt;
      group.append(svg('rect', {
        class: ['seg', typeClass(type)], x: x + Math.min(1, bw * 0.1), y, height: hgt,
        width: Math.max(1, bw - Math.max(1, bw * 0.2)), tabindex: -1,
        onclick: () => (daily && onDay ? onDay(day) : onType(type)),
      }, svg('title', {text: `${when}  ${type}: ${num(n)} (total ${num(totals[i])})`})));
    }
    root.append(group);
  }
  box.append(root);
  for (const type of types) {
    const total = rows.filter((r) => r.type === type).reduce((a, r) => a + r.count, 0);
    legend.append(h('button', {type: 'button', class: 'legend-item', title: `Filter type:${type}`,
      onclick: () => onType(type)}, h('span', {class: ['swatch', typeClass(type)]}), h('span', {text: type}),
    h('span', {class: 'muted mono', text: compact(total)})));
  }
  if (outside) legend.append(h('span', {class: 'muted', text: `${num(outside)} outside the axis`}));
  if (!rows.length) box.append(h('p', {class: 'chart-empty', text: 'No events in this view'}));
}

/** Horizontal bars for a top-N list; click filters, Alt-click excludes. */
export function bars(box, items, onPick, emptyText) {
  clear(box);
  if (!items.length) {
    box.append(h('p', {class: 'chart-empty', text: emptyText}));
    return;
  }
  const max = Math.max(...items.map((i) => i.count));
  const list = h('ol', {class: 'bar-list'});
  for (const item of items) {
    const fill = h('span', {class: 'bar-fill'});
    fill.style.width = `${Math.max(1, (100 * item.count) / max)}%`;
    list.append(h('li', {}, h('button', {type: 'button', class: 'bar-row', title: `${item.value} — ${num(item.count)} events
Click: filter, Alt-click: exclude`, onclick: (e) => onPick(item.value, e.altKey)},
    fill, h('span', {class: 'bar-label mono', text: item.value}), h('span', {class: 'bar-count mono', text: compact(item.count)}))));
  }
  box.append(list);
}

const SEVERITIES = ['high', 'medium', 'low'];

/** Donut of the severity split (threats per severity) with a clickable legend. */
export function donut(box, severity, onPick) {
  clear(box);
  const total = SEVERITIES.reduce((a, s) => a + (severity[s] || 0), 0);
  const r = 15.9155;  // circumference 100: dash lengths are percentages
  const root = svg('svg', {class: 'donut', viewBox: '0 0 42 42', role: 'img', 'aria-label': 'Severity split'});
  root.append(svg('circle', {class: 'donut-bg', cx: 21, cy: 21, r}));
  let offset = 25;
  for (const s of SEVERITIES) {
    const n = severity[s] || 0;
    if (!n) continue;
    const share = (100 * n) / total;
    root.append(svg('circle', {class: ['donut-seg', `sev-${s}`], cx: 21, cy: 21, r, 'stroke-dasharray': `${share} ${100 - share}`,
      'stroke-dashoffset': offset, onclick: () => onPick(s)}, svg('title', {text: `${s}: ${num(n)} threats`})));
    offset -= share;
  }
  root.append(svg('text', {class: 'donut-total', x: 21, y: 22, 'text-anchor': 'middle', text: compact(total)}));
  root.append(svg('text', {class: 'donut-sub', x: 21, y: 27, 'text-anchor': 'middle', text: 'threats'}));
  const legend = h('ul', {class: 'donut-legend'});
  for (const s of SEVERITIES) {
    const n = severity[s] || 0;
    legend.append(h('li', {}, h('button', {type: 'button', class: 'legend-item', onclick: () => onPick(s)},
      h('span', {class: ['swatch', `sev-${s}`]}), h('span', {text: s}),
      h('span', {class: 'muted mono', text: total ? `${Math.round((100 * n) / total)}%` : '0%'}))));
  }
  box.append(h('div', {class: 'donut-wrap'}, root, legend));
}

/** 24 bars of events per hour of day. */
export function sparkline(hourly, {width = 48, height = 14, cls = 'spark'} = {}) {
  const values = Array.isArray(hourly) ? hourly : [];
  const max = Math.max(1, ...values);
  const bw = width / 24;
  const root = svg('svg', {class: cls, viewBox: `0 0 ${width} ${height}`, width, height, 'aria-hidden': 'true'});
  values.forEach((n, i) => {
    if (!n) return;
    const bh = Math.max(1, (height * n) / max);
    root.append(svg('rect', {x: i * bw, y: height - bh, width: Math.max(0.8, bw - 0.6), height: bh},
      svg('title', {text: `${String(i).padStart(2, '0')}h: ${n}`})));
  });
  return root;
}
