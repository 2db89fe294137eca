// The threat table: dense rows, sortable headers, values that filter when clicked, keyboard
// selection, and a brief highlight on threats that are new or grew since the last refresh.

import {h, clear, $, copyText} from './dom.js';
import {fmtCompact, fmtDateTime, num, ago} from './format.js';
import {sparkline, typeClass} from './charts.js';

export const STATUS_LABELS = {new: 'New', investigating: 'Investigating', resolved: 'Resolved', false_positive: 'False positive'};

// key, header, sort key (or ''), filter field (or ''), extra class
const COLUMNS = [
  ['severity', 'Sev', 'severity', 'sev', 'c-sev'],
  ['status', 'Status', '', 'status', 'c-status'],
  ['count', 'Events', 'count', '', 'c-num'],
  ['hourly', '24h', '', '', 'c-spark opt-2'],
  ['first_seen', 'First seen', 'first_seen', '', 'c-time opt-2'],
  ['last_seen', 'Last seen', 'last_seen', '', 'c-time'],
  ['src_ip', 'Source', 'src_ip', 'src', 'c-ip'],
  ['dst_ip', 'Destination', 'dst_ip', 'dst', 'c-ip opt-1'],
  ['dst_port', 'Port', 'dst_port', 'port', 'c-port'],
  ['proto', 'Proto', 'proto', 'proto', 'c-proto opt-1'],
  ['type', 'Type', 'type', 'type', 'c-type'],
  ['trail', 'Trail', 'trail', 'trail', 'c-trail'],
  ['info', 'Info', 'info', 'info', 'c-info'],
  ['reference', 'Reference', '', 'ref', 'c-ref opt-2'],
  ['sensor', 'Sensor', 'sensor', 'sensor', 'c-sensor opt-3'],
];

let selected = -1;
let rowsShown = [];
let previous = new Map();

export function selectedThreat() {
  return rowsShown[selected];
}

/** Header cells; clicking one sorts (again: flips the order). */
export function renderHead(sort, order, onSort) {
  const tr = clear($('threats-head'));
  for (const [key, label, sortKey, , cls] of COLUMNS) {
    const th = h('th', {scope: 'col', class: cls});
    if (sortKey) {
      const active = sort === sortKey;
      th.setAttribute('aria-sort', active ? (order === 'asc' ? 'ascending' : 'descending') : 'none');
      th.append(h('button', {type: 'button', class: ['sort-btn', active && 'active'], dataset: {sort: sortKey},
        title: `Sort by ${label.toLowerCase()}`, onclick: () => onSort(sortKey)}, label,
      h('span', {class: 'sort-mark', 'aria-hidden': 'true', text: active ? (order === 'asc' ? '▲' : '▼') : ''})));
    } else {
      th.textContent = label;
      if (key === 'hourly') th.title = 'Events per hour of day';
    }
    tr.append(th);
  }
}

function value(field, text, cls) {
  if (text === null || text === undefined || text === '' || text === '-') return h('span', {class: 'muted', text: '–'});
  return h('span', {class: ['val', cls], dataset: {field, value: String(text)}, text: String(text)});
}

/** Maltrail's "…": the distinct values of a grouped threat (`count` of them), listed in the title. */
export function moreValues(el, values, what = 'trails', count = (values || []).length) {
  if (!values || count < 2) return el;
  return h('span', {class: 'with-more'}, el, h('span', {class: 'more-values', title: values.join('\n'),
    'aria-label': `${count} distinct ${what}`, text: ` …${count}`}));
}

/** A flood threat (one trail, many sources) shows its first source and the "…" of all of them. */
function sourceCell(threat, field) {
  if (!threat.flood) return value(field, threat.src_ip);
  const sources = threat.sources || [];
  return moreValues(value(field, sources[0]), sources, 'sources', threat.source_count);
}

function cell(threat, key, field, day) {
  const v = threat[key];
  switch (key) {
    case 'severity':
      return h('span', {class: ['sev', `sev-${v}`], text: v || '?'});
    case 'status':
      return h('span', {class: 'status-cell'},
        h('span', {class: ['status', `st-${v || 'new'}`], title: threat.note || '', text: STATUS_LABELS[v] || 'New'},
          threat.note ? h('span', {class: 'note-mark', 'aria-label': 'has a note', text: '✎'}) : null),
        ...(threat.tags || []).map((t) => h('span', {class: ['tag', 'val'], dataset: {field: 'tag', value: t}, text: t})));
    case 'count':
      return num(v);
    case 'hourly':
      return sparkline(v);
    case 'first_seen':
    case 'last_seen':
      return h('time', {datetime: new Date(v * 1000).toISOString(), title: `${fmtDateTime(v)} (${ago(v)})`,
        text: fmtCompact(v, day)});
    case 'type':
      return value(field, v, ['type-tag', typeClass(v)]);
    case 'reference':
      return h('span', {class: 'ref', title: v || '', text: v || ''});
    case 'trail':
      return moreValues(value(field, v), threat.values);
    case 'src_ip':
      return sourceCell(threat, field);
    default:
      return value(field, v);
  }
}

/** Replace the body with `rows`; returns the number of rows that are new or grew. */
export function renderRows(rows, {day, onOpen, onFilter, openId}) {
  const body = clear($('threats-body'));
  const seen = new Map();
  let changed = 0;
  rows.forEach((threat, index) => {
    const before = previous.get(threat.id);
    const grew = previous.size > 0 && (!before || before !== threat.count);
    if (grew) changed += 1;
    seen.set(threat.id, threat.count);
    const tr = h('tr', {tabindex: -1, dataset: {id: threat.id, index}, class: [`row-${threat.severity}`, grew && 'row-changed',
      threat.id === openId && 'row-open', threat.status && threat.status !== 'new' && `row-st-${threat.status}`]});
    for (const [key, , , field, cls] of COLUMNS) {
      const td = h('td', {class: cls}, cell(threat, key, field, day));
      if (key === 'trail' || key === 'info') td.title = String(threat[key] ?? '');
      tr.append(td);
    }
    tr.addEventListener('click', (e) => {
      const val = e.target.closest('.val');
      if (val && !window.getSelection().toString()) {
        e.stopPropagation();
        if (e.altKey || e.shiftKey) onFilter(val.dataset.field, val.dataset.value, e.altKey);
        else valueMenu(val, () => { select(index); onOpen(threat); }, onFilter);
        return;
      }
      select(index);
      onOpen(threat);
    });
    body.append(tr);
  });
  previous = seen;
  rowsShown = rows;
  if (selected >= rows.length) selected = rows.length - 1;
  const keep = openId ? rows.findIndex((r) => r.id === openId) : -1;
  if (keep >= 0) selected = keep;
  markSelected(false);
  return changed;
}

/** Small menu on a clicked value: filter on it, exclude it, copy it, or open the threat. */
function valueMenu(anchor, open, onFilter) {
  closeValueMenu();
  const {field, value: text} = anchor.dataset;
  const item = (label, action) => h('button', {type: 'button', role: 'menuitem', text: label, onclick: () => {
    closeValueMenu();
    action();
  }});
  const menu = h('div', {id: 'value-menu', class: 'menu value-menu', role: 'menu'},
    h('p', {class: 'menu-note mono', text: `${field}:${text}`}),
    item('Filter on this value', () => onFilter(field, text, false)),
    item('Exclude this value', () => onFilter(field, text, true)),
    item('Copy', () => copyText(text)),
    item('Open threat details', open));
  document.body.append(menu);
  const r = anchor.getBoundingClientRect();
  menu.style.left = `${Math.min(r.left, window.innerWidth - 240)}px`;
  menu.style.top = `${r.bottom + 2}px`;
  menu.querySelector('button').focus();
}

export function closeValueMenu() {
  const menu = $('value-menu');
  if (!menu) return false;
  menu.remove();
  return true;
}

document.addEventListener('mousedown', (e) => {
  if (!e.target.closest('#value-menu')) closeValueMenu();
});

export function forgetRows() {
  previous = new Map();
  selected = -1;
}

function markSelected(scroll) {
  for (const tr of $('threats-body').querySelectorAll('tr.row-selected')) tr.classList.remove('row-selected');
  const tr = $('threats-body').children[selected];
  if (!tr) return;
  tr.classList.add('row-selected');
  if (scroll) {
    tr.scrollIntoView({block: 'nearest'});
    tr.focus({preventScroll: true});
  }
}

export function select(index) {
  if (!rowsShown.length) return;
  selected = Math.max(0, Math.min(rowsShown.length - 1, index));
  markSelected(true);
}

export function move(delta) {
  select(selected < 0 ? 0 : selected + delta);
}

export function markOpen(id) {
  for (const tr of $('threats-body').children) tr.classList.toggle('row-open', tr.dataset.id === id);
}

/** "1–50 of 205" with first/previous/next/last buttons, in both pager slots. */
export function renderPager(total, page, perPage, onPage) {
  const pages = Math.max(1, Math.ceil(total / perPage));
  for (const id of ['pager-top', 'pager-bottom']) {
    const box = clear($(id));
    const first = total ? (page - 1) * perPage + 1 : 0;
    const last = Math.min(total, page * perPage);
    box.append(h('span', {class: 'muted mono', text: `${num(first)}–${num(last)} of ${num(total)}`}));
    const btn = (label, target, title, disabled) => h('button', {type: 'button', class: 'btn btn-small', title,
      disabled: disabled || undefined, onclick: () => onPage(target), 'aria-label': title, text: label});
    box.append(btn('«', 1, 'First page', page <= 1), btn('‹', page - 1, 'Previous page (←)', page <= 1),
      h('span', {class: 'mono page-no', text: `${page} / ${pages}`}),
      btn('›', page + 1, 'Next page (→)', page >= pages), btn('»', pages, 'Last page', page >= pages));
  }
  return pages;
}
