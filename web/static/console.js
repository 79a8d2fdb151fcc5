// The console's live updates: each page polls this server's JSON API and
// fills the elements marked data-field. No framework, no build step; the
// page works without it, only less alive.
"use strict";

const POLL_MS = {jobs: 1000, job: 1000, overview: 2000};
const WINDOW_MS = 5 * 60 * 1000; // the throughput graph's span
const RATE_OVER_MS = 10 * 1000; // heartbeats come every few seconds: a rate over 10 s is smooth enough

async function getJson(url) {
  const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

const field = (root, name) => root.querySelector(`[data-field="${name}"]`);
function setText(root, name, value) {
  const element = field(root, name);
  if (element) element.textContent = value;
}
const shortTime = (iso) => iso.slice(0, 19).replace("T", " ");
const figure = (value) => (value === null ? "–" : Number.isInteger(value) ? String(value) : value.toFixed(1));

function fillStatus(root, status) {
  const element = field(root, "status");
  element.textContent = status;
  element.dataset.status = status;
}

function fillProgress(root, job) {
  const total = job.messages.total;
  const finished = job.messages.done + job.messages.failed;
  const done = total ? finished / total : job.status === "done" ? 1 : 0;
  const bar = field(root, "progress");
  bar.max = total || 1;
  bar.value = total ? finished : done;
  setText(root, "percent", `${Math.round(100 * done)} %`);
}

function fillJobRow(row, job) {
  row.dataset.jobId = job.id;
  field(row, "link").href = `/console/jobs/${job.id}`;
  for (const name of ["id", "userId", "followersLogin", "requested", "created"]) setText(row, name, job[name]);
  setText(row, "updatedAt", shortTime(job.updatedAt));
  fillStatus(row, job.status);
  fillProgress(row, job);
}

function fillWorkerRow(row, worker) {
  row.dataset.workerId = worker.id;
  for (const name of ["host", "pid", "busy", "threads", "unitsDone", "silentSeconds"]) setText(row, name, worker[name]);
  setText(row, "startedAt", shortTime(worker.startedAt));
  const state = field(row, "state");
  state.textContent = state.dataset.status = worker.state;
}

// Rows keyed by an id, in the API's order: existing rows are updated,
// new ones cloned from the page's <template>, missing ones removed.
function syncRows(tbody, template, items, key, fill) {
  const rows = new Map([...tbody.rows].map((row) => [row.dataset[key], row]));
  const keep = new Set();
  for (const item of items) {
    const row = rows.get(String(item.id)) || template.content.firstElementChild.cloneNode(true);
    fill(row, item);
    keep.add(row);
    tbody.appendChild(row);
  }
  for (const row of rows.values()) if (!keep.has(row)) row.remove();
}

const throughput = {done: new Map(), total: 0, history: []}; // history: [time, units done since the page opened]

function drawThroughput(workers) {
  const now = Date.now();
  for (const worker of workers) {
    const before = throughput.done.get(worker.id);
    if (before !== undefined) throughput.total += Math.max(0, worker.unitsDone - before);
    else if (throughput.history.length) throughput.total += worker.unitsDone; // started since the page opened
    throughput.done.set(worker.id, worker.unitsDone);
  }
  throughput.history.push([now, throughput.total]);
  const points = [];
  for (const [time, total] of throughput.history) {
    const earlier = throughput.history.find(([t]) => t >= time - RATE_OVER_MS);
    const seconds = (time - earlier[0]) / 1000;
    points.push([time, seconds > 0 ? (total - earlier[1]) / seconds : 0]);
  }
  throughput.history = throughput.history.filter(([time]) => time >= now - WINDOW_MS - RATE_OVER_MS);
  const shown = points.filter(([time]) => time >= now - WINDOW_MS);
  const peak = Math.max(1, ...shown.map(([, rate]) => rate));
  field(document, "throughput").setAttribute("points", shown
    .map(([time, rate]) => `${(600 * (1 - (now - time) / WINDOW_MS)).toFixed(1)},${(118 - 112 * rate / peak).toFixed(1)}`)
    .join(" "));
  setText(document, "rate", shown.length ? shown[shown.length - 1][1].toFixed(1) : "–");
  setText(document, "peak", peak.toFixed(1));
}

const pages = {
  async jobs(body) {
    const page = await getJson(body.dataset.api);
    const tbody = document.querySelector("table.jobs tbody");
    const rows = new Set([...tbody.rows].map((row) => row.dataset.jobId));
    // The first page takes new jobs in at the top; an older page keeps its own jobs.
    const items = body.dataset.firstPage === "yes" ? page.items : page.items.filter((job) => rows.has(String(job.id)));
    syncRows(tbody, document.getElementById("job-row"), items, "jobId", fillJobRow);
    document.querySelector("p.empty").hidden = items.length > 0;
  },

  async job(body) {
    const job = await getJson(body.dataset.api);
    fillStatus(document, job.status);
    for (const name of ["requested", "created", "skipped"]) setText(document, name, job[name]);
    setText(document, "done", job.messages.done);
    setText(document, "failed", job.messages.failed);
    setText(document, "updatedAt", shortTime(job.updatedAt));
    fillProgress(document, job);
    field(document, "cancel").hidden = !job.cancellable;
    const errors = field(document, "errors");
    errors.replaceChildren(...(job.errors.length ? job.errors : ["none"]).map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      if (!job.errors.length) item.className = "none";
      return item;
    }));
  },

  async overview() {
    const [queues, workers] = await Promise.all([getJson("/api/v1/queues"), getJson("/api/v1/workers")]);
    field(document, "broker").hidden = queues.broker.available;
    setText(document, "brokerWhy", queues.broker.description || "");
    for (const queue of queues.queues) {
      const row = document.querySelector(`tr[data-queue="${CSS.escape(queue.name)}"]`);
      if (!row) continue;
      for (const name of ["ready", "unacked", "consumers", "inRate", "outRate", "delayed", "deadLettered",
                          "deadLettersRecorded"]) setText(row, name, figure(queue[name]));
    }
    setText(document, "outboxPending", queues.outbox.pending);
    setText(document, "outboxAge", figure(queues.outbox.oldestAgeSeconds));
    syncRows(document.querySelector("table.workers tbody"), document.getElementById("worker-row"), workers.items,
             "workerId", fillWorkerRow);
    document.querySelector("section p.empty").hidden = workers.items.length > 0;
    drawThroughput(workers.items);
  },
};

// A page the server takes long to build is asked for less often, so that an
// open tab keeps the server busy a tenth of the time at most: the counts by
// status read every done job (docs/console.md, 40 ms for 300,000), and a
// database under load answers anything slowly.
const SERVER_SHARE = 0.1;
function nextPollDelay(baseMs, tookMs) {
  return Math.max(baseMs, tookMs / SERVER_SHARE - tookMs);
}

function poll(name) {
  const update = pages[name];
  if (!update) return;
  const tick = async () => {
    const started = performance.now();
    try {
      await update(document.body);
      document.body.dataset.live = "ok";
    } catch (error) {
      document.body.dataset.live = "error"; // the API did not answer: try again at the next tick
      console.warn(error);
    }
    setTimeout(tick, nextPollDelay(POLL_MS[name], performance.now() - started));
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => poll(document.body.dataset.page));
