// Number, time and indicator formatting. Times arrive as epoch seconds and are shown in the
// server's time zone (its days are the log days, the date range and the chart axes), in UTC or
// in the browser's own zone: a persisted toggle.

const TZ_KEY = 'mt.tz';
const MODES = ['server', 'utc', 'local'];
let mode = MODES.includes(localStorage.getItem(TZ_KEY)) ? localStorage.getItem(TZ_KEY) : 'server';
let serverZone = 'UTC';
const formatters = new Map();

export function timeMode() {
  return mode;
}

/** Cycle server -> UTC -> local. */
export function nextTimeMode() {
  mode = MODES[(MODES.indexOf(mode) + 1) % MODES.length];
  localStorage.setItem(TZ_KEY, mode);
}

export function setServerZone(name) {
  serverZone = name || 'UTC';
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

function zone() {
  if (mode === 'utc') return 'UTC';
  if (mode === 'server') return serverZone;
  return undefined;
}

function formatter() {
  const key = zone() || 'local';
  let f = formatters.get(key);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat('en-US', {timeZone: zone(), hourCycle: 'h23', year: 'numeric', month: 'numeric',
        day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric'});
    } catch {
      f = new Intl.DateTimeFormat('en-US', {timeZone: 'UTC', hourCycle: 'h23', year: 'numeric', month: 'numeric',
        day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric'});
    }
    formatters.set(key, f);
  }
  return f;
}

function parts(epoch) {
  const out = {};
  for (const p of formatter().formatToParts(new Date(epoch * 1000))) out[p.type] = Number(p.value);
  return [out.year, out.month, out.day, out.hour, out.minute, out.second];
}

export function fmtDateTime(epoch) {
  if (epoch === null || epoch === undefined) return '';
  const [y, mo, d, hh, mm, ss] = parts(epoch);
  return `${y}-${pad(mo)}-${pad(d)} ${pad(hh)}:${pad(mm)}:${pad(ss)}`;
}

export function fmtTimeMs(epoch) {
  const [, , , hh, mm, ss] = parts(epoch);
  return `${pad(hh)}:${pad(mm)}:${pad(ss)}.${pad(Math.floor((epoch % 1) * 1000), 3)}`;
}

/** Compact: time only when the moment falls on `day` (YYYY-MM-DD), else month-day and time. */
export function fmtCompact(epoch, day) {
  const [y, mo, d, hh, mm, ss] = parts(epoch);
  const date = `${y}-${pad(mo)}-${pad(d)}`;
  const time = `${pad(hh)}:${pad(mm)}:${pad(ss)}`;
  return date === day ? time : `${pad(mo)}-${pad(d)} ${time}`;
}

export function fmtHour(epoch, withDate) {
  const [, mo, d, hh] = parts(epoch);
  return withDate ? `${pad(mo)}-${pad(d)} ${pad(hh)}h` : `${pad(hh)}:00`;
}

export function tzLabel() {
  return {server: 'Server time', utc: 'UTC', local: 'Local'}[mode];
}

/** The display zone's calendar date of a moment, YYYY-MM-DD. */
export function dateOf(epoch) {
  const [y, mo, d] = parts(epoch);
  return `${y}-${pad(mo)}-${pad(d)}`;
}

export function ago(epoch) {
  const s = Math.max(0, Date.now() / 1000 - epoch);
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function span(seconds) {
  if (seconds < 1) return '< 1 s';
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} days`;
}

const grouped = new Intl.NumberFormat('en-US');
export function num(n) {
  return grouped.format(n || 0);
}

export function compact(n) {
  n = n || 0;
  if (n < 1000) return String(Math.round(n));
  if (n < 1e6) return `${(n / 1e3).toFixed(n < 1e4 ? 1 : 0)}k`;
  if (n < 1e9) return `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)}M`;
  return `${(n / 1e9).toFixed(1)}G`;
}

export function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  n = n || 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function pct(fraction) {
  return `${(100 * (fraction || 0)).toFixed(fraction < 0.1 ? 1 : 0)}%`;
}

/** Local calendar dates as YYYY-MM-DD (the daily log names use the server's local date). */
export function isoDate(d) {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

export function parseDate(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text || '');
  return m ? new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3])) : null;
}

export function addDays(text, n) {
  const d = parseDate(text);
  d.setDate(d.getDate() + n);
  return isoDate(d);
}

export function daysBetween(a, b) {
  return Math.round((parseDate(b) - parseDate(a)) / 86400000);
}

export function endpoint(ip, port) {
  if (port === null || port === undefined || port === '' || port === '-') return ip;
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}
