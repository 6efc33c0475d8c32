// The jobs list: the newest page, following the server's live feed (no reload).
"use strict";

let feed = null;

function render(page) {
  const jobs = page.jobs || [];
  const body = document.getElementById("jobs");
  body.replaceChildren(...jobs.map((job) => {
    const row = document.createElement("tr");
    row.dataset.jobId = job.job_id;
    const link = element("a", job.job_id, "mono");
    link.href = `/jobs/${encodeURIComponent(job.job_id)}`;
    const id = document.createElement("td");
    id.append(link);
    const state = document.createElement("td");
    state.append(stateBadge(job.state));
    const failure = element("td", job.failure || "", "failure mono");
    if (job.failure) failure.title = job.failure;
    row.append(id, element("td", job.job_name), state, element("td", when(job.created_at)),
      element("td", when(job.ended_at)), element("td", job.owner, "mono"), element("td", job.engine),
      failure);
    return row;
  }));
  document.getElementById("empty").hidden = jobs.length > 0;
}

function follow() {
  if (feed) feed.close();
  const query = new URLSearchParams();
  const state = document.getElementById("state").value;
  const name = document.getElementById("name").value;
  if (state) query.append("state", state);
  if (name) query.append("name", name);
  history.replaceState(null, "", query.toString() ? `/?${query}` : "/");
  feed = new EventSource(`/api/jobs/live?${query}`);
  feed.addEventListener("jobs", (event) => { render(JSON.parse(event.data)); liveIndicator("live", true); });
  feed.onopen = () => liveIndicator("live", true);
  feed.onerror = () => liveIndicator("live", false);
}

const initial = new URLSearchParams(location.search);
document.getElementById("state").value = initial.get("state") || "";
document.getElementById("name").value = initial.get("name") || "";
document.getElementById("state").addEventListener("change", follow);
document.getElementById("name").addEventListener("input", follow);
document.getElementById("filters").addEventListener("submit", (event) => event.preventDefault());
follow();
