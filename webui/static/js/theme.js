// Dark and light themes: an explicit choice is stored in localStorage; without one the page
// follows the system's prefers-color-scheme (and its changes).

import {$, setIcon} from './dom.js';

const KEY = 'mt.theme';
const media = window.matchMedia('(prefers-color-scheme: dark)');

export function currentTheme() {
  return document.documentElement.dataset.theme;
}

function apply(theme) {
  document.documentElement.dataset.theme = theme;
  const button = $('theme-btn');
  if (button) {
    setIcon(button, theme === 'dark' ? 'sun' : 'moon');
    button.setAttribute('aria-label', `Switch to ${theme === 'dark' ? 'light' : 'dark'} theme`);
  }
  window.dispatchEvent(new CustomEvent('themechange'));
}

export function toggleTheme() {
  const next = currentTheme() === 'dark' ? 'light' : 'dark';
  localStorage.setItem(KEY, next);
  apply(next);
}

export function initTheme() {
  const stored = localStorage.getItem(KEY);
  apply(stored === 'dark' || stored === 'light' ? stored : media.matches ? 'dark' : 'light');
  media.addEventListener('change', (e) => {
    if (!localStorage.getItem(KEY)) apply(e.matches ? 'dark' : 'light');
  });
  $('theme-btn').addEventListener('click', toggleTheme);
}
