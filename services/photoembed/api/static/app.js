"use strict";
// photo-embed UI: plain JS against the HTTP API. The key is asked once and kept in localStorage.
const $ = (id) => document.getElementById(id);
const KEY = "photoembed.apiKey";
let persons = new Map(); // id -> name (null: a person the face grouping made, not named yet)
let personList = [];
let limits = null;
let galleryCursor = null;
let photosCursor = null;

function apiKey() { return localStorage.getItem(KEY); }

// The key's scopes (GET /me): what it cannot do is hidden (style.css, data-needs).
function can(scope) { return (document.body.dataset.scopes || "").split(" ").includes(scope); }

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${apiKey()}` },
  });
  if (response.status === 401) { showKeyPanel("That key was refused; enter a valid one."); throw new Error("unauthorized"); }
  return response;
}

function json(body) {
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

async function detail(response) {
  try { return (await response.json()).detail; } catch { return response.statusText; }
}

function showKeyPanel(message = "") {
  $("key-panel").hidden = false; $("app").hidden = true; $("forget-key").hidden = true;
  $("key-error").textContent = message;
  document.body.dataset.scopes = ""; $("library-name").textContent = "";
  stopEvents();
}

function label(id) {
  if (!persons.has(id)) { return "someone"; }
  return persons.get(id) || "Unnamed person";
}

function megabytes(bytes) { return `${(bytes / 1048576).toFixed(1)} MB`; }

function confirmDelete(text) {
  // A <dialog>: keyboard-usable (Esc cancels, focus starts on Cancel), and testable.
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

async function start() {
  if (!apiKey()) { showKeyPanel(); return; }
  limits = await (await api("/limits")).json();
  const me = await (await api("/me")).json();
  document.body.dataset.scopes = me.scopes.join(" ");
  $("library-name").textContent = `· ${me.library.name}`;
  $("scope-note").textContent = can("read") ? "" : `This key may only ${me.scopes.join(" and ")} photos in ${me.library.name}.`;
  $("key-panel").hidden = true; $("app").hidden = false; $("forget-key").hidden = false;
  $("limit-hint").textContent = `${limits.accepted_formats}, up to ${megabytes(limits.max_upload_bytes)} each`;
  if (!can("read")) { return; }
  await followEvents();
  await loadPersons();
  await showPhotos();
}

async function allPersons() {
  const list = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: "200", ...(cursor ? { cursor } : {}) });
    const page = await (await api(`/persons?${query}`)).json();
    list.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return list;
}

async function loadPersons(selected = $("person-select").value) {
  const list = await allPersons();
  personList = list;
  persons = new Map(list.map((p) => [p.id, p.name]));
  const shown = $("gallery-person").value;
  const options = () => list.map((p) => new Option(label(p.id), p.id));
  $("person-select").replaceChildren(new Option("(none)", ""), ...options());
  $("person-select").value = persons.has(selected) ? selected : "";
  $("gallery-person").replaceChildren(new Option("(choose a person)", ""), ...options());
  $("gallery-person").value = persons.has(shown) ? shown : "";
  showPeople();
  await personChosen();
}

// --- people: a card per person, with their best face; unnamed ones named inline ------------------

function personCard(person, chosen) {
  const li = document.createElement("li");
  li.className = "card person" + (person.id === chosen ? " selected" : "");
  li.dataset.personId = person.id;
  const open = document.createElement("button");
  open.type = "button"; open.className = "open";
  open.setAttribute("aria-label", `Show the photos of ${label(person.id)}`);
  const img = document.createElement("img"); img.alt = "";
  open.append(img);
  if (person.cover_face_id) { thumbnail(img, `/faces/${person.cover_face_id}/thumbnail`); }
  open.addEventListener("click", () => { $("gallery-person").value = person.id; personChosen(); });
  const caption = document.createElement("div");
  const name = document.createElement("span");
  name.className = "person-name" + (person.name ? "" : " unnamed"); name.textContent = label(person.id);
  caption.append(name, ` · ${person.face_count} face(s)`);
  const rename = document.createElement("form");
  rename.className = "rename row"; rename.dataset.needs = "manage";
  const input = document.createElement("input");
  input.value = person.name || ""; input.placeholder = "Name"; input.required = true;
  input.setAttribute("aria-label", `Name for ${label(person.id)}`);
  const save = document.createElement("button"); save.type = "submit"; save.className = "small"; save.textContent = "Save";
  rename.append(input, save);
  rename.addEventListener("submit", (event) => { event.preventDefault(); renamePerson(person.id, input.value.trim()); });
  li.append(open, caption, rename);
  return li;
}

// A page of cards at a time, thumbnails included: a library's 20,000 people are never drawn at
// once ("Show more people" adds the next page; a reload keeps as many as were shown).
const PEOPLE_PAGE = 48;
let peopleShown = 0;

function showPeople(more = false) {
  const chosen = $("gallery-person").value;
  const from = more ? peopleShown : 0;
  const upTo = Math.min(personList.length, more ? peopleShown + PEOPLE_PAGE : Math.max(PEOPLE_PAGE, peopleShown));
  const cards = personList.slice(from, upTo).map((person) => personCard(person, chosen));
  if (more) { $("people").append(...cards); } else { $("people").replaceChildren(...cards); }
  peopleShown = upTo;
  $("people-more").hidden = peopleShown >= personList.length;
  const unnamed = personList.filter((p) => !p.name).length;
  const shown = peopleShown < personList.length ? ` (${peopleShown} shown)` : "";
  $("people-status").textContent = personList.length
    ? `${personList.length} people${unnamed ? `, ${unnamed} found by face and not named yet` : ""}${shown}`
    : "No people yet: add one above, or upload photos and faces will be grouped";
}

async function renamePerson(id, name) {
  if (!name) { return; }
  const response = await api(`/persons/${id}`, { method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }) });
  if (!response.ok) { $("people-status").textContent = await detail(response); return; }
  await loadPersons();
  $("people-status").textContent = `Named ${name}`;
}

async function mergePersons() {
  const into = $("gallery-person").value;
  const from = $("merge-from").value;
  if (!into || !from) { return; }
  const fromName = label(from);
  const response = await api(`/persons/${into}/merge`, json({ from: [from] }));
  if (!response.ok) { $("gallery-status").textContent = await detail(response); return; }
  await loadPersons();
  $("gallery-status").textContent = `${fromName} merged into ${label(into)}`;
}

// --- uploads ---------------------------------------------------------------------------------------

function uploadRow(name) {
  const li = document.createElement("li");
  li.innerHTML = `<span class="name"></span><span class="badge">UPLOADING</span><span class="quality muted"></span>`;
  li.querySelector(".name").textContent = name;
  $("uploads").prepend(li);
  return li;
}

function showStatus(element, photo) {
  const badge = element.querySelector(".badge");
  badge.textContent = photo.status; badge.className = `badge ${photo.status}`;
  element.dataset.status = photo.status;
  const quality = element.querySelector(".quality");
  if (quality && photo.quality_score !== null && photo.quality_score !== undefined) {
    quality.textContent = `quality ${photo.quality_score.toFixed(2)}`;
  }
  showError(element, photo.status === "READY" ? "" : photo.error || "");
  const retry = element.querySelector("button.retry");
  if (photo.status === "FAILED" && photo.id && !retry) {
    const button = document.createElement("button");
    button.type = "button"; button.className = "retry secondary"; button.textContent = "Retry";
    button.dataset.needs = "upload";
    button.addEventListener("click", () => retryPhoto(element, photo.id));
    element.append(button);
  } else if (photo.status !== "FAILED" && retry) {
    retry.remove();
  }
}

function showError(element, text) {
  let error = element.querySelector(".error");
  if (!text) { if (error) { error.remove(); } return; }
  if (!error) { error = document.createElement("p"); error.className = "error"; element.append(error); }
  error.textContent = text;
}

// Until READY or FAILED, from the library's event stream (no polling); resolves with the photo.
function follow(element, id) {
  if (!can("read")) { showError(element, "sent; this key cannot read its status"); return Promise.resolve(null); }
  return new Promise((resolve) => {
    const stop = watch(id, (photo) => {
      if (!element.isConnected) { stop(); resolve(null); return; } // a card no longer shown
      showStatus(element, photo);
      const info = element.querySelector(".faces-info");
      if (info) { info.textContent = facesText(photo); }
      if (photo.status === "READY" || photo.status === "FAILED") { stop(); resolve(photo); }
    });
  });
}

// --- the library's events: one stream for every photo the page shows ------------------------------
// GET /events (Server-Sent Events), read through fetch so that the key goes in a header. It is
// resumed with Last-Event-ID after a break, so no change is missed; whatever shows a photo
// watches it here instead of asking the server again and again.
const watchers = new Map(); // photo id -> Set of callbacks
const latest = new Map();   // photo id -> what the events said of it so far
const LATEST_KEPT = 5000;
let lastEventId = null;
let stream = null;          // {controller, ready}
let peopleChanged = null;

// Calls `callback` with what the events say of the photo, now (if they said anything yet, on the
// next tick: after the caller holds the returned stop function) and at every change.
function watch(id, callback) {
  if (!watchers.has(id)) { watchers.set(id, new Set()); }
  watchers.get(id).add(callback);
  if (latest.has(id)) { queueMicrotask(() => { if (watchers.get(id)?.has(callback)) { callback(latest.get(id)); } }); }
  return () => { const set = watchers.get(id); if (set) { set.delete(callback); if (!set.size) { watchers.delete(id); } } };
}

function photoChanged(data) {
  const photo = { ...(latest.get(data.photo_id) || {}), id: data.photo_id, ...data };
  latest.delete(data.photo_id); latest.set(data.photo_id, photo);
  if (latest.size > LATEST_KEPT) { latest.delete(latest.keys().next().value); }
  for (const callback of [...(watchers.get(data.photo_id) || [])]) { callback(photo); }
}

function eventArrived(type, event) {
  if (type === "photo.deleted") {
    document.querySelectorAll(`.card[data-photo-id="${event.data.photo_id}"]`).forEach((card) => card.remove());
  } else if (type.startsWith("photo.") || type.startsWith("faces.")) {
    photoChanged(event.data);
  }
  if (type === "person.updated" || type === "faces.done") {
    // names and faces of people changed: the People panel is drawn again, once for a burst
    clearTimeout(peopleChanged);
    peopleChanged = setTimeout(() => loadPersons().catch(() => {}), 1500);
  }
}

async function readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) { return; }
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let id = null, type = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("id: ")) { id = line.slice(4); }
        else if (line.startsWith("event: ")) { type = line.slice(7); }
        else if (line.startsWith("data: ")) { data += line.slice(6); }
      }
      if (id) { lastEventId = id; }
      if (data && type !== "gap") { eventArrived(type, JSON.parse(data)); }
    }
  }
}

// Starts the stream (once); resolves when it is connected, so that what the page lists next
// cannot change unseen.
function followEvents() {
  if (stream) { return stream.ready; }
  const controller = new AbortController();
  let connected;
  stream = { controller, ready: new Promise((resolve) => { connected = resolve; }) };
  (async () => {
    while (!controller.signal.aborted) {
      try {
        const headers = { Authorization: `Bearer ${apiKey()}`, Accept: "text/event-stream" };
        if (lastEventId) { headers["Last-Event-ID"] = lastEventId; }
        const response = await fetch("/events", { headers, signal: controller.signal });
        connected();
        if (response.status === 401 || response.status === 403) { return; }
        if (response.ok) { await readEvents(response.body); }
      } catch { /* a dropped connection: resumed below */ }
      if (!controller.signal.aborted) { await new Promise((resolve) => setTimeout(resolve, 2000)); }
    }
  })();
  return stream.ready;
}

function stopEvents() {
  if (stream) { stream.controller.abort(); }
  stream = null; lastEventId = null; latest.clear(); watchers.clear();
}

async function retryPhoto(element, id) {
  const response = await api(`/photos/${id}/retry`, { method: "POST" });
  if (!response.ok) { showError(element, await detail(response)); return; }
  showStatus(element, await response.json());
  await follow(element, id);
}

async function uploadFiles(files) {
  const person = $("person-select").value;
  await Promise.all([...files].map(async (file) => {
    const li = uploadRow(file.name);
    if (limits && file.size > limits.max_upload_bytes) {
      // Refused here, before sending: the server would answer 413 after reading it all.
      showStatus(li, { status: "REFUSED" });
      showError(li, `${megabytes(file.size)} is larger than the limit of ${megabytes(limits.max_upload_bytes)}`);
      return;
    }
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
    if (person && person === $("gallery-person").value) { await showGallery(); }
  }));
  if (can("read")) { await showPhotos(); }
}

// --- a person's gallery ----------------------------------------------------------------------------

// A thumbnail never shows as a broken image: one that fails (a busy server, a connection lost) is
// asked again after 1, 2 and 4 s, then the card offers a Retry button.
const THUMBNAIL_RETRIES = 3;

async function thumbnail(img, url, attempt = 0) {
  let blob = null;
  try {
    const response = await api(url);
    if (response.ok) { blob = await response.blob(); }
  } catch (error) {
    if (error.message === "unauthorized") { return; }
  }
  if (blob && blob.type.startsWith("image/")) { img.src = URL.createObjectURL(blob); return; }
  if (attempt < THUMBNAIL_RETRIES) {
    setTimeout(() => img.isConnected && thumbnail(img, url, attempt + 1), 1000 * 2 ** attempt);
    return;
  }
  const placeholder = document.createElement("div");
  placeholder.className = "placeholder failed";
  placeholder.append("no preview ");
  const retry = document.createElement("button");
  retry.type = "button"; retry.className = "small secondary retry-thumbnail"; retry.textContent = "Retry";
  retry.addEventListener("click", (event) => {
    event.stopPropagation();
    placeholder.replaceWith(img);
    thumbnail(img, url);
  });
  placeholder.append(retry);
  img.replaceWith(placeholder);
}

function placeholder(text) {
  return Object.assign(document.createElement("div"), { className: "placeholder", textContent: text });
}

function facesText(photo) {
  if (photo.faces_status === "DONE") { return `${photo.face_count} face(s)`; }
  if (photo.faces_status === "FAILED") { return `faces failed: ${photo.faces_error || ""}`; }
  return photo.faces_status ? "finding faces…" : "";
}

function galleryItem(photo) {
  const li = document.createElement("li");
  li.className = "card"; li.dataset.photoId = photo.id;
  const open = document.createElement("button");
  open.type = "button"; open.className = "open-photo";
  open.setAttribute("aria-label", `Open photo ${photo.id.slice(0, 8)} with its faces`);
  const img = document.createElement("img");
  img.alt = `photo ${photo.id.slice(0, 8)}`;
  // until the photo is READY its card holds a placeholder, not an image without a picture
  const waiting = placeholder(photo.status === "FAILED" ? "no preview" : "processing…");
  open.append(photo.status === "READY" ? img : waiting);
  open.addEventListener("click", () => openPhoto(photo.id));
  const caption = document.createElement("div");
  caption.innerHTML = `<span class="badge"></span> <span class="quality muted"></span> <span class="faces-info muted"></span>`;
  caption.querySelector(".faces-info").textContent = facesText(photo);
  const remove = document.createElement("button");
  remove.type = "button"; remove.className = "delete-photo danger small"; remove.textContent = "Delete";
  remove.dataset.needs = "manage";
  remove.setAttribute("aria-label", `Delete photo ${photo.id.slice(0, 8)}`);
  remove.addEventListener("click", () => deletePhoto(li, photo.id));
  li.append(open, caption, remove);
  showStatus(li, photo);
  if (photo.status === "READY") {
    thumbnail(img, photo.thumbnail_url);
    if (photo.faces_status === "PENDING" || photo.faces_status === "PROCESSING") {
      const stop = watch(photo.id, (now) => {
        caption.querySelector(".faces-info").textContent = facesText(now);
        if (now.faces_status === "DONE" || now.faces_status === "FAILED") { stop(); }
      });
    }
  } else if (photo.status !== "FAILED") {
    follow(li, photo.id).then((done) => {
      if (done && done.status === "READY") { waiting.replaceWith(img); thumbnail(img, photo.thumbnail_url); }
      else if (done) { waiting.textContent = "no preview"; }
    });
  }
  return li;
}

async function showGallery(more = false) {
  const id = $("gallery-person").value;
  if (!id) { return; }
  const query = new URLSearchParams({ limit: "24", ...(more && galleryCursor ? { cursor: galleryCursor } : {}) });
  const page = await (await api(`/persons/${id}/photos?${query}`)).json();
  galleryCursor = page.next_cursor;
  const items = page.items.map(galleryItem);
  if (more) { $("gallery").append(...items); } else { $("gallery").replaceChildren(...items); }
  $("gallery-more").hidden = !galleryCursor;
  const count = $("gallery").children.length;
  $("gallery-status").textContent = count ? `${count} photo(s) of ${label(id)}${galleryCursor ? ", more below" : ""}` : `No photos of ${label(id)} yet`;
}

async function personChosen() {
  const id = $("gallery-person").value;
  const chosen = Boolean(id);
  $("search-person").disabled = !chosen; $("delete-person").disabled = !chosen;
  for (const card of $("people").children) { card.classList.toggle("selected", card.dataset.personId === id); }
  const others = personList.filter((p) => p.id !== id);
  $("merge-from").replaceChildren(...others.map((p) => new Option(label(p.id), p.id)));
  $("merge-row").hidden = !chosen || !others.length;
  if (chosen) { await showGallery(); } else { $("gallery").replaceChildren(); $("gallery-status").textContent = ""; $("gallery-more").hidden = true; }
}

// --- every photo, newest first, by status ---------------------------------------------------------

// Pages of 48 as the list scrolls into view (a library of 100,000 photos is never loaded whole);
// "Show more" does the same from the keyboard.
let photosLoading = false;

async function showPhotos(more = false) {
  if (more && (photosLoading || !photosCursor)) { return; }
  photosLoading = true;
  try {
    const status = $("photos-status").value;
    const query = new URLSearchParams({ limit: "48", ...(status ? { status } : {}), ...(more && photosCursor ? { cursor: photosCursor } : {}) });
    const response = await api(`/photos?${query}`);
    if (!response.ok) { $("photos-count").textContent = await detail(response); return; }
    const page = await response.json();
    photosCursor = page.next_cursor;
    const items = page.items.map(galleryItem);
    if (more) { $("photos").append(...items); } else { $("photos").replaceChildren(...items); }
    $("photos-more").hidden = !photosCursor;
    const count = $("photos").children.length;
    const which = status ? `${status} ` : "";
    $("photos-count").textContent = count ? `${count} ${which}photo(s), newest first${photosCursor ? ", more as you scroll" : ""}` : `No ${which}photos`;
  } finally {
    photosLoading = false;
  }
  if (photosCursor && nearTheEnd()) { await showPhotos(true); } // a tall window: fill it
}

function nearTheEnd() {
  return $("photos-end").getBoundingClientRect().top < window.innerHeight + 800;
}

new IntersectionObserver((entries) => {
  if (entries.some((entry) => entry.isIntersecting)) { showPhotos(true); }
}, { rootMargin: "800px" }).observe($("photos-end"));

// --- one photo with its faces: boxes with names, and whose each face is ---------------------------

async function openPhoto(id) {
  const photo = await (await api(`/photos/${id}`)).json();
  const faces = (await (await api(`/photos/${id}/faces`)).json()).items;
  const image = $("photo-image");
  $("photo-frame").querySelectorAll(".face-box").forEach((box) => box.remove());
  $("photo-title").textContent = `Photo ${id.slice(0, 8)} · ${photo.status}`;
  $("faces-status").textContent = photo.faces_status === "DONE"
    ? `${faces.length} face(s)` : facesText(photo) || "faces not looked for";
  image.onload = () => drawBoxes(image, photo, faces);
  const preview = await api(`${photo.thumbnail_url}?size=1024`);
  if (preview.ok) { image.src = URL.createObjectURL(await preview.blob()); }
  else { image.removeAttribute("src"); image.alt = "no preview"; }
  $("face-list").replaceChildren(...faces.map((face) => faceRow(face, id)));
  if (!$("photo-dialog").open) { $("photo-dialog").showModal(); }
}

function drawBoxes(image, photo, faces) {
  // boxes are in the photo's displayed orientation; the stored width and height may be turned
  const turned = (image.naturalWidth > image.naturalHeight) !== (photo.width > photo.height);
  const [width, height] = turned ? [photo.height, photo.width] : [photo.width, photo.height];
  for (const face of faces) {
    const [x, y, w, h] = face.box;
    const box = document.createElement("div");
    box.className = "face-box"; box.dataset.faceId = face.id;
    Object.assign(box.style, { left: `${100 * x / width}%`, top: `${100 * y / height}%`, width: `${100 * w / width}%`, height: `${100 * h / height}%` });
    const name = document.createElement("span");
    name.textContent = face.person_id ? (face.person_name || "Unnamed person") : "?";
    box.append(name);
    $("photo-frame").append(box);
  }
}

function faceRow(face, photoId) {
  const li = document.createElement("li");
  li.dataset.faceId = face.id;
  const img = document.createElement("img"); img.alt = `face ${face.id.slice(0, 8)}`;
  thumbnail(img, face.thumbnail_url);
  const select = document.createElement("select");
  select.setAttribute("aria-label", `Who is face ${face.id.slice(0, 8)}`);
  select.append(new Option("(nobody known)", ""), ...personList.map((p) => new Option(label(p.id), p.id)));
  select.value = face.person_id || "";
  select.disabled = !can("manage");
  const save = document.createElement("button"); save.type = "button"; save.className = "small"; save.textContent = "Save";
  save.dataset.needs = "manage";
  save.addEventListener("click", async () => {
    const response = await api(`/faces/${face.id}`, { method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ person_id: select.value || null }) });
    if (!response.ok) { $("faces-status").textContent = await detail(response); return; }
    await loadPersons();
    await openPhoto(photoId);
    $("faces-status").textContent = "Saved";
  });
  const how = document.createElement("span"); how.className = "muted";
  how.textContent = `quality ${face.quality.toFixed(2)}${face.assigned_by ? ` · by ${face.assigned_by}` : ""}`;
  li.append(img, select, save, how);
  return li;
}

async function deletePhoto(li, id) {
  if (!(await confirmDelete("Delete this photo, its vector and its file?"))) { return; }
  const response = await api(`/photos/${id}`, { method: "DELETE" });
  if (response.ok || response.status === 404) { li.remove(); $("gallery-status").textContent = "Photo deleted"; }
  else { showError(li, await detail(response)); }
}

async function deletePerson() {
  const id = $("gallery-person").value;
  const name = label(id);
  if (!id || !(await confirmDelete(`Delete ${name} and all their photos? This cannot be undone.`))) { return; }
  const response = await api(`/persons/${id}`, { method: "DELETE" });
  if (!response.ok) { $("gallery-status").textContent = await detail(response); return; }
  $("gallery-person").value = "";
  await loadPersons();
  $("gallery-status").textContent = `${name} deleted`;
}

// --- search ----------------------------------------------------------------------------------------

async function search(request, what) {
  $("search-status").textContent = "Searching…";
  const response = await api("/search", request);
  if (!response.ok) { $("search-status").textContent = await detail(response); return; }
  const body = await response.json();
  $("search-status").textContent = `${body.results.length} result(s) for ${what}${body.by === "face" ? ", by face" : ""}`;
  $("results").replaceChildren(...body.results.map((hit) => {
    const card = document.createElement("figure");
    card.className = "card"; card.dataset.photoId = hit.photo_id;
    const who = hit.person_id ? label(hit.person_id) : "no person";
    const img = document.createElement("img"); img.alt = `result: ${who}`;
    const caption = document.createElement("div");
    caption.textContent = body.by === "face" ? `${who} · face distance ${hit.face_distance.toFixed(3)}` : `${who} · ${hit.similarity.toFixed(3)}`;
    card.append(img, caption);
    thumbnail(img, hit.thumbnail_url);
    return card;
  }));
  $("results").scrollIntoView({ block: "nearest" });
}

// --- wiring ----------------------------------------------------------------------------------------

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem(KEY, $("key-input").value.trim());
  start().catch(() => {});
});
$("forget-key").addEventListener("click", () => { localStorage.removeItem(KEY); showKeyPanel(); });
$("person-create").addEventListener("click", async () => {
  const name = $("person-name").value.trim();
  if (!name) { return; }
  const response = await api("/persons", json({ name }));
  const person = await response.json();
  $("person-name").value = "";
  await loadPersons(person.id);
});
$("file-input").addEventListener("change", (event) => { uploadFiles(event.target.files); event.target.value = ""; });
const zone = $("drop-zone");
zone.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file-input").click(); }
});
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault(); zone.classList.remove("over"); uploadFiles(event.dataTransfer.files);
});
$("gallery-person").addEventListener("change", personChosen);
$("gallery-more").addEventListener("click", () => showGallery(true));
$("merge-button").addEventListener("click", mergePersons);
$("photos-status").addEventListener("change", () => showPhotos());
$("photos-refresh").addEventListener("click", () => showPhotos());
$("photos-more").addEventListener("click", () => showPhotos(true));
$("people-more").addEventListener("click", () => showPeople(true));
$("delete-person").addEventListener("click", deletePerson);
$("search-person").addEventListener("click", () => {
  const id = $("gallery-person").value;
  search(json({ person_id: id, limit: 24 }), `photos of ${label(id)}`);
});
$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("search-text").value.trim();
  if (!text) { return; }
  search(json({ text, limit: 24 }), `“${text}”`);
});
document.querySelector("label[for=search-file]").addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("search-file").click(); }
});
$("search-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) { return; }
  const form = new FormData(); form.append("file", file); form.append("limit", "24");
  search({ method: "POST", body: form }, file.name);
  event.target.value = "";
});
start().catch(() => {});
