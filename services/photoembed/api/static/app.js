"use strict";
// photo-embed UI: plain JS against the HTTP API. The key is asked once and kept in localStorage.
const $ = (id) => document.getElementById(id);
const KEY = "photoembed.apiKey";
let persons = new Map();

function apiKey() { return localStorage.getItem(KEY); }

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${apiKey()}` },
  });
  if (response.status === 401) { showKeyPanel("That key was refused; enter a valid one."); throw new Error("unauthorized"); }
  return response;
}

async function detail(response) {
  try { return (await response.json()).detail; } catch { return response.statusText; }
}

function showKeyPanel(message = "") {
  $("key-panel").hidden = false; $("app").hidden = true; $("forget-key").hidden = true;
  $("key-error").textContent = message;
}

async function start() {
  if (!apiKey()) { showKeyPanel(); return; }
  $("key-panel").hidden = true; $("app").hidden = false; $("forget-key").hidden = false;
  await loadPersons();
}

async function loadPersons(selected = "") {
  const response = await api("/persons");
  const list = await response.json();
  persons = new Map(list.map((p) => [p.id, p.name]));
  const select = $("person-select");
  select.replaceChildren(new Option("(none)", ""), ...list.map((p) => new Option(p.name, p.id)));
  select.value = selected;
}

function uploadRow(name) {
  const li = document.createElement("li");
  li.innerHTML = `<span class="name"></span><span class="badge">UPLOADING</span><span class="quality muted"></span>`;
  li.querySelector(".name").textContent = name;
  $("uploads").prepend(li);
  return li;
}

function showStatus(li, photo) {
  const badge = li.querySelector(".badge");
  badge.textContent = photo.status; badge.className = `badge ${photo.status}`;
  li.dataset.status = photo.status;
  if (photo.quality_score !== null && photo.quality_score !== undefined) {
    li.querySelector(".quality").textContent = `quality ${photo.quality_score.toFixed(2)}`;
  }
  if (photo.error) { showError(li, photo.error); }
}

function showError(li, text) {
  let error = li.querySelector(".error");
  if (!error) { error = document.createElement("p"); error.className = "error"; li.append(error); }
  error.textContent = text;
}

async function follow(li, id) {
  for (;;) {
    const photo = await (await api(`/photos/${id}`)).json();
    showStatus(li, photo);
    if (photo.status === "READY" || photo.status === "FAILED") { return; }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function uploadFiles(files) {
  const person = $("person-select").value;
  await Promise.all([...files].map(async (file) => {
    const li = uploadRow(file.name);
    const form = new FormData();
    form.append("file", file);
    if (person) { form.append("person_id", person); }
    const response = await api("/photos", { method: "POST", body: form });
    if (!response.ok) {
      showStatus(li, { status: "REFUSED" }); showError(li, await detail(response)); return;
    }
    const photo = await response.json();
    li.dataset.photoId = photo.id;
    showStatus(li, photo);
    await follow(li, photo.id);
  }));
}

async function thumbnail(img, url) {
  const response = await api(url);
  if (response.ok) { img.src = URL.createObjectURL(await response.blob()); }
}

async function search(form, label) {
  $("search-status").textContent = "Searching…";
  const response = await api("/search", { method: "POST", body: form });
  if (!response.ok) { $("search-status").textContent = await detail(response); return; }
  const body = await response.json();
  $("search-status").textContent = `${body.results.length} result(s) for ${label}`;
  $("results").replaceChildren(...body.results.map((hit) => {
    const card = document.createElement("figure");
    card.className = "card"; card.dataset.photoId = hit.photo_id;
    const img = document.createElement("img"); img.alt = "result";
    const caption = document.createElement("div");
    const who = hit.person_id ? persons.get(hit.person_id) || "someone" : "no person";
    caption.textContent = `${who} · ${hit.similarity.toFixed(3)}`;
    card.append(img, caption);
    thumbnail(img, hit.thumbnail_url);
    return card;
  }));
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem(KEY, $("key-input").value.trim());
  start().catch(() => {});
});
$("forget-key").addEventListener("click", () => { localStorage.removeItem(KEY); showKeyPanel(); });
$("person-create").addEventListener("click", async () => {
  const name = $("person-name").value.trim();
  if (!name) { return; }
  const response = await api("/persons", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }),
  });
  const person = await response.json();
  $("person-name").value = "";
  await loadPersons(person.id);
});
$("file-input").addEventListener("change", (event) => uploadFiles(event.target.files));
const zone = $("drop-zone");
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault(); zone.classList.remove("over"); uploadFiles(event.dataTransfer.files);
});
$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("search-text").value.trim();
  if (!text) { return; }
  const form = new FormData(); form.append("text", text);
  search(form, `“${text}”`);
});
$("search-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) { return; }
  const form = new FormData(); form.append("file", file);
  search(form, file.name);
});
start().catch(() => {});
