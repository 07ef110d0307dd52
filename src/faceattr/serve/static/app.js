// faceattr web page: upload a photo -> boxes on a canvas + per-face attribute bars; query the index -> gallery.
// Plain DOM, no build step. Every server string goes in through textContent, never innerHTML.
"use strict";

const COLORS = ["#4f46e5", "#f97316", "#0ea5e9", "#16a34a", "#db2777", "#ca8a04", "#7c3aed", "#0d9488"];
const BARS_SHOWN = 12;
const EXAMPLES = ["Smiling=1 Eyeglasses=1", "Male=0 Blond_Hair=1", "Male=1 Goatee=1", "Young>0.8 Wearing_Hat=1", "Bald=1", "Male=0 Smiling=0",
  "age<30 Smiling=1", "age>=60 Eyeglasses=1"];

const $ = (id) => document.getElementById(id);
const state = { info: null, file: null, result: null, bitmap: null, active: -1, upload: 0 };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

function pretty(name) { return name.replace(/_/g, " "); }
function pct(p) { return `${Math.round(p * 100)}%`; }
// A change in log-odds with its sign, to 2 decimals ("+0.00", never "-0.00").
function signed(x) { const v = Math.round(x * 100) / 100 + 0; return `${v >= 0 ? "+" : ""}${v.toFixed(2)}`; }
function megapixels(n) { return n >= 1e6 ? `${+(n / 1e6).toFixed(1)} MP` : `${n.toLocaleString()} pixels`; }
// Estimated age in years, or null (a model without an age output): shown only when known.
function ageText(age) { return age == null ? null : `age ~${Math.round(age)}`; }

let toastTimer = null;
function toast(message, isError = true) {
  const t = $("toast");
  t.textContent = message;
  t.className = isError ? "toast error" : "toast";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 6000);
}

async function api(url, options) {
  const res = await fetch(url, options);
  let body = null;
  try { body = await res.json(); } catch { /* non-JSON error page */ }
  if (!res.ok) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
    throw new Error(detail || `${res.status} ${res.statusText}`);
  }
  return body;
}

// ---- status / info ------------------------------------------------------------------------------
async function loadInfo() {
  try {
    const info = await api("/info");
    state.info = info;
    $("status").classList.add("ok");
    const idx = info.index ? ` · index: ${info.index.faces.toLocaleString()} faces` : " · no index";
    $("status-text").textContent = `model ${info.model} · ${info.attributes.length} attributes${idx}`;
    $("limits").textContent = `JPEG, PNG, WebP, BMP, GIF or TIFF · up to ${(info.max_upload_bytes / 2 ** 20).toFixed(0)} MB ` +
      `and ${megapixels(info.max_pixels)}`;
    const list = $("attr-list");
    for (const a of info.attributes) list.append(el("option", { value: `${a}=1` }));
    if (info.index) {
      const ages = Boolean(info.index.age);
      if (ages) list.append(el("option", { value: "age<30" }));
      $("index-info").textContent =
        `${info.index.faces.toLocaleString()} faces in ${info.index.files.toLocaleString()} images under ${info.index.root}. ` +
        "Terms: Attr=1 / Attr=0 (model threshold) or bounds like Young>0.8" +
        (ages ? "; age in years like age<30 or age>=65" : "") + "; ranked by joint probability.";
      const known = new Set(info.attributes.map((a) => a.toLowerCase()));
      if (ages) known.add("age");
      for (const q of EXAMPLES) {
        if (!q.split(/\s+/).every((t) => known.has(t.split(/[=<>]/)[0].toLowerCase()))) continue;
        $("quick").append(el("button", { type: "button", text: q, onclick: () => { $("where").value = q; runSearch(); } }));
      }
    } else {
      for (const n of $("search-form").elements) n.disabled = true;
    }
  } catch (e) {
    $("status").classList.add("bad");
    $("status-text").textContent = `server unreachable: ${e.message}`;
  }
}

// ---- predict ------------------------------------------------------------------------------------
async function analyze(file) {
  if (!file) return;
  const ticket = ++state.upload;  // a later upload wins over a slower earlier reply
  state.file = file;
  state.active = -1;
  // The previous photo's result goes at once, so its boxes are never drawn on the new photo.
  state.result = null;
  state.bitmap = null;
  $("result").hidden = false;
  $("stage").hidden = false;
  $("busy").hidden = false;
  $("faces").replaceChildren(el("p", { class: "muted", text: "Finding faces..." }));
  try {
    const bitmap = await createImageBitmap(file).catch(() => null);
    if (ticket !== state.upload) return;
    state.bitmap = bitmap;
    if (state.bitmap) draw();
    const form = new FormData();
    form.append("file", file, file.name || "upload");
    const result = await api("/predict", { method: "POST", body: form });
    if (ticket !== state.upload) return;
    state.result = result;
    draw();
    renderFaces();
  } catch (e) {
    if (ticket !== state.upload) return;
    clearPhoto();
    $("faces").replaceChildren(el("p", { class: "muted", text: "No result." }));
    toast(e.message);
  } finally {
    if (ticket === state.upload) $("busy").hidden = true;
  }
}

// After a failed upload nothing of a photo stays beside "No result": no picture, no boxes, and no
// file for explain or look-alikes to send again.
function clearPhoto() {
  state.file = null;
  state.result = null;
  state.bitmap = null;
  state.active = -1;
  const canvas = $("canvas");
  canvas.width = 0;  // resizing a canvas clears it
  canvas.height = 0;
  $("stage").hidden = true;
}

function draw() {
  const canvas = $("canvas");
  const bmp = state.bitmap;
  const res = state.result;
  const w = res ? res.width : bmp.width;
  const h = res ? res.height : bmp.height;
  // Draw at the size it is shown (times the pixel ratio), so boxes and labels keep a constant on-screen
  // size whether the photo is a 100 px crop or a 6000 px original.
  const dpr = window.devicePixelRatio || 1;
  const shown = canvas.parentElement.clientWidth || 640;
  const scale = (shown * dpr) / w;
  canvas.width = Math.max(1, Math.round(w * scale));
  canvas.height = Math.max(1, Math.round(h * scale));
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  if (bmp) ctx.drawImage(bmp, 0, 0, canvas.width, canvas.height);
  else { ctx.fillStyle = "#888"; ctx.fillRect(0, 0, canvas.width, canvas.height); }
  if (!res) return;
  const lw = 2.5 * dpr;
  const fs = Math.round(13 * dpr);
  res.faces.forEach((f, i) => {
    const [x, y, bw, bh] = f.box.map((v) => v * scale);
    const color = COLORS[i % COLORS.length];
    const active = state.active === i;
    ctx.lineWidth = active ? lw * 1.8 : lw;
    ctx.strokeStyle = color;
    ctx.globalAlpha = state.active < 0 || active ? 1 : 0.4;
    ctx.beginPath();
    ctx.roundRect(x, y, bw, bh, Math.min(bw, bh) * 0.06);
    ctx.stroke();
    ctx.fillStyle = color;
    for (const [lx, ly] of f.landmarks || []) {
      ctx.beginPath();
      ctx.arc(lx * scale, ly * scale, lw * 0.9, 0, Math.PI * 2);
      ctx.fill();
    }
    const label = String(i + 1);
    ctx.font = `600 ${fs}px system-ui, sans-serif`;
    const tw = ctx.measureText(label).width + fs * 0.8;
    const th = fs * 1.4;
    const ty = y - th >= 0 ? y - th : y;  // above the box, or inside it at the top edge
    ctx.fillRect(x - lw / 2, ty, tw, th);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x - lw / 2 + fs * 0.4, ty + fs * 1.05);
    ctx.globalAlpha = 1;
  });
}

function bar(name, p, threshold, onpick) {
  const on = p >= threshold;
  const fill = el("div", { class: "fill" });
  fill.style.width = pct(p);
  const tick = el("div", { class: "tick", title: `threshold ${threshold.toFixed(2)}` });
  tick.style.left = pct(threshold);
  const pick = (e) => { if (e.type === "click" || e.key === "Enter" || e.key === " ") { e.preventDefault(); onpick(name); } };
  return el("div", { class: on ? "bar on" : "bar", title: `${name}: ${p.toFixed(3)} (click: which parts of the face drive it)`,
    role: "button", tabindex: "0", onclick: pick, onkeydown: pick },
    el("span", { class: "name", text: pretty(name) }),
    el("div", { class: "track" }, fill, tick),
    el("span", { class: "val", text: pct(p) }));
}

function renderFaces() {
  const box = $("faces");
  const faces = state.result.faces;
  if (!faces.length) {
    box.replaceChildren(el("p", { class: "muted", text: "No face found in this photo. Try one where a face is clearly visible." }));
    return;
  }
  const info = state.info || { attributes: [], thresholds: [] };
  const thr = Object.fromEntries(info.attributes.map((a, i) => [a, info.thresholds[i]]));
  const cards = faces.map((f, i) => {
    const color = COLORS[i % COLORS.length];
    const entries = Object.entries(f.attributes).sort((a, b) => b[1] - a[1]);
    const head = el("div", { class: "face-head" },
      el("span", { class: "swatch" }),
      el("h3", { text: `Face ${i + 1}` }),
      f.age != null ? el("span", { class: "age", text: ageText(f.age) }) : null,
      el("span", { class: "meta", text: f.score != null ? `detector ${pct(f.score)} · ${Math.round(f.box[2])}×${Math.round(f.box[3])} px` : "" }));
    if (info.index && entries.length) {
      head.append(el("button", { type: "button", class: "ghost", text: "Find look-alikes", onclick: () => lookAlikes(i) }));
    }
    const card = el("article", { class: "face-card", "data-face": String(i) }, head);
    card.style.setProperty("--face-color", color);
    if (!entries.length) {
      card.append(el("p", { class: "muted", text: "Too small to classify reliably." }));
    } else {
      card.append(el("div", { class: "present" }, ...(f.present.length ? f.present.map((a) => el("span", { class: "chip", text: pretty(a) })) : [el("span", { class: "muted", text: "no attribute above its threshold" })])));
      const bars = el("div", { class: "bars" });
      const shown = (n) => bars.replaceChildren(...entries.slice(0, n).map(([a, p]) => bar(a, p, thr[a] ?? 0.5, (name) => explainFace(i, name, card))));
      shown(BARS_SHOWN);
      card.append(bars);
      if (entries.length > BARS_SHOWN) {
        let all = false;
        const more = el("button", { type: "button", class: "link more", text: `Show all ${entries.length}` });
        more.addEventListener("click", () => { all = !all; shown(all ? entries.length : BARS_SHOWN); more.textContent = all ? "Show fewer" : `Show all ${entries.length}`; });
        card.append(more);
      }
    }
    card.addEventListener("mouseenter", () => { state.active = i; card.classList.add("active"); draw(); });
    card.addEventListener("mouseleave", () => { state.active = -1; card.classList.remove("active"); draw(); });
    return card;
  });
  box.replaceChildren(...cards);
}

// ---- explain ------------------------------------------------------------------------------------
// Occlusion: the server greys out each part of the aligned face and reports how far the attribute moves.
async function explainFace(face, name, card) {
  if (!state.file) return;
  let fig = card.querySelector(".explain");
  if (!fig) {
    // Above the bars, not under all 40 of them, so it shows where the click was.
    fig = el("figure", { class: "explain" });
    const bars = card.querySelector(".bars");
    if (bars) bars.before(fig); else card.append(fig);
  }
  fig.replaceChildren(el("p", { class: "muted", text: `Hiding parts of face ${face + 1} to see what drives ${pretty(name)}...` }));
  const ticket = String(Number(fig.dataset.ticket || 0) + 1);  // a later click wins over a slower earlier reply
  fig.dataset.ticket = ticket;
  const form = new FormData();
  form.append("file", state.file, state.file.name || "upload");
  form.append("attribute", name);
  form.append("face", String(face));
  // Log-odds: on a confident prediction (99.5%) probabilities hardly move even where the evidence does.
  form.append("scale", "logit");
  try {
    const res = await api("/explain", { method: "POST", body: form });
    if (fig.dataset.ticket !== ticket) return;
    // Rows show what ranks them, the signed change in log-odds: on a confident attribute the probabilities
    // with a part hidden all round to 100% and would not say why one part comes first.
    const change = (n) => res.region_logits[n] - res.logit;
    const parts = Object.keys(res.regions).sort((a, b) => Math.abs(change(b)) - Math.abs(change(a)));
    const part = parts[0];
    // The figure is small in a card, so the band figures are also given as text.
    const rows = parts.map((n) => el("tr", { title: `${pretty(name)} ${pct(res.regions[n])} with the ${n} hidden` },
      el("td", { text: `hide ${n}` }), el("td", { class: "num", text: signed(change(n)) })));
    fig.replaceChildren(
      el("img", { src: res.image, alt: `where the model looks for ${pretty(name)}` }),
      el("figcaption", { text: `${pretty(name)} ${pct(res.probability)} (log-odds ${signed(res.logit)}). Each row is the change in ` +
        `log-odds when that part is hidden, largest first; below zero, the part speaks for ${pretty(name)}. ` +
        `The biggest change comes from hiding the ${part} (${signed(change(part))}).` }),
      el("table", { class: "regions" },
        el("thead", {}, el("tr", {}, el("th", { text: "part hidden" }), el("th", { class: "num", text: "log-odds change" }))),
        el("tbody", {}, ...rows)));
    fig.scrollIntoView({ block: "nearest", behavior: "smooth" });
  } catch (e) {
    if (fig.dataset.ticket !== ticket) return;
    fig.remove();
    toast(e.message);
  }
}

// ---- search -------------------------------------------------------------------------------------
function tile(m, i, terms) {
  const img = el("img", { src: m.image_url, alt: `face ${m.face_id} from ${m.image}`, loading: "lazy", width: "160", height: "160" });
  const bar = el("i");
  bar.style.width = pct(Math.max(0, Math.min(1, m.score)));
  // An age term ("age<30") has no probability: the tile shows the face's age instead.
  const details = [ageText(m.age), ...terms.filter((a) => a in m.attributes).map((a) => `${pretty(a)} ${pct(m.attributes[a])}`)]
    .filter((t) => t != null).join(" · ");
  return el("figure", { class: "tile", title: `${m.image}\n${details}` },
    el("a", { href: m.full_url, target: "_blank", rel: "noopener" }, img),
    el("figcaption", {},
      el("div", { class: "rank" }, el("span", { text: `#${i + 1}` }), el("span", { class: "score", text: m.score.toFixed(3) })),
      el("div", { class: "file", text: m.image }),
      m.age != null ? el("div", { class: "age", text: ageText(m.age) }) : null,
      el("div", { class: "mini" }, bar)));
}

function showMatches(res, label) {
  const terms = res.where ? res.where.split(" ").map((t) => t.split(/[=<>]/)[0]) : [];
  $("search-summary").textContent = res.total
    ? `${label}: ${res.total.toLocaleString()} of ${res.searched.toLocaleString()} faces match; showing the top ${res.matches.length}.`
    : `${label}: no face matches (${res.searched.toLocaleString()} searched).`;
  $("gallery").replaceChildren(...res.matches.map((m, i) => tile(m, i, terms)));
}

async function runSearch(event) {
  if (event) event.preventDefault();
  const where = $("where").value.trim();
  if (!where) { toast("Type a query such as Male=0 Eyeglasses=1"); return; }
  const button = $("search-button");
  button.disabled = true;
  try {
    const res = await api(`/search?${new URLSearchParams({ where, top: $("top").value })}`);
    showMatches(res, where);
  } catch (e) {
    toast(e.message);
  } finally {
    button.disabled = false;
  }
}

async function lookAlikes(face) {
  if (!state.file) return;
  const form = new FormData();
  form.append("file", state.file, state.file.name || "upload");
  form.append("face", String(face));
  form.append("top", $("top").value);
  form.append("where", $("where").value.trim());
  try {
    const res = await api("/search/like", { method: "POST", body: form });
    showMatches(res, `Look-alikes of face ${face + 1}${res.where ? ` where ${res.where}` : ""}`);
    $("search").scrollIntoView({ behavior: "smooth" });
  } catch (e) {
    toast(e.message);
  }
}

// ---- wiring -------------------------------------------------------------------------------------
function wire() {
  const dz = $("dropzone");
  $("file").addEventListener("change", (e) => analyze(e.target.files[0]));
  for (const ev of ["dragenter", "dragover"]) dz.addEventListener(ev, (e) => { e.preventDefault(); dz.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) dz.addEventListener(ev, (e) => { e.preventDefault(); dz.classList.remove("over"); });
  dz.addEventListener("drop", (e) => analyze(e.dataTransfer.files[0]));
  // Paste a screenshot or copied image straight onto the page.
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (item) analyze(item);
  });
  for (const b of document.querySelectorAll("[data-sample]")) {
    b.addEventListener("click", async () => {
      try {
        const res = await fetch(`/samples/${b.dataset.sample}`);
        if (!res.ok) throw new Error(`sample not available (${res.status})`);
        const blob = await res.blob();
        analyze(new File([blob], `${b.dataset.sample}.jpg`, { type: blob.type }));
      } catch (e) { toast(e.message); }
    });
  }
  $("search-form").addEventListener("submit", runSearch);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (state.result || state.bitmap) draw(); }, 150);
  });
  loadInfo();
}

document.addEventListener("DOMContentLoaded", wire);
