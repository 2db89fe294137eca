// The server's JSON API (docs/WEBUI.md): same-origin fetches with the session cookie, the CSRF
// token on every state-changing request, and one place that notices an expired session.

let csrf = '';
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body || {};
  }
}

export function setCsrf(token) {
  csrf = token || '';
}

export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

export function query(params) {
  const out = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') out.set(key, String(value));
  }
  const text = out.toString();
  return text ? `?${text}` : '';
}

async function request(method, path, body, {signal, quiet401 = false} = {}) {
  const headers = {Accept: 'application/json'};
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method, headers, signal, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const type = response.headers.get('Content-Type') || '';
  if (type.includes('json')) data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && !quiet401) onUnauthorized();
    const message = (data && data.error) || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message, data);
  }
  return data;
}

export const api = {
  get: (path, params, options) => request('GET', path + query(params || {}), undefined, options),
  post: (path, body, options) => request('POST', path, body ?? {}, options),
  del: (path, options) => request('DELETE', path, undefined, options),
};
