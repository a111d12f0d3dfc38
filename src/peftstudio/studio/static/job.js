// A job's page: status, live charts from metrics.jsonl, log tail, outputs, diagnosis and "try it".
"use strict";

const page = { id: Number(location.pathname.split("/").pop()), records: [], offset: 0, job: null, drawnOutputs: "" };

function statsView(job) {
  const latest = job.latest || {};
  const stat = (label, value, id) => h("div", {}, h("b", { id }, value), h("span", { class: "muted" }, label));
  return h("div", { class: "stats" },
    stat("step", latest.step !== undefined ? `${latest.step}${job.total_steps ? " / " + job.total_steps : ""}` : "–", "stat-step"),
    // null is how a NaN/inf loss arrives (JSON has no NaN).
    stat("loss", latest.loss === undefined ? "–" : latest.loss === null ? "NaN" : latest.loss.toFixed(4), "stat-loss"),
    stat("tokens/s", latest.tokens_per_second ?? "–", "stat-tps"),
    stat("peak memory", formatBytes(latest.memory_peak), "stat-memory"),
    stat("attempts", job.attempts, "stat-attempts"));
}

function summaryView(job) {
  const actions = [];
  if (job.status === "queued" || job.status === "running") actions.push(h("button", { class: "secondary", id: "cancel", onclick: () => act("cancel") }, "Cancel"));
  if (job.resumable) actions.push(h("button", { id: "resume", onclick: () => act("resume") }, "Resume from last checkpoint"));
  return [
    h("h2", {}, `Job ${job.id}: ${job.name} `, h("span", { class: "status " + job.status, id: "job-status" }, job.status)),
    job.message ? h("p", { class: job.status === "failed" || job.status === "interrupted" ? "error" : "muted", id: "job-message" }, job.message) : null,
    statsView(job), h("p", {}, actions)];
}

async function act(action) {
  try {
    await api(`/jobs/${page.id}/${action}`, { method: "POST" });
  } catch (error) {
    alert(error.message);
  }
  poll();
}

function charts() {
  const train = page.records.filter((r) => r.loss !== undefined && r.loss !== null);
  const evals = page.records.filter((r) => r.eval_loss !== undefined && r.eval_loss !== null);
  const xMax = page.job ? page.job.total_steps : undefined;
  document.getElementById("charts").replaceChildren(
    h("div", { id: "chart-loss" }, lineChart("loss", [
      { name: "train", color: "#2857d6", points: train.map((r) => [r.step, r.loss]) },
      { name: "eval", color: "#d2691e", points: evals.map((r) => [r.step, r.eval_loss]) }], { xMax })),
    h("div", { id: "chart-lr" }, lineChart("learning rate", [
      { name: "lr", color: "#1a7f45", points: train.filter((r) => r.learning_rate !== null && r.learning_rate !== undefined).map((r) => [r.step, r.learning_rate]) }], { xMax })));
}

function outputsView(job) {
  const base = `/api/jobs/${job.id}`;
  return [
    h("h2", {}, "Outputs"),
    job.files.includes("loss.png") ? h("p", {}, h("img", { src: `${base}/files/loss.png?t=${job.finished_at || ""}`, alt: "loss curve", style: "max-width:520px;width:100%" })) : null,
    h("p", {}, job.files.filter((f) => f !== "loss.png").map((f) => [h("a", { href: `${base}/files/${f}` }, f), "  "]),
      job.files.includes("loss.png") ? h("a", { href: `${base}/files/loss.png` }, "loss.png") : null),
    job.adapter_files.length ? h("p", { id: "adapter-files" }, "Adapter: ", job.adapter_files.map((f) => [h("a", { href: `${base}/adapter/${encodeURIComponent(f)}` }, f), "  "])) : null,
    h("h3", {}, "Run it from a terminal"), h("pre", {}, job.command),
    h("h3", {}, "config.yaml"), h("pre", { class: "light" }, job.config_yaml)];
}

function tryView() {
  const output = h("div", { id: "try-output" });
  const prompt = h("textarea", { id: "try-prompt", rows: 3, style: "width:100%" }, "What is the capital of France?");
  const run = async () => {
    output.replaceChildren(h("p", { class: "muted" }, "Generating…"));
    try {
      const answer = await api(`/jobs/${page.id}/generate`, { json: { prompt: prompt.value } });
      output.replaceChildren(h("table", { class: "kv" },
        h("tr", {}, h("td", {}, "base model"), h("td", { style: "text-align:left" }, answer.base)),
        h("tr", {}, h("td", {}, "with adapter"), h("td", { style: "text-align:left" }, h("b", {}, answer.adapter)))));
    } catch (error) {
      output.replaceChildren(h("p", { class: "error" }, error.message));
    }
  };
  return [h("h2", {}, "Try it"), prompt, h("p", {}, h("button", { id: "try-run", onclick: run }, "Generate")), output];
}

// eval.metrics: each metric's curve (eval/<name> in metrics.jsonl) and one evaluation's predictions table.
const METRIC_COLORS = ["#2857d6", "#d2691e", "#1a7f45", "#8a2be2", "#b8860b", "#c71585"];

function evaluationChart() {
  const names = [...new Set(page.records.flatMap((r) => Object.keys(r).filter((k) => k.startsWith("eval/"))))];
  return lineChart("eval metrics", names.map((name, i) => ({ name, color: METRIC_COLORS[i % METRIC_COLORS.length],
    points: page.records.filter((r) => typeof r[name] === "number").map((r) => [r.step, r[name]]) })),
    { xMax: page.job ? page.job.total_steps : undefined });
}

function predictionsTable(table) {
  const metrics = table.rows.length ? Object.keys(table.rows[0].scores || {}) : [];
  const score = (value) => (value === null || value === undefined ? "n/a" : value.toFixed(3));
  return h("table", { class: "kv", id: "predictions" },
    h("tr", {}, ["prompt", "target", "prediction", ...metrics].map((name) => h("th", {}, name))),
    table.rows.map((row) => h("tr", {}, h("td", {}, row.prompt), h("td", {}, row.target), h("td", {}, h("b", {}, row.prediction)),
      metrics.map((name) => h("td", {}, score(row.scores[name]))))));
}

async function evaluationsView(steps) {
  const pick = h("select", { id: "evaluation-step" }, steps.map((step) => h("option", { value: step }, `step ${step}`)));
  const holder = h("div", {});
  const show = async () => {
    try {
      holder.replaceChildren(predictionsTable(await api(`/jobs/${page.id}/evaluations/${pick.value}`)));
    } catch (error) {
      holder.replaceChildren(h("p", { class: "error" }, error.message));
    }
  };
  pick.value = String(steps[steps.length - 1]);
  pick.onchange = show;
  await show();
  return [h("h2", {}, "Evaluations"), h("div", { id: "chart-eval" }, evaluationChart()), h("p", {}, "Predictions at ", pick), holder];
}

function diagnosisView(diagnosis) {
  if (!diagnosis.available) return [h("h2", {}, "Diagnosis"), h("p", { class: "muted" }, diagnosis.reason)];
  if (!diagnosis.findings.length) return [h("h2", {}, "Diagnosis"), h("p", {}, "No known problem pattern in the metrics; see the log.")];
  return [h("h2", {}, "Diagnosis"), h("ul", {}, diagnosis.findings.map((f) => h("li", {}, h("b", {}, f.title), " — ", f.evidence,
    f.overrides.length ? h("div", {}, "try: ", h("code", {}, f.overrides.join(" "))) : null,
    f.advice.length ? h("div", { class: "muted" }, f.advice.join(" ")) : null)))];
}

async function poll() {
  const job = await api(`/jobs/${page.id}`);
  const metrics = await api(`/jobs/${page.id}/metrics?offset=${page.offset}`);
  page.records = metrics.reset ? metrics.records : page.records.concat(metrics.records);
  page.offset = metrics.next_offset;
  page.job = job;
  document.getElementById("summary").replaceChildren(...summaryView(job).filter(Boolean));
  document.getElementById("log").textContent = job.log_tail || "(no output yet)";
  charts();
  const outputsKey = JSON.stringify([job.files, job.adapter_files, job.status]);
  if (outputsKey !== page.drawnOutputs) {
    page.drawnOutputs = outputsKey;
    document.getElementById("outputs").replaceChildren(...outputsView(job).filter(Boolean));
    const tryBox = document.getElementById("try");
    tryBox.hidden = !job.adapter_files.includes("adapter_config.json") || job.status !== "succeeded";
    if (!tryBox.hidden && !tryBox.childElementCount) tryBox.replaceChildren(...tryView());
  }
  const evaluations = document.getElementById("evaluations");
  const evaluationsKey = JSON.stringify(job.evaluations || []);
  evaluations.hidden = !(job.evaluations || []).length;
  if (!evaluations.hidden && evaluationsKey !== page.drawnEvaluations) {
    page.drawnEvaluations = evaluationsKey;
    evaluations.replaceChildren(...await evaluationsView(job.evaluations));
  }
  const diagnosis = document.getElementById("diagnosis");
  diagnosis.hidden = !job.diagnosis;
  if (job.diagnosis) diagnosis.replaceChildren(...diagnosisView(job.diagnosis));
  return job;
}

async function loop() {
  let job = null;
  try {
    job = await poll();
  } catch (error) {
    document.getElementById("summary").replaceChildren(h("p", { class: "error" }, error.message));
  }
  const active = job && (job.status === "queued" || job.status === "running");
  setTimeout(loop, active ? 1000 : 5000);
}

document.getElementById("top").replaceWith(topBar());
loop();
