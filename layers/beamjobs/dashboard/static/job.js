// One job: its details, timeline, graph, metrics and messages, kept live by its event stream.
"use strict";

const jobId = decodeURIComponent(location.pathname.split("/").pop());
const base = `/api/jobs/${encodeURIComponent(jobId)}`;
const IMPORTANCES = ["JOB_MESSAGE_DEBUG", "JOB_MESSAGE_DETAILED", "JOB_MESSAGE_BASIC",
  "JOB_MESSAGE_WARNING", "JOB_MESSAGE_ERROR"];
const TERMINAL = new Set(["DONE", "FAILED", "CANCELLED", "DRAINED"]);
let ended = false;

function showFailure(error) {
  const failure = document.getElementById("failure");
  failure.textContent = String(error.message || error);
  failure.hidden = false;
}

function row(...cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell;
    tr.append(td);
  }
  return tr;
}

function duration(text) {
  return text ? elapsed(parseFloat(text) * 1000) : "–";
}

// The step a failed job was running, once its detail says (the graph may come first).
let failedStep = "";

async function loadDetail() {
  const detail = await api(base);
  const job = detail.summary;
  document.title = `Beamjobs — ${job.job_name}`;
  document.getElementById("title").textContent = job.job_name;
  document.getElementById("name").textContent = job.job_name;
  document.getElementById("job-id").textContent = job.job_id;
  document.getElementById("state").replaceChildren(stateBadge(job.state));
  ended = TERMINAL.has(job.state);
  document.getElementById("cancel").disabled = ended;
  const facts = [
    ["Owner", job.owner], ["Engine", job.upstream_job_id ? `${job.engine} (job ${job.upstream_job_id})` : job.engine], ["Created", when(job.created_at)],
    ["Started", when(job.started_at)], ["Ended", when(job.ended_at)],
    ["Ran for", duration(detail.run_duration)],
    ["Worker", `${detail.worker.vcpu} vCPU, ${detail.worker.memory_mb} MiB`],
    ["Bounded", detail.bounded ? "yes" : "no (streaming)"],
  ];
  const banner = document.getElementById("job-failure");
  banner.hidden = !detail.failure;
  if (detail.failure) {
    banner.replaceChildren(element("strong", "Failed: "), element("span", detail.failure, "mono"));
    failedStep = detail.failed_step || "";
    markFailedStep(failedStep);
  }
  document.getElementById("facts").replaceChildren(...facts.flatMap(([name, value]) =>
    [element("dt", name), element("dd", value || "–")]));
  document.getElementById("timeline").replaceChildren(...(detail.history || []).map((event) => {
    const item = document.createElement("li");
    item.append(stateBadge(event.state), element("span", when(event.timestamp), "muted"));
    return item;
  }));
  document.getElementById("environments").replaceChildren(...(detail.environments || []).map(
    (env) => row(element("span", env.id, "mono"), element("span", env.urn, "mono"), env.container_image || "–")));
  document.getElementById("artifacts").replaceChildren(...(detail.artifacts || []).map(
    (a) => row(a.staged_name, element("span", a.environment_id, "mono"),
      element("span", (a.sha256 || "").slice(0, 16), "mono"), a.staged ? "yes" : "no")));
}

function shown(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "object" && "count" in value) {
    return `n=${value.count} sum=${value.sum} min=${value.min} max=${value.max}`;
  }
  if (typeof value === "object") return String(value.value);
  return String(value);
}

async function loadMetrics() {
  const metrics = await api(`${base}/metrics`);
  const elements = metrics.filter((m) => m.kind === "element_count");
  const wallTimes = metrics.filter((m) => m.kind === "wall_time_ms");
  const user = metrics.filter((m) => m.kind !== "element_count" && m.kind !== "wall_time_ms");
  const wall = (ms) => (ms === null || ms === undefined ? "–" : elapsed(ms));
  document.getElementById("metrics").replaceChildren(
    ...user.map((m) => {
      const tr = row(m.kind, m.step, `${m.namespace}:${m.name}`, shown(m.attempted), shown(m.committed));
      tr.dataset.metric = `${m.namespace}:${m.name}`;
      return tr;
    }),
    ...wallTimes.filter((m) => (m.committed ?? m.attempted) > 0).map((m) => {
      const tr = row("wall time", m.step, "–", wall(m.attempted), wall(m.committed));
      tr.dataset.wallTime = m.step;
      return tr;
    }));
  document.getElementById("elements").replaceChildren(...elements.map(
    (m) => row(m.pcollection_name || m.pcollection, shown(m.attempted), shown(m.committed))));
  annotateGraph(
    Object.fromEntries(elements.map((m) => [m.pcollection, m.committed ?? m.attempted])),
    Object.fromEntries(wallTimes.map((m) => [m.step, m.committed ?? m.attempted])));
}

function filterMessages() {
  const minimum = IMPORTANCES.indexOf(document.getElementById("importance").value);
  for (const message of document.querySelectorAll(".message")) {
    message.hidden = IMPORTANCES.indexOf(message.dataset.importance) < minimum;
  }
}

function addMessage(message) {
  const line = document.createElement("div");
  line.className = "message";
  line.dataset.importance = message.importance;
  line.append(element("span", isoTime(new Date(message.time)), "muted"),
    element("span", message.importance.replace("JOB_MESSAGE_", ""), "level"),
    element("span", message.message_text));
  const box = document.getElementById("messages");
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  box.append(line);
  const minimum = IMPORTANCES.indexOf(document.getElementById("importance").value);
  line.hidden = IMPORTANCES.indexOf(message.importance) < minimum;
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function follow() {
  const feed = new EventSource(`${base}/live`);
  feed.onopen = () => liveIndicator("live", true);
  feed.addEventListener("message", (event) => addMessage(JSON.parse(event.data)));
  feed.addEventListener("state", () => { loadDetail().catch(showFailure); loadMetrics().catch(showFailure); });
  feed.addEventListener("end", () => {
    feed.close();
    const indicator = document.getElementById("live");
    indicator.className = "live ended";
    indicator.textContent = "ended";
  });
  feed.addEventListener("failure", (event) => { feed.close(); showFailure(JSON.parse(event.data)); });
  feed.onerror = () => { if (ended) feed.close(); liveIndicator("live", false); };
}

function askToCancel() {
  document.getElementById("confirm-name").textContent = document.getElementById("name").textContent;
  document.getElementById("confirm").showModal();
}

async function cancelJob() {
  document.getElementById("confirm").close();
  document.getElementById("cancel").disabled = true;
  try {
    await api(`${base}/cancel`, { method: "POST", headers: { "X-Beamjobs-Request": "1" } });
    await loadDetail();
  } catch (error) {
    showFailure(error);
  }
}

document.getElementById("importance").addEventListener("change", filterMessages);
document.getElementById("cancel").addEventListener("click", askToCancel);
document.getElementById("keep").addEventListener("click", () => document.getElementById("confirm").close());
document.getElementById("confirm-cancel").addEventListener("click", cancelJob);

loadDetail().then(follow).catch(showFailure);
api(`${base}/graph`).then((graph) => { drawGraph(document.getElementById("graph"), graph); markFailedStep(failedStep); })
  .catch(showFailure);
loadMetrics().catch(showFailure);
// Metrics are published while the job runs: read them again until it ends.
setInterval(() => { if (!ended) loadMetrics().catch(() => {}); }, 2000);
