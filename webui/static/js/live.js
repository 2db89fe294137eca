// Live mode: a Server-Sent Events stream of new events (GET /api/live). The browser's
// EventSource resumes with Last-Event-ID after a drop; if the stream is refused the view falls
// back to polling. New events go to the live feed and ask the view to refresh.

import {h, $, clear} from './dom.js';
import {endpoint, fmtTimeMs, num} from './format.js';
import {typeClass} from './charts.js';
import {token} from './search.js';

const FEED_MAX = 100;
const SEEN_MAX = 5000;
// A scoped user's event ids are opaque: not ordered, only equal or not. The ids this stream has
// delivered (and its start mark) tell which events follow an answer's `as_of` (webui/live.py).
const seen = new Set();
const NOTIFY_PER_MINUTE = 5;
let notified = [];
const POLL_MS = 10000;
let source = null;
let lastId = '';
let received = 0;
let pollTimer = 0;
let handlers = {onEvent: () => {}, onPoll: () => {}, onPivot: () => {}};

function setState(text, cls) {
  const el = $('live-state');
  el.textContent = text;
  el.className = cls || 'muted';
  $('live-btn').dataset.state = cls || '';
}

function feedItem(e) {
  return h('li', {class: ['feed-item', `row-${e.severity}`, 'row-changed']},
    h('button', {type: 'button', class: 'feed-btn', title: 'Show this source and trail',
      onclick: () => handlers.onPivot([token('src', e.src_ip), token('trail', e.trail)])},
    h('span', {class: 'mono muted', text: fmtTimeMs(e.time)}),
    h('span', {class: ['sev', `sev-${e.severity}`], text: e.severity}),
    h('span', {class: 'mono', text: `${endpoint(e.src_ip, e.src_port)} → ${endpoint(e.dst_ip, e.dst_port)}`}),
    h('span', {class: ['type-tag', typeClass(e.type)], text: e.type}),
    h('span', {class: 'mono feed-trail', text: e.trail}),
    h('span', {class: 'feed-info', text: e.info})));
}

function onMessage(msg) {
  let e;
  try {
    e = JSON.parse(msg.data);
  } catch {
    return;
  }
  lastId = msg.lastEventId || lastId;
  received += 1;
  const feed = $('live-feed');
  feed.prepend(feedItem(e));
  while (feed.children.length > FEED_MAX) feed.lastChild.remove();
  $('live-panel').hidden = false;
  $('live-total').textContent = `${num(received)} received`;
  const badge = $('live-count');
  badge.hidden = false;
  badge.textContent = received > 999 ? '999+' : String(received);
  notify(e);
  handlers.onEvent(e);
  remember(String(e.id));
}

function remember(id) {
  seen.add(id);
  if (seen.size > SEEN_MAX) seen.delete(seen.values().next().value);
}

function onMark(msg) {
  try {
    remember(String(JSON.parse(msg.data).id));
  } catch {
    // A bad frame: the page refreshes instead of applying deltas.
  }
}

/** Whether the stream has already delivered the event with this opaque id (or marked it as its start). */
export function deliveredBefore(id) {
  return seen.has(id);
}

function notifyWanted() {
  return localStorage.getItem('mt.notify') === 'on' && 'Notification' in window
    && Notification.permission === 'granted';
}

/** A desktop notification for a new high-severity threat (opt-in; at most a few a minute). */
function notify(e) {
  if (!e.new_threat || e.severity !== 'high' || !notifyWanted()) return;
  const now = Date.now();
  notified = notified.filter((t) => now - t < 60000);
  if (notified.length >= NOTIFY_PER_MINUTE) return;
  notified.push(now);
  const n = new Notification(`High-severity threat: ${e.trail}`, {body: `${e.src_ip} → ${e.dst_ip}  ${e.info}`,
    tag: e.threat});
  n.onclick = () => {
    window.focus();
    handlers.onPivot([token('src', e.src_ip), token('trail', e.trail)]);
  };
}

function showNotifyState() {
  $('notify-btn').setAttribute('aria-pressed', String(notifyWanted()));
}

async function toggleNotify() {
  if (!('Notification' in window)) {
    setState('this browser has no desktop notifications', 'warn');
    return;
  }
  if (localStorage.getItem('mt.notify') === 'on') {
    localStorage.setItem('mt.notify', 'off');
  } else {
    const answer = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
    localStorage.setItem('mt.notify', answer === 'granted' ? 'on' : 'off');
    if (answer !== 'granted') setState('notifications refused by the browser', 'warn');
  }
  showNotifyState();
}

function connect() {
  const url = lastId ? `/api/live?after=${encodeURIComponent(lastId)}` : '/api/live';
  source = new EventSource(url);
  source.addEventListener('open', () => {
    clearInterval(pollTimer);
    pollTimer = 0;
    setState('connected', 'ok');
  });
  source.addEventListener('event', onMessage);
  source.addEventListener('mark', onMark);
  source.addEventListener('error', () => {
    if (!source) return;
    if (source.readyState === EventSource.CLOSED) {
      // Refused (e.g. session expired or stream budget): poll, and try the stream again later.
      source = null;
      setState('stream unavailable, polling', 'warn');
      handlers.onPoll(true);
      if (!pollTimer) pollTimer = setInterval(() => handlers.onPoll(false), POLL_MS);
      setTimeout(() => { if (isLive() && !source) connect(); }, POLL_MS * 3);
    } else {
      setState('reconnecting…', 'warn');
    }
  });
}

export function isLive() {
  return $('live-btn').getAttribute('aria-pressed') === 'true';
}

/** Start the stream; `remember` stores the analyst's choice for the next visit. */
export function startLive(remember = false) {
  $('live-btn').setAttribute('aria-pressed', 'true');
  if (remember) localStorage.setItem('mt.live', 'on');
  $('live-panel').hidden = false;
  if (!source) connect();
  setState('connecting…', '');
}

export function stopLive(remember = false) {
  $('live-btn').setAttribute('aria-pressed', 'false');
  if (remember) localStorage.setItem('mt.live', 'off');
  if (source) source.close();
  source = null;
  clearInterval(pollTimer);
  pollTimer = 0;
  setState('off', '');
  $('live-panel').hidden = true;
}

export function resetLiveCounter() {
  received = 0;
  $('live-count').hidden = true;
  clear($('live-feed'));
  $('live-total').textContent = '';
}

export function initLive(options) {
  handlers = options;
  $('live-btn').addEventListener('click', () => (isLive() ? stopLive(true) : startLive(true)));
  $('notify-btn').addEventListener('click', toggleNotify);
  showNotifyState();
}

export function liveWanted() {
  return localStorage.getItem('mt.live') !== 'off';
}
