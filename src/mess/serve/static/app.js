"use strict";
// mess web page: a canvas map of the collection, neighbours with "why", similar artists,
// query by upload and the probe heatmap. Vanilla JS, no build step, no network beyond this server.

const $ = (id) => document.getElementById(id);
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
  "#ff9da7", "#9c755f", "#17becf", "#bcbd22"];
const OTHER = "#b8b8b8";
const PAD = 20;
const state = {
  runs: [], model: null, points: [], byId: new Map(), colourOf: new Map(), selected: null,
  neighbours: new Set(), matches: new Set(), upload: null,
};

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || response.statusText);
    throw new Error(detail);
  }
  return body;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

const pct = (v) => `${Math.round(100 * v)}%`;
const setStatus = (text) => { $("status").textContent = text; };

function vectorParams(extra = {}) {
  const choice = $("vectors").value;
  const params = new URLSearchParams({ model: state.model, ...extra });
  if (choice === "fused") params.set("fused", "true");
  else if (choice.startsWith("layer:")) params.set("layer", choice.slice(6));
  else if (choice.startsWith("aspect:")) params.set("aspect", choice.slice(7));
  return params;
}

// ---- map ---------------------------------------------------------------------------
function canvasSize() {
  const canvas = $("map");
  return [canvas.clientWidth, canvas.clientHeight];
}

function toScreen(point) {
  const [w, h] = canvasSize();
  return [PAD + ((point.x + 1) / 2) * (w - 2 * PAD), PAD + ((1 - point.y) / 2) * (h - 2 * PAD)];
}

function nearest(px, py, radius = 12) {
  let best = null;
  let bestDist = radius * radius;
  for (const point of state.points) {
    const [x, y] = toScreen(point);
    const d = (x - px) ** 2 + (y - py) ** 2;
    if (d <= bestDist) { best = point; bestDist = d; }
  }
  return best;
}

const colourKey = (point) => point[$("colour").value] || "(none)";
const colourOf = (point) => state.colourOf.get(colourKey(point)) || OTHER;

function colourPoints() {
  const counts = new Map();
  for (const p of state.points) counts.set(colourKey(p), (counts.get(colourKey(p)) || 0) + 1);
  const ranked = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  state.colourOf = new Map(ranked.map(([key], i) => [key, i < PALETTE.length ? PALETTE[i] : OTHER]));
  const legend = $("legend");
  legend.replaceChildren();
  ranked.slice(0, PALETTE.length).forEach(([key, n], i) => {
    const item = el("li", `${key} (${n})`);
    item.style.setProperty("--swatch", PALETTE[i]);
    legend.append(item);
  });
  if (ranked.length > PALETTE.length) {
    const item = el("li", `${ranked.length - PALETTE.length} more`);
    item.style.setProperty("--swatch", OTHER);
    legend.append(item);
  }
}

function dot(ctx, x, y, r, fill, stroke, width = 1.5) {
  ctx.beginPath();
  ctx.arc(x, y, r, 0, 2 * Math.PI);
  ctx.fillStyle = fill;
  ctx.fill();
  if (stroke) { ctx.lineWidth = width; ctx.strokeStyle = stroke; ctx.stroke(); }
}

function star(ctx, x, y, r) {
  ctx.beginPath();
  for (let i = 0; i < 10; i++) {
    const radius = i % 2 ? r / 2.3 : r;
    const angle = -Math.PI / 2 + (i * Math.PI) / 5;
    ctx.lineTo(x + radius * Math.cos(angle), y + radius * Math.sin(angle));
  }
  ctx.closePath();
  ctx.fillStyle = "#111";
  ctx.fill();
}

function draw() {
  const canvas = $("map");
  const [w, h] = canvasSize();
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(w * ratio);
  canvas.height = Math.round(h * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const dim = state.matches.size > 0;
  for (const p of state.points) {
    const [x, y] = toScreen(p);
    ctx.globalAlpha = dim && !state.matches.has(p.id) ? 0.25 : 0.9;
    dot(ctx, x, y, 4.5, colourOf(p));
  }
  ctx.globalAlpha = 1;
  for (const p of state.points) {
    const [x, y] = toScreen(p);
    if (state.neighbours.has(p.id)) dot(ctx, x, y, 6.5, "rgba(0,0,0,0)", "#222", 2);
    if (state.matches.has(p.id)) dot(ctx, x, y, 6, colourOf(p), "#000", 1);
  }
  const selected = state.byId.get(state.selected);
  if (selected) {
    const [x, y] = toScreen(selected);
    dot(ctx, x, y, 8, colourOf(selected), "#000", 3);
  }
  if (state.upload) {
    const [x, y] = toScreen(state.upload);
    star(ctx, x, y, 11);
  }
}

function showTooltip(point, px, py) {
  const tip = $("tooltip");
  if (!point) { tip.hidden = true; return; }
  tip.textContent = point.album && point.album !== point.title ? `${point.name} (${point.album})` : point.name;
  tip.style.left = `${px + 12}px`;
  tip.style.top = `${py + 12}px`;
  tip.hidden = false;
}

async function loadMap() {
  setStatus("loading map...");
  try {
    const data = await api(`/api/map?${vectorParams()}`);
    state.points = data.points;
    state.byId = new Map(data.points.map((p) => [p.id, p]));
    state.upload = null;
    const [a, b] = data.explained_variance;
    $("map-caption").textContent = `${data.points.length} tracks: PCA of ${data.model} ${data.vectors} ` +
      `(the axes explain ${pct(a)} and ${pct(b)} of the variance)`;
    colourPoints();
    applySearch();
    setStatus("");
    if (state.byId.has(state.selected)) await loadNeighbours(state.selected);
  } catch (err) {
    state.points = [];
    setStatus(`map: ${err.message}`);
  }
  draw();
}

// ---- selection, neighbours, artists ------------------------------------------------
function trackItem(track) {
  const item = el("li");
  const button = el("button", track.name, "track");
  button.type = "button";
  button.dataset.id = track.id;
  button.addEventListener("click", () => selectTrack(track.id));
  item.append(button);
  return item;
}

function duration(seconds) {
  if (!seconds) return "";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function selectTrack(id) {
  const track = state.byId.get(id);
  if (!track) return;
  state.selected = id;
  state.upload = null;
  $("now-title").textContent = track.name;
  $("now-meta").textContent = [track.album, track.genre, duration(track.duration), track.file].filter(Boolean).join(" · ");
  const player = $("player");
  player.src = `/api/tracks/${id}/audio`;
  player.play().catch(() => {});
  loadNeighbours(id);
  loadArtists(track.artist || track.composer);
  draw();
}

function renderNeighbours(data) {
  const list = $("neighbours");
  list.replaceChildren();
  $("neighbours-caption").textContent = `like ${data.query.label}, ${data.model} ${data.vectors}`;
  for (const n of data.results) {
    const item = trackItem(n);
    item.append(el("span", n.score.toFixed(3), "score"));
    if (n.duplicate) item.append(el("span", "duplicate", "flag"));
    const why = el("div", undefined, "why");
    const aspects = Object.entries(n.why_percentile).sort((a, b) => b[1] - a[1]);
    for (const [aspect, p] of aspects) {
      const chip = el("span", `${aspect} ${pct(p)}`, n.reasons.includes(aspect) ? "chip top" : "chip");
      chip.title = `cosine ${n.why[aspect].toFixed(3)} in ${aspect}: closer than ${pct(p)} of the collection`;
      chip.style.setProperty("--level", p);
      why.append(chip);
    }
    item.append(why);
    list.append(item);
  }
  state.neighbours = new Set(data.results.map((n) => n.id));
  setStatus(data.why_source === "layers" ? "no probe for this model: 'why' compares layers" : "");
  draw();
}

async function loadNeighbours(id) {
  setStatus("searching...");
  const params = vectorParams({ k: "10", exclude_same_artist: String($("exclude-artist").checked) });
  try {
    renderNeighbours(await api(`/api/tracks/${id}/similar?${params}`));
  } catch (err) {
    $("neighbours").replaceChildren();
    setStatus(err.message);
  }
}

async function loadArtists(name) {
  const list = $("artists");
  list.replaceChildren();
  $("artists-caption").textContent = "";
  if (!name) return;
  try {
    const data = await api(`/api/artists/similar?${new URLSearchParams({ name, model: state.model, k: "5" })}`);
    $("artists-caption").textContent = `like ${data.artist} (${data.space})`;
    for (const r of data.results) {
      const item = el("li", `${r.artist} `);
      item.append(el("span", r.score === null ? "-" : r.score.toFixed(3), "score"));
      item.append(el("span", ` ${r.tracks} tracks${r.low_confidence ? ", low confidence" : ""}`, "caption"));
      list.append(item);
    }
  } catch (err) {
    $("artists-caption").textContent = err.message;
  }
}

// ---- search and upload -------------------------------------------------------------
function applySearch() {
  const words = $("search").value.toLowerCase().split(/\s+/).filter(Boolean);
  const results = $("search-results");
  results.replaceChildren();
  state.matches = new Set();
  if (words.length) {
    const hits = state.points.filter((p) => {
      const text = [p.name, p.album, p.genre, p.composer, p.file].filter(Boolean).join(" ").toLowerCase();
      return words.every((w) => text.includes(w));
    });
    state.matches = new Set(hits.map((p) => p.id));
    for (const p of hits.slice(0, 30)) results.append(trackItem(p));
    if (hits.length > 30) results.append(el("li", `and ${hits.length - 30} more`, "caption"));
    if (!hits.length) results.append(el("li", "no match", "caption"));
  }
  draw();
}

async function upload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  if (!file) { setStatus("choose an audio file first"); return; }
  setStatus(`embedding ${file.name}...`);
  const form = new FormData();
  form.append("file", file);
  const params = vectorParams({ k: "10", exclude_same_artist: String($("exclude-artist").checked) });
  try {
    const data = await api(`/api/similar/upload?${params}`, { method: "POST", body: form });
    state.selected = data.query.id;
    state.upload = data.query.external ? data.query : null;
    $("now-title").textContent = data.query.label;
    $("now-meta").textContent = data.query.external ? "uploaded file (the star on the map)" : "already in the collection";
    renderNeighbours(data);
  } catch (err) {
    setStatus(`upload: ${err.message}`);
  }
}

// ---- probe heatmap -----------------------------------------------------------------
async function loadProbe() {
  const box = $("heatmap");
  box.replaceChildren();
  try {
    const report = await api(`/api/probe?${new URLSearchParams({ model: state.model })}`);
    const scores = report.conditions?.trained?.aspect_score;
    if (!scores) throw new Error(`the ${report.model} probe report has no aspect scores; re-run mess probe`);
    const chosen = new Map(report.aspects.map((a) => [a.aspect, a.layer]));
    const table = el("table");
    const head = el("tr");
    head.append(el("th", "layer"));
    for (const aspect of chosen.keys()) head.append(el("th", aspect));
    table.append(head);
    for (const [layer, row] of Object.entries(scores)) {
      const tr = el("tr");
      tr.append(el("th", layer));
      for (const aspect of chosen.keys()) {
        const v = row[aspect];
        const td = el("td", v === null ? "-" : v.toFixed(2));
        td.style.setProperty("--level", v === null ? 0 : Math.max(0, Math.min(1, v)));
        if (chosen.get(aspect) === layer) td.className = "best";
        tr.append(td);
      }
      table.append(tr);
    }
    box.append(table);
    const link = el("a", "full heatmap (all targets and controls)");
    link.href = `/api/probe/heatmap.png?${new URLSearchParams({ model: state.model })}`;
    link.target = "_blank";
    box.append(link);
    $("probe-caption").textContent = `${report.model}, ${report.n_tracks} tracks, ${report.probe} probe: ` +
      "out-of-fold R² per aspect; outlined = the layer chosen for the aspect";
  } catch (err) {
    $("probe-caption").textContent = err.message;
  }
}

// ---- wiring ------------------------------------------------------------------------
async function selectModel(model) {
  state.model = model;
  const run = state.runs.filter((r) => r.model === model).at(-1);
  const select = $("vectors");
  select.replaceChildren(new Option("all layers", "all"));
  for (const [aspect, layer] of Object.entries(run.aspects)) {
    select.append(new Option(`aspect: ${aspect} (${layer})`, `aspect:${aspect}`));
  }
  for (const layer of run.layers) select.append(new Option(`layer: ${layer}`, `layer:${layer}`));
  if (run.fused) select.append(new Option("fused", "fused"));
  await Promise.all([loadMap(), loadProbe()]);
}

function wire() {
  const canvas = $("map");
  canvas.addEventListener("mousemove", (e) => {
    const point = nearest(e.offsetX, e.offsetY);
    canvas.style.cursor = point ? "pointer" : "default";
    showTooltip(point, e.offsetX, e.offsetY);
  });
  canvas.addEventListener("mouseleave", () => showTooltip(null));
  canvas.addEventListener("click", (e) => {
    const point = nearest(e.offsetX, e.offsetY);
    if (point) selectTrack(point.id);
  });
  $("model").addEventListener("change", (e) => selectModel(e.target.value));
  $("vectors").addEventListener("change", loadMap);
  $("colour").addEventListener("change", () => { colourPoints(); draw(); });
  $("exclude-artist").addEventListener("change", () => {
    if (state.byId.has(state.selected)) loadNeighbours(state.selected);
  });
  $("search").addEventListener("input", applySearch);
  $("upload-form").addEventListener("submit", upload);
  window.addEventListener("resize", draw);
}

async function init() {
  wire();
  try {
    const data = await api("/api/runs");
    state.runs = data.runs;
    for (const model of new Set(data.runs.map((r) => r.model))) $("model").append(new Option(model, model));
    $("model").value = data.default_model;
    await selectModel(data.default_model);
  } catch (err) {
    setStatus(err.message);
  }
}

// For tests and the browser console: the page state and where a track is drawn (page coordinates).
window.mess = {
  state,
  ready: init(),
  pagePosition(id) {
    const rect = $("map").getBoundingClientRect();
    const [x, y] = toScreen(state.byId.get(id));
    return [rect.left + x, rect.top + y];
  },
};
