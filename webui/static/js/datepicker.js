// Date-range picker: presets, from/to inputs and a three-month calendar whose cells are shaded
// by the number of events logged that day (GET /api/days). Click picks a day, shift-click (or
// a click in "range" mode) extends the range from the first picked day.

import {api} from './api.js';
import {h, $, clear, setIcon} from './dom.js';
import {addDays, daysBetween, isoDate, num, parseDate} from './format.js';

const MONTHS = 3;
let cursor = null;  // first day of the right-most month shown
let anchor = '';
let onPick = () => {};
let getRange = () => ({from: '', to: '', today: ''});
let density = new Map();

function level(n) {
  if (!n) return 0;
  if (n < 100) return 1;
  if (n < 1000) return 2;
  if (n < 10000) return 3;
  if (n < 100000) return 4;
  return 5;
}

function monthStart(text) {
  const d = parseDate(text);
  return new Date(d.getFullYear(), d.getMonth(), 1);
}

function shiftMonth(d, n) {
  return new Date(d.getFullYear(), d.getMonth() + n, 1);
}

async function loadDensity(from, to) {
  try {
    const res = await api.get('/api/days', {from, to});
    for (const d of res.days || []) density.set(d.date, d.events);
  } catch {
    // The calendar still works without shading.
  }
}

function pick(day, extend) {
  const {from} = getRange();
  if (extend && (anchor || from)) {
    const start = anchor || from;
    onPick(start < day ? start : day, start < day ? day : start);
    anchor = '';
  } else {
    anchor = day;
    onPick(day, day);
  }
  render();
}

function monthGrid(first) {
  const {from, to, today} = getRange();
  const title = first.toLocaleDateString(undefined, {month: 'long', year: 'numeric'});
  const grid = h('div', {class: 'cal-grid', role: 'grid', 'aria-label': title});
  for (const wd of ['Mo', 'Tu', 'We', 'Th', 'Fr', 'Sa', 'Su']) grid.append(h('span', {class: 'cal-wd', text: wd}));
  const lead = (first.getDay() + 6) % 7;
  for (let i = 0; i < lead; i++) grid.append(h('span'));
  const days = new Date(first.getFullYear(), first.getMonth() + 1, 0).getDate();
  for (let d = 1; d <= days; d++) {
    const day = isoDate(new Date(first.getFullYear(), first.getMonth(), d));
    const n = density.get(day) || 0;
    grid.append(h('button', {
      type: 'button', class: ['cal-day', `d${level(n)}`, day >= from && day <= to && 'in-range', day === today && 'today',
        day === anchor && 'anchor'],
      dataset: {date: day}, title: `${day}: ${num(n)} events`, 'aria-label': `${day}, ${num(n)} events`,
      disabled: day > today || undefined, text: String(d),
      onclick: (e) => pick(day, e.shiftKey),
    }));
  }
  return h('div', {class: 'cal-month'}, h('div', {class: 'cal-title', text: title}), grid);
}

function render() {
  const box = clear($('calendar'));
  for (let i = MONTHS - 1; i >= 0; i--) box.append(monthGrid(shiftMonth(cursor, -i)));
  const {from, to} = getRange();
  $('range-from').value = from;
  $('range-to').value = to;
}

async function showMonths() {
  const first = isoDate(shiftMonth(cursor, -(MONTHS - 1)));
  const last = isoDate(new Date(cursor.getFullYear(), cursor.getMonth() + 1, 0));
  render();
  await loadDensity(first, last);
  render();
}

export function isOpen() {
  return !$('range-pop').hidden;
}

export function closePicker() {
  $('range-pop').hidden = true;
  $('range-btn').setAttribute('aria-expanded', 'false');
}

export function openPicker() {
  const {to} = getRange();
  cursor = monthStart(to);
  anchor = '';
  $('range-pop').hidden = false;
  $('range-btn').setAttribute('aria-expanded', 'true');
  showMonths();
  $('calendar').querySelector('.cal-day.in-range, .cal-day.today')?.focus();
}

/** Latest day with events in the retained logs, or '' (the API serves at most 366 days a query). */
export async function latestDayWithData(today, years = 10) {
  let to = today;
  for (let i = 0; i < years; i++) {
    const from = addDays(to, -365);
    try {
      const res = await api.get('/api/days', {from, to});
      const days = (res.days || []).filter((d) => d.events > 0).map((d) => d.date).sort();
      for (const d of res.days || []) density.set(d.date, d.events);
      if (days.length) return days[days.length - 1];
    } catch {
      return '';
    }
    to = addDays(from, -1);
  }
  return '';
}

export function initPicker(range, pickHandler) {
  getRange = range;
  onPick = pickHandler;
  setIcon($('cal-prev'), 'left');
  setIcon($('cal-next'), 'right');
  $('range-btn').addEventListener('click', () => (isOpen() ? closePicker() : openPicker()));
  $('cal-prev').addEventListener('click', () => { cursor = shiftMonth(cursor, -1); showMonths(); });
  $('cal-next').addEventListener('click', () => { cursor = shiftMonth(cursor, 1); showMonths(); });
  $('range-apply').addEventListener('click', () => {
    let a = $('range-from').value;
    let b = $('range-to').value || a;
    if (!parseDate(a) || !parseDate(b)) return;
    if (b < a) [a, b] = [b, a];
    onPick(a, b);
    closePicker();
  });
  const presets = clear($('range-presets'));
  const preset = (label, days) => h('button', {type: 'button', class: 'btn btn-small', dataset: {preset: String(days)}, text: label,
    onclick: () => {
      const {today} = getRange();
      if (days === -1) onPick(addDays(today, -1), addDays(today, -1));
      else onPick(addDays(today, -(days - 1)), today);
      closePicker();
    }});
  presets.append(preset('Today', 1), preset('Yesterday', -1), preset('Last 7 days', 7), preset('Last 30 days', 30));
  presets.append(h('button', {type: 'button', class: 'btn btn-small', text: 'Latest data', title: 'Jump to the latest day with events',
    onclick: async () => {
      const {today} = getRange();
      const day = await latestDayWithData(today);
      if (day) onPick(day, day);
      closePicker();
    }}));
  document.addEventListener('mousedown', (e) => {
    if (isOpen() && !$('range-pop').contains(e.target) && !e.target.closest('.range')) closePicker();
  });
}

/** Text of the range button: a single day or "from → to (N days)". */
export function rangeLabel(from, to, today) {
  if (from === to) return from === today ? `Today · ${from}` : from;
  return `${from} → ${to} (${daysBetween(from, to) + 1} days)`;
}
