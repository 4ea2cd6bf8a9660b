// smdim studio page: piano roll with a bar ruler, selection, locks, jobs, players. No dependencies.
"use strict";

const RULER = 22;             // px of the bar ruler above the roll
const COLORS = ["#2f6fdd", "#d9822b", "#2e9d5b", "#a23fc4", "#c23b3b", "#1b9aaa", "#7a6a2f", "#555"];
const $ = (id) => document.getElementById(id);

const studio = {
  info: null,
  piece: null, pieceId: null,        // A: the piece being edited
  results: [], resultIds: [],        // the last job's candidates
  chosen: 0,                         // which candidate is B
  selection: null,                   // [firstBar, lastBar] or null
  locked: new Set(),
  tracksOn: new Set(),
  busy: false,
  ready: false,                      // true once the styles and corpus pieces are listed
  layout: null,
};
window.studio = studio;              // for the browser tests and the curious

// ---------- requests ----------
async function api(path, options = {}) {
  const res = await fetch(path, {headers: {"Content-Type": "application/json"}, ...options});
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) throw new Error((body && body.detail && (typeof body.detail === "string" ? body.detail
    : body.detail.map((d) => d.msg).join("; "))) || `the server answered ${res.status}`);
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(text, fraction) {
  $("status").textContent = text;
  $("progress").value = fraction == null ? 0 : fraction;
}

// ---------- drawing ----------
function layoutFor(piece, canvas, height) {
  const notes = piece.notes;
  let low = 127, high = 0;
  for (const n of notes) { low = Math.min(low, n.pitch); high = Math.max(high, n.pitch); }
  if (low > high) { low = 48; high = 72; }
  low = Math.max(0, low - 2); high = Math.min(127, high + 2);
  const width = Math.max(canvas.parentElement ? canvas.parentElement.clientWidth - 2 : 600, 240);
  const px = Math.max(width / Math.max(piece.end, 1), 0.5);
  return {low, high, px, width: Math.ceil(piece.end * px) + 1, height,
          row: (height - RULER) / (high - low + 1)};
}

function noteRect(L, n) {
  return [n.time * L.px, RULER + (L.high - n.pitch) * L.row, Math.max(n.duration * L.px - 1, 2), Math.max(L.row - 1, 1)];
}

function draw(canvas, piece, opts = {}) {
  const L = layoutFor(piece, canvas, canvas.height);
  canvas.width = opts.width || L.width;
  if (opts.width) L.px = opts.width / Math.max(piece.end, 1);
  const g = canvas.getContext("2d");
  g.fillStyle = "#fff"; g.fillRect(0, 0, canvas.width, canvas.height);
  for (let p = L.low; p <= L.high; p++) {               // black-key rows
    if ([1, 3, 6, 8, 10].includes(p % 12)) {
      g.fillStyle = "#f1f3f6"; g.fillRect(0, RULER + (L.high - p) * L.row, canvas.width, L.row);
    }
  }
  const sel = opts.selection;
  piece.bars.forEach((b, i) => {
    const x = b.time * L.px, w = b.length * L.px;
    const inSel = sel && i >= sel[0] && i <= sel[1];
    g.fillStyle = inSel ? "#2f6fdd" : (i % 2 ? "#e3e7ec" : "#d5dbe2");
    g.fillRect(x, 0, w, RULER - 2);
    if (inSel) { g.fillStyle = "rgba(47,111,221,0.10)"; g.fillRect(x, RULER, w, canvas.height - RULER); }
    g.fillStyle = inSel ? "#fff" : "#4a535e"; g.font = "11px system-ui";
    if (w > 14) g.fillText(String(i + 1), x + 3, 15);
    g.fillStyle = "#c7ced6"; g.fillRect(x, RULER, 1, canvas.height - RULER);
  });
  for (const n of piece.notes) {
    if (opts.tracksOn && !opts.tracksOn.has(n.track) && opts.dimOthers) g.globalAlpha = 0.35;
    const [x, y, w, h] = noteRect(L, n);
    g.fillStyle = COLORS[n.track % COLORS.length];
    g.fillRect(x, y, w, h);
    if (opts.locked && opts.locked.has(n.id)) {
      g.strokeStyle = "#111"; g.lineWidth = 2; g.strokeRect(x + 1, y + 1, Math.max(w - 2, 1), Math.max(h - 2, 1));
    }
    g.globalAlpha = 1;
  }
  return L;
}

function redraw() {
  if (!studio.piece) return;
  studio.layout = draw($("roll"), studio.piece, {selection: studio.selection, locked: studio.locked,
                                                  tracksOn: studio.tracksOn, dimOthers: true});
  const s = studio.selection;
  $("selection").textContent = s ? `bars ${s[0] + 1}–${s[1] + 1} selected` + (studio.locked.size ? `, ${studio.locked.size} locked notes` : "")
    : "click the bar ruler to select bars (shift-click or drag for a range); click a note to lock it";
}

// Where bar i / note id are drawn, in canvas pixels (the browser tests click there).
studio.barX = (i) => { const b = studio.piece.bars[i]; return (b.time + b.length / 2) * studio.layout.px; };
studio.noteXY = (id) => { const [x, y, w, h] = noteRect(studio.layout, studio.piece.notes[id]); return [x + Math.min(w / 2, 4), y + h / 2]; };

function barAt(x) {
  const t = x / studio.layout.px;
  const bars = studio.piece.bars;
  for (let i = 0; i < bars.length; i++) if (t >= bars[i].time && t < bars[i].time + bars[i].length) return i;
  return bars.length - 1;
}

function noteAt(x, y) {
  for (const n of studio.piece.notes) {
    const [nx, ny, w, h] = noteRect(studio.layout, n);
    if (x >= nx && x <= nx + w && y >= ny && y <= ny + h) return n;
  }
  return null;
}

// ---------- pointer ----------
let dragFrom = null;
function canvasPoint(e) {
  const r = $("roll").getBoundingClientRect();
  return [e.clientX - r.left, e.clientY - r.top];
}
$("roll").addEventListener("mousedown", (e) => {
  if (!studio.piece) return;
  const [x, y] = canvasPoint(e);
  if (y < RULER) {
    const bar = barAt(x);
    if (e.shiftKey && studio.selection) {
      studio.selection = [Math.min(studio.selection[0], bar), Math.max(studio.selection[1], bar)];
    } else {
      studio.selection = [bar, bar];
      dragFrom = bar;
    }
  } else {
    const note = noteAt(x, y);
    if (note) { studio.locked.has(note.id) ? studio.locked.delete(note.id) : studio.locked.add(note.id); }
  }
  redraw();
});
$("roll").addEventListener("mousemove", (e) => {
  if (dragFrom === null) return;
  const bar = barAt(canvasPoint(e)[0]);
  studio.selection = [Math.min(dragFrom, bar), Math.max(dragFrom, bar)];
  redraw();
});
window.addEventListener("mouseup", () => { dragFrom = null; });

// ---------- pieces ----------
function setPiece(id, piece) {
  studio.pieceId = id; studio.piece = piece;
  studio.selection = null; studio.locked = new Set();
  studio.tracksOn = new Set(piece.tracks.map((_, i) => i));
  $("piece-name").textContent = `${piece.name} — ${piece.bars.length} bars, ${piece.notes.length} notes`;
  const tracks = $("tracks");
  tracks.innerHTML = "";
  piece.tracks.forEach((t, i) => {
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" data-track="${i}" checked> <span class="swatch" style="background:${COLORS[i % COLORS.length]}"></span>`;
    label.append(document.createTextNode(`${t.name} (program ${t.program})`));
    label.querySelector("input").addEventListener("change", (e) => {
      e.target.checked ? studio.tracksOn.add(i) : studio.tracksOn.delete(i);
      redraw();
    });
    tracks.append(label);
  });
  $("audio-original").src = `/api/pieces/${id}/wav`;
  setDownloads(id);
  redraw();
}

function setDownloads(id) {
  $("download-midi").href = `/api/pieces/${id}/midi`;
  $("download-wav").href = `/api/pieces/${id}/wav?download=true`;
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

$("file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  showError("");
  try {
    if (file.size > studio.info.max_upload_bytes) throw new Error(`${file.name} is too large: at most ${Math.floor(studio.info.max_upload_bytes / 1024)} KB`);
    const body = await api(`/api/upload?style=${encodeURIComponent($("style").value)}`,
                           {method: "POST", body: JSON.stringify({name: file.name, data: toBase64(await file.arrayBuffer())})});
    clearResults();
    setPiece(body.id, body.piece);
  } catch (err) { showError(err.message); }
  e.target.value = "";
});

$("corpus-load").addEventListener("click", async () => {
  showError("");
  try {
    const index = $("corpus-select").value;
    if (index === "") throw new Error("this studio has no corpus pieces to offer");
    const body = await api(`/api/corpus/${index}?style=${encodeURIComponent($("style").value)}`, {method: "POST"});
    clearResults();
    setPiece(body.id, body.piece);
  } catch (err) { showError(err.message); }
});

// ---------- jobs ----------
function numberOrNull(id) { const v = $(id).value; return v === "" ? null : Number(v); }
function settings() {
  return {steps: Number($("steps").value), temperature: Number($("temperature").value), seed: Number($("seed").value),
          order: $("order").value, pitch_low: numberOrNull("pitch-low"), pitch_high: numberOrNull("pitch-high"),
          max_chord: numberOrNull("max-chord")};
}

async function runJob(request) {
  if (studio.busy) return;
  showError("");
  studio.busy = true;
  document.querySelectorAll("#controls button, #sources button").forEach((b) => { b.disabled = true; });
  try {
    let job = await api("/api/jobs", {method: "POST", body: JSON.stringify({style: $("style").value, settings: settings(), ...request})});
    setStatus("queued", 0);
    while (job.state === "queued" || job.state === "running") {
      await new Promise((r) => setTimeout(r, 200));
      job = await api(`/api/jobs/${job.id}`);
      if (job.state === "running") {
        setStatus(`sampling: pass ${Math.max(job.passes, 1)}, step ${job.step} of ${job.steps || settings().steps}`,
                  job.steps ? job.step / job.steps : 0);
      }
    }
    if (job.state === "failed") throw new Error(job.error);
    const pieces = await Promise.all(job.results.map((id) => api(`/api/pieces/${id}`)));
    setStatus(`done: ${pieces.length} result${pieces.length > 1 ? "s" : ""}`, 1);
    return pieces;
  } catch (err) {
    setStatus("ready", 0);
    showError(err.message);
    return null;
  } finally {
    studio.busy = false;
    document.querySelectorAll("#controls button, #sources button").forEach((b) => { b.disabled = false; });
  }
}

function clearResults() {
  studio.results = []; studio.resultIds = []; studio.chosen = 0;
  $("candidates").innerHTML = "";
  $("audio-result").removeAttribute("src");
}

function showResults(pieces, replaceOriginal) {
  if (!pieces) return;
  if (replaceOriginal) { clearResults(); setPiece(pieces[0].id, pieces[0].piece); return; }
  studio.results = pieces.map((p) => p.piece);
  studio.resultIds = pieces.map((p) => p.id);
  const box = $("candidates");
  box.innerHTML = "";
  const perRow = Math.min(pieces.length, 2);   // candidates side by side, two per row
  const width = Math.max(Math.floor((box.clientWidth || 900) / perRow) - 28, 460);
  pieces.forEach((p, i) => {
    const card = document.createElement("div");
    card.className = "candidate";
    card.dataset.index = i;
    const canvas = document.createElement("canvas");
    canvas.height = 140;
    card.append(canvas);
    draw(canvas, p.piece, {width, selection: studio.selection});
    const row = document.createElement("div");
    row.className = "row";
    row.innerHTML = `<b>${String.fromCharCode(66 + i)}</b> <audio controls preload="none" src="/api/pieces/${p.id}/wav"></audio>
      <button class="choose">Compare</button> <button class="keep">Keep this</button>
      <a class="button" href="/api/pieces/${p.id}/midi" download>MIDI</a>`;
    row.querySelector(".choose").addEventListener("click", () => choose(i));
    row.querySelector(".keep").addEventListener("click", () => { const id = studio.resultIds[i], piece = studio.results[i]; clearResults(); setPiece(id, piece); });
    card.append(row);
    box.append(card);
  });
  choose(0);
}

function choose(i) {
  studio.chosen = i;
  document.querySelectorAll(".candidate").forEach((c) => c.classList.toggle("chosen", Number(c.dataset.index) === i));
  $("audio-result").src = `/api/pieces/${studio.resultIds[i]}/wav`;
  setDownloads(studio.resultIds[i]);
}

function requireSelection() {
  if (!studio.piece) throw new Error("open a piece first: upload a MIDI file, pick a corpus piece or generate one");
  if (!studio.selection) throw new Error("nothing selected: click the bar ruler above the notes to choose the bars to infill");
  if (!studio.tracksOn.size) throw new Error("no track selected: tick at least one track to infill");
}

function infillRequest(k) {
  return {kind: "infill", piece: studio.pieceId, first_bar: studio.selection[0], last_bar: studio.selection[1],
          tracks: [...studio.tracksOn], locked: [...studio.locked], k};
}

$("infill-btn").addEventListener("click", async () => {
  try { requireSelection(); } catch (err) { showError(err.message); return; }
  showResults(await runJob(infillRequest(1)));
});
$("variations-btn").addEventListener("click", async () => {
  try { requireSelection(); } catch (err) { showError(err.message); return; }
  showResults(await runJob(infillRequest(Number($("variations-k").value))));
});
$("continue-btn").addEventListener("click", async () => {
  if (!studio.piece) { showError("open a piece first: upload a MIDI file, pick a corpus piece or generate one"); return; }
  const track = studio.tracksOn.size ? Math.min(...studio.tracksOn) : 0;
  showResults(await runJob({kind: "continue", piece: studio.pieceId, bars: Number($("continue-bars").value), track}));
});
$("generate-btn").addEventListener("click", async () => {
  showResults(await runJob({kind: "generate", tokens: Number($("gen-tokens").value)}), true);
});
$("unlock-btn").addEventListener("click", () => { studio.locked = new Set(); redraw(); });

// A/B: play the other version from the same moment.
$("ab-btn").addEventListener("click", () => {
  const a = $("audio-original"), b = $("audio-result");
  if (!b.getAttribute("src")) { showError("nothing to compare yet: infill, continue or draw variations first"); return; }
  const [from, to] = a.paused ? [b, a] : [a, b];
  const t = from.currentTime;
  from.pause();
  to.currentTime = t;
  to.play().catch(() => {});
});

// ---------- held-out pieces of the chosen style (prepared by the server; poll while it says so) ----------
let corpusTimer = null;
async function loadCorpus() {
  clearTimeout(corpusTimer);
  const style = $("style").value;
  const corpus = await api(`/api/corpus?style=${encodeURIComponent(style)}`);
  if (style !== $("style").value) return;             // the style changed while we asked
  const select = $("corpus-select");
  select.replaceChildren();
  for (const p of corpus.pieces) {
    const o = document.createElement("option");
    o.value = p.index; o.textContent = p.name;
    select.append(o);
  }
  $("corpus-note").textContent = corpus.note || "";
  $("corpus-controls").hidden = !corpus.pieces.length && !corpus.note;
  $("corpus-load").disabled = !corpus.pieces.length;
  if (corpus.preparing) corpusTimer = setTimeout(() => loadCorpus().catch((err) => showError(err.message)), 3000);
}
$("style").addEventListener("change", () => loadCorpus().catch((err) => showError(err.message)));

// ---------- start ----------
(async function start() {
  try {
    studio.info = await api("/api/info");
    for (const s of studio.info.styles) {
      const o = document.createElement("option");
      o.value = s.name; o.textContent = `${s.name} (${s.training_length} tokens)`;
      $("style").append(o);
    }
    $("style").value = studio.info.default_style;
    const d = studio.info.defaults;
    $("steps").value = d.steps; $("temperature").value = d.temperature; $("seed").value = d.seed; $("order").value = d.order;
    $("variations-k").max = studio.info.max_variations;
    await loadCorpus();
    setStatus("ready", 0);
    studio.ready = true;
  } catch (err) { showError(`the studio could not start: ${err.message}`); }
})();
