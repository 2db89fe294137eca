// The threat detail drawer: facts, shared triage (status + note), suppression, pivots, a retro
// hunt for the indicator, and the raw events of the threat (newest first).

import {api} from './api.js';
import {h, $, clear, icon, toast, copyText} from './dom.js';
import {endpoint, fmtDateTime, fmtTimeMs, num, span, ago} from './format.js';
import {sparkline, typeClass} from './charts.js';
import {token} from './search.js';
import {STATUS_LABELS} from './table.js';

const EVENT_LIMIT = 200;
let current = null;
let ctx = null;
let loadSeq = 0;

export function drawerThreatId() {
  return current && !$('drawer').hidden ? current.id : '';
}

export function closeDrawer() {
  $('drawer').hidden = true;
  current = null;
  document.body.classList.remove('drawer-open');
}

/** Defanged form of an indicator: dots bracketed, http(s) scheme neutralised. */
export function defang(text) {
  return String(text).replace(/^http/i, 'hxxp').replaceAll('.', '[.]').replace('://', '[://]');
}

function fact(label, ...content) {
  return [h('dt', {text: label}), h('dd', {}, ...content)];
}

let pivots = [];

/** The configured pivot links ([server] pivot_links, from the session): none by default. */
export function setPivotLinks(list) {
  pivots = Array.isArray(list) ? list : [];
}

const PIVOT_FIELD = {src: 'src_ip', dst: 'dst_ip', trail: 'trail'};

function pivotLinks(field, value) {
  const key = PIVOT_FIELD[field];
  return pivots.filter((p) => p.fields.includes(key)).map((p) => h('a', {class: 'pivot-link btn btn-small',
    href: p.url.replaceAll('{value}', encodeURIComponent(String(value))), target: '_blank',
    rel: 'noopener noreferrer', dataset: {pivot: p.name, field: key}, text: p.name}));
}

function filterable(field, value, label) {
  if (value === null || value === undefined || value === '' || value === '-') return h('span', {class: 'muted', text: '–'});
  return h('span', {class: 'fact-val'},
    h('span', {class: 'mono', text: label ?? String(value)}),
    ...pivotLinks(field, value),
    h('button', {type: 'button', class: 'icon-btn tiny', title: `Filter ${field}:${value}`, 'aria-label': `Filter ${field}`,
      onclick: () => ctx.onPivot([token(field, value)], false)}, icon('filter')),
    h('button', {type: 'button', class: 'icon-btn tiny', title: 'Copy', 'aria-label': 'Copy',
      onclick: () => copyText(String(value))}, icon('copy')));
}

function renderHead(threat) {
  const sev = $('drawer-sev');
  sev.className = `sev sev-${threat.severity}`;
  sev.textContent = threat.severity;
  $('drawer-title').textContent = threat.trail;
  $('drawer-title').title = threat.trail;
}

function factsSection(threat) {
  const lead = h('div', {class: 'lead'},
    h('p', {class: 'lead-info', text: threat.info || '–'}),
    h('p', {class: 'muted'}, 'Reference ', h('span', {class: 'mono', text: threat.reference || '–'}),
      h('span', {class: ['status', 'sep', `st-${threat.status || 'new'}`], text: STATUS_LABELS[threat.status] || 'New'})));
  const values = (threat.values || []).length > 1
    ? h('details', {class: 'values'}, h('summary', {text: `${threat.values.length} distinct trails`}),
      h('ul', {class: 'mono values-list'}, ...threat.values.map((v) => h('li', {text: v}))))
    : null;
  if (values) lead.append(values);
  if (threat.flood) {
    lead.append(h('details', {class: 'values flood-sources'},
      h('summary', {text: `flood: ${num(threat.source_count)} distinct sources`}),
      h('ul', {class: 'mono values-list'}, ...(threat.sources || []).map((v) => h('li', {text: v})))));
  }
  const trailLinks = pivotLinks('trail', threat.trail);
  if (trailLinks.length) lead.append(h('p', {class: 'pivot-links'}, h('span', {class: 'muted', text: 'Look up the trail '}),
    ...trailLinks));
  const dl = h('dl', {class: 'facts two'},
    fact('Source', threat.flood ? h('span', {class: 'mono', text: `${num(threat.source_count)} sources (flood)`})
      : filterable('src', threat.src_ip)),
    fact('Events', h('span', {class: 'mono', text: num(threat.count)})),
    fact('Destination', filterable('dst', threat.dst_ip)),
    fact('First seen', h('span', {class: 'mono', text: fmtDateTime(threat.first_seen)})),
    fact('Port', filterable('port', threat.dst_port)),
    fact('Last seen', h('span', {class: 'mono', text: fmtDateTime(threat.last_seen)}),
      h('span', {class: 'muted sep', text: ago(threat.last_seen)})),
    fact('Protocol', h('span', {class: 'mono', text: threat.proto || '–'})),
    fact('Active for', h('span', {class: 'mono', text: span(threat.last_seen - threat.first_seen)})),
    fact('Type', h('span', {class: ['type-tag', typeClass(threat.type)], text: threat.type})),
    fact('Sensor', h('span', {class: 'mono', text: threat.sensor || '–'})),
    fact('Threat id', h('span', {class: 'mono muted', text: threat.id})));
  return h('section', {class: 'drawer-sec'}, lead, dl,
    h('div', {class: 'hourly'}, h('span', {class: 'muted', text: 'Events per hour of day'}),
      sparkline(threat.hourly, {width: 288, height: 36, cls: 'spark spark-big'}),
      h('div', {class: 'hourly-axis muted mono'}, h('span', {text: '00'}), h('span', {text: '06'}), h('span', {text: '12'}),
        h('span', {text: '18'}), h('span', {text: '23'}))));
}

function triageSection(threat) {
  const statusBox = h('div', {class: 'segmented', role: 'radiogroup', 'aria-label': 'Status'});
  let chosen = threat.status || 'new';
  const buttons = Object.entries(STATUS_LABELS).map(([key, label]) => {
    const b = h('button', {type: 'button', role: 'radio', class: ['seg-btn', `st-${key}`], 'aria-checked': String(key === chosen),
      dataset: {status: key}, text: label, onclick: () => {
        chosen = key;
        for (const other of buttons) other.setAttribute('aria-checked', String(other === b));
      }});
    return b;
  });
  statusBox.append(...buttons);
  const note = h('textarea', {id: 'triage-note', rows: 3, maxlength: 2000, placeholder: 'Note shared with every analyst',
    'aria-label': 'Note'});
  note.value = threat.note || '';
  const tags = h('input', {id: 'triage-tags', maxlength: 260, placeholder: 'Tags, comma separated (e.g. apt-x, vpn)',
    'aria-label': 'Tags'});
  tags.value = (threat.tags || []).join(', ');
  const history = h('div', {class: 'triage-history', id: 'triage-history'});
  loadHistory(threat.id, history);
  const save = h('button', {type: 'button', id: 'triage-save', class: 'btn btn-primary', text: 'Save triage'});
  save.addEventListener('click', async () => {
    save.disabled = true;
    try {
      const updated = await api.post(`/api/triage/${encodeURIComponent(threat.id)}`, {status: chosen, note: note.value,
        tags: tags.value.split(',').map((t) => t.trim()).filter(Boolean)});
      current = {...current, ...updated};
      toast(`Marked ${STATUS_LABELS[chosen].toLowerCase()}`);
      ctx.onChanged(current);
    } catch (err) {
      toast(`Triage not saved: ${err.message}`, 'error');
    } finally {
      save.disabled = false;
    }
  });
  return h('section', {class: 'drawer-sec'}, h('h3', {text: 'Triage'}), statusBox, note, tags,
    h('div', {class: 'row-end'}, save), history);
}

/** Who changed the triage, what and when (newest first). */
async function loadHistory(id, box) {
  try {
    const res = await api.get(`/api/threats/${encodeURIComponent(id)}/history`);
    const items = res.history || [];
    if (!items.length) return;
    box.append(h('details', {open: items.length <= 3}, h('summary', {text: `History (${items.length})`}),
      h('ol', {class: 'history-list'}, ...items.map((x) => h('li', {},
        h('span', {class: 'mono muted', text: fmtDateTime(x.at)}), ' ',
        h('strong', {text: x.user}), ' ',
        h('span', {class: ['status', `st-${x.status}`], text: STATUS_LABELS[x.status] || x.status}),
        (x.tags || []).length ? h('span', {class: 'muted', text: ` [${x.tags.join(', ')}]`}) : null,
        x.note ? h('span', {class: 'history-note', text: ` — ${x.note}`}) : null)))));
  } catch {
    // The history is extra: the triage form works without it.
  }
}

function suppressSection(threat) {
  const scope = h('select', {id: 'supp-scope', 'aria-label': 'Suppression scope'},
    h('option', {value: 'both', text: `This source + trail`}),
    h('option', {value: 'source', text: `Source ${threat.src_ip} (any trail)`}),
    h('option', {value: 'trail', text: `This trail (any source)`}));
  const note = h('input', {id: 'supp-note', placeholder: 'Why (shared with every analyst)', maxlength: 500,
    'aria-label': 'Suppression note'});
  const go = h('button', {type: 'button', id: 'supp-create', class: 'btn', text: 'Suppress'});
  go.addEventListener('click', async () => {
    go.disabled = true;
    const body = {scope: scope.value, note: note.value};
    if (scope.value !== 'trail') body.src_ip = threat.src_ip;
    if (scope.value !== 'source') body.trail = threat.trail;
    try {
      await api.post('/api/suppressions', body);
      toast('Suppression rule added; matching threats are hidden');
      ctx.onSuppressed();
    } catch (err) {
      toast(`Not suppressed: ${err.message}`, 'error');
    } finally {
      go.disabled = false;
    }
  });
  return h('section', {class: 'drawer-sec'}, h('h3', {text: 'Suppress'}),
    h('div', {class: 'inline-form'}, scope, note, go));
}

function pivotSection(threat) {
  const huntBox = h('div', {class: 'hunt-result'});
  const hunt = (indicator) => async () => {
    clear(huntBox).append(h('p', {class: 'muted', text: `Hunting ${indicator} in every retained day…`}));
    try {
      const res = await api.get('/api/hunt', {indicator, budget: 10});
      clear(huntBox);
      const days = res.days || [];
      const hits = days.reduce((a, d) => a + d.hits, 0);
      huntBox.append(h('p', {}, h('strong', {class: 'mono', text: indicator}),
        ` — ${num(hits)} events on ${days.filter((d) => d.hits).length} days`,
        res.complete ? '' : h('span', {class: 'warn', text: ' (time budget reached: partial)'})));
      const list = h('ul', {class: 'hunt-days'});
      for (const d of days.filter((x) => x.hits || !x.complete)) {
        list.append(h('li', {}, h('button', {type: 'button', class: 'linkish mono', text: d.date,
          onclick: () => ctx.onDay(d.date)}), h('span', {class: 'mono', text: ` ${num(d.hits)}`}),
        d.complete ? null : h('span', {class: 'warn', text: ' partial'})));
      }
      huntBox.append(list);
      if (hits) huntBox.append(await huntEvents(indicator, 1));
    } catch (err) {
      clear(huntBox).append(h('p', {class: 'form-error', text: `Hunt failed: ${err.message}`}));
    }
  };
  return h('section', {class: 'drawer-sec'}, h('h3', {text: 'Pivots'}),
    h('div', {class: 'pivots'},
      h('button', {type: 'button', class: 'btn', id: 'pivot-source', onclick: () => ctx.onPivot([token('src', threat.src_ip)], true)},
        'Same source ', h('span', {class: 'mono muted', text: threat.src_ip})),
      h('button', {type: 'button', class: 'btn', id: 'pivot-trail', onclick: () => ctx.onPivot([token('trail', threat.trail)], true)},
        'Same trail ', h('span', {class: 'mono muted', text: threat.trail})),
      h('button', {type: 'button', class: 'btn', title: 'Search every retained day', onclick: hunt(threat.src_ip)},
        icon('hunt'), ' Hunt source'),
      h('button', {type: 'button', class: 'btn', title: 'Search every retained day', onclick: hunt(threat.trail)},
        icon('hunt'), ' Hunt trail'),
      h('button', {type: 'button', class: 'btn', title: 'Copy the defanged trail', onclick: () => copyText(defang(threat.trail))},
        icon('copy'), ' Defanged')),
    huntBox);
}

const HUNT_PAGE = 50;

/** The hunted events, a page at a time, with a CSV / JSON export of all of them. */
async function huntEvents(indicator, page) {
  const res = await api.get('/api/hunt/events', {indicator, page, per_page: HUNT_PAGE});
  const pages = Math.max(1, Math.ceil(res.total / HUNT_PAGE));
  const box = h('div', {class: 'hunt-events'});
  const go = (n) => async () => box.replaceWith(await huntEvents(indicator, n));
  const exportUrl = (format) => `/api/hunt/export?${new URLSearchParams({indicator, format})}`;
  box.append(h('div', {class: 'hunt-pager'},
    h('button', {type: 'button', class: 'btn btn-small', id: 'hunt-prev', disabled: page <= 1, onclick: go(page - 1),
      text: '‹ Newer'}),
    h('span', {class: 'mono', id: 'hunt-page', text: `page ${page} of ${pages} · ${num(res.total)} events`}),
    h('button', {type: 'button', class: 'btn btn-small', id: 'hunt-next', disabled: page >= pages, onclick: go(page + 1),
      text: 'Older ›'}),
    h('a', {class: 'btn btn-small', id: 'hunt-csv', href: exportUrl('csv'), download: '', text: 'CSV'}),
    h('a', {class: 'btn btn-small', href: exportUrl('json'), download: '', text: 'JSON'})),
  rowsTable(res.events || [], 'hunt-events-table'));
  return box;
}

function rowsTable(events, id) {
  const rows = events.map((e) => h('tr', {},
    h('td', {class: 'mono', title: fmtDateTime(e.time), text: fmtDateTime(e.time)}),
    h('td', {class: 'mono', text: endpoint(e.src_ip, e.src_port)}),
    h('td', {class: 'mono', text: endpoint(e.dst_ip, e.dst_port)}),
    h('td', {}, h('span', {class: ['type-tag', typeClass(e.type)], text: e.type})),
    h('td', {class: 'mono cut', title: e.trail, text: e.trail}),
    h('td', {class: 'cut', title: e.info, text: e.info})));
  return h('div', {class: 'events-wrap'}, h('table', {class: 'grid events', id},
    h('thead', {}, h('tr', {}, ...['Time', 'Source', 'Destination', 'Type', 'Trail', 'Info']
      .map((t) => h('th', {scope: 'col', text: t})))),
    h('tbody', {}, rows)));
}

function eventsTable(events, total) {
  const rows = events.map((e) => h('tr', {},
    h('td', {class: 'mono', title: fmtDateTime(e.time), text: fmtTimeMs(e.time)}),
    h('td', {class: 'mono', text: endpoint(e.src_ip, e.src_port)}),
    h('td', {class: 'mono', text: endpoint(e.dst_ip, e.dst_port)}),
    h('td', {text: e.proto}),
    h('td', {}, h('span', {class: ['type-tag', typeClass(e.type)], text: e.type})),
    h('td', {class: 'mono cut', title: e.trail, text: e.trail}),
    h('td', {class: 'cut', title: e.info, text: e.info}),
    h('td', {class: 'mono cut', title: e.reference, text: e.reference}),
    h('td', {class: 'mono', text: e.sensor})));
  const more = total > events.length ? ` (newest ${num(events.length)} of ${num(total)})` : '';
  return h('section', {class: 'drawer-sec'}, h('h3', {}, 'Raw events', h('span', {class: 'muted', text: more})),
    h('div', {class: 'events-wrap'}, h('table', {class: 'grid events', id: 'drawer-events'},
      h('thead', {}, h('tr', {}, ...['Time', 'Source', 'Destination', 'Proto', 'Type', 'Trail', 'Info', 'Reference', 'Sensor']
        .map((t) => h('th', {scope: 'col', text: t})))),
      h('tbody', {}, rows))));
}

function render(threat, events) {
  renderHead(threat);
  const body = clear($('drawer-body'));
  body.append(factsSection(threat), triageSection(threat), suppressSection(threat), pivotSection(threat));
  if (events) body.append(eventsTable(events, threat.count));
  else body.append(h('section', {class: 'drawer-sec'}, h('p', {class: 'muted', text: 'Loading raw events…'})));
}

/** Open the drawer on `threat`; `context` = {from, to, onPivot, onChanged, onSuppressed, onDay}. */
export async function openDrawer(threat, context) {
  ctx = context;
  current = threat;
  const seq = ++loadSeq;
  $('drawer').hidden = false;
  document.body.classList.add('drawer-open');
  render(threat, null);
  try {
    const res = await api.get(`/api/threats/${encodeURIComponent(threat.id)}/events`,
      {from: context.from, to: context.to, limit: EVENT_LIMIT});
    if (seq !== loadSeq) return;
    current = {...threat, ...res.threat};
    render(current, res.events || []);
  } catch (err) {
    if (seq !== loadSeq) return;
    $('drawer-body').lastChild.replaceChildren(h('p', {class: 'form-error', text: `Raw events unavailable: ${err.message}`}));
  }
}

/** Re-render the open drawer after a refresh (keeps the analyst's place, unless they are typing). */
export function refreshDrawer(threat) {
  if (!current || current.id !== threat.id || $('drawer').hidden) return;
  if ($('drawer').contains(document.activeElement) && document.activeElement.matches('textarea, input, select')) return;
  if (threat.count !== current.count || threat.status !== current.status) openDrawer(threat, ctx);
}
