// The "Unknown people" view: one card per candidate (best crops, sightings, cameras,
// first and last seen) with name / merge / dismiss. Uses api(), el(), say(), guarded()
// and loadPeople() from app.js.
"use strict";

const unknownCrops = new Map(); // crop id -> blob URL

function when(t) {
  return new Date(t * 1000).toLocaleString();
}

async function unknownCropUrl(id, url) {
  if (unknownCrops.has(id)) return unknownCrops.get(id);
  const response = await api(url, { raw: true });
  const blobUrl = URL.createObjectURL(await response.blob());
  unknownCrops.set(id, blobUrl);
  return blobUrl;
}

async function loadUnknowns() {
  const all = $("unknowns-all") && $("unknowns-all").checked;
  const data = await guarded("Loading unknown people", () => api(`/api/unknowns${all ? "?all=true" : ""}`));
  if (!data) return;
  // the "add to person" lists need the enrolled people, which may not be loaded yet
  const people = await guarded("Loading people", () => api("/api/people"));
  const names = people ? people.people.map((p) => p.name) : [];
  const list = $("unknowns-list");
  list.replaceChildren();
  $("unknowns-count").textContent = `(${data.candidates.length})`;
  $("unknowns-empty").hidden = data.candidates.length > 0;
  for (const c of data.candidates) list.append(unknownCard(c, names));
}

function unknownCard(c, names) {
  const n = c.sightings;
  const title = el("h3", { text: `Unknown #${c.id}` });
  const facts = el("p", { className: "unknown-facts",
    text: `${n} sighting${n === 1 ? "" : "s"} · ${c.cameras.join(", ")} · first seen ${when(c.first_seen)} · last seen ${when(c.last_seen)}` });
  facts.dataset.testid = "unknown-facts";
  const crops = el("ul", { className: "thumbs" });
  crops.setAttribute("aria-label", `Best crops of unknown #${c.id}`);
  c.crops.forEach((id, i) => {
    const img = el("img", { alt: `Crop ${i + 1} of unknown #${c.id}`, width: 72, height: 72 });
    img.dataset.testid = "unknown-crop";
    unknownCropUrl(id, c.crop_urls[i]).then((u) => { img.src = u; }).catch(() => { img.alt = "crop not loaded"; });
    crops.append(el("li", { className: "thumb" }, img));
  });

  const nameInput = el("input", { type: "text", required: true, maxLength: 100, autocomplete: "off",
    placeholder: "Name" });
  nameInput.dataset.testid = "unknown-name-input";
  nameInput.setAttribute("aria-label", `Name for unknown #${c.id}`);
  const nameButton = el("button", { type: "submit", text: "Name" });
  nameButton.dataset.testid = "unknown-name";
  const nameForm = el("form", { className: "panel-form" }, nameInput, nameButton);
  nameForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = nameInput.value.trim();
    if (!name) return;
    const ok = await guarded("Naming", () => api(`/api/unknowns/${c.id}/name`, { method: "POST", json: { name } }));
    if (ok) {
      say(`Enrolled ${ok.person}: ${ok.summary}.`);
      await loadUnknowns();
      await loadPeople();
    }
  });

  const select = el("select", { required: true });
  select.dataset.testid = "unknown-merge-select";
  select.setAttribute("aria-label", `Enrolled person to add unknown #${c.id} to`);
  // nobody preselected: one click must not merge a stranger into whoever sorts first
  const pick = el("option", { value: "", text: "Choose a person…" });
  pick.disabled = true;
  pick.selected = true;
  select.append(pick);
  for (const name of names) select.append(el("option", { value: name, text: name }));
  const mergeButton = el("button", { type: "submit", className: "secondary", text: "Add to person" });
  mergeButton.dataset.testid = "unknown-merge";
  mergeButton.disabled = names.length === 0;
  const mergeForm = el("form", { className: "panel-form" }, select, mergeButton);
  mergeForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const into = select.value;
    if (!into) return;
    const ok = await guarded("Merging", () => api(`/api/unknowns/${c.id}/merge`, { method: "POST", json: { into } }));
    if (ok) {
      say(`Added to ${ok.person}: ${ok.summary}.`);
      await loadUnknowns();
      await loadPeople();
    }
  });

  const dismiss = el("button", { type: "button", className: "danger small", text: "Dismiss" });
  dismiss.dataset.testid = "unknown-dismiss";
  dismiss.setAttribute("aria-label", `Dismiss unknown #${c.id} and delete its crops`);
  dismiss.addEventListener("click", async () => {
    const ok = await guarded("Dismissing", () => api(`/api/unknowns/${c.id}`, { method: "DELETE" }));
    if (ok) {
      say(`Dismissed unknown #${c.id}: ${ok.deleted} sighting${ok.deleted === 1 ? "" : "s"} deleted.`);
      await loadUnknowns();
    }
  });

  const node = el("li", { className: "person unknown" }, el("div", { className: "person-head" }, title), facts, crops,
    el("div", { className: "person-actions" }, nameForm, mergeForm, dismiss));
  node.dataset.testid = "unknown";
  node.dataset.id = String(c.id);
  return node;
}

document.addEventListener("DOMContentLoaded", () => {
  $("refresh-unknowns").addEventListener("click", loadUnknowns);
  $("unknowns-all").addEventListener("change", loadUnknowns);
  // load once the page is connected (app.js un-hides main after the token is accepted)
  const main = $("main");
  new MutationObserver(() => { if (!main.hidden) loadUnknowns(); })
    .observe(main, { attributes: true, attributeFilter: ["hidden"] });
  if (!main.hidden) loadUnknowns();
});

// "Not X" on the faces of an identified photo: the face is kept as a negative sample of
// its best match X, so a face closer to it than to X is not named X again.
function addNotButtons() {
  if (!state.photo || !state.photo.result) return;
  for (const node of $("faces").querySelectorAll('[data-testid="face"]')) {
    if (node.querySelector('[data-testid="not-person"]')) continue;
    const i = Number(node.dataset.index);
    const face = state.photo.result.faces[i];
    if (!face || !face.top.length) continue;
    const name = face.top[0][0];
    const button = el("button", { type: "button", className: "secondary small", text: `Not ${name}` });
    button.dataset.testid = "not-person";
    button.setAttribute("aria-label", `Face ${i + 1} is not ${name}: remember it as a wrong match`);
    button.addEventListener("click", async () => {
      const form = new FormData();
      form.append("person", name);
      form.append("file", state.photo.file);
      form.append("box", String(i));
      const ok = await guarded("Marking a wrong match", () => api("/api/feedback/not", { method: "POST", form }));
      if (ok) {
        say(`Face ${i + 1} kept as a wrong match of ${ok.person}; it will not be named ${ok.person} again.`);
        await reidentify();
      }
    });
    node.querySelector(".face-actions").prepend(button);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver(addNotButtons).observe($("faces"), { childList: true });
});
