// The view's state (date range, search tokens, sort, page) and its mirror in the URL hash, so a
// view can be bookmarked or shared; replaceState avoids flooding the history.

import {tokenize} from './search.js';

export const SORTABLE = ['severity', 'count', 'first_seen', 'last_seen', 'src_ip', 'dst_ip', 'dst_port', 'proto', 'type',
  'trail', 'info', 'sensor'];
const PER_PAGE = [25, 50, 100, 250];

export const state = {
  from: '',
  to: '',
  tokens: [],
  sort: 'last_seen',
  order: 'desc',
  page: 1,
  perPage: Number(localStorage.getItem('mt.perPage')) || 50,
  today: '',
};

export function q() {
  return state.tokens.join(' ');
}

export function rangeParams() {
  return {from: state.from, to: state.to};
}

export function viewParams() {
  return {from: state.from, to: state.to, q: q()};
}

export function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const date = /^\d{4}-\d{2}-\d{2}$/;
  if (date.test(p.get('from') || '')) state.from = p.get('from');
  if (date.test(p.get('to') || '')) state.to = p.get('to');
  if (state.from && (!state.to || state.to < state.from)) state.to = state.from;
  if (p.has('q')) state.tokens = tokenize(p.get('q'));
  if (SORTABLE.includes(p.get('sort'))) state.sort = p.get('sort');
  if (['asc', 'desc'].includes(p.get('order'))) state.order = p.get('order');
  const page = Number(p.get('page'));
  if (Number.isInteger(page) && page >= 1) state.page = page;
  const per = Number(p.get('per_page'));
  if (PER_PAGE.includes(per)) state.perPage = per;
  return p.has('from');
}

export function writeHash() {
  const p = new URLSearchParams();
  if (state.from && !(state.from === state.today && state.to === state.today)) {
    p.set('from', state.from);
    p.set('to', state.to);
  }
  if (state.tokens.length) p.set('q', q());
  if (state.sort !== 'last_seen') p.set('sort', state.sort);
  if (state.order !== 'desc') p.set('order', state.order);
  if (state.page > 1) p.set('page', String(state.page));
  if (state.perPage !== 50) p.set('per_page', String(state.perPage));
  const text = p.toString();
  history.replaceState(null, '', text ? `#${text}` : location.pathname + location.search);
}
