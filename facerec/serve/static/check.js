// The person page: every sample of one person with the flag `enroll check` gives it
// (outlier, closer_to_other, low_quality, not_a_face, duplicate), and one click to remove a
// sample or move it to the person it resembles. Opened by a person card's "Check samples"
// button; uses api(), el(), say(), guarded(), thumbUrl() and loadPeople() from app.js.
"use strict";

const CHECK_WORDS = {
  outlier: "far from this person's other photos",
  closer_to_other: "looks more like",
  low_quality: "quality under the floor",
  not_a_face: "probably not a face",
  duplicate: "duplicate of a photo of",
};

function flagText(flag) {
  const words = CHECK_WORDS[flag.reason] || flag.reason;
  const who = flag.closest_person && flag.reason !== "outlier" ? ` ${flag.closest_person}` : "";
  return `${flag.reason}: ${words}${who} (${Number(flag.score).toFixed(2)})`;
}

async function checkSampleAction(name, label, fn) {
  const ok = await guarded(label, fn);
  if (!ok) return;
  say(`${label}: done.`);
  await loadPeople();
  const node = document.querySelector(`[data-testid="person"][data-name="${CSS.escape(name)}"]`);
  if (node) await openPersonPage(node, name);
}

function checkSampleItem(name, sample) {
  const img = el("img", { alt: `Sample ${sample.id} of ${name}`, width: 72, height: 72 });
  thumbUrl({ id: sample.id, url: sample.image }).then((url) => { img.src = url; })
    .catch(() => { img.alt = `Sample ${sample.id} (not loaded)`; });
  const item = el("li", { className: sample.flag ? "check-sample flagged" : "check-sample" }, img);
  item.dataset.testid = "check-sample";
  item.dataset.sample = String(sample.id);
  const source = sample.source_path ? sample.source_path.split(/[\\/]/).pop() : "no source photo";
  item.append(el("span", { className: "hint", text: `#${sample.id} ${source}` }));
  if (sample.flag) {
    const flag = el("span", { className: "error", text: flagText(sample.flag) });
    flag.dataset.testid = "check-flag";
    item.append(flag);
  }
  const remove = el("button", { type: "button", className: "danger small", text: "Remove" });
  remove.setAttribute("aria-label", `Remove sample ${sample.id} of ${name}`);
  remove.addEventListener("click", () => checkSampleAction(name, `Removing sample ${sample.id}`,
    () => api(`/api/samples/${sample.id}`, { method: "DELETE" })));
  item.append(remove);
  const to = sample.flag && sample.flag.closest_person;
  if (to && to !== name) {
    const move = el("button", { type: "button", className: "secondary small", text: `Move to ${to}` });
    move.dataset.testid = "check-move";
    move.addEventListener("click", () => checkSampleAction(name, `Moving sample ${sample.id} to ${to}`,
      () => api(`/api/samples/${sample.id}/move`, { method: "POST", json: { person: to } })));
    item.append(move);
  }
  return item;
}

async function openPersonPage(node, name) {
  const data = await guarded(`Checking ${name}`, () => api(`/api/people/${encodeURIComponent(name)}/check`));
  if (!data) return;
  const flagged = data.samples.filter((s) => s.flag).length;
  const close = el("button", { type: "button", className: "secondary small", text: "Close" });
  const page = el("div", { className: "person-page" },
    el("h4", { text: `${data.person}: ${data.samples.length} sample(s), ${flagged} flagged` }),
    el("ul", { className: "thumbs" }, ...data.samples.map((s) => checkSampleItem(data.person, s))), close);
  page.dataset.testid = "person-page";
  const panel = node.querySelector(".person-panel");
  close.addEventListener("click", () => { panel.hidden = true; panel.replaceChildren(); });
  panel.replaceChildren(page);
  panel.hidden = false;
}

document.addEventListener("click", (ev) => {
  const button = ev.target.closest(".check-open");
  if (!button) return;
  const node = button.closest(".person");
  if (node) openPersonPage(node, node.dataset.name);
});
