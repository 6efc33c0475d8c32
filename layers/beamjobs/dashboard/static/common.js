// What both pages share: reading the API, and showing states and times.
"use strict";

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(`${body.error || response.status}: ${body.message || response.statusText}`);
  }
  return body;
}

function stateBadge(state) {
  const badge = document.createElement("span");
  badge.className = "state";
  badge.dataset.state = state || "UNSPECIFIED";
  badge.textContent = state || "UNSPECIFIED";
  return badge;
}

function when(stamp) {
  if (!stamp) return "–";
  const date = new Date(stamp);
  return date.toLocaleString(undefined, { hour12: false });
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function liveIndicator(id, on) {
  const indicator = document.getElementById(id);
  indicator.classList.toggle("off", !on);
  indicator.textContent = on ? "live" : "not live";
}
