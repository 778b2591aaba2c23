"use strict";
// mess web page: a canvas map of the collection, neighbours with "why", similar artists,
// query by upload and the probe heatmap. Vanilla JS, no build step, no network beyond this server.

const $ = (id) => document.getElementById(id);
// 20 colours picked greedily for the largest smallest CIELAB distance, then ordered so that few groups get
// distinct hues: the first 4 are at least 80 apart, the first 12 at least 47, and 44 from the grey of the rest.
const PALETTE = ["#3366aa", "#eebb00", "#ff0000", "#00dd00", "#aa66ff", "#773300", "#00ddff", "#ff00aa",
  "#005500", "#ff7788", "#0000ff", "#99cc55", "#882266", "#00ddaa", "#ffaaff", "#ff00ff", "#bb9955", "#ee7711",
  "#008877", "#bb1122"];
const OTHER = "#b8b8b8";
const PAD = { left: 44, right: 12, top: 12, bottom: 34 };
const state = {
  runs: [], model: null, points: [], byId: new Map(), colourOf: new Map(), selected: null,
  neighbours: new Set(), matches: new Set(), upload: null, explained: [0, 0],
  view: { x0: -1, x1: 1, y0: -1, y1: 1 }, full: { x0: -1, x1: 1, y0: -1, y1: 1 },
  playlist: null, playlistKind: null, queue: [], queueAt: -1, pathStart: null, threshold: 0.3, uploadUrl: null,
};
const KEPT = "mess.playlist";  // localStorage: the playlist listed last, shown again on the next visit

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
const counted = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;  // "1 track", "2 tracks"
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
  const v = state.view;
  return [PAD.left + ((point.x - v.x0) / (v.x1 - v.x0)) * (w - PAD.left - PAD.right),
    PAD.top + ((v.y1 - point.y) / (v.y1 - v.y0)) * (h - PAD.top - PAD.bottom)];
}

function toData(px, py) {
  const [w, h] = canvasSize();
  const v = state.view;
  return [v.x0 + ((px - PAD.left) / (w - PAD.left - PAD.right)) * (v.x1 - v.x0),
    v.y1 - ((py - PAD.top) / (h - PAD.top - PAD.bottom)) * (v.y1 - v.y0)];
}

function fitView() {
  const xs = state.points.map((p) => p.x);
  const ys = state.points.map((p) => p.y);
  if (!xs.length) return;
  const grow = (lo, hi) => { const m = Math.max((hi - lo) * 0.06, 1e-3); return [lo - m, hi + m]; };
  const [x0, x1] = grow(Math.min(...xs), Math.max(...xs));
  const [y0, y1] = grow(Math.min(...ys), Math.max(...ys));
  state.full = { x0, x1, y0, y1 };
  state.view = { ...state.full };
}

function zoom(factor, px, py) {
  const [cx, cy] = px === undefined ? [(state.view.x0 + state.view.x1) / 2, (state.view.y0 + state.view.y1) / 2]
    : toData(px, py);
  const v = state.view;
  state.view = { x0: cx + (v.x0 - cx) / factor, x1: cx + (v.x1 - cx) / factor,
    y0: cy + (v.y0 - cy) / factor, y1: cy + (v.y1 - cy) / factor };
  draw();
}

function pan(dx, dy) {
  const [w, h] = canvasSize();
  const v = state.view;
  const ux = (dx / (w - PAD.left - PAD.right)) * (v.x1 - v.x0);
  const uy = (dy / (h - PAD.top - PAD.bottom)) * (v.y1 - v.y0);
  state.view = { x0: v.x0 - ux, x1: v.x1 - ux, y0: v.y0 + uy, y1: v.y1 + uy };
  draw();
}

function ticks(lo, hi, count = 5) {
  const step0 = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-12; t += step) out.push(Math.abs(t) < step / 1e6 ? 0 : t);
  return { values: out, digits: Math.max(0, -Math.floor(Math.log10(step))) };
}

function drawAxes(ctx, w, h) {
  const v = state.view;
  const left = PAD.left;
  const bottom = h - PAD.bottom;
  ctx.strokeStyle = "#9aa1a9";
  ctx.fillStyle = "#69727d";
  ctx.lineWidth = 1;
  ctx.font = "11px system-ui, sans-serif";
  ctx.beginPath();
  ctx.moveTo(left, PAD.top);
  ctx.lineTo(left, bottom);
  ctx.lineTo(w - PAD.right, bottom);
  ctx.stroke();
  const tx = ticks(v.x0, v.x1);
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const t of tx.values) {
    const [x] = toScreen({ x: t, y: v.y0 });
    ctx.beginPath(); ctx.moveTo(x, bottom); ctx.lineTo(x, bottom + 4); ctx.stroke();
    ctx.fillText(t.toFixed(tx.digits), x, bottom + 5);
  }
  const ty = ticks(v.y0, v.y1);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const t of ty.values) {
    const [, y] = toScreen({ x: v.x0, y: t });
    ctx.beginPath(); ctx.moveTo(left - 4, y); ctx.lineTo(left, y); ctx.stroke();
    ctx.fillText(t.toFixed(ty.digits), left - 6, y);
  }
  const [a, b] = state.explained;
  ctx.textAlign = "right";
  ctx.textBaseline = "bottom";
  ctx.fillText(`PC 1 (${pct(a)} of variance) →`, w - PAD.right, h - 2);
  ctx.save();
  ctx.translate(11, PAD.top);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ctx.fillText(`PC 2 (${pct(b)}) →`, 0, 0);
  ctx.restore();
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
  drawAxes(ctx, w, h);
  ctx.save();
  ctx.beginPath();
  ctx.rect(PAD.left + 1, PAD.top, w - PAD.left - PAD.right, h - PAD.top - PAD.bottom - 1);
  ctx.clip();
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
  ctx.restore();
}

function showTooltip(point, px, py) {
  const tip = $("tooltip");
  if (!point) { tip.hidden = true; return; }
  tip.textContent = point.album && point.album !== point.title ? `${point.name} (${point.album})` : point.name;
  tip.hidden = false;
  // beside the pointer, on its left where the right would run past the map (a page wider than a phone's screen)
  const room = $("map-wrap").clientWidth;
  tip.style.left = `${px + 12 + tip.offsetWidth <= room ? px + 12 : Math.max(px - 12 - tip.offsetWidth, 0)}px`;
  tip.style.top = `${py + 12}px`;
}

async function loadMap() {
  setStatus("loading map...");
  try {
    const data = await latestOnly("map", api(`/api/map?${vectorParams()}`));
    state.points = data.points;
    state.byId = new Map(data.points.map((p) => [p.id, p]));
    state.upload = null;
    const [a, b] = data.explained_variance;
    state.explained = [a, b];
    fitView();
    $("map-caption").textContent = `${counted(data.points.length, "track")}: PCA of ${data.model} ${data.vectors} ` +
      `(the axes explain ${pct(a)} and ${pct(b)} of the variance; drag to pan, wheel to zoom)` +
      (data.note ? `; ${data.note}` : "");
    colourPoints();
    applySearch();
    setStatus("");
    if (state.byId.has(state.selected)) await loadNeighbours(state.selected);
  } catch (err) {
    if (err instanceof Superseded) return;
    state.points = [];
    setStatus(`map: ${err.message}`);
  }
  draw();
}

// ---- selection, neighbours, artists ------------------------------------------------
function trackItem(track, play = () => selectTrack(track.id)) {
  const item = el("li");
  const button = el("button", track.name, "track");
  button.type = "button";
  button.dataset.id = track.id;
  button.addEventListener("click", play);
  item.append(button);
  return item;
}

function duration(seconds) {
  if (!seconds) return "";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// A track picked outside the playlist plays alone: the playlist no longer moves on when it ends.
function endQueue() {
  state.queueAt = -1;
  for (const li of $("playlist").children) li.classList.remove("playing");
}

function selectTrack(id) {
  const track = state.byId.get(id);
  if (!track) return;
  endQueue();
  state.selected = id;
  state.upload = null;
  showUploadWarnings([]);
  $("now-title").textContent = track.name;
  $("now-meta").textContent = [track.album, track.genre, duration(track.duration), track.file].filter(Boolean).join(" · ");
  mediaSession(track);
  const player = $("player");
  player.src = `/api/tracks/${id}/audio`;
  player.play().catch(() => {});
  loadNeighbours(id);
  loadArtists({ track: String(id) });
  updatePlaylistButtons();
  draw();
}

function renderNeighbours(data) {
  const list = $("neighbours");
  list.replaceChildren();
  $("neighbours-caption").textContent = `like ${data.query.label}, ${data.model} ${data.vectors}` +
    (data.notes || []).map((n) => `; ${n}`).join("");
  for (const n of data.results) {
    const item = trackItem(n);
    // The score the list is ordered by: the augmented or re-ranked score where the answer has one, else the cosine.
    const ranked = n.adjusted !== null && n.adjusted !== undefined;
    const shown = (ranked ? n.adjusted : n.score).toFixed(4);
    const score = el("span", shown === "-0.0000" ? "0.0000" : shown, "score"); // a near-copy's -2e-06
    score.title = ranked ? `${data.ranking} score (the order); cosine ${n.score.toFixed(4)}` : "cosine";
    item.append(score, addButton(n));
    // the query's recording (a lossy copy, told by comparing the audio) as `mess similar` says it; other near-copies
    const same = n.same_recording && n.same_recording.same;
    if (same || n.duplicate) {
      const flag = el("span", same ? "same recording" : "duplicate", "flag");
      if (n.same_recording) flag.title = n.same_recording.reason;
      item.append(flag);
    }
    const why = el("div", undefined, "why");
    const aspects = Object.entries(n.why_percentile).sort((a, b) => b[1] - a[1]);
    for (const [aspect, p] of aspects) {
      const words = (data.why_words || {})[aspect] || aspect;
      const chip = el("span", `${words} ${pct(p)}`, n.reasons.includes(aspect) ? "chip top" : "chip");
      chip.title = `closer in ${words} than ${pct(p)} of the collection (cosine ${n.why[aspect].toFixed(3)}; ` +
        `measured in ${aspect})`;
      chip.style.setProperty("--level", p);
      why.append(chip);
    }
    item.append(why);
    list.append(item);
  }
  state.neighbours = new Set(data.results.map((n) => n.id));
  renderWeak(data.weak_aspects || {}, data.encoded_threshold);
  setStatus(data.why_source === "layers" ? "no probe for this model: 'why' compares layers"
    : data.stale_aspect_map || "");
  draw();
}

function renderWeak(weak, threshold) {
  const box = $("weak");
  box.replaceChildren();
  const entries = Object.entries(weak).sort((a, b) => b[1] - a[1]);
  if (!entries.length) return;
  box.append("not used as evidence: ");
  for (const [aspect, r2] of entries) {
    const chip = el("span", aspect, "chip weak");
    chip.title = `the probe predicts ${aspect} from this model with R², less what shuffled targets reach, of ` +
      `${r2.toFixed(2)}, below ${threshold}: too weakly encoded to explain a match`;
    box.append(chip, " ");
  }
}

// Answers can arrive out of order (a slow search for the track clicked first after that of the next one): each
// panel keeps only the answer to its latest request, so it never shows another track's neighbours or artists.
// An upload's answer fills the neighbours panel too.
class Superseded extends Error {}
const latest = { neighbours: 0, artists: 0, map: 0 };
async function latestOnly(panel, request) {
  const ticket = ++latest[panel];
  try {
    return await request;
  } finally {
    if (ticket !== latest[panel]) throw new Superseded();  // eslint-disable-line no-unsafe-finally
  }
}

async function loadNeighbours(id) {
  setStatus("searching...");
  const params = vectorParams({ k: "10", exclude_same_artist: String($("exclude-artist").checked) });
  try {
    renderNeighbours(await latestOnly("neighbours", api(`/api/tracks/${id}/similar?${params}`)));
  } catch (err) {
    if (err instanceof Superseded) return;
    $("neighbours").replaceChildren();
    setStatus(err.message);
  }
}

// who: { track: id } for a collection track (the server credits it as `mess artists` does), or { name } for an
// outside file's artist tag
async function loadArtists(who) {
  const list = $("artists");
  list.replaceChildren();
  $("artists-caption").textContent = "";
  if (!who) { latest.artists++; return; }
  try {
    const data = await latestOnly("artists",
      api(`/api/artists/similar?${new URLSearchParams({ ...who, model: state.model, k: "5" })}`));
    list.replaceChildren();
    $("artists-caption").textContent = `like ${data.artist} (${data.space})` +
      (data.note ? `; ${data.note}` : "") + (data.stale_aspect_map ? `; ${data.stale_aspect_map}` : "");
    for (const r of data.results) {
      const item = el("li", `${r.artist} `);
      item.append(el("span", r.score === null ? "-" : r.score.toFixed(3), "score"));
      item.append(el("span", ` ${counted(r.tracks, "track")}${r.low_confidence ? ", low confidence" : ""}`, "caption"));
      list.append(item);
    }
  } catch (err) {
    if (!(err instanceof Superseded)) $("artists-caption").textContent = err.message;
  }
}

// ---- search and upload -------------------------------------------------------------
// caseless, in one Unicode form: a name written on macOS (NFD: "e" and a combining accent) matches it typed (NFC)
const fold = (text) => text.normalize("NFC").toLowerCase().normalize("NFC");

function applySearch() {
  const words = fold($("search").value).split(/\s+/).filter(Boolean);
  const results = $("search-results");
  results.replaceChildren();
  state.matches = new Set();
  if (words.length) {
    const hits = state.points.filter((p) => {
      const text = fold([p.name, p.album, p.genre, p.composer, p.file].filter(Boolean).join(" "));
      return words.every((w) => text.includes(w));
    });
    state.matches = new Set(hits.map((p) => p.id));
    for (const p of hits.slice(0, 30)) {
      const item = trackItem(p);
      item.append(addButton(p));
      results.append(item);
    }
    if (hits.length > 30) results.append(el("li", `and ${hits.length - 30} more`, "caption"));
    if (!hits.length) results.append(el("li", "no match", "caption"));
  }
  draw();
}

// What the server warns of for an uploaded file (a low sample rate, only its start analysed), under its title.
function showUploadWarnings(warnings) {
  const box = $("upload-warnings");
  box.replaceChildren(...warnings.map((text) => el("p", `warning: ${text}`, "caption warning")));
  box.hidden = !warnings.length;
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
    const answer = api(`/api/similar/upload?${params}`, { method: "POST", body: form });
    const data = await latestOnly("neighbours", answer);
    state.selected = data.query.id;
    state.upload = data.query.external ? data.query : null;
    $("now-title").textContent = data.query.label;
    $("now-meta").textContent = data.query.external ? "uploaded file (the star on the map)" : "already in the collection";
    showUploadWarnings(data.warnings || []);
    if (state.uploadUrl) URL.revokeObjectURL(state.uploadUrl);
    state.uploadUrl = URL.createObjectURL(file);  // played from this browser: the server keeps no copy
    endQueue();
    $("player").src = state.uploadUrl;
    $("player").play().catch(() => {});
    renderNeighbours(data);
    const known = state.byId.get(data.query.id);
    const who = known ? { track: String(known.id) } : data.query.artist ? { name: data.query.artist } : null;
    if (who) await loadArtists(who);
    else {
      $("artists").replaceChildren();
      $("artists-caption").textContent = "the uploaded file has no artist tag";
    }
    updatePlaylistButtons();
  } catch (err) {
    if (err instanceof Superseded) return;  // a track was clicked meanwhile
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
    $("probe-caption").textContent = `${report.model}, ${counted(report.n_tracks, "track")}, ${report.probe} probe: ` +
      "out-of-fold R² per aspect; outlined = the layer chosen for the aspect";
  } catch (err) {
    $("probe-caption").textContent = err.message;
  }
}

// ---- playlists ---------------------------------------------------------------------
function updatePlaylistButtons() {
  const inCollection = state.byId.has(state.selected);
  $("radio-btn").disabled = !inCollection;
  $("path-start-btn").disabled = !inCollection;
  $("path-end-btn").disabled = !inCollection || state.pathStart === null || state.pathStart === state.selected;
  const start = state.byId.get(state.pathStart);
  $("path-ends").textContent = start ? `from ${start.name}` : "";
}

function playlistParams(extra) {
  const params = new URLSearchParams({ model: state.model, n: $("playlist-n").value || "12", ...extra });
  const choice = $("vectors").value;
  if (choice.startsWith("aspect:")) params.set("aspect", choice.slice(7));
  return params;
}

async function makePlaylist(kind, extra) {
  const params = playlistParams(extra);
  $("playlist-caption").textContent = "making...";
  try {
    showPlaylist(await api(`/api/playlists/${kind}?${params}`), kind);
  } catch (err) {
    $("playlist-caption").textContent = err.message;
  }
}

// List a playlist (a radio or path answer, one kept from the last visit, or a file opened), offer its downloads
// and keep it in this browser: a reload or a later visit shows it again.
function showPlaylist(data, kind) {
  state.playlist = data;
  state.playlistKind = kind;
  state.queue = data.tracks.map((t) => t.id);
  state.queueAt = -1;
  const list = $("playlist");
  list.replaceChildren();
  data.tracks.forEach((t, index) => {
    const item = trackItem(t, () => playQueued(index));  // the playlist plays on from the track clicked
    item.append(el("span", duration(t.duration), "score"));
    list.append(item);
  });
  // the downloads are the list shown, by its ids: the radio or path asked for again may differ (tracks extracted
  // or removed since it was made)
  const shown = data.tracks.map((t) => ["track", String(t.id)]);
  for (const fmt of ["m3u8", "xspf"]) {
    const file = new URLSearchParams([...shown, ["title", data.title], ["name", kind], ["format", fmt]]);
    $(`dl-${fmt}`).href = `/api/playlists/file?${file}`;
    $(`dl-${fmt}`).download = `${kind}.${fmt}`;
  }
  $("playlist-actions").hidden = false;
  const notes = [data.note, data.stale_aspect_map].filter(Boolean).map((n) => `; ${n}`).join("");
  $("playlist-caption").textContent = `${data.title} (${counted(data.tracks.length, "track")}${notes})`;
  try {
    localStorage.setItem(KEPT, JSON.stringify({ kind, data }));
  } catch (err) { /* storage full or refused: the list is only not kept */ }
}

// The playlist kept from the last visit, shown again: its tracks the collection still holds, each by its id and
// file (a store rebuilt since gives ids to other files: those would play other music), the others named as left out.
function reopenPlaylist() {
  let kept = null;
  try {
    kept = JSON.parse(localStorage.getItem(KEPT) || "null");
  } catch (err) { return; }
  if (!kept || !kept.data || !Array.isArray(kept.data.tracks)) return;
  const here = (t) => state.byId.has(t.id) && state.byId.get(t.id).file === t.file;
  const gone = kept.data.tracks.filter((t) => !here(t)).map((t) => t.name);
  const note = gone.length ? `left out, no longer in the collection: ${gone.join(", ")}` : kept.data.note;
  showPlaylist({ ...kept.data, tracks: kept.data.tracks.filter(here), note }, kept.kind || "playlist");
}

// A playlist file opened in the page: the M3U8 / XSPF downloaded from it (this server's audio URLs, by track id)
// or written by `mess playlist` (file paths, matched by file name where one track of the map has it). An entry whose
// length (M3U8's #EXTINF seconds, XSPF's duration) is not its track's is another recording (a store rebuilt since
// gives ids to other files): left out, as the entries the collection lacks, and named.
async function openPlaylist(event) {
  const file = event.target.files[0];
  if (!file) return;
  const text = await file.text();
  event.target.value = "";
  const { title, entries } = /<playlist[\s>]/.test(text) ? readXspf(text) : readM3u(text);
  const byFile = new Map();
  for (const p of state.points) byFile.set(p.file, byFile.has(p.file) ? null : p);  // null: a name two tracks have
  const tracks = [];
  const left = { "not in this collection": [], "named so by several of its tracks": [], "of another length": [] };
  for (const { location, seconds, uri } of entries) {
    const served = location.match(/\/api\/tracks\/(\d+)\/audio$/);
    const name = uri ? unescaped(location.split("/").pop()) : location.split("/").pop();
    const track = served ? state.byId.get(Number(served[1])) : byFile.get(name);
    if (track === null) left["named so by several of its tracks"].push(name);
    else if (!track) left["not in this collection"].push(name);
    else if (seconds >= 0 && track.duration && Math.abs(seconds - track.duration) > 1.5) {
      left["of another length"].push(track.name);
    } else tracks.push(track);
  }
  const note = Object.entries(left).filter(([, names]) => names.length)
    .map(([why, names]) => `left out, ${why}: ${names.join(", ")}`).join("; ") || null;
  showPlaylist({ title: title || file.name, tracks, note }, "playlist");
}

// An M3U / M3U8's title (#PLAYLIST) and entries, each with the seconds of the #EXTINF before it (-1: none given).
function readM3u(text) {
  const entries = [];
  let seconds = -1;
  let title = null;
  for (const line of text.split(/\r?\n/).map((l) => l.trim())) {
    if (line.startsWith("#EXTINF:")) seconds = parseFloat(line.slice(8));
    else if (line.startsWith("#PLAYLIST:")) title = line.slice(10).trim();
    else if (line && !line.startsWith("#")) {
      entries.push({ location: line, seconds: Number.isFinite(seconds) ? seconds : -1 });
      seconds = -1;
    }
  }
  return { title, entries };
}

// An XSPF's title and entries (location, a URI; duration in seconds, -1 when none is given).
function readXspf(text) {
  const doc = new DOMParser().parseFromString(text, "application/xml");
  const child = (node, tag) => [...node.children].find((c) => c.localName === tag);
  const root = doc.documentElement;
  const list = child(root, "trackList");
  const entries = (list ? [...list.children] : []).filter((t) => t.localName === "track").map((t) => {
    const ms = child(t, "duration") ? parseFloat(child(t, "duration").textContent) : NaN;
    return { location: (child(t, "location") || { textContent: "" }).textContent.trim(),
      seconds: Number.isFinite(ms) ? ms / 1000 : -1, uri: true };
  }).filter((e) => e.location);
  const title = child(root, "title");
  return { title: title ? title.textContent.trim() : null, entries };
}

// A file name as a URI writes it (%20 for a space), decoded where it is valid percent-encoding.
function unescaped(name) {
  try {
    return decodeURIComponent(name);
  } catch (err) { return name; }
}

// A "+" after a track (neighbours, search results) adds it to the end of the playlist, a new one when none is
// listed; the entry playing plays on, into the added tracks.
function addButton(track) {
  const add = el("button", "+", "add");
  add.type = "button";
  add.title = `add ${track.name} to the playlist`;
  add.setAttribute("aria-label", add.title);
  add.addEventListener("click", () => {
    const data = state.playlist || { title: "my playlist", tracks: [], note: null };
    const at = state.queueAt;
    showPlaylist({ ...data, tracks: [...data.tracks, track] }, state.playlistKind || "playlist");
    state.queueAt = at;
    [...$("playlist").children].forEach((li, i) => li.classList.toggle("playing", i === at));
  });
  return add;
}

// Next and previous entry of the playlist (the first when none of it plays yet).
function stepQueue(by) {
  if (!state.queue.length) return;
  playQueued(state.queueAt < 0 ? 0 : Math.min(Math.max(state.queueAt + by, 0), state.queue.length - 1));
}

// Keys, as media players take them, outside text fields: space or k plays / pauses (space not on a button or link,
// which it presses), n and p play the playlist's next and previous entry, / goes to the search field.
function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
  const inside = (selector) => Boolean(event.target.closest && event.target.closest(selector));
  if (inside("input, select, textarea, [contenteditable]")) return;
  const player = $("player");
  if (event.key === "k" || (event.key === " " && !inside("button, a, audio"))) {
    if (player.src) { if (player.paused) player.play().catch(() => {}); else player.pause(); }
  } else if (event.key === "n") {
    stepQueue(1);
  } else if (event.key === "p") {
    stepQueue(-1);
  } else if (event.key === "/") {
    $("search").focus();
  } else {
    return;
  }
  event.preventDefault();
}

// The system's media controls (a phone's lock screen, a keyboard's media keys) name the track and step the list.
function mediaSession(track) {
  if (!("mediaSession" in navigator) || typeof MediaMetadata === "undefined") return;
  navigator.mediaSession.metadata = new MediaMetadata({
    title: track.title || track.name, artist: track.artist || "", album: track.album || "" });
}

function playQueued(index) {
  if (index < 0 || index >= state.queue.length) { state.queueAt = -1; return; }
  state.queueAt = index;
  const id = state.queue[index];
  const track = state.byId.get(id);
  const player = $("player");
  player.src = `/api/tracks/${id}/audio`;
  player.play().catch(() => {});
  if (track) {
    state.selected = id;
    $("now-title").textContent = track.name;
    $("now-meta").textContent = `playlist ${index + 1} of ${state.queue.length}`;
    mediaSession(track);
    showUploadWarnings([]);
    state.upload = null;
    loadNeighbours(id);
    loadArtists({ track: String(id) });
  }
  [...$("playlist").children].forEach((li, i) => li.classList.toggle("playing", i === index));
  const item = $("playlist").children[index];
  if (item && item.classList.contains("unplayable")) {  // tried again (its file back, say): marked again if it fails
    item.classList.remove("unplayable");
    item.title = "";
  }
  updatePlaylistButtons();
  draw();
}

// The audio element tells nothing of why a track does not play (a file changed since extraction: 409; gone: 404);
// the server's answer does, shown under the track's title. A file that is served, or an upload played from this
// browser's copy, that still does not play is in a format the browser cannot decode (WavPack, Monkey's Audio or
// Musepack in Chromium): said so after its details, where the page said nothing. A playlist playing goes on with
// its next track ('ended' never comes for one that cannot play: the playlist stopped there), the reason kept as
// the entry's tooltip.
async function explainPlayerError() {
  const player = $("player");
  const src = player.src;
  const code = player.error ? player.error.code : 0;
  const undecodable = () => {
    const meta = $("now-meta");
    if (player.src === src && [MediaError.MEDIA_ERR_DECODE, MediaError.MEDIA_ERR_SRC_NOT_SUPPORTED].includes(code)) {
      meta.textContent = `${meta.textContent} · cannot play: this browser cannot decode the file's format`;
      skipQueued(src, "cannot play: this browser cannot decode the file's format");
    }
  };
  if (!src.includes("/api/tracks/")) {
    if (src && src === state.uploadUrl) undecodable();
    return;
  }
  try {
    await api(src, { headers: { Range: "bytes=0-0" } });
  } catch (err) {
    if (player.src === src) {
      $("now-meta").textContent = `cannot play: ${err.message}`;
      skipQueued(src, `cannot play: ${err.message}`);
    }
    return;
  }
  undecodable();
}

// The playlist entry playing ``src`` cannot play: mark it with ``reason`` and play the next entry.
function skipQueued(src, reason) {
  const at = state.queueAt;
  if (at < 0 || !src.endsWith(`/api/tracks/${state.queue[at]}/audio`)) return;
  const item = $("playlist").children[at];
  if (item) {
    item.classList.add("unplayable");
    item.title = reason;
  }
  playQueued(at + 1);
}

// ---- wiring ------------------------------------------------------------------------
async function selectModel(model) {
  state.model = model;
  // the run the server answers from (a model extracted again has a second run, used once it covers the most tracks)
  const runs = state.runs.filter((r) => r.model === model);
  const run = state.runs.find((r) => `${r.model}@${r.id}` === model) || runs.find((r) => r.current) || runs.at(-1);
  const select = $("vectors");
  select.replaceChildren(new Option("all layers", "all"));
  for (const [aspect, layer] of Object.entries(run.aspects)) {
    const r2 = (run.aspect_scores || {})[aspect];
    const weak = r2 !== undefined && r2 < state.threshold;
    const option = new Option(`aspect: ${aspect} (${layer})${weak ? ", weakly encoded" : ""}`, `aspect:${aspect}`);
    option.disabled = weak;
    option.title = r2 === undefined ? "" :
      `probe R², less what shuffled targets reach: ${r2.toFixed(2)}${weak ? ` (below ${state.threshold})` : ""}`;
    select.append(option);
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
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.offsetX, y: e.offsetY, moved: 0 };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.offsetX - drag.x;
    const dy = e.offsetY - drag.y;
    drag.moved += Math.abs(dx) + Math.abs(dy);
    if (drag.moved > 4) { pan(dx, dy); drag.x = e.offsetX; drag.y = e.offsetY; }
  });
  canvas.addEventListener("pointerup", (e) => {
    const wasClick = drag && drag.moved <= 4;
    drag = null;
    if (!wasClick) return;
    const point = nearest(e.offsetX, e.offsetY);
    if (point) selectTrack(point.id);
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    zoom(e.deltaY < 0 ? 1.25 : 0.8, e.offsetX, e.offsetY);
  }, { passive: false });
  $("zoom-in").addEventListener("click", () => zoom(1.5));
  $("zoom-out").addEventListener("click", () => zoom(1 / 1.5));
  $("zoom-reset").addEventListener("click", () => { state.view = { ...state.full }; draw(); });
  $("radio-btn").addEventListener("click", () => makePlaylist("radio", { seed: String(state.selected) }));
  $("path-start-btn").addEventListener("click", () => { state.pathStart = state.selected; updatePlaylistButtons(); });
  $("path-end-btn").addEventListener("click", () => makePlaylist("path", {
    start: String(state.pathStart), end: String(state.selected) }));
  $("play-all").addEventListener("click", () => playQueued(0));
  $("prev-btn").addEventListener("click", () => stepQueue(-1));
  $("next-btn").addEventListener("click", () => stepQueue(1));
  $("open-playlist").addEventListener("change", openPlaylist);
  document.addEventListener("keydown", onKey);
  if ("mediaSession" in navigator) {
    navigator.mediaSession.setActionHandler("nexttrack", () => stepQueue(1));
    navigator.mediaSession.setActionHandler("previoustrack", () => stepQueue(-1));
  }
  $("player").addEventListener("error", explainPlayerError);
  $("player").addEventListener("ended", () => { if (state.queueAt >= 0) playQueued(state.queueAt + 1); });
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
    if (data.encoded_threshold !== undefined) state.threshold = data.encoded_threshold;
    for (const model of new Set(data.runs.map((r) => r.model))) $("model").append(new Option(model, model));
    // a model's other runs, picked as NAME@RUN_ID (the model alone answers from its current run)
    for (const r of data.runs.filter((r) => !r.current)) {
      $("model").append(new Option(`${r.model} run ${r.id}`, `${r.model}@${r.id}`));
    }
    $("model").value = data.default_model;
    await selectModel(data.default_model);
    reopenPlaylist();
  } catch (err) {
    setStatus(err.message);
  }
}

// For tests and the browser console: the page state and where a track is drawn (page coordinates).
window.mess = {
  state,
  ready: init(),
  palette: PALETTE,
  other: OTHER,
  pagePosition(id) {
    const rect = $("map").getBoundingClientRect();
    const [x, y] = toScreen(state.byId.get(id));
    return [rect.left + x, rect.top + y];
  },
};
