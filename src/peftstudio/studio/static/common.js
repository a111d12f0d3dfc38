// Shared helpers for the studio pages: calling /api, building elements, formatting numbers.
"use strict";

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options, headers: { ...(options.headers || {}) } };
  if (init.json !== undefined) {
    init.body = JSON.stringify(init.json);
    init.headers["Content-Type"] = "application/json";
    init.method = init.method || "POST";
  }
  const response = await fetch("/api" + path, init);
  if (response.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); }
  const body = (response.headers.get("content-type") || "").includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const detail = body && body.detail !== undefined ? body.detail : body;
    const error = new Error(typeof detail === "string" ? detail : (detail.message || "request failed"));
    error.status = response.status;
    error.body = typeof detail === "object" ? detail : body;
    throw error;
  }
  return body;
}

// h("div", {class: "x", onclick: f}, child, "text", ...) → an element; null/false children are skipped.
function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "value") node.value = value;
    else if (name === "checked") node.checked = !!value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return value.toFixed(value >= 100 || unit === 0 ? 0 : 1) + " " + units[unit];
}

function formatCount(count) {
  if (count === null || count === undefined) return "–";
  if (count >= 1e9) return (count / 1e9).toFixed(2) + "B";
  if (count >= 1e6) return (count / 1e6).toFixed(1) + "M";
  if (count >= 1e3) return (count / 1e3).toFixed(1) + "k";
  return String(count);
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return "< 1 s";
  if (seconds < 90) return Math.round(seconds) + " s";
  if (seconds < 5400) return Math.round(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function problemList(problems) {
  if (!problems || !problems.length) return null;
  return h("ul", { class: "problems" }, problems.map((p) =>
    h("li", {}, h("b", {}, p.where), ": ", p.message, p.fix ? h("span", { class: "fix" }, "fix: " + p.fix) : null)));
}

function topBar() {
  return h("header", { class: "top" }, h("span", { class: "brand" }, "peftstudio"),
    h("a", { href: "/wizard/1" }, "New run"), h("a", { href: "/jobs" }, "Jobs"));
}
