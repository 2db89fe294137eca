// DOM building without HTML strings: every value shown comes from network traffic, so text is
// only ever set through textContent / attributes, never parsed as markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(node, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** h('td', {class: 'x', text: value}) or h('div', {}, child, 'text', [more]) */
export function h(tag, props, ...children) {
  return append(apply(document.createElement(tag), props), children);
}

export function svg(tag, props, ...children) {
  return append(apply(document.createElementNS(SVG_NS, tag), props), children);
}

export function $(id) {
  return document.getElementById(id);
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

// Stroke icons (24x24 viewBox), drawn as SVG nodes so no markup strings are involved.
const ICONS = {
  search: ['M11 4a7 7 0 1 0 0 14a7 7 0 0 0 0-14z', 'M20 20l-4-4'],
  help: ['M12 3a9 9 0 1 0 0 18a9 9 0 0 0 0-18z', 'M9.5 9a2.5 2.5 0 1 1 3.5 2.3c-.6.3-1 .8-1 1.5v.7', 'M12 17h.01'],
  close: ['M6 6l12 12', 'M18 6L6 18'],
  left: ['M15 5l-7 7l7 7'],
  right: ['M9 5l7 7l-7 7'],
  sun: ['M12 8a4 4 0 1 0 0 8a4 4 0 0 0 0-8z', 'M12 2v2', 'M12 20v2', 'M4.9 4.9l1.4 1.4', 'M17.7 17.7l1.4 1.4',
    'M2 12h2', 'M20 12h2', 'M4.9 19.1l1.4-1.4', 'M17.7 6.3l1.4-1.4'],
  moon: ['M20 14.5A8 8 0 0 1 9.5 4a8 8 0 1 0 10.5 10.5z'],
  filter: ['M4 5h16l-6 7v6l-4 2v-8z'],
  copy: ['M9 9h10v10H9z', 'M5 15V5h10'],
  hunt: ['M11 4a7 7 0 1 0 0 14a7 7 0 0 0 0-14z', 'M20 20l-4-4', 'M11 8v6', 'M8 11h6'],
};

export function icon(name, cls) {
  return svg('svg', {class: ['icon', cls], viewBox: '0 0 24 24', 'aria-hidden': 'true', focusable: 'false'},
    ...(ICONS[name] || []).map((d) => svg('path', {d})));
}

export function setIcon(button, name) {
  button.replaceChildren(icon(name));
}

export function toast(message, kind = 'info') {
  const box = $('toasts');
  const node = h('div', {class: ['toast', `toast-${kind}`], text: message});
  box.append(node);
  while (box.children.length > 4) box.firstChild.remove();
  setTimeout(() => node.remove(), kind === 'error' ? 8000 : 4000);
}

/** Copy text; falls back to a hidden textarea where the async clipboard is unavailable. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = h('textarea', {class: 'offscreen'});
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand('copy');
    area.remove();
  }
  toast('Copied');
}
