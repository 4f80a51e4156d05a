// Small helpers to build the page's elements and format its figures.

import { api, showWho } from "./api.js";

/** Make an element: h("a", {href: "/"}, "text", child, …); null and false children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "rect", "text", "path", "line", "title", "defs", "marker", "tspan"];
  const el = svg.includes(tag)
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function age(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

export const cost = (value) => (value ? value.toFixed(value < 0.01 ? 6 : 4) : "0");
export const ms = (value) => (value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`);

export function badge(status) {
  return h("span", { class: `status status-${status.replace(" ", "-")}` }, status);
}

export function showError(el, error) {
  el.hidden = !error;
  el.textContent = error ? error.message || String(error) : "";
}

/** Show how many threads wait for a person, in the header. */
export function showCount(pending) {
  const count = document.getElementById("inbox-count");
  count.hidden = !pending;
  count.textContent = String(pending);
  showWho();
}

/**
 * Start what every page has: who the key is, and (unless the page lists them itself) how
 * many threads wait for a person.
 */
export function startPage({ count = true } = {}) {
  showWho();
  if (!count) return;
  const refresh = async () => {
    try {
      showCount((await api("/api/v1/approvals?limit=100")).length);
    } catch {
      showCount(0);
    }
  };
  refresh();
  setInterval(refresh, 5000);
}
