// Dashboard entry point: login, the view (range + search + sort + page) and its refresh, the
// wiring between the table, charts, drawer, live stream, engine panel, and keyboard shortcuts.

import {api, ApiError, setCsrf, setUnauthorizedHandler} from './api.js';
import {h, $, clear, setIcon, toast} from './dom.js';
import {addDays, daysBetween, isoDate, nextTimeMode, num, compact, setServerZone, tzLabel} from './format.js';
import {addToken, describe, negate, severityOf, token, tokenize} from './search.js';
import {q, rangeParams, readHash, state, viewParams, writeHash} from './state.js';
import {bars, donut, timeline} from './charts.js';
import {closeValueMenu, forgetRows, markOpen, move, renderHead, renderPager, renderRows, selectedThreat} from './table.js';
import {closeDrawer, drawerThreatId, openDrawer, refreshDrawer, setPivotLinks} from './drawer.js';
import {closePicker, initPicker, isOpen as pickerOpen, latestDayWithData, rangeLabel} from './datepicker.js';
import {deliveredBefore, initLive, isLive, liveWanted, resetLiveCounter, startLive, stopLive} from './live.js';
import {initEngine, isOpen as engineOpen, startEngine, stopEngine, toggleEngine} from './engine.js';
import {initSensors} from './sensors.js';
import {initSuppressions} from './suppressions.js';
import {initTheme, toggleTheme} from './theme.js';
import {initUsers} from './users.js';
import {initViews} from './views.js';

// Live mode: events update the rows and charts in place (deltas); the whole view is asked for
// again only on shared wall-clock boundaries, so every open tab asks at the same moment and the
// server answers them with one computation. A new threat, or a searched view (whose filter only
// the server can apply), waits for the next short boundary; otherwise the long one.
const LIVE_NEW_MS = 3000;
const LIVE_FULL_MS = 30000;
const DRAW_MS = 500;
let refreshDue = 0;
let drawTimer = 0;
let controller = null;
let lastThreats = null;
let lastStats = null;
let pages = 1;
let refreshTimer = 0;
let started = false;
let latestData = '';

// ---- login ---------------------------------------------------------------------------------

function showLogin(message) {
  stopLive();
  stopEngine();
  $('app').hidden = true;
  $('login-view').hidden = false;
  const err = $('login-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('login-pass').value = '';
  ($('login-user').value ? $('login-pass') : $('login-user')).focus();
}

async function submitLogin(e) {
  e.preventDefault();
  const button = $('login-submit');
  const err = $('login-error');
  button.disabled = true;
  err.hidden = true;
  try {
    const res = await api.post('/api/login', {username: $('login-user').value, password: $('login-pass').value},
      {quiet401: true});
    $('login-pass').value = '';
    await startApp(res);
  } catch (error) {
    err.hidden = false;
    if (error instanceof ApiError && error.status === 429) {
      const wait = Number(error.body.retry_after) || 0;
      err.textContent = `Too many attempts: try again in ${Math.ceil(wait)} s.`;
    } else if (error instanceof ApiError && error.status === 401) {
      err.textContent = 'Wrong username or password.';
    } else {
      err.textContent = `Sign-in failed: ${error.message}`;
    }
  } finally {
    button.disabled = false;
  }
}

async function logout() {
  $('user-menu').hidden = true;
  try {
    await api.post('/api/logout', {});
  } catch {
    // Signed out either way.
  }
  setCsrf('');
  closeDrawer();
  showLogin('Signed out.');
}

// ---- view refresh --------------------------------------------------------------------------

function exportLinks() {
  for (const format of ['csv', 'json', 'defanged']) {
    const p = new URLSearchParams({format, ...rangeParams(), sort: state.sort, order: state.order});
    if (q()) p.set('q', q());
    $(`export-${format}`).href = `/api/export?${p}`;
  }
}

function renderChips(badToken) {
  const box = clear($('chips'));
  for (const tok of state.tokens) {
    const {neg, field, value} = describe(tok);
    box.append(h('span', {class: ['chip', neg && 'chip-neg', tok === badToken && 'chip-bad'], dataset: {token: tok}},
      h('button', {type: 'button', class: 'chip-body', title: neg ? 'Click to include instead' : 'Click to exclude instead',
        onclick: () => setTokens(state.tokens.map((t) => (t === tok ? negate(t) : t)))},
      neg ? h('span', {class: 'chip-not', text: 'NOT'}) : null,
      field ? h('span', {class: 'chip-field', text: `${field}:`}) : null,
      h('span', {class: 'chip-value', text: value})),
      h('button', {type: 'button', class: 'chip-x', 'aria-label': `Remove ${tok}`, title: 'Remove',
        onclick: () => setTokens(state.tokens.filter((t) => t !== tok))}, '×')));
  }
  if (state.tokens.length > 1) {
    box.append(h('button', {type: 'button', class: 'chip-clear', text: 'clear all', onclick: () => setTokens([])}));
  }
  const input = $('search-input');
  input.placeholder = state.tokens.length ? 'Add a filter…' : input.dataset.placeholder;
}

function renderSevPills(severity) {
  const box = clear($('sev-pills'));
  const active = severityOf(state.tokens);
  const total = ['high', 'medium', 'low'].reduce((a, s) => a + ((severity || {})[s] || 0), 0);
  const pill = (sev, label, n) => h('button', {type: 'button', class: ['pill-btn', sev && `sev-${sev}`, active === sev && 'active'],
    'aria-pressed': String(active === sev), dataset: {sev: sev || 'all'},
    onclick: () => {
      const rest = state.tokens.filter((t) => !/^sev:(high|medium|low)$/i.test(t));
      setTokens(sev && active !== sev ? [...rest, `sev:${sev}`] : rest);
    }}, h('span', {text: label}), h('span', {class: 'mono', text: compact(n)}));
  box.append(pill('', 'All', total));
  for (const s of ['high', 'medium', 'low']) box.append(pill(s, s[0].toUpperCase() + s.slice(1), (severity || {})[s] || 0));
}

function renderRange() {
  $('range-btn').textContent = rangeLabel(state.from, state.to, state.today);
  $('range-next').disabled = state.to >= state.today;
}

function renderEmpty(total) {
  const empty = $('threats-empty');
  empty.hidden = total > 0;
  if (total > 0) return;
  clear(empty).append(h('span', {text: 'No threats in this view. '}));
  if (state.tokens.length) {
    empty.append(h('button', {type: 'button', class: 'linkish', text: 'Clear the search', onclick: () => setTokens([])}));
  } else if (latestData && latestData !== state.from) {
    empty.append(h('button', {type: 'button', class: 'linkish', text: `Go to the latest day with events (${latestData})`,
      onclick: () => setRange(latestData, latestData)}));
  }
}

function renderCharts() {
  if (!lastStats) return;
  const s = lastStats;
  const events = (s.timeline || []).reduce((a, r) => a + r.count, 0);
  $('timeline-total').textContent = `${num(events)} events`;
  timeline($('chart-timeline'), $('legend-timeline'), s.timeline || [], {
    axis: s.axis,
    onType: (type) => addFilter('type', type, false),
    onDay: (day) => setRange(day, day),
  });
  bars($('chart-sources'), s.top_sources || [], (v, alt) => addFilter('src', v, alt), 'No sources');
  bars($('chart-trails'), s.top_trails || [], (v, alt) => addFilter('trail', v, alt), 'No trails');
  donut($('chart-severity'), s.severity || {}, (sev) => setTokens(
    [...state.tokens.filter((t) => !/^sev:(high|medium|low)$/i.test(t)), `sev:${sev}`]));
}

function renderTable() {
  if (!lastThreats) return;
  const res = lastThreats;
  renderHead(state.sort, state.order, setSort);
  renderRows(res.rows || [], {
    day: state.from === state.to ? state.from : '',
    openId: drawerThreatId(),
    onOpen: openThreat,
    onFilter: addFilter,
  });
  $('threat-total').textContent = num(res.total);
  pages = renderPager(res.total, state.page, state.perPage, setPage);
  renderEmpty(res.total);
  const open = drawerThreatId();
  const row = open && (res.rows || []).find((r) => r.id === open);
  if (row) refreshDrawer(row);
}

let indexTimer = 0;

/** While the server is still building its index, answers are partial: say so, with progress,
 * and ask again shortly. */
function showIndexing(answer) {
  const note = $('index-note');
  clearTimeout(indexTimer);
  if (!answer.partial) {
    note.hidden = true;
    return;
  }
  const {bytes_done: done, bytes_total: total} = answer.indexing || {};
  const share = total ? Math.floor((100 * done) / total) : 0;
  note.hidden = false;
  note.textContent = `Indexing the logs: ${share}% read. Counts are partial until it finishes.`;
  indexTimer = setTimeout(() => refresh({quiet: true}), 2000);
}

/** A refused search shows no rows at all: never the previous search's rows under the new chips. */
function clearView() {
  lastThreats = {total: 0, rows: []};
  lastStats = {timeline: [], top_sources: [], top_trails: [], severity: {high: 0, medium: 0, low: 0},
    axis: lastStats && lastStats.axis};
  forgetRows();
  renderTable();
  renderCharts();
  renderSevPills(lastStats.severity);
  $('threats-empty').hidden = true;
  $('threat-total').textContent = '–';
}

/** Fetch threats and stats for the current view and draw them. */
async function refresh({quiet = false} = {}) {
  clearTimeout(refreshTimer);
  refreshTimer = 0;
  refreshDue = 0;
  if (controller) controller.abort();
  controller = new AbortController();
  const signal = controller.signal;
  writeHash();
  renderRange();
  renderChips();
  exportLinks();
  $('view-note').textContent = '';
  document.body.classList.toggle('loading', !quiet);
  try {
    // Each panel is drawn as soon as its own answer arrives (the table does not wait for the charts).
    const threatsDone = api.get('/api/threats', {...viewParams(), sort: state.sort, order: state.order,
      page: state.page, per_page: state.perPage}, {signal}).then((threats) => {
      if (signal.aborted) return false;
      lastThreats = threats;
      if (state.page > 1 && !threats.rows.length && threats.total > 0) {
        state.page = Math.max(1, Math.ceil(threats.total / state.perPage));
        return true;
      }
      renderTable();
      showIndexing(threats);
      return false;
    });
    const statsDone = api.get('/api/stats', viewParams(), {signal}).then((stats) => {
      if (signal.aborted) return;
      lastStats = stats;
      renderCharts();
      renderSevPills(stats.severity);
    });
    const [again] = await Promise.all([threatsDone, statsDone]);
    if (again) refresh();
  } catch (err) {
    if (err.name === 'AbortError') return;
    if (err instanceof ApiError && err.status === 400) {
      clearView();
      const bad = state.tokens.find((t) => err.message.includes(t)) || '';
      renderChips(bad);
      const note = $('view-note');
      note.textContent = `Search: ${err.message}`;
      note.className = 'view-note error';
    } else if (!(err instanceof ApiError && err.status === 401)) {
      toast(`Refresh failed: ${err.message}`, 'error');
    }
  } finally {
    if (!signal.aborted) document.body.classList.remove('loading');
  }
}

function setTokens(tokens) {
  state.tokens = tokens;
  state.page = 1;
  forgetRows();
  $('view-note').className = 'view-note';
  refresh();
}

function addFilter(field, value, exclude) {
  setTokens(addToken(state.tokens, token(field, value, exclude)));
}

function setSort(key) {
  if (state.sort === key) state.order = state.order === 'desc' ? 'asc' : 'desc';
  else {
    state.sort = key;
    state.order = ['src_ip', 'dst_ip', 'dst_port', 'proto', 'type', 'trail', 'info', 'sensor'].includes(key) ? 'asc' : 'desc';
  }
  state.page = 1;
  forgetRows();
  refresh();
}

function setPage(page) {
  const next = Math.max(1, Math.min(pages, page));
  if (next === state.page) return;
  state.page = next;
  forgetRows();
  refresh();
}

function setRange(from, to) {
  state.from = from;
  state.to = to;
  state.page = 1;
  forgetRows();
  refresh();
}

function shiftRange(direction) {
  const len = daysBetween(state.from, state.to) + 1;
  let from = addDays(state.from, direction * len);
  let to = addDays(state.to, direction * len);
  if (to > state.today) {
    to = state.today;
    from = addDays(to, -(len - 1));
  }
  setRange(from, to);
}

function openThreat(threat) {
  markOpen(threat.id);
  openDrawer(threat, {
    ...rangeParams(),
    onPivot: (tokens, replace) => {
      if (replace) closeDrawer();
      setTokens(replace ? tokens : tokens.reduce(addToken, state.tokens));
    },
    onChanged: () => refresh({quiet: true}),
    onSuppressed: () => {
      closeDrawer();
      refresh();
    },
    onDay: (day) => setRange(day, day),
  });
}

// ---- live ----------------------------------------------------------------------------------

/** Refresh at the next multiple of `period` on the clock (the same instant in every tab). */
function refreshAtBoundary(period) {
  const wait = period - (Date.now() % period) + 50;
  if (refreshTimer && refreshDue <= Date.now() + wait) return;
  clearTimeout(refreshTimer);
  refreshDue = Date.now() + wait;
  refreshTimer = setTimeout(() => refresh({quiet: true}), wait);
}

function drawSoon() {
  if (drawTimer) return;
  drawTimer = setTimeout(() => {
    drawTimer = 0;
    renderTable();
    renderCharts();
  }, DRAW_MS);
}

function bump(list, value) {
  const entry = list.find((x) => x.value === value);
  if (entry) entry.count += 1;
}

/** Whether an answer does not include event `e` yet (its `as_of` is the last event it counts). A
 * scoped user's `as_of` is an opaque id ("" for none): `e` follows it when the stream delivered
 * that id before `e`. */
function after(answer, e) {
  if (!answer) return false;
  if (typeof answer.as_of === 'number') return e.id > answer.as_of;
  return typeof answer.as_of === 'string' && (answer.as_of === '' || deliveredBefore(answer.as_of));
}

/** One event folded into the threat on screen and the charts, without asking the server; only
 * into answers that do not count it already. */
function applyDelta(e) {
  const row = after(lastThreats, e) && (lastThreats.rows || []).find((r) => r.id === e.threat);
  if (row) {
    row.count += 1;
    if (e.time > row.last_seen) {
      row.last_seen = e.time;
      Object.assign(row, {dst_ip: e.dst_ip, dst_port: e.dst_port, proto: e.proto, type: e.type, info: e.info,
        sensor: e.sensor});
    }
    if (row.hourly && e.hour >= 0 && e.hour < 24) row.hourly[e.hour] += 1;
  }
  if (after(lastStats, e)) {
    const line = (lastStats.timeline || []).find((p) => p.time === e.bucket && p.type === e.type);
    if (line) line.count += 1;
    else (lastStats.timeline = lastStats.timeline || []).push({time: e.bucket, type: e.type, count: 1});
    bump(lastStats.top_sources || [], e.src_ip);
    bump(lastStats.top_trails || [], row ? row.trail : e.trail);
  }
  drawSoon();
}

function onLiveEvent(e) {
  const day = e.day || isoDate(new Date(e.time * 1000));
  if (day < state.from || day > state.to) {
    $('live-feed-note').textContent = `Live events are arriving for ${day}, outside this range.`;
    return;
  }
  // A scoped answer whose as_of the stream has not delivered yet may or may not count `e`
  // (read before the stream started, or ahead of it): ask again rather than guess.
  const unsure = lastThreats && typeof lastThreats.as_of === 'string' && !after(lastThreats, e);
  if (e.new_threat || state.tokens.length || !lastThreats || lastThreats.as_of === undefined || unsure) {
    refreshAtBoundary(LIVE_NEW_MS);
    return;
  }
  applyDelta(e);
  refreshAtBoundary(LIVE_FULL_MS);
}

// ---- keyboard ------------------------------------------------------------------------------

function closeTopmost() {
  if (closeValueMenu()) return true;
  if (!$('user-menu').hidden) $('user-menu').hidden = true;
  else if (pickerOpen()) closePicker();
  else if (!$('drawer').hidden) {
    closeDrawer();
    markOpen('');
  } else if (engineOpen()) toggleEngine(false);
  else return false;
  return true;
}

/** Move the selection; with the drawer open it follows the selection (like a mail reader). */
function step(delta) {
  move(delta);
  const threat = selectedThreat();
  if (threat && drawerThreatId() && drawerThreatId() !== threat.id) openThreat(threat);
}

function onKey(e) {
  if ($('app').hidden || e.ctrlKey || e.metaKey) return;
  if (document.querySelector('dialog[open]')) return;
  const typing = e.target.matches('input, textarea, select');
  if (e.key === 'Escape') {
    if (typing && e.target.id === 'search-input' && e.target.value) return;
    if (closeTopmost()) e.preventDefault();
    if (typing) e.target.blur();
    return;
  }
  if (typing || e.altKey) return;
  const actions = {
    '/': () => $('search-input').focus(),
    '?': () => $('help-dialog').showModal(),
    ArrowDown: () => step(1),
    j: () => step(1),
    ArrowUp: () => step(-1),
    k: () => step(-1),
    Enter: () => { const t = selectedThreat(); if (t) openThreat(t); },
    ArrowLeft: () => setPage(state.page - 1),
    ArrowRight: () => setPage(state.page + 1),
    PageUp: () => shiftRange(-1),
    PageDown: () => { if (state.to < state.today) shiftRange(1); },
    l: () => (isLive() ? stopLive(true) : startLive(true)),
    e: () => toggleEngine(),
    t: () => toggleTheme(),
  };
  const action = actions[e.key];
  if (!action || (e.key === 'Enter' && e.target.closest('button, a'))) return;
  e.preventDefault();
  action();
}

// ---- start ---------------------------------------------------------------------------------

/** Today is the server's today (the log files are named by its dates), not the browser's. */
function serverToday(session) {
  return session.today || isoDate(new Date());
}

function wireOnce() {
  if (started) return;
  started = true;
  for (const [id, name] of [['search-help-btn', 'help'], ['range-prev', 'left'], ['range-next', 'right'],
    ['drawer-close', 'close'], ['engine-close', 'close']]) setIcon($(id), name);
  for (const b of document.querySelectorAll('.dialog-close')) {
    setIcon(b, 'close');
    b.addEventListener('click', () => b.closest('dialog').close());
  }
  $('search-input').dataset.placeholder = $('search-input').placeholder;
  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const typed = tokenize($('search-input').value.trim());
    $('search-input').value = '';
    if (typed.length) setTokens(typed.reduce(addToken, state.tokens));
  });
  $('search-input').addEventListener('keydown', (e) => {
    if (e.key === 'Backspace' && !e.target.value && state.tokens.length) setTokens(state.tokens.slice(0, -1));
  });
  $('search-help-btn').addEventListener('click', () => $('help-dialog').showModal());
  $('range-prev').addEventListener('click', () => shiftRange(-1));
  $('range-next').addEventListener('click', () => shiftRange(1));
  $('drawer-close').addEventListener('click', () => { closeDrawer(); markOpen(''); });
  $('per-page').addEventListener('change', (e) => {
    state.perPage = Number(e.target.value);
    localStorage.setItem('mt.perPage', String(state.perPage));
    state.page = 1;
    refresh();
  });
  $('tz-btn').addEventListener('click', () => {
    nextTimeMode();
    $('tz-btn').textContent = tzLabel();
    renderTable();
    renderCharts();
  });
  $('user-btn').addEventListener('click', () => {
    const menu = $('user-menu');
    menu.hidden = !menu.hidden;
    $('user-btn').setAttribute('aria-expanded', String(!menu.hidden));
  });
  document.addEventListener('mousedown', (e) => {
    if (!e.target.closest('.user-menu')) $('user-menu').hidden = true;
  });
  $('logout-btn').addEventListener('click', logout);
  document.addEventListener('keydown', onKey);
  initPicker(() => ({from: state.from, to: state.to, today: state.today}), (from, to) => setRange(from, to));
  initLive({
    onEvent: onLiveEvent,
    onPoll: () => refresh({quiet: true}),
    onPivot: (tokens) => setTokens(tokens),
  });
  initSuppressions(() => refresh());
  initViews({
    current: () => ({q: q(), from: state.from, to: state.to, today: state.today,
      days: daysBetween(state.from, state.to) + 1}),
    apply: (view) => {
      state.tokens = view.q ? tokenize(view.q) : [];
      if (view.days) setRange(addDays(state.today, -(view.days - 1)), state.today);
      else setRange(view.from, view.to > state.today ? state.today : view.to);
    },
  });
  initEngine();
  initSensors();
  let resizeTimer = 0;
  new ResizeObserver(() => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(renderCharts, 120);
  }).observe($('chart-timeline'));
}

async function startApp(session) {
  setCsrf(session.csrf);
  setServerZone(session.tz);
  setPivotLinks(session.pivots);
  $('login-view').hidden = true;
  $('app').hidden = false;
  $('user-name').textContent = session.user;
  const scope = session.scope || [];
  $('user-scope').textContent = scope.length ? `Network scope: ${scope.join(', ')}` : 'Network scope: everything';
  $('tz-btn').textContent = tzLabel();
  $('per-page').value = String(state.perPage);
  wireOnce();
  initUsers(session);
  state.today = serverToday(session);
  if (!readHash()) {
    state.from = state.today;
    state.to = state.today;
  }
  if (state.to > state.today) state.to = state.today;
  $('per-page').value = String(state.perPage);
  resetLiveCounter();
  startEngine();
  await refresh();
  if (liveWanted()) startLive();
  else stopLive();
  latestDayWithData(state.today).then((day) => {
    latestData = day;
    if (lastThreats) renderEmpty(lastThreats.total);
  });
}

async function boot() {
  initTheme();
  setUnauthorizedHandler(() => showLogin('Your session has ended: please sign in again.'));
  $('login-form').addEventListener('submit', submitLogin);
  try {
    await startApp(await api.get('/api/session', undefined, {quiet401: true}));
  } catch (err) {
    showLogin(err instanceof ApiError && err.status === 401 ? '' : `Server unavailable: ${err.message}`);
  }
}

boot();
