// The seven-step wizard. Its state lives in the URL (/wizard/N?model=tiny&training.micro_batch_size=8),
// so back/next, reload and a copied link all keep it; secrets (tracker keys) never go into the URL.
"use strict";

const GROUP_KEYS = ["model", "objective", "peft", "training", "optim", "logging", "experiment", "platform"];
const wizard = {
  catalog: null, steps: [], hardware: null,
  state: { groups: {}, values: {}, dataset: null },
  target: { provider: "local", gpu: null },
  secrets: {},
  checked: null, estimate: null, preview: null, dataset: null,
  sequence: 0, timer: null,
};

function currentStep() {
  const match = location.pathname.match(/\/wizard\/(\d)/);
  return match ? Math.min(Math.max(+match[1], 1), 7) : 1;
}

function readUrl() {
  const params = new URLSearchParams(location.search);
  const state = { groups: {}, values: {}, dataset: null };
  for (const [key, value] of params) {
    if (key === "dataset") state.dataset = value || null;
    else if (key === "target") {
      const [provider, gpu] = value.split(":");
      wizard.target = { provider: provider || "local", gpu: gpu || null };
    } else if (GROUP_KEYS.includes(key)) state.groups[key] = value;
    else if (key.includes(".")) state.values[key] = value;
  }
  wizard.state = state;
}

function urlFor(step) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(wizard.state.groups)) params.set(k, v);
  for (const [k, v] of Object.entries(wizard.state.values)) params.set(k, v);
  if (wizard.state.dataset) params.set("dataset", wizard.state.dataset);
  if (wizard.target.provider !== "local") params.set("target", wizard.target.provider + ":" + (wizard.target.gpu || ""));
  return `/wizard/${step}?${params}`;
}

function go(step) {
  history.pushState(null, "", urlFor(step));
  render();
  refresh(0);
}

function changed() {
  history.replaceState(null, "", urlFor(currentStep()));
  refresh(350);
}

function setValue(key, value) {
  if (value === "" || value === null || value === undefined) delete wizard.state.values[key];
  else wizard.state.values[key] = String(value);
  changed();
}

function chooseGroup(group, option) {
  wizard.state.groups[group] = option;
  if (group === "model") delete wizard.state.values["model.name_or_path"];
  render();
  changed();
}

// Effective value of a dotted key in the last valid plan (what the run would use).
function effective(key) {
  let node = wizard.checked && wizard.checked.plan ? wizard.checked.plan.config : null;
  for (const part of key.split(".")) node = node && typeof node === "object" ? node[part] : undefined;
  return node;
}

function selectedGroup(group) {
  if (wizard.state.groups[group]) return wizard.state.groups[group];
  const defaults = { model: "tiny", objective: "sft", peft: "lora", training: "default", logging: "jsonl", optim: "adamw" };
  return defaults[group];
}

// ---------------------------------------------------------------- fields

function fieldRow(field) {
  const id = "f-" + field.key.replace(/\./g, "-");
  const current = wizard.state.values[field.key] ?? "";
  let input;
  if (field.kind === "bool" || field.kind === "choice") {
    const choices = field.kind === "bool" ? ["true", "false"] : field.choices;
    input = h("select", { id, name: field.key, onchange: (e) => setValue(field.key, e.target.value) },
      h("option", { value: "" }, "preset"), choices.map((c) => h("option", { value: c }, c)));
    input.value = current;
  } else {
    // Numbers that also take a word (micro_batch_size: auto) need a text box.
    const numeric = (field.kind === "int" || field.kind === "float") && !field.choices.length;
    input = h("input", { id, name: field.key, type: numeric ? "number" : "text",
                         step: field.kind === "int" ? "1" : "any", value: current,
                         oninput: (e) => setValue(field.key, e.target.value) });
  }
  return h("div", { class: "field", "data-key": field.key },
    h("label", { for: id, title: field.type }, field.key), input,
    h("div", { class: "doc" }, field.description, " ",
      field.range ? h("span", { class: "range" }, "Range: " + field.range + ". ") : null,
      field.memory ? h("span", { class: "memory" }, "Memory: " + field.memory + ".") : null),
    h("div", { class: "error" }));
}

function fieldsOf(step) {
  const found = wizard.steps.find((s) => s.step === step);
  return found ? found.fields : [];
}

// After each check: show the value the run would use, and any problem under its field.
function updateFields() {
  const problems = (wizard.checked && wizard.checked.problems) || [];
  for (const row of document.querySelectorAll(".field[data-key]")) {
    const key = row.dataset.key;
    const value = effective(key);
    const input = row.querySelector("input, select");
    const shown = value === undefined ? "" : (typeof value === "object" && value !== null ? JSON.stringify(value) : String(value));
    if (input.tagName === "SELECT") input.options[0].textContent = `preset (${shown})`;
    else input.placeholder = shown;
    const mine = problems.filter((p) => p.where === key || p.where.startsWith(key + " ") || p.where.startsWith(key + "."));
    row.classList.toggle("invalid", mine.length > 0);
    row.querySelector(".error").textContent = mine.map((p) => p.message + (p.fix ? " — fix: " + p.fix : "")).join("; ");
  }
  const box = document.getElementById("rewards");
  if (box && !wizard.state.values["grpo.rewards"]) box.replaceChildren(rewardEditor());  // the plan's rewards arrived
  const errors = document.getElementById("rewards-errors");
  if (errors) errors.textContent = problems.filter((p) => p.where.startsWith("grpo.rewards"))
    .map((p) => `${p.where}: ${p.message}` + (p.fix ? " — fix: " + p.fix : "")).join("; ");
}

// ---------------------------------------------------------------- steps

function choiceCards(group, options, describe) {
  const chosen = selectedGroup(group);
  return h("div", { class: "choices" }, options.map((option) =>
    h("div", { class: "choice" + (option.name === chosen && !(group === "model" && wizard.state.values["model.name_or_path"]) ? " selected" : ""),
               "data-option": option.name, onclick: () => chooseGroup(group, option.name) },
      h("div", { class: "name" }, option.name), describe(option))));
}

function stepModel() {
  const models = wizard.catalog.model || [];
  const custom = wizard.state.values["model.name_or_path"] || "";
  return [
    h("p", { class: "muted" }, "A preset carries the architecture numbers, so the plan and the memory estimate work before any download."),
    choiceCards("model", models, (o) => [
      h("div", { class: "meta" }, o.summary || ""),
      o.memory ? h("div", { class: "meta preset-memory" }, `${formatCount(o.memory.total_parameters)} parameters · default LoRA run ` +
        `(micro-batch ${o.memory.micro_batch_size}, ${o.memory.seq_len} tokens) needs ≈ ${formatBytes(o.memory.total_bytes)}`) : null]),
    h("h3", {}, "Or any hub id or local directory"),
    h("p", { class: "muted" }, "Suggested: hub models whose architecture peftstudio knows offline; for others it reads the " +
      "Hugging Face cache or the directory's config.json, or the plan says memory, time and cost are unknown."),
    h("input", { type: "text", id: "custom-model", placeholder: "org/name or /path/to/model", value: custom, style: "width:100%;padding:6px",
                 list: "known-models",
                 // a preset carries its own model's numbers: a model typed here replaces the preset
                 oninput: (e) => { delete wizard.state.groups.model; setValue("model.name_or_path", e.target.value.trim()); } }),
    h("datalist", { id: "known-models" }, (wizard.catalog.known_models || []).map((m) =>
      h("option", { value: m.hub_id }, `${m.model_type}, ${formatCount(m.total_parameters)} parameters`))),
    h("p", {}, h("label", {}, h("input", { type: "checkbox", id: "trust-remote-code", checked: wizard.state.values["model.trust_remote_code"] === "true",
                                           onchange: (e) => setValue("model.trust_remote_code", e.target.checked ? "true" : "") }),
      " Trust remote code"),
      h("span", { class: "hint" }, " — runs Python code from the model repository on this machine with your permissions. Tick it only for repositories you trust.")),
  ];
}

function stepMethod() {
  const objective = selectedGroup("objective");
  const objectiveFields = fieldsOf(2).filter((f) => f.key.startsWith(objective + "."));
  return [
    h("h3", {}, "Objective"),
    // The "best for" lines come from the server (config/objective_schema.py), never written here.
    choiceCards("objective", wizard.catalog.objective || [], (o) => [
      h("div", { class: "meta best-for" }, "Best for: " + o.best_for), h("div", { class: "meta" }, "Reads " + o.data)]),
    objectiveFields.length ? [h("h3", {}, objective.toUpperCase() + " settings"), objectiveFields.map(fieldRow)] : null,
    objective === "grpo" ? h("div", { id: "rewards" }, rewardEditor()) : null,
    h("div", { id: "method-pairs" }, methodPairs()),
    h("h3", {}, "PEFT method"),
    choiceCards("peft", wizard.catalog.peft || [], (o) => h("div", { class: "meta" }, o.summary || "")),
    h("h3", {}, "Parameters"), fieldsOf(2).filter((f) => f.key.startsWith("peft.")).map(fieldRow)];
}

// The uploaded data's first rows as the chosen objective reads them (preference pairs, KTO
// rows, GRPO prompts), or, for preference data under objective=sft, which objective reads it.
function methodPairs() {
  const shown = wizard.preview;
  if (!wizard.state.dataset || !shown || !(shown.pairs || shown.suggestion)) return null;
  return [h("h3", {}, "Your data"), shown.suggestion ? h("p", { class: "bad" }, shown.suggestion) : null,
    shown.pairs && shown.pairs.length ? pairsView(shown.pairs) : null];
}

// ---------------------------------------------------------------- GRPO rewards

// The rows the editor shows: what the user set (JSON in the URL), else the plan's rewards.
function rewardRows() {
  const text = wizard.state.values["grpo.rewards"];
  if (text) {
    try { const rows = JSON.parse(text); if (Array.isArray(rows)) return rows; } catch (e) { /* a pasted YAML list: show the plan's */ }
  }
  const planned = effective("grpo.rewards");
  return Array.isArray(planned) ? planned.map(compactReward) : [];
}

// A reward of the plan without the keys left at their defaults, so the URL stays short.
function compactReward(spec) {
  const row = {};
  for (const [key, value] of Object.entries(spec)) {
    if (value === null || (key === "normalize" && JSON.stringify(value) === '["strip"]')) continue;
    row[key] = value;
  }
  return row;
}

function setRewards(rows) {
  setValue("grpo.rewards", JSON.stringify(rows));
  const box = document.getElementById("rewards");
  if (box) box.replaceChildren(rewardEditor());
}

function rewardEditor() {
  const info = wizard.catalog.rewards || { builtins: [], default_column: "answer", python_prefix: "python:" };
  const rows = rewardRows();
  const edit = (i, key, value) => {
    const copy = rows.map((r) => ({ ...r }));
    if (value === "" || value === null) delete copy[i][key]; else copy[i][key] = value;
    setRewards(copy);
  };
  const rowView = (row, i) => {
    const builtin = info.builtins.find((b) => b.name === row.name);
    const custom = !builtin;
    const picker = h("select", { class: "reward-name", onchange: (e) => {
      const copy = rows.map((r) => ({ ...r }));
      copy[i] = { name: e.target.value === "python" ? info.python_prefix : e.target.value, weight: row.weight ?? 1.0 };
      setRewards(copy);
    } }, info.builtins.map((b) => h("option", { value: b.name }, b.name)), h("option", { value: "python" }, "your function (python:module:function)"));
    picker.value = custom ? "python" : row.name;
    const argument = (name) => h("label", { class: "reward-arg" }, name + " ",
      h("input", { type: name === "target_length" ? "number" : "text", value: Array.isArray(row[name]) ? row[name].join(",") : (row[name] ?? ""),
                   placeholder: name === "column" ? info.default_column : "",
                   onchange: (e) => edit(i, name, name === "fields" ? (e.target.value ? e.target.value.split(",").map((t) => t.trim()).filter(Boolean) : null)
                     : name === "target_length" ? (e.target.value ? +e.target.value : null) : e.target.value) }));
    return h("tr", { class: "reward", "data-index": i },
      h("td", {}, picker, custom ? h("input", { type: "text", class: "reward-python", value: row.name, placeholder: "python:module:function",
                                                onchange: (e) => edit(i, "name", e.target.value.trim()) }) : null),
      h("td", {}, h("input", { type: "number", step: "any", class: "reward-weight", value: row.weight ?? 1.0,
                                 onchange: (e) => edit(i, "weight", e.target.value === "" ? null : +e.target.value) })),
      h("td", {}, (builtin ? builtin.arguments : []).map(argument)),
      h("td", {}, h("button", { class: "secondary", onclick: () => setRewards(rows.filter((_, j) => j !== i)) }, "Remove")));
  };
  return [
    h("h3", {}, "Reward functions"),
    h("p", { class: "muted" }, "Summed with their weights; each is logged separately. The column holds each prompt's reference answer."),
    h("table", { class: "kv rewards" }, h("tr", {}, h("th", {}, "function"), h("th", {}, "weight"), h("th", {}, "options"), h("th")),
      rows.map(rowView)),
    h("button", { class: "secondary", id: "add-reward", onclick: () => setRewards(rows.concat([{ name: "exact_match", weight: 1.0 }])) }, "Add a reward"),
    h("div", { class: "error", id: "rewards-errors" })];
}

function stepHyperparameters() {
  return [
    h("h3", {}, "Training preset"),
    choiceCards("training", wizard.catalog.training || [], (o) => h("div", { class: "meta" }, o.summary || "")),
    h("h3", {}, "Values"), fieldsOf(3).map(fieldRow)];
}

function stepCompute() {
  const local = wizard.hardware.local;
  const localText = local.accelerator === "cpu" ? `CPU only · ${local.cpu_cores} cores · ${formatBytes(local.ram_bytes)} RAM`
    : `${local.device_count} × ${local.device_names[0]} · ${formatBytes(local.device_memory_bytes[0])}`;
  const pick = (provider, gpu) => { wizard.target = { provider, gpu }; render(); changed(); };
  const isPicked = (provider, gpu) => wizard.target.provider === provider && (wizard.target.gpu || null) === (gpu || null);
  const providers = wizard.hardware.providers || [];
  return [
    h("div", { class: "choices" },
      h("div", { class: "choice" + (isPicked("local", null) ? " selected" : ""), "data-option": "local", onclick: () => pick("local", null) },
        h("div", { class: "name" }, "This machine"), h("div", { class: "meta" }, localText)),
      providers.map((p) => h("div", { class: "choice" + (isPicked(p.provider, p.gpu) ? " selected" : ""), "data-option": p.provider + ":" + p.gpu,
                                      onclick: () => pick(p.provider, p.gpu) },
        h("div", { class: "name" }, `${p.provider} · ${p.gpu}`),
        h("div", { class: "meta" }, `${formatBytes(p.memory_bytes)} · ${money(p.price_low, p.price_high)} per hour`)))),
    h("div", { id: "estimate-detail" })];
}

function stepDataset() {
  const status = wizard.dataset ? `${wizard.dataset.name} · ${formatBytes(wizard.dataset.size_bytes)} · ${wizard.dataset.kind}`
    : (wizard.state.dataset ? "uploaded dataset " + wizard.state.dataset : "the bundled sample (600 instruction rows)");
  return [
    h("p", {}, "Upload JSON Lines, a JSON array, CSV or Parquet. The file is checked by the same reader as the CLI."),
    h("input", { type: "file", id: "dataset-file", accept: ".jsonl,.json,.csv,.parquet,.zip", title: "a data file, or a .zip of a JSONL with its images", onchange: (e) => upload(e.target.files[0]) }),
    " ", h("button", { class: "secondary", onclick: () => { wizard.state.dataset = null; wizard.dataset = null; render(); changed(); } }, "Use the bundled sample"),
    h("p", { id: "dataset-status" }, "Data: ", h("b", {}, status)),
    (wizard.uploads || []).length ? h("p", { class: "muted" }, "Earlier uploads: ", wizard.uploads.map((d) =>
      [h("a", { href: "#", onclick: (e) => { e.preventDefault(); useDataset(d); } }, d.name), " "])) : null,
    fieldsOf(5).map(fieldRow),
    h("div", { id: "preview" }, renderPreview())];
}

function useDataset(info) {
  wizard.dataset = info;
  wizard.state.dataset = info.id;
  render();
  changed();
}

async function upload(file) {
  if (!file) return;
  const status = document.getElementById("dataset-status");
  status.textContent = "Uploading " + file.name + "…";
  try {
    const info = await api("/datasets?name=" + encodeURIComponent(file.name), { method: "POST", body: file,
      headers: { "Content-Type": "application/octet-stream" } });
    wizard.uploads = (wizard.uploads || []).concat([info]);
    useDataset(info);
  } catch (error) {
    status.replaceChildren(h("span", { class: "error" }, "Upload refused: " + error.message));
  }
}

// Preference, KTO or GRPO rows: each column's text, as the trainer receives them.
function pairsView(pairs) {
  return h("div", { id: "preview-pairs" }, pairs.map((pair) => h("div", { class: "sample pair" },
    Object.entries(pair).map(([column, text]) => h("div", { class: "pair-" + column }, h("b", {}, column + ": "), text)))));
}

function renderPreview() {
  const shown = wizard.preview;
  if (!shown) return h("p", { class: "muted" }, "Preview loading…");
  if (!shown.ok) return h("div", {}, h("h3", {}, "The data has problems"), problemList(shown.problems),
    shown.suggestion ? [h("p", { class: "bad", id: "preview-suggestion" }, shown.suggestion), pairsView(shown.pairs || [])] : null);
  if (shown.pairs) return h("div", {},
    h("p", {}, h("b", { id: "preview-format" }, shown.format), ` — ${shown.format_reason}; `, h("b", {}, shown.rows), " rows. ",
      h("span", { class: "muted" }, `The first rows objective=${shown.objective} trains on:`)),
    pairsView(shown.pairs));
  return h("div", {},
    h("p", {}, h("b", { id: "preview-format" }, shown.format), ` — ${shown.format_reason}; `, h("b", {}, shown.rows), " rows."),
    h("p", { class: "muted" }, shown.template ? `Chat template: ${shown.template}. ` : shown.template_note + ". ",
      h("span", { class: "sample" }, h("span", { class: "masked" }, "grey: masked, no loss")), " ",
      h("span", { class: "sample" }, h("span", { class: "trained" }, "green: trained on")), " ",
      h("span", { class: "sample" }, h("span", { class: "truncated" }, "struck: past max_seq_length"))),
    shown.samples.map((pieces, i) => h("div", { class: "sample" },
      ((shown.thumbnails || [])[i] || []).map((src) => h("img", { class: "thumb", src, alt: "sample image" })),
      pieces.map((p) => h("span", { class: p.truncated ? "truncated" : p.trained ? "trained" : "masked" }, p.text)))));
}

const SHARED_TRACKING = ["logging.project", "logging.run_name", "logging.tags", "logging.notes", "logging.watch"];

function stepTracking() {
  const chosen = selectedGroup("logging");
  const option = (wizard.catalog.logging || []).find((o) => o.name === chosen);
  return [
    h("p", {}, "metrics.jsonl is always written; pick a tracker to also send the metrics to."),
    choiceCards("logging", wizard.catalog.logging || [], (o) => h("div", { class: "meta" }, o.summary || "")),
    // The tracker's own settings, and with any tracker the ones every tracker shares.
    fieldsOf(6).filter((f) => f.key.startsWith(`logging.${chosen}_`) ||
      (chosen && chosen !== "jsonl" && SHARED_TRACKING.includes(f.key))).map(fieldRow),
    option && option.secrets.length ? h("div", {}, h("h3", {}, "Keys"),
      h("p", { class: "hint" }, "Kept in this page's memory and, after launch, in the server process's environment for the job only. " +
        "Never written to the job's files, the URL or the config."),
      option.secrets.map((name) => h("p", {}, h("label", {}, name + " ",
        h("input", { type: "password", name, value: wizard.secrets[name] || "", autocomplete: "off",
                     oninput: (e) => { wizard.secrets[name] = e.target.value; } }))))) : null];
}

function stepReview() {
  const checked = wizard.checked;
  // Show only a check of exactly this state: the YAML and command must be what Launch runs.
  if (!checked || wizard.checkedState !== JSON.stringify(wizard.state)) return h("p", { id: "review-checking" }, "Checking…");
  return [
    checked.ok ? h("p", { class: "ok", id: "review-ok" }, "✓ The run is valid.") : h("div", {}, h("p", { class: "bad" }, "The run cannot start yet:"), problemList(checked.problems)),
    checked.warnings.length ? h("ul", { class: "warnings" }, checked.warnings.map((w) => h("li", {}, w))) : null,
    h("h3", {}, "Equivalent command"), h("pre", { id: "review-command", class: "wrap" }, checked.command),
    checked.yaml ? [h("h3", {}, "The config file the job runs (peftstudio train --config config.yaml)"), h("pre", { class: "light", id: "review-yaml" }, checked.yaml)] : null,
    h("h3", {}, "Launch"),
    h("p", {}, h("input", { type: "text", id: "job-name", placeholder: "job name (optional)", style: "width:60%;padding:6px" }), " ",
      h("button", { id: "launch", disabled: !checked.ok, onclick: launch }, "Launch")),
    h("p", { id: "launch-error", class: "error" })];
}

async function launch() {
  const button = document.getElementById("launch");
  button.disabled = true;
  try {
    const job = await api("/jobs", { json: { state: wizard.state, name: document.getElementById("job-name").value || null, secrets: wizard.secrets } });
    location.href = "/jobs/" + job.id;
  } catch (error) {
    document.getElementById("launch-error").textContent = error.message;
    button.disabled = false;
  }
}

const STEP_VIEWS = { 1: stepModel, 2: stepMethod, 3: stepHyperparameters, 4: stepCompute, 5: stepDataset, 6: stepTracking, 7: stepReview };

// ---------------------------------------------------------------- page

function render() {
  const step = currentStep();
  document.getElementById("steps").replaceChildren(...wizard.steps.map((s) =>
    h("li", { class: s.step === step ? "current" : "" }, h("a", { href: urlFor(s.step), onclick: (e) => { e.preventDefault(); go(s.step); } }, `${s.step} ${s.title}`))));
  const title = wizard.steps.find((s) => s.step === step).title;
  document.getElementById("step").replaceChildren(h("div", { class: "card", id: "step-" + step },
    h("h2", {}, `${step}. ${title}`), STEP_VIEWS[step](),
    h("div", { class: "nav" },
      step > 1 ? h("button", { class: "secondary", id: "back", onclick: () => go(step - 1) }, "← Back") : h("span"),
      step < 7 ? h("button", { id: "next", onclick: () => go(step + 1) }, "Next →") : h("span"))));
  updateFields();
  renderSide();
}

function renderSide() {
  const side = document.getElementById("side");
  const checked = wizard.checked, estimate = wizard.estimate;
  const card = h("div", { class: "card", id: "estimate" }, h("h2", {}, "Estimate"));
  if (checked && !checked.ok) card.append(h("p", { class: "bad", id: "check-status" }, "Not valid yet"), problemList(checked.problems));
  else if (checked) card.append(h("p", { class: "ok", id: "check-status" }, "✓ valid"));
  if (estimate && estimate.objective) card.append(h("p", { id: "estimate-objective" }, "Objective ", h("b", {}, estimate.objective),
    estimate.objective_line ? h("span", { class: "muted" }, " — " + estimate.objective_line) : null));
  if (estimate && estimate.memory) card.append(memoryView(estimate.memory));
  if (estimate && estimate.schedule) card.append(scheduleView(estimate.schedule, checked));
  if (estimate && estimate.cost) card.append(costView(estimate.cost));
  side.replaceChildren(card);
  const detail = document.getElementById("estimate-detail");
  if (detail && estimate && estimate.memory && estimate.memory.available) detail.replaceChildren(componentsView(estimate.memory));
}

function memoryView(memory) {
  if (!memory.available) return h("p", { class: "muted", id: "estimate-memory" }, "Memory: " + memory.reason);
  const where = memory.device_bytes ? " of " + formatBytes(memory.device_bytes) : "";
  const share = memory.device_bytes ? Math.min(memory.total_bytes / memory.device_bytes, 1) : 0;
  return h("div", { id: "estimate-memory" },
    h("p", {}, "Peak memory ", h("b", { id: "estimate-total" }, formatBytes(memory.total_bytes)), where,
      ` (micro-batch ${memory.micro_batch_size}, ${memory.seq_len} tokens) — `,
      memory.fits === null ? h("span", { class: "muted" }, "no device memory known")
        : memory.fits ? h("span", { class: "ok", id: "estimate-fits" }, "fits") : h("span", { class: "bad", id: "estimate-fits" }, "does not fit")),
    h("div", { class: "bar" + (memory.fits ? "" : " over") }, h("span", { style: `width:${(share * 100).toFixed(1)}%` })),
    h("p", { class: "muted" }, `${formatCount(memory.trainable_parameters)} trainable of ${formatCount(memory.total_parameters)} parameters`),
    !memory.fits && !memory.advice.length ? h("ul", { class: "warnings" }, memory.warnings.map((w) => h("li", {}, w))) : null,
    memory.advice.length ? [h("p", {}, "Would fit:"), h("ul", { class: "warnings", id: "estimate-advice" }, memory.advice.map((a) => h("li", {}, a)))] : null);
}

function componentsView(memory) {
  return h("div", {}, h("h3", {}, "Memory breakdown"), h("table", { class: "kv" },
    Object.entries(memory.components).map(([name, bytes]) => h("tr", {}, h("td", {}, name.replace(/_/g, " ")), h("td", {}, formatBytes(bytes))))));
}

function scheduleView(schedule, checked) {
  const data = checked && checked.plan ? checked.plan.data : null;
  return h("table", { class: "kv" },
    h("tr", {}, h("td", {}, "optimizer steps"), h("td", { id: "estimate-steps" }, schedule.optimizer_steps)),
    h("tr", {}, h("td", {}, "effective batch"), h("td", {}, schedule.effective_batch)),
    data ? h("tr", {}, h("td", {}, "training rows"), h("td", {}, data.train_rows)) : null);
}

function money(low, high) {
  if (high < 0.005) return "< $0.01";
  return low === high ? "$" + low.toFixed(2) : `$${low.toFixed(2)}–${high.toFixed(2)}`;
}

function costView(cost) {
  return h("div", { id: "estimate-cost" },
    h("table", { class: "kv" },
      h("tr", {}, h("td", {}, "time"), h("td", { id: "estimate-hours" }, cost.hours === null ? "–" : formatDuration(cost.hours * 3600))),
      cost.hours !== null ? h("tr", {}, h("td", {}, "cost"), h("td", { id: "estimate-dollars" }, money(cost.cost_low, cost.cost_high))) : null,
      cost.tokens_per_second ? h("tr", {}, h("td", {}, "tokens/s"), h("td", {}, formatCount(Math.round(cost.tokens_per_second)))) : null),
    h("p", { class: "muted" }, cost.basis),
    cost.cheapest.length ? h("div", {}, h("p", {}, "Cheapest rented GPUs that fit:"), h("table", { class: "kv" },
      cost.cheapest.map((o) => h("tr", {}, h("td", {}, `${o.provider} ${o.gpu}`),
        h("td", {}, `${formatDuration(o.hours * 3600)} · ${money(o.cost_low, o.cost_high)}`))))) : null,
    h("p", { class: "muted" }, `prices as of ${cost.prices_updated}`));
}

// Validate, estimate and (on step 5) preview, after a pause in typing; stale answers are dropped.
function refresh(delay) {
  clearTimeout(wizard.timer);
  wizard.timer = setTimeout(async () => {
    const sequence = ++wizard.sequence;
    const state = JSON.parse(JSON.stringify(wizard.state));
    const [checked, estimate] = await Promise.all([
      api("/validate", { json: state }).catch((e) => ({ ok: false, problems: [{ where: "studio", message: e.message }], warnings: [] })),
      api("/estimate", { json: { state, target: wizard.target } }).catch(() => null)]);
    const wantsPreview = currentStep() === 5 || (currentStep() === 2 && state.dataset);  // step 2 shows the pairs
    const preview = wantsPreview ? await api("/preview", { json: state }).catch((e) => ({ ok: false, problems: [{ where: "preview", message: e.message }] })) : wizard.preview;
    if (sequence !== wizard.sequence) return;
    Object.assign(wizard, { checked, estimate, preview, checkedState: JSON.stringify(state) });
    if (currentStep() === 7) render();
    else {
      const previewBox = document.getElementById("preview");
      if (previewBox) previewBox.replaceChildren(renderPreview());
      const pairsBox = document.getElementById("method-pairs");
      if (pairsBox) pairsBox.replaceChildren(...[methodPairs()].flat(Infinity).filter(Boolean));
      updateFields();
      renderSide();
    }
  }, delay);
}

async function init() {
  document.getElementById("top").replaceWith(topBar());
  const [catalog, steps, hardware, uploads] = await Promise.all([api("/presets"), api("/steps"), api("/hardware"), api("/datasets")]);
  Object.assign(wizard, { catalog, steps, hardware, uploads });
  readUrl();
  if (wizard.state.dataset) wizard.dataset = await api("/datasets/" + wizard.state.dataset).catch(() => null);
  render();
  refresh(0);
}

window.addEventListener("popstate", () => { readUrl(); render(); refresh(0); });
init();
