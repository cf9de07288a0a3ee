// The facerec web page: plain JavaScript, no build step, no third-party code.
// Every /api/ request carries the token from sessionStorage; images that need the token
// (thumbnails, live frames) are fetched with it and shown through blob: URLs.
"use strict";

const TOKEN_KEY = "facerec.token";
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  info: null,
  threshold: 0.4,
  people: [],
  thumbs: new Map(), // sample id -> blob URL
  photo: null, // {file, url, result}
  liveAbort: null,
  eventsTimer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = value;
    else if (key in node && !key.startsWith("aria")) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function fmt(x) {
  return Number(x).toFixed(2);
}

// ------------------------------------------------------------------ messages

// Candidates this far below the threshold still get a "Confirm as" button (borderline matches).
const CONFIRM_SLACK = 0.1;

let messageTimer = null;

function say(text, kind = "info") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.setAttribute("role", kind === "error" ? "alert" : "status");
  clearTimeout(messageTimer);
  if (kind !== "error") messageTimer = setTimeout(() => { box.textContent = ""; box.className = "message"; }, 8000);
}

// ------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(path, { method = "GET", json, form, raw = false, signal } = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const response = await fetch(path, { method, headers, body, signal });
  if (response.status === 401) {
    showLogin("The server refused the token; enter it again.");
    throw new ApiError(401, "missing or wrong API token");
  }
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const data = await response.json();
      if (typeof data.detail === "string") detail = data.detail;
      else if (Array.isArray(data.detail)) detail = data.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  if (raw) return response;
  return response.json();
}

async function guarded(action, fn, { background = false } = {}) {
  try {
    const result = await fn();
    // an error banner belongs to the action that failed: the user's next successful action
    // clears it (a background poll does not, or an error would vanish before it was read)
    const box = $("message");
    if (!background && box.classList.contains("error")) {
      box.textContent = "";
      box.className = "message";
      box.setAttribute("role", "status");
    }
    return result;
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) say(`${action} failed: ${err.message}`, "error");
    return undefined;
  }
}

// ------------------------------------------------------------------ login

function showLogin(error = "") {
  stopLive();
  $("main").hidden = true;
  $("nav").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("token-error").textContent = error;
  $("token-input").focus();
}

async function connect(candidate) {
  sessionStorage.setItem(TOKEN_KEY, candidate);
  const response = await fetch("/api/info", { headers: { Authorization: `Bearer ${candidate}` } });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("That token is not right. Check FACEREC_API_TOKEN or the server's start-up output.");
    return;
  }
  if (!response.ok) {
    showLogin(`The server answered ${response.status}; try again.`);
    return;
  }
  state.info = await response.json();
  $("login").hidden = true;
  $("main").hidden = false;
  $("nav").hidden = false;
  $("logout").hidden = false;
  $("token-input").value = "";
  $("token-error").textContent = "";
  const info = state.info;
  $("model-info").textContent = `${info.detector} · ${info.embedder.split("@")[0]} · threshold ${fmt(info.threshold)}`;
  showGalleryWarning(info.gallery_warning);
  setThreshold(info.threshold);
  $("nav-live").hidden = !info.live;
  $("live").hidden = !info.live;
  await loadPeople();
  if (info.live) {
    const picker = $("camera-picker");
    picker.replaceChildren(...(info.cameras || []).map((name) => el("option", { value: name, text: name })));
    startLive();
  }
}

// ------------------------------------------------------------------ threshold

function setThreshold(value) {
  state.threshold = Number(value);
  $("threshold").value = String(value);
  $("threshold-value").textContent = fmt(value);
  if (state.photo && state.photo.result) paintDecisions();
}

function decide(face) {
  const best = face.top.length ? face.top[0] : null;
  if (best && best[1] >= state.threshold) return { name: best[0], similarity: best[1] };
  return { name: null, similarity: best ? best[1] : face.similarity };
}

// ------------------------------------------------------------------ identify

async function identifyFile(file) {
  if (!file) return;
  if (state.photo && state.photo.url) URL.revokeObjectURL(state.photo.url);
  state.photo = { file, url: URL.createObjectURL(file), result: null };
  $("photo").src = state.photo.url;
  $("result").hidden = false;
  $("faces").replaceChildren();
  clearOverlay();
  $("faces-summary").textContent = "Looking for faces…";
  await reidentify();
}

async function reidentify() {
  const photo = state.photo;
  if (!photo) return;
  const form = new FormData();
  form.append("file", photo.file);
  const result = await guarded("Identify", () => api("/api/identify", { method: "POST", form }));
  if (state.photo !== photo) return; // another photo was chosen meanwhile
  if (!result) {
    $("faces-summary").textContent = "";
    return;
  }
  photo.result = result;
  renderFaces();
}

function clearOverlay() {
  const svg = $("overlay");
  for (const node of [...svg.childNodes]) if (node.nodeName !== "title") node.remove();
}

function renderFaces() {
  const { result } = state.photo;
  $("overlay").setAttribute("viewBox", `0 0 ${result.width} ${result.height}`);
  $("faces").replaceChildren(...result.faces.map((face, i) => faceItem(face, i)));
  paintDecisions();
}

// Decide every face at the current threshold and show it (overlay, list, summary); the
// forms in the list are left alone so a name being typed survives a slider move.
function paintDecisions() {
  const { result } = state.photo;
  clearOverlay();
  const svg = $("overlay");
  const decisions = result.faces.map(decide);
  const n = result.faces.length;
  const known = decisions.filter((d) => d.name).length;
  const summary = n === 0
    ? "No face found in this photo."
    : `${n} face${n === 1 ? "" : "s"} found, ${known} recognised at threshold ${fmt(state.threshold)}.`;
  $("faces-summary").textContent = summary;
  svg.querySelector("title").textContent = summary;
  const stroke = Math.max(2, result.width / 300);
  const placed = [];
  result.faces.forEach((face, i) => {
    const decision = decisions[i];
    const [x1, y1, x2, y2] = face.box;
    const g = document.createElementNS(SVG_NS, "g");
    g.setAttribute("class", decision.name ? "box known" : "box unknown");
    const rect = document.createElementNS(SVG_NS, "rect");
    rect.setAttribute("x", x1);
    rect.setAttribute("y", y1);
    rect.setAttribute("width", x2 - x1);
    rect.setAttribute("height", y2 - y1);
    rect.setAttribute("stroke-width", stroke);
    const label = `${i + 1}. ${decision.name || "unknown"}`;
    const spot = placeLabel(label, face.box, result, placed);
    const text = document.createElementNS(SVG_NS, "text");
    text.setAttribute("x", spot.x);
    text.setAttribute("y", spot.y);
    text.setAttribute("text-anchor", spot.anchor);
    text.setAttribute("font-size", spot.size);
    text.setAttribute("stroke-width", spot.size / 6);
    text.textContent = label;
    g.append(rect, text);
    g.addEventListener("click", () => focusFace(i));
    svg.append(g);

    const item = $("faces").children[i];
    const line = item.querySelector(".face-decision");
    line.textContent = decision.name
      ? `${decision.name} (similarity ${fmt(decision.similarity)})`
      : `Unknown (best ${fmt(decision.similarity)})`;
    line.className = `face-decision ${decision.name ? "known" : "unknown"}`;
    item.querySelectorAll(".candidates li[data-similarity]").forEach((li) => {
      const pass = Number(li.dataset.similarity) >= state.threshold;
      li.classList.toggle("pass", pass);
      li.querySelector(".mark").textContent = pass ? " ✓" : "";
    });
  });
}

// Where a face's label goes: above its box, or below when that would cover a label
// already placed or leave the image; kept inside the image horizontally. Text width is
// estimated (0.6 em per character), which is close enough to avoid most overlaps.
function placeLabel(label, box, image, placed) {
  const [x1, y1, x2, y2] = box;
  const size = Math.min(Math.max(image.width / 70, (x2 - x1) / 4, 10), image.width / 30);
  const width = label.length * size * 0.6;
  const pad = size * 0.25;
  let x = x1;
  let anchor = "start";
  if (x1 + width > image.width) {
    x = Math.min(x2, image.width);
    anchor = "end";
  }
  const left = anchor === "start" ? x : x - width;
  const collides = (top) => placed.some((r) => left < r.right && left + width > r.left && top < r.bottom && top + size > r.top);
  let top = y1 - pad - size;
  if (top < 0 || collides(top)) top = y2 + pad;
  if (top + size > image.height || collides(top)) top = Math.max(0, y1 - pad - size);
  placed.push({ left, right: left + width, top, bottom: top + size });
  return { x, y: top + size * 0.85, anchor, size };
}

function focusFace(i) {
  const item = $("faces").children[i];
  if (item) {
    item.scrollIntoView({ block: "nearest", behavior: "smooth" });
    item.focus();
  }
}

function faceItem(face, i) {
  const node = $("face-template").content.firstElementChild.cloneNode(true);
  node.dataset.testid = "face";
  node.dataset.index = String(i);
  node.querySelector(".face-title").textContent = `Face ${i + 1}`;
  node.querySelector(".face-decision").dataset.testid = "face-name";
  const candidates = node.querySelector(".candidates");
  candidates.setAttribute("aria-label", `Best matches for face ${i + 1}`);
  for (const [name, sim] of face.top) {
    const li = el("li", { text: `${name} ${fmt(sim)}` }, el("span", { className: "mark" }));
    li.dataset.similarity = String(sim);
    candidates.append(li);
  }
  if (!face.top.length) candidates.append(el("li", { className: "hint", text: "The gallery is empty." }));

  // "Confirm as X" only for plausible matches: a face far below the threshold is somebody
  // else, and a big button inviting the wrong enrollment is worse than none
  const confirms = node.querySelector(".confirm-buttons");
  const plausible = face.top.filter(([, sim]) => sim >= state.threshold - CONFIRM_SLACK);
  for (const [name] of plausible.slice(0, 3)) {
    const button = el("button", { type: "button", text: `Confirm as ${name}` });
    button.dataset.testid = "confirm";
    button.addEventListener("click", () => enrollFace(i, name, false));
    confirms.append(button);
  }

  const newForm = node.querySelector(".new-person-form");
  const nameInput = newForm.querySelector("input");
  nameInput.dataset.testid = "new-person-name";
  newForm.querySelector("button").dataset.testid = "add-new-person";
  newForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const name = nameInput.value.trim();
    if (name) enrollFace(i, name, true);
  });

  const existing = node.querySelector(".existing-form");
  const select = existing.querySelector("select");
  if (state.people.length === 0) {
    existing.hidden = true;
  } else {
    for (const p of state.people) select.append(el("option", { value: p.name, text: p.name }));
  }
  existing.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (select.value) enrollFace(i, select.value, false);
  });
  return node;
}

async function enrollFace(index, name, isNew) {
  const photo = state.photo;
  if (!photo) return;
  const form = new FormData();
  form.append("files", photo.file);
  form.append("box", String(index));
  let path = `/api/people/${encodeURIComponent(name)}/samples`;
  if (isNew) {
    form.append("name", name);
    path = "/api/people";
  }
  const result = await guarded(isNew ? "Adding a person" : "Adding a sample", () => api(path, { method: "POST", form }));
  if (!result) return;
  const warnings = result.added.flatMap((a) => a.warnings);
  say(`Added face ${index + 1} as ${result.person}.${warnings.length ? " " + warnings.join(" ") : ""}`);
  await loadPeople();
  await reidentify();
}

// ------------------------------------------------------------------ people

async function loadPeople() {
  const data = await guarded("Loading people", () => api("/api/people"));
  if (!data) return;
  state.people = data.people;
  renderPeople();
  if (state.photo && state.photo.result) renderFaces(); // refresh the "add to" lists
  if (state.info && state.info.gallery_warning) {  // gone once someone is enrolled
    const info = await guarded("Loading info", () => api("/api/info"), { background: true });
    if (info) showGalleryWarning(info.gallery_warning);
  }
}

// An empty gallery, or none of its vectors from the running embedder: nobody can be named.
function showGalleryWarning(text) {
  if (state.info) state.info.gallery_warning = text || null;
  $("gallery-warning").textContent = text || "";
  $("gallery-warning").hidden = !text;
}

async function thumbUrl(sample) {
  if (state.thumbs.has(sample.id)) return state.thumbs.get(sample.id);
  const response = await api(sample.url, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  state.thumbs.set(sample.id, url);
  return url;
}

function renderPeople() {
  const list = $("people-list");
  list.replaceChildren();
  const people = state.people;
  $("people-count").textContent = `(${people.length})`;
  $("people-empty").hidden = people.length > 0;
  const present = new Set();
  for (const person of people) {
    list.append(personItem(person));
    for (const s of person.samples) present.add(s.id);
  }
  for (const [id, url] of state.thumbs) {
    if (!present.has(id)) {
      URL.revokeObjectURL(url);
      state.thumbs.delete(id);
    }
  }
}

function personItem(person) {
  const node = $("person-template").content.firstElementChild.cloneNode(true);
  node.dataset.testid = "person";
  node.dataset.name = person.name;
  const title = node.querySelector(".person-name");
  title.textContent = person.name;
  title.dataset.testid = "person-name";
  const n = person.sample_count;
  node.querySelector(".person-count").textContent = `${n} sample${n === 1 ? "" : "s"}`;
  const thumbs = node.querySelector(".thumbs");
  thumbs.setAttribute("aria-label", `Samples of ${person.name}`);
  for (const sample of person.samples) {
    const img = el("img", { alt: `Sample ${sample.id} of ${person.name}`, width: 72, height: 72 });
    img.dataset.testid = "thumb";
    thumbUrl(sample).then((url) => { img.src = url; }).catch(() => { img.alt = `Sample ${sample.id} (not loaded)`; });
    const move = el("button", { type: "button", className: "secondary small", text: "Move…" });
    move.setAttribute("aria-label", `Move sample ${sample.id} of ${person.name}`);
    move.addEventListener("click", () => openPanel(node, movePanel(person, sample)));
    const remove = el("button", { type: "button", className: "danger small", text: "Remove" });
    remove.setAttribute("aria-label", `Remove sample ${sample.id} of ${person.name}`);
    remove.addEventListener("click", () => removeSample(sample));
    thumbs.append(el("li", { className: "thumb" }, img, el("div", { className: "thumb-actions" }, move, remove)));
  }
  const rename = node.querySelector(".rename-open");
  rename.dataset.testid = "rename-open";
  rename.setAttribute("aria-label", `Rename ${person.name}`);
  rename.addEventListener("click", () => openPanel(node, renamePanel(person)));
  const merge = node.querySelector(".merge-open");
  merge.setAttribute("aria-label", `Merge ${person.name} into another person`);
  merge.disabled = state.people.length < 2;
  merge.addEventListener("click", () => openPanel(node, mergePanel(person)));
  const del = node.querySelector(".delete-open");
  del.dataset.testid = "delete-open";
  del.setAttribute("aria-label", `Delete ${person.name}`);
  del.addEventListener("click", () => openPanel(node, deletePanel(person)));
  return node;
}

function openPanel(node, content) {
  const panel = node.querySelector(".person-panel");
  panel.replaceChildren(content);
  panel.hidden = false;
  const first = panel.querySelector("input, select, button");
  if (first) first.focus();
}

function closePanel(form) {
  const panel = form.closest(".person-panel");
  panel.hidden = true;
  panel.replaceChildren();
  const opener = panel.closest(".person").querySelector(".rename-open");
  if (opener) opener.focus();
}

function cancelButton() {
  const button = el("button", { type: "button", className: "secondary", text: "Cancel" });
  button.addEventListener("click", () => closePanel(button.closest("form")));
  return button;
}

function panelForm(onSubmit, ...children) {
  const form = el("form", { className: "panel-form" }, ...children);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await onSubmit(form);
  });
  form.addEventListener("keydown", (ev) => { if (ev.key === "Escape") closePanel(form); });
  return form;
}

function renamePanel(person) {
  const input = el("input", { type: "text", value: person.name, required: true, maxLength: 100, autocomplete: "off" });
  input.dataset.testid = "rename-input";
  const save = el("button", { type: "submit", text: "Save name" });
  save.dataset.testid = "rename-save";
  return panelForm(async () => {
    const name = input.value.trim();
    if (!name || name === person.name) return;
    const ok = await guarded("Renaming", () =>
      api(`/api/people/${encodeURIComponent(person.name)}`, { method: "PATCH", json: { name } }));
    if (ok) {
      say(`Renamed ${person.name} to ${ok.name}.`);
      await loadPeople();
      if (state.photo) await reidentify();
    }
  }, el("label", { text: "New name " }, input), save, cancelButton());
}

function peopleSelect(exclude, testid) {
  const select = el("select", { required: true });
  select.dataset.testid = testid;
  for (const p of state.people) if (p.name !== exclude) select.append(el("option", { value: p.name, text: p.name }));
  return select;
}

function mergePanel(person) {
  const select = peopleSelect(person.name, "merge-select");
  return panelForm(async () => {
    const into = select.value;
    if (!into) return;
    const ok = await guarded("Merging", () =>
      api(`/api/people/${encodeURIComponent(person.name)}/merge`, { method: "POST", json: { into } }));
    if (ok) {
      say(`Merged ${person.name} into ${into}.`);
      await loadPeople();
    }
  }, el("label", { text: `Merge every sample of ${person.name} into ` }, select),
  el("button", { type: "submit", text: "Merge" }), cancelButton());
}

function movePanel(person, sample) {
  const select = peopleSelect(person.name, "move-select");
  const other = el("input", { type: "text", maxLength: 100, autocomplete: "off", placeholder: "or a new name" });
  return panelForm(async () => {
    const target = other.value.trim() || select.value;
    if (!target) return;
    const ok = await guarded("Moving", () =>
      api(`/api/samples/${sample.id}/move`, { method: "POST", json: { person: target } }));
    if (ok) {
      say(`Moved sample ${sample.id} to ${target}.`);
      await loadPeople();
    }
  }, el("label", { text: `Move sample ${sample.id} to ` }, select),
  el("label", { text: "New person " }, other),
  el("button", { type: "submit", text: "Move" }), cancelButton());
}

function deletePanel(person) {
  const n = person.sample_count;
  const confirmButton = el("button", { type: "submit", className: "danger", text: `Delete ${person.name}` });
  confirmButton.dataset.testid = "delete-confirm";
  return panelForm(async () => {
    const ok = await guarded("Deleting", () =>
      api(`/api/people/${encodeURIComponent(person.name)}`, { method: "DELETE" }));
    if (ok) {
      say(`Deleted ${ok.deleted} and ${ok.samples} sample${ok.samples === 1 ? "" : "s"}.`);
      await loadPeople();
      if (state.photo) await reidentify();
    }
  }, el("p", { text: `Delete ${person.name} with ${n} sample${n === 1 ? "" : "s"} and every stored crop? This cannot be undone.` }),
  confirmButton, cancelButton());
}

async function removeSample(sample) {
  const ok = await guarded("Removing a sample", () => api(`/api/samples/${sample.id}`, { method: "DELETE" }));
  if (ok) {
    say(`Removed sample ${sample.id} of ${ok.person}.`);
    await loadPeople();
  }
}

async function exportGallery() {
  const response = await guarded("Export", () => api("/api/export", { raw: true }));
  if (!response) return;
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = disposition.match(/filename="?([^";]+)"?/);
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: match ? match[1] : "facerec-gallery.zip" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  say("Gallery exported.");
}

async function importGallery(file) {
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  const ok = await guarded("Import", () => api("/api/import", { method: "POST", form }));
  $("import-file").value = "";
  if (ok) {
    say(`Imported ${ok.imported} sample${ok.imported === 1 ? "" : "s"}.`);
    await loadPeople();
  }
}

// ------------------------------------------------------------------ compare

async function compare(ev) {
  ev.preventDefault();
  const a = $("compare-a").files[0];
  const b = $("compare-b").files[0];
  if (!a || !b) return;
  const form = new FormData();
  form.append("a", a);
  form.append("b", b);
  const out = $("compare-result");
  out.replaceChildren(el("p", { text: "Comparing…" }));
  const r = await guarded("Compare", () => api("/api/compare", { method: "POST", form }));
  if (!r) {
    out.replaceChildren();
    return;
  }
  const verdict = r.same ? "Same person" : "Different people";
  const rel = r.same ? "≥" : "<";
  const table = el("table", { className: "matrix" });
  table.append(el("caption", { className: "visually-hidden", text: "Similarity matrix" }));
  const head = el("tr", {}, el("th", { scope: "col", text: "" }));
  r.b.faces.forEach((_, j) => head.append(el("th", { scope: "col", text: `B${j + 1}` })));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  r.matrix.forEach((row, i) => {
    const tr = el("tr", {}, el("th", { scope: "row", text: `A${i + 1}` }));
    row.forEach((v) => tr.append(el("td", { className: v >= r.threshold ? "pass" : "", text: fmt(v) })));
    body.append(tr);
  });
  table.append(body);
  out.replaceChildren(
    el("p", { className: r.same ? "verdict known" : "verdict unknown", text: `${verdict}: ${fmt(r.similarity)} ${rel} ${fmt(r.threshold)}` }),
    el("p", { className: "hint", text: "Cosine similarity of each face of the first photo (rows, A) with each face of the second (columns, B); cells at or above the threshold are highlighted." }),
    table,
  );
}

// ------------------------------------------------------------------ live

function startLive() {
  stopLive();
  const controller = new AbortController();
  state.liveAbort = controller;
  const camera = $("camera-picker").value;
  const query = camera ? `&camera=${encodeURIComponent(camera)}` : "";
  readStream(controller.signal, query).catch(() => { /* stopped or lost; the events poll still reports */ });
  const poll = async () => {
    const data = await guarded("Loading events", () => api(`/api/events?n=20${query}`), { background: true });
    if (data) renderEvents(data.events);
    const cams = await guarded("Loading camera stats", () => api("/api/cameras"), { background: true });
    if (cams) renderCameraStats(cams.cameras, camera);
  };
  poll();
  state.eventsTimer = setInterval(poll, 2000);
}

function stopLive() {
  if (state.liveAbort) state.liveAbort.abort();
  state.liveAbort = null;
  clearInterval(state.eventsTimer);
  state.eventsTimer = null;
}

function indexOf(haystack, needle, from) {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

// Cut the multipart/x-mixed-replace stream into JPEG parts (each part has Content-Length).
async function readStream(signal, query) {
  const response = await api(`/api/stream?fps=5${query}`, { raw: true, signal });
  const reader = response.body.getReader();
  const headerEnd = new TextEncoder().encode("\r\n\r\n");
  let buffer = new Uint8Array(0);
  let previous = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const merged = new Uint8Array(buffer.length + value.length);
    merged.set(buffer);
    merged.set(value, buffer.length);
    buffer = merged;
    for (;;) {
      const end = indexOf(buffer, headerEnd, 0);
      if (end < 0) break;
      const headers = new TextDecoder().decode(buffer.subarray(0, end));
      const m = headers.match(/content-length:\s*(\d+)/i);
      if (!m) { buffer = buffer.subarray(end + 4); continue; }
      const length = Number(m[1]);
      if (buffer.length < end + 4 + length) break;
      const jpeg = buffer.slice(end + 4, end + 4 + length);
      buffer = buffer.subarray(end + 4 + length);
      const url = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
      $("live-img").src = url;
      if (previous) URL.revokeObjectURL(previous);
      previous = url;
    }
  }
}

// Is a camera's stream there? "online", or "offline for N s" while it is away.
function cameraState(s) {
  if (s.online === false) return `offline for ${Math.round(s.offline_for_s ?? 0)} s`;
  return s.online === true ? "online" : "";
}

// Per-camera stats of the daemon: state, frames, frame rate, faces and events of the chosen
// camera; the picker marks every camera that is away.
function renderCameraStats(cameras, chosen) {
  for (const option of $("camera-picker").options) {
    const c = cameras.find((x) => x.name === option.value);
    const away = c && c.stats && c.stats.online === false;
    option.textContent = away ? `${option.value} (offline)` : option.value;
  }
  const cam = cameras.find((c) => c.name === chosen) || cameras[0];
  if (!cam) return;
  const s = cam.stats || {};
  const fps = typeof s.fps === "number" ? s.fps.toFixed(1) : "?";
  const st = cameraState(s);
  $("camera-stats").textContent =
    `${cam.name}: ${s.frames ?? 0} frames, ${fps} fps, ${s.faces_seen ?? 0} faces, ${s.events ?? 0} events` +
    (s.reconnects ? `, ${s.reconnects} reconnects` : "") + (st ? ` · ${st}` : "") +
    (s.running === false ? " (ended)" : "");
  $("camera-stats").dataset.state = s.online === false ? "offline" : "online";
}

function renderEvents(events) {
  const list = $("events");
  list.replaceChildren();
  if (!events.length) {
    list.append(el("li", { className: "hint", text: "No events yet." }));
    return;
  }
  // The v1 event record (docs/events.md): event, name, score, camera, ts (Unix s), time (ISO-8601).
  for (const ev of [...events].reverse()) {
    const stamp = typeof ev.ts === "number" ? new Date(ev.ts * 1000).toLocaleTimeString() : "";
    if (ev.event === "camera") {  // a camera went online or offline (no face fields)
      const item = el("li", { className: ev.state === "offline" ? "camera-offline" : "hint",
                              text: `${stamp} camera ${ev.camera} ${ev.state}${ev.reason ? `: ${ev.reason}` : ""}` });
      item.dataset.testid = "event";
      list.append(item);
      continue;
    }
    const who = ev.name ?? "unknown";
    const score = typeof ev.score === "number" && ev.score > -1 ? ` (${fmt(ev.score)})` : "";
    const cam = ev.camera ? ` [${ev.camera}]` : "";
    const item = el("li", { text: `${stamp} ${ev.event}: ${who}${score}${cam}` });
    item.dataset.testid = "event";
    list.append(item);
  }
}

// ------------------------------------------------------------------ wiring

function wire() {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token-input").value.trim();
    if (value) connect(value);
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin();
  });
  $("identify-file").addEventListener("change", (ev) => identifyFile(ev.target.files[0]));
  const zone = $("dropzone");
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("over");
    const file = ev.dataTransfer.files[0];
    if (file) identifyFile(file);
  });
  $("threshold").addEventListener("input", (ev) => setThreshold(ev.target.value));
  $("threshold-reset").addEventListener("click", () => state.info && setThreshold(state.info.threshold));
  $("refresh-people").addEventListener("click", loadPeople);
  $("export").addEventListener("click", exportGallery);
  $("import-file").addEventListener("change", (ev) => importGallery(ev.target.files[0]));
  $("compare-form").addEventListener("submit", compare);
  $("camera-picker").addEventListener("change", startLive);
  const saved = token();
  if (saved) connect(saved);
  else showLogin();
}

document.addEventListener("DOMContentLoaded", wire);
