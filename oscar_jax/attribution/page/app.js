"use strict";
const VERDICTS = {
  match: {text: "Benign copy of a trusted original", icon: "\u2714"},
  manipulated: {text: "Manipulated: derived from a trusted original but changed",
                icon: "\u26A0"},
  unknown: {text: "No trusted original found", icon: "?"},
};
const $ = (id) => document.getElementById(id);
let queryUrl = null;
let pending = null;

function show(el, visible) { el.hidden = !visible; }

function cell(row, text, header, cls) {
  const c = document.createElement(header ? "th" : "td");
  if (header) c.scope = "row";
  if (cls) c.className = cls;
  c.textContent = text;
  row.appendChild(c);
  return c;
}

function fmt(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function showError(message) {
  $("error-text").textContent = message;
  show($("error"), true);
  $("status").textContent = "";
}

function fillProvenance(original) {
  const body = $("provenance").tBodies[0];
  body.replaceChildren();
  const add = (label, value, mono) => {
    const row = body.insertRow();
    cell(row, label, true);
    cell(row, fmt(value), false, mono ? "mono" : "");
  };
  const prov = original.provenance;
  if (prov && typeof prov === "object" && !Array.isArray(prov)) {
    for (const [key, value] of Object.entries(prov)) add(key, value, false);
  } else if (prov !== null && prov !== undefined) {
    add("provenance", prov, false);
  }
  add("Name", original.name);
  add("Original id", original.id);
  add("Added", original.added_at);
  add("Size", original.width + " \u00D7 " + original.height + " pixels");
  add("SHA-256", original.sha256, true);
  add("Hamming distance", original.distance);
  add("Inliers (geometric verification)", original.inliers);
}

function fillCandidates(candidates) {
  const body = $("candidates").tBodies[0];
  body.replaceChildren();
  candidates.forEach((c, i) => {
    const row = body.insertRow();
    cell(row, String(i + 1));
    cell(row, fmt(c.name));
    cell(row, fmt(c.id));
    cell(row, fmt(c.distance));
    // Verification stops once the verdict is certain: later candidates are not checked.
    const checked = c.verified !== null && c.verified !== undefined;
    cell(row, checked ? fmt(c.inliers) : "\u2014");
    cell(row, checked ? (c.verified ? "yes" : "no") : "not checked");
  });
  show($("no-candidates"), candidates.length === 0);
  show($("candidates"), candidates.length > 0);
}

function render(result, fileName) {
  const v = VERDICTS[result.verdict] || {text: result.verdict, icon: ""};
  const verdict = $("verdict");
  verdict.className = result.verdict;
  verdict.dataset.verdict = result.verdict;
  $("verdict-icon").textContent = v.icon;
  $("verdict-text").textContent = v.text;
  $("message").textContent = result.message || "";
  $("query-image").alt = "Your image: " + fileName;
  $("query-caption").textContent = "Your image: " + fileName +
    (result.query ? " (" + result.query.width + " \u00D7 " + result.query.height + ")" : "");

  const original = result.original;
  show($("original-figure"), !!original);
  show($("provenance-section"), !!original);
  if (original) {
    $("original-image").alt = "Trusted original: " + original.name;
    $("original-image").src = original.image_url;
    $("original-caption").textContent = "Trusted original: " + original.name +
      " (id " + original.id + ", " + original.width + " \u00D7 " + original.height + ")";
    fillProvenance(original);
    $("provenance-json").textContent = JSON.stringify(original.provenance, null, 2);
  } else {
    $("original-image").removeAttribute("src");
  }
  show($("heatmap-figure"), !!result.heatmap);
  if (result.heatmap) $("heatmap").src = result.heatmap;
  else $("heatmap").removeAttribute("src");

  fillCandidates(result.candidates || []);
  const q = result.query || {};
  $("details-line").textContent = "Method " + result.method + ", " + result.bits +
    "-bit code " + (q.code || "") + "; a match needs distance \u2264 " +
    (result.thresholds || {}).match_distance + " and at least " +
    (result.thresholds || {}).min_inliers + " inliers.";
  $("raw-json").textContent = JSON.stringify(result, null, 2);
  show($("result"), true);
  $("status").textContent = "Done.";
  verdict.focus();
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON: fall through */ }
  return "the server answered " + response.status + " " + response.statusText;
}

async function check(file) {
  if (!file) return;
  if (pending) pending.abort();
  const controller = new AbortController();
  pending = controller;
  show($("error"), false);
  show($("result"), false);
  if (queryUrl) URL.revokeObjectURL(queryUrl);
  queryUrl = URL.createObjectURL(file);
  $("query-image").src = queryUrl;
  $("status").textContent = "Checking " + file.name + "\u2026";
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const response = await fetch("/api/query?explain=1",
                                 {method: "POST", body: form, signal: controller.signal});
    if (!response.ok) {
      showError("Could not check " + file.name + ": " + await errorText(response));
      return;
    }
    render(await response.json(), file.name);
  } catch (e) {
    if (e.name === "AbortError") return;
    showError("Could not reach the server to check " + file.name + ": " + e.message);
  } finally {
    if (pending === controller) pending = null;
  }
}

async function loadHealth() {
  try {
    const response = await fetch("/api/health");
    if (!response.ok) throw new Error(await errorText(response));
    const h = await response.json();
    $("health").textContent = h.originals + " trusted originals, method " + h.method +
      (h.bits ? ", " + h.bits + "-bit codes" : "") + ".";
  } catch (e) {
    $("health").textContent = "Server status unavailable: " + e.message;
  }
}

$("file").addEventListener("change", (e) => check(e.target.files[0]));
const drop = $("drop");
["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
  e.preventDefault();
  drop.classList.add("dragging");
}));
["dragleave", "drop"].forEach((type) => drop.addEventListener(type, (e) => {
  e.preventDefault();
  drop.classList.remove("dragging");
}));
drop.addEventListener("drop", (e) => {
  const file = e.dataTransfer && e.dataTransfer.files[0];
  if (file) check(file);
});
$("original-image").addEventListener("error", () => {
  if ($("original-image").getAttribute("src")) {
    showError("The trusted original's image could not be loaded from the server.");
  }
});
loadHealth();
