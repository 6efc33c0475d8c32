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

// ISO 8601 in the browser's time zone, whatever its locale: 2026-12-07 14:05:09.
const two = (n) => String(n).padStart(2, "0");

function isoDate(date) {
  return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())}`;
}

function isoTime(date) {
  return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}

function when(stamp) {
  if (!stamp) return "–";
  const date = new Date(stamp);
  return `${isoDate(date)} ${isoTime(date)}`;
}

// A span of time: 45 ms, 1.25s, 12.3s, 2m 5.0s.
function elapsed(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  const minutes = Math.floor(seconds / 60);
  return minutes ? `${minutes}m ${(seconds % 60).toFixed(1)}s` : `${seconds.toFixed(seconds < 10 ? 2 : 1)}s`;
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
