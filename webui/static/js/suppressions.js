// Suppression rules shared by every analyst (GET/POST/DELETE /api/suppressions): listed in a
// dialog where any rule can be lifted.

import {api} from './api.js';
import {h, $, clear, toast} from './dom.js';
import {fmtDateTime} from './format.js';

let onChange = () => {};

async function load() {
  const box = clear($('supp-list'));
  box.append(h('p', {class: 'muted', text: 'Loading…'}));
  try {
    const res = await api.get('/api/suppressions');
    clear(box);
    const rules = res.rules || [];
    if (!rules.length) {
      box.append(h('p', {class: 'empty', text: 'No suppression rules.'}));
      return;
    }
    const body = h('tbody');
    for (const r of rules) {
      body.append(h('tr', {dataset: {id: r.id}},
        h('td', {text: r.scope}),
        h('td', {class: 'mono', text: r.src_ip || '–'}),
        h('td', {class: 'mono cut', title: r.trail || '', text: r.trail || '–'}),
        h('td', {class: 'cut', title: r.note || '', text: r.note || ''}),
        h('td', {text: r.user || ''}),
        h('td', {class: 'mono', text: r.created ? fmtDateTime(r.created) : ''}),
        h('td', {}, h('button', {type: 'button', class: 'btn btn-small', text: 'Lift', onclick: async () => {
          try {
            await api.del(`/api/suppressions/${encodeURIComponent(r.id)}`);
            toast('Suppression lifted');
            onChange();
            load();
          } catch (err) {
            toast(`Not lifted: ${err.message}`, 'error');
          }
        }}))));
    }
    box.append(h('table', {class: 'grid', id: 'supp-table'},
      h('thead', {}, h('tr', {}, ...['Scope', 'Source', 'Trail', 'Note', 'By', 'Created', ''].map((t) => h('th', {scope: 'col', text: t})))),
      body));
  } catch (err) {
    clear(box).append(h('p', {class: 'form-error', text: `Rules unavailable: ${err.message}`}));
  }
}

export function openSuppressions() {
  $('supp-dialog').showModal();
  load();
}

export function initSuppressions(changed) {
  onChange = changed;
  $('supp-btn').addEventListener('click', () => {
    $('user-menu').hidden = true;
    openSuppressions();
  });
}
