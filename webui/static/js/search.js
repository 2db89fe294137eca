// The search language on the client side: splitting what the analyst typed into tokens (chips),
// building tokens from clicked values, negating them. The server parses and validates `q`.

export const FIELDS = ['src', 'dst', 'ip', 'port', 'proto', 'type', 'trail', 'info', 'sev', 'sensor', 'ref', 'status',
  'count', 'tag', 'suppressed'];

/** Whether `text` has OR or parentheses outside quotes: such an expression stays one chip. */
function isExpression(text) {
  const bare = text.replace(/"(?:[^"]|"")*"/g, '""');
  return /(^|\s)(OR|\|\|)(\s|$)|[()]/.test(bare);
}

/** Space-separated tokens; double quotes group spaces and may start mid-token (info:"a b").
 * An expression with OR or parentheses is kept whole (the server parses it). */
export function tokenize(text) {
  if (isExpression(text)) return [text.trim()];
  const tokens = [];
  let current = '';
  let quoted = false;
  for (const ch of text) {
    if (ch === '"') quoted = !quoted;
    if (!quoted && /\s/.test(ch)) {
      if (current) tokens.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  if (current) tokens.push(quoted ? `${current}"` : current);
  return tokens;
}

/** A token matching `value` in `field`; values with spaces are quoted (quotes inside are dropped). */
export function token(field, value, negate = false) {
  let text = String(value).replaceAll('"', '');
  if (/\s/.test(text) || text === '') text = `"${text}"`;
  return `${negate ? '-' : ''}${field}:${text}`;
}

export function negate(tok) {
  return tok.startsWith('-') ? tok.slice(1) : `-${tok}`;
}

/** Field and display value of a token, for chip labels. */
export function describe(tok) {
  const neg = tok.startsWith('-');
  const body = neg ? tok.slice(1) : tok;
  const m = /^([a-z_]+):(.*)$/i.exec(body);
  const unquote = (s) => (s.length >= 2 && s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1) : s);
  if (m && FIELDS.includes(m[1].toLowerCase())) return {neg, field: m[1].toLowerCase(), value: unquote(m[2])};
  return {neg, field: '', value: unquote(body)};
}

/** Add a token, replacing its opposite (the same token negated) and exact duplicates. */
export function addToken(tokens, tok) {
  const out = tokens.filter((t) => t !== tok && t !== negate(tok));
  out.push(tok);
  return out;
}

/** Severity filter kept as a single `sev:` token so the pills can toggle it. */
export function severityOf(tokens) {
  const t = tokens.find((x) => /^sev:(high|medium|low)$/i.test(x));
  return t ? t.slice(4).toLowerCase() : '';
}
