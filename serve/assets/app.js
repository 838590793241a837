// jsearch's web page: reads the query from the URL, calls the JSON API, draws the results.
// No framework, nothing from the internet.
"use strict";

const PAGE = 24;
const $ = (id) => document.getElementById(id);
let fields = [];
let image = null; // a dropped, pasted or picked image (File)

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function params() {
  const u = new URLSearchParams(location.search);
  return {
    q: u.get("q") || "",
    type: u.get("type") || "",
    where: u.get("where") || "",
    sort: u.get("sort") || "",
    all: u.get("all") === "1",
    after: u.get("after") || "",
    before: u.get("before") || "",
    like: u.get("like") || "",
    page: Math.max(1, parseInt(u.get("p") || "1", 10) || 1),
  };
}

function setParams(p, push) {
  const u = new URLSearchParams();
  if (p.q) u.set("q", p.q);
  if (p.like) u.set("like", p.like);
  if (p.type) u.set("type", p.type);
  if (p.where) u.set("where", p.where);
  if (p.sort) u.set("sort", p.sort);
  if (p.all) u.set("all", "1");
  if (p.after) u.set("after", p.after);
  if (p.before) u.set("before", p.before);
  if (p.page > 1) u.set("p", String(p.page));
  const url = "/" + (u.toString() ? "?" + u.toString() : "");
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

function fromInputs(page) {
  const p = params();
  return {
    q: $("q").value.trim(),
    like: image ? "" : p.like && !$("q").value.trim() ? p.like : "",
    type: $("type").value,
    where: $("where").value.trim(),
    sort: $("sort").value,
    all: $("all").checked,
    after: $("after").value,
    before: $("before").value,
    page: page || 1,
  };
}

function facetFields() {
  return fields
    // Paths, ids and titles are unique per item; an image's size and file time are not what
    // people narrow a search by.
    .filter((f) => !["path", "id", "title", "width", "height", "modified"].includes(f.name))
    .filter((f) =>
      f.types[0] === "number" ? f.items > 0 : f.distinct !== null && f.distinct >= 2 && f.distinct <= 40)
    .map((f) => f.name);
}

async function api(url, init) {
  const r = await fetch(url, init);
  if (r.status === 401) {
    $("token").hidden = false;
    throw new Error("this server needs a token");
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
  return body;
}

async function loadFields() {
  try {
    const s = await api("/v1/stats");
    fields = s.fields || [];
    // Photos: a date range on the date taken (EXIF, else the file's time).
    $("taken").hidden = !fields.some((f) => f.name === "taken");
    const sort = $("sort");
    for (const f of fields.filter((f) => f.types[0] === "number" && f.name !== "modified")) {
      sort.append(el("option", { value: f.name }, f.name + " ↑"));
      sort.append(el("option", { value: f.name + ":desc" }, f.name + " ↓"));
    }
    $("q").placeholder = `Search ${Object.values(s.items || {}).reduce((a, b) => a + b, 0)} items in any language, or drop / paste an image`;
  } catch (e) {
    fields = [];
  }
}

async function run() {
  const p = params();
  $("q").value = p.q;
  $("type").value = p.type;
  $("where").value = p.where;
  $("sort").value = p.sort;
  $("all").checked = p.all;
  $("after").value = p.after;
  $("before").value = p.before;
  drawChips(p);
  // The query names the tab, the history entry and the bookmark.
  document.title = p.q ? `${p.q} – jsearch` : p.like ? "More like this – jsearch" : "jsearch";
  if (!p.q && !p.like && !image) return;
  const res = $("results");
  res.dataset.state = "loading";
  $("status").textContent = "Searching…";
  const body = {
    limit: PAGE,
    offset: (p.page - 1) * PAGE,
    facets: facetFields(),
  };
  if (p.type) body.type = p.type;
  const parts = [];
  if (p.where) parts.push(`(${p.where})`);
  if (p.after) parts.push(`taken >= "${p.after}"`);
  if (p.before) parts.push(`taken < "${p.before}"`);
  if (parts.length) body.where = parts.join(" AND ");
  if (p.sort) body.sort = p.sort;
  if (p.all) body.all = true;
  try {
    let out;
    if (p.like) {
      const u = new URLSearchParams({ limit: PAGE, offset: body.offset, facets: body.facets.join(",") });
      for (const k of ["type", "where", "sort"]) if (body[k]) u.set(k, body[k]);
      if (p.all) u.set("all", "true");
      out = await api(`/v1/items/${encodeURIComponent(p.like)}/similar?${u}`);
    } else if (image) {
      if (p.q) body.text = p.q;
      const form = new FormData();
      form.append("image", image);
      form.append("request", JSON.stringify(body));
      out = await api("/v1/search", { method: "POST", body: form });
    } else {
      body.text = p.q;
      out = await api("/v1/search", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    }
    draw(out, p);
    res.dataset.state = "done";
  } catch (e) {
    $("grid").replaceChildren();
    $("pager").hidden = true;
    $("status").textContent = "Error: " + e.message;
    res.dataset.state = "error";
  }
}

function drawChips(p) {
  const chips = $("chips");
  chips.replaceChildren();
  if (image) {
    chips.append(el("span", { class: "chip" }, "by image: " + (image.name || "pasted"),
      el("button", { type: "button", "aria-label": "Remove the image", onclick: () => { image = null; go(1); } }, "×")));
  }
  if (p.like) {
    chips.append(el("span", { class: "chip" }, "more like one item",
      el("button", { type: "button", "aria-label": "Clear", onclick: () => { setParams({ ...p, like: "", page: 1 }, true); run(); } }, "×")));
  }
}

function name(path) {
  const parts = path.split("/");
  return parts[parts.length - 1] || path;
}

function card(h) {
  const score = el("span", { class: "score", title: `relevance ${h.score.toFixed(2)} · cosine ${h.cosine.toFixed(3)}` },
    h.score.toFixed(2));
  const more = el("button", { type: "button", class: "more", onclick: () => like(h.key) }, "More like this");
  const thumb = h.thumbnail
    ? el("img", {
        src: h.thumbnail, alt: h.title || name(h.path), loading: "lazy", class: "thumb",
        onload: (e) => { e.target.dataset.loaded = "1"; },
        onerror: (e) => { e.target.classList.add("broken"); },
      })
    : null;
  if (h.kind === "image") {
    return el("article", { class: "card image", "data-kind": "image" }, thumb,
      el("div", { class: "meta" }, score, el("span", { class: "title", title: h.path }, name(h.path))), more);
  }
  if (h.kind === "product") {
    const m = h.metadata || {};
    const attrs = el("dl", { class: "attrs" });
    for (const [k, v] of Object.entries(m).slice(0, 6)) {
      attrs.append(el("dt", {}, k), el("dd", {}, Array.isArray(v) ? v.join(", ") : String(v)));
    }
    return el("article", { class: "card product", "data-kind": "product" }, thumb,
      el("div", { class: "meta" }, score, el("span", { class: "title" }, h.title || h.id),
        m.price !== undefined ? el("span", { class: "price" }, String(m.price)) : null),
      h.snippet ? el("p", { class: "snippet" }, h.snippet) : null, attrs, more);
  }
  const where = h.lines ? `${name(h.path)}:${h.lines[0]}-${h.lines[1]}` : name(h.path);
  return el("article", { class: "card text", "data-kind": "text" },
    el("div", { class: "meta" }, score, el("span", { class: "title", title: h.path }, h.title || where)),
    el("p", { class: "where" }, where),
    h.snippet ? el("p", { class: "snippet" }, h.snippet) : null, more);
}

function draw(out, p) {
  const grid = $("grid");
  grid.replaceChildren(...out.hits.map(card));
  const first = out.offset + 1;
  $("status").textContent = out.hits.length
    ? `${first}–${out.offset + out.hits.length}${out.more ? "+" : ""} · ${out.took_ms.toFixed(0)} ms · ${out.mode}`
    : p.all ? "Nothing found." : "Nothing relevant found. Tick “show less relevant hits too” to see the closest items.";
  $("pager").hidden = !(out.more || p.page > 1);
  $("prev").disabled = p.page <= 1;
  $("next").disabled = !out.more;
  $("page").textContent = `page ${p.page}`;
  drawFacets(out.facets || {}, p);
}

function addFilter(expr) {
  const w = $("where").value.trim();
  $("where").value = w ? `${w} AND ${expr}` : expr;
  go(1);
}

function quote(v) {
  return '"' + String(v).replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';
}

function drawFacets(facets, p) {
  const box = $("facets");
  box.replaceChildren();
  for (const [field, f] of Object.entries(facets)) {
    const sec = el("section", { class: "facet" }, el("h3", {}, field));
    if (Array.isArray(f)) {
      if (f.length < 1) continue;
      const ul = el("ul");
      for (const [value, count] of f.slice(0, 12)) {
        const isBool = value === "true" || value === "false";
        ul.append(el("li", {}, el("button", { type: "button", onclick: () => addFilter(`${field} = ${isBool ? value : quote(value)}`) },
          value, el("span", { class: "count" }, String(count)))));
      }
      sec.append(ul);
    } else if (f && f.count > 0) {
      const lo = el("input", { type: "number", step: "any", placeholder: String(f.min), "aria-label": field + " from" });
      const hi = el("input", { type: "number", step: "any", placeholder: String(f.max), "aria-label": field + " to" });
      sec.append(el("div", { class: "range" }, lo, "–", hi,
        el("button", { type: "button", onclick: () => {
          const parts = [];
          if (lo.value !== "") parts.push(`${field} >= ${Number(lo.value)}`);
          if (hi.value !== "") parts.push(`${field} <= ${Number(hi.value)}`);
          if (parts.length) addFilter(parts.join(" AND "));
        } }, "apply")));
    } else continue;
    box.append(sec);
  }
}

function go(page) {
  setParams(fromInputs(page), true);
  run();
}

function like(key) {
  image = null;
  $("q").value = "";
  setParams({ ...fromInputs(1), q: "", like: key }, true);
  run();
  window.scrollTo(0, 0);
}

function useImage(file) {
  if (!file || !file.type.startsWith("image/")) return;
  image = file;
  go(1);
}

$("search").addEventListener("submit", (e) => { e.preventDefault(); go(1); });
for (const id of ["type", "sort", "all", "after", "before"]) $(id).addEventListener("change", () => go(1));
$("where").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); go(1); } });
$("prev").addEventListener("click", () => go(params().page - 1));
$("next").addEventListener("click", () => go(params().page + 1));
$("file").addEventListener("change", (e) => useImage(e.target.files[0]));
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData || {}).items || []].find((i) => i.type.startsWith("image/"));
  if (item) { e.preventDefault(); useImage(item.getAsFile()); }
});
document.addEventListener("dragover", (e) => { e.preventDefault(); $("drop").hidden = false; });
document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) $("drop").hidden = true; });
document.addEventListener("drop", (e) => {
  e.preventDefault();
  $("drop").hidden = true;
  useImage(e.dataTransfer.files[0]);
});
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  document.cookie = `jsearch_token=${encodeURIComponent($("token-input").value)}; path=/; SameSite=Strict`;
  $("token").hidden = true;
  loadFields().then(run);
});
window.addEventListener("popstate", run);
loadFields().then(run);
