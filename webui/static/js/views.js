// Saved views: a named search and date range kept on the server for this user (GET/POST/DELETE
// /api/views). A range that ends today is saved as "the last N days" and so rolls forward.

import {api} from './api.js';
import {h, $, clear, toast} from './dom.js';

let saved = [];
let hooks = {current: () => ({}), apply: () => {}};

async function load() {
  try {
    saved = (await api.get('/api/views')).views || [];
  } catch {
    saved = [];
  }
  const select = clear($('views-select'));
  select.append(h('option', {value: '', text: saved.length ? 'Saved views…' : 'No saved views'}));
  for (const v of saved) select.append(h('option', {value: String(v.id), text: v.name}));
  $('view-delete').hidden = true;
}

async function save() {
  const view = hooks.current();
  const name = (window.prompt('Name of this view (search and date range)') || '').trim();
  if (!name) return;
  const body = {name, q: view.q};
  if (view.to === view.today) body.days = view.days;
  else Object.assign(body, {from: view.from, to: view.to});
  try {
    await api.post('/api/views', body);
    toast(`View "${name}" saved`);
    await load();
  } catch (err) {
    toast(`View not saved: ${err.message}`, 'error');
  }
}

async function remove() {
  const id = $('views-select').value;
  if (!id) return;
  try {
    await api.del(`/api/views/${encodeURIComponent(id)}`);
    await load();
  } catch (err) {
    toast(`View not deleted: ${err.message}`, 'error');
  }
}

/** `current()` -> {q, from, to, today, days}; `apply(view)` shows a saved view. */
export function initViews(options) {
  hooks = options;
  $('view-save').addEventListener('click', save);
  $('view-delete').addEventListener('click', remove);
  $('views-select').addEventListener('change', (e) => {
    const view = saved.find((v) => String(v.id) === e.target.value);
    $('view-delete').hidden = !view;
    if (view) hooks.apply(view);
  });
  load();
}
