// Users panel (admins without a scope limit): the users with role, scope and state, a form to
// create one, and per user: change role or scope, reset the password, disable / enable, remove
// (GET/POST/DELETE /api/users). The server refuses what would leave no enabled admin.

import {api} from './api.js';
import {h, $, clear, toast} from './dom.js';

const ROLES = ['viewer', 'analyst', 'admin'];

const scopeList = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);

function roleSelect(value, label) {
  return h('select', {'aria-label': label}, ...ROLES.map((r) => h('option', {value: r, text: r, selected: r === value})));
}

async function change(name, body, done) {
  try {
    await api.post(`/api/users/${encodeURIComponent(name)}`, body);
    toast(done);
    load();
  } catch (err) {
    toast(`User ${name} not changed: ${err.message}`, 'error');
  }
}

function row(u) {
  const role = roleSelect(u.role, `Role of ${u.name}`);
  const scope = h('input', {type: 'text', class: 'mono', value: u.scope.join(', '), placeholder: 'everything',
    'aria-label': `Scope of ${u.name}`});
  return h('tr', {dataset: {name: u.name}, class: u.disabled ? 'muted' : ''},
    h('td', {class: 'mono', text: u.name}),
    h('td', {}, role),
    h('td', {}, scope),
    h('td', {text: u.disabled ? 'disabled' : 'active'}),
    h('td', {class: 'user-actions'},
      h('button', {type: 'button', class: 'btn btn-small', text: 'Save', onclick: () => change(u.name,
        {role: role.value, scope: scopeList(scope.value)}, `User ${u.name} saved`)}),
      h('button', {type: 'button', class: 'btn btn-small', text: 'Password…', onclick: () => {
        const password = window.prompt(`New password for ${u.name} (10 characters or more)`);
        if (password) change(u.name, {password}, `Password of ${u.name} reset`);
      }}),
      h('button', {type: 'button', class: 'btn btn-small', text: u.disabled ? 'Enable' : 'Disable',
        onclick: () => change(u.name, {disabled: !u.disabled}, `User ${u.name} ${u.disabled ? 'enabled' : 'disabled'}`)}),
      h('button', {type: 'button', class: 'btn btn-small', text: 'Remove', onclick: async () => {
        if (!window.confirm(`Remove user ${u.name}?`)) return;
        try {
          await api.del(`/api/users/${encodeURIComponent(u.name)}`);
          toast(`User ${u.name} removed`);
          load();
        } catch (err) {
          toast(`User ${u.name} not removed: ${err.message}`, 'error');
        }
      }})));
}

async function load() {
  const box = clear($('users-list'));
  try {
    const users = (await api.get('/api/users')).users || [];
    box.append(h('table', {class: 'grid', id: 'users-table'},
      h('thead', {}, h('tr', {}, ...['User', 'Role', 'Scope', 'State', ''].map((t) => h('th', {scope: 'col', text: t})))),
      h('tbody', {}, ...users.map(row))));
  } catch (err) {
    box.append(h('p', {class: 'form-error', text: `Users unavailable: ${err.message}`}));
  }
}

async function create(e) {
  e.preventDefault();
  const err = $('user-new-error');
  err.hidden = true;
  const name = $('user-new-name').value.trim();
  try {
    await api.post('/api/users', {name, password: $('user-new-pass').value, role: $('user-new-role').value,
      scope: scopeList($('user-new-scope').value)});
    $('user-new-form').reset();
    toast(`User ${name} created`);
    load();
  } catch (error) {
    err.hidden = false;
    err.textContent = error.message;
  }
}

/** The menu entry only for an admin whose scope is everything (the server checks it too). */
export function initUsers(session) {
  const allowed = session.role === 'admin' && !(session.scope || []).length;
  $('users-btn').hidden = !allowed;
  if ($('users-btn').dataset.wired) return;
  $('users-btn').dataset.wired = '1';
  $('users-btn').addEventListener('click', () => {
    $('user-menu').hidden = true;
    $('users-dialog').showModal();
    load();
  });
  $('user-new-form').addEventListener('submit', create);
}
