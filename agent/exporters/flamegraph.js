// hostflame viewer: draws the embedded "hostflame-flame/2" data (agent/view/flame.py) on one
// <canvas>: flame graph or icicle, click to zoom, breadcrumb, search, tooltip, a top table
// linked to the graph, a selector by label value, and, for a diff, red = grew, blue = shrank.
// The tree lives in typed arrays (no object per node), so 200 000 nodes draw in well under a
// second; window.hostflame exposes the state for tests and timings for the benchmark.
(function () {
  "use strict";
  const t0 = performance.now();
  const ROW = 18;
  const FONT = "12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
  const MATCH_COLOR = "#d63ad0";
  const TABLE_ROWS = 200;
  // Hue range, saturation and lightness per frame kind; the module picks a stable hue in the range.
  const PALETTE = {
    process: { hue: 200, span: 40, sat: 30, light: 74 },
    kernel: { hue: 350, span: 25, sat: 70, light: 64 },
    native: { hue: 16, span: 24, sat: 85, light: 60 },
    jit: { hue: 90, span: 60, sat: 55, light: 55 },
    inlined: { hue: 50, span: 12, sat: 90, light: 62 },
    unknown: { hue: 0, span: 0, sat: 0, light: 74 },
  };

  const data = JSON.parse(document.getElementById("hostflame-data").textContent);
  const strings = data.strings;
  const isDiff = !!data.base_samples;
  const canvas = document.getElementById("flame");
  const ctx = canvas.getContext("2d");
  const $ = (id) => document.getElementById(id);
  const tooltip = $("tooltip");
  const status = $("status");
  const searchBox = $("search");
  const keySelect = $("labelkey");
  const valueSelect = $("labelvalue");

  // ---- frames -------------------------------------------------------------------------------
  const nFrames = data.frames.length;
  const frameName = new Array(nFrames);
  const frameFile = new Array(nFrames);
  const frameModule = new Array(nFrames);
  const frameKind = new Array(nFrames);
  for (let f = 0; f < nFrames; f++) {
    const row = data.frames[f];
    frameName[f] = strings[row[0]];
    frameFile[f] = strings[row[1]];
    frameModule[f] = strings[row[2]];
    frameKind[f] = data.kinds[row[3]];
  }
  const nameOf = (f) => (f < 0 ? "all" : frameName[f]);
  // Sibling order: by name; a rank per frame makes the sort numeric.
  const frameRank = new Int32Array(nFrames);
  Array.from({ length: nFrames }, (_, i) => i)
    .sort((a, b) => (frameName[a] < frameName[b] ? -1 : frameName[a] > frameName[b] ? 1 : a - b))
    .forEach((f, rank) => { frameRank[f] = rank; });

  // ---- tree: typed columns, children in one array (CSR), siblings sorted by name -------------
  const N = data.tree.frame.length;
  const nodeFrame = Int32Array.from(data.tree.frame);
  const nodeLine = Int32Array.from(data.tree.line);
  const nodeParent = Int32Array.from(data.tree.up, (up, n) => n - up);
  const nodeDepth = new Int32Array(N);
  const childStart = new Int32Array(N + 1);
  let maxDepth = 0;
  for (let n = 1; n < N; n++) {
    const d = nodeDepth[nodeParent[n]] + 1;
    nodeDepth[n] = d;
    if (d > maxDepth) maxDepth = d;
    childStart[nodeParent[n] + 1]++;
  }
  for (let n = 0; n < N; n++) childStart[n + 1] += childStart[n];
  const children = new Int32Array(Math.max(N - 1, 0));
  {
    const fill = childStart.slice(0, N);
    for (let n = 1; n < N; n++) children[fill[nodeParent[n]]++] = n;
    const byName = (a, b) => frameRank[nodeFrame[a]] - frameRank[nodeFrame[b]];
    for (let n = 0; n < N; n++) {
      if (childStart[n + 1] - childStart[n] > 1) children.subarray(childStart[n], childStart[n + 1]).sort(byName);
    }
  }

  // ---- label selection ------------------------------------------------------------------------
  // labelsets[i] as a Map key -> value (strings); selection = { key, value } or null.
  const labelMaps = data.labelsets.map((flat) => {
    const m = new Map();
    for (let i = 0; i < flat.length; i += 2) m.set(strings[flat[i]], strings[flat[i + 1]]);
    return m;
  });
  let selection = null;
  function selectedSets() {
    if (!selection) return null;
    return Uint8Array.from(labelMaps, (m) => (m.get(selection.key) === selection.value ? 1 : 0));
  }

  // ---- values: own (self) per node from the samples, then totals up the parents ---------------
  const value = new Float64Array(N);
  const selfValue = new Float64Array(N);
  const baseValue = new Float64Array(isDiff ? N : 0);
  const baseSelf = new Float64Array(isDiff ? N : 0);
  const width = new Float64Array(N); // what a box's width measures (value, or mean share for a diff)
  const xOf = new Float64Array(N);
  let total = 0;
  let baseTotal = 0;
  let shownDepth = maxDepth;

  function accumulate(samples, own, tot, picked) {
    own.fill(0);
    const nodes = samples.node;
    const vals = samples.value;
    const sets = samples.labels;
    for (let i = 0; i < nodes.length; i++) {
      if (!picked || picked[sets[i]]) own[nodes[i]] += vals[i];
    }
    tot.set(own);
    for (let n = N - 1; n > 0; n--) tot[nodeParent[n]] += tot[n];
    return tot[0];
  }

  function computeValues() {
    const picked = selectedSets();
    total = accumulate(data.samples, selfValue, value, picked);
    if (isDiff) {
      baseTotal = accumulate(data.base_samples, baseSelf, baseValue, picked);
      const a = total ? 1 / total : 0;
      const b = baseTotal ? 1 / baseTotal : 0;
      for (let n = 0; n < N; n++) width[n] = (value[n] * a + baseValue[n] * b) / 2;
    } else {
      width.set(value);
    }
    shownDepth = 0; // the deepest node with a width: the canvas is as tall as it needs to be
    for (let n = 1; n < N; n++) if (width[n] > 0 && nodeDepth[n] > shownDepth) shownDepth = nodeDepth[n];
    // x: a node's offset from the graph's left edge, in width units; parents come first.
    xOf[0] = 0;
    for (let n = 0; n < N; n++) {
      let x = xOf[n];
      for (let i = childStart[n]; i < childStart[n + 1]; i++) {
        const c = children[i];
        xOf[c] = x;
        x += width[c];
      }
    }
  }

  // ---- formatting ---------------------------------------------------------------------------
  const meta = data.meta;
  const unit = meta.unit || "count";
  function fmtValue(v) {
    if (unit === "nanoseconds") {
      const s = v / 1e9;
      return s >= 1 ? s.toFixed(2) + " s" : (v / 1e6).toFixed(2) + " ms";
    }
    if (unit === "bytes") {
      const u = ["B", "KiB", "MiB", "GiB", "TiB"];
      let i = 0;
      let x = v;
      while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
      return (i ? x.toFixed(1) : String(x)) + " " + u[i];
    }
    const n = Math.round(v);
    const word = unit === "count" ? (meta.sample_type === "samples" ? (n === 1 ? "sample" : "samples")
      : meta.sample_type) : unit;
    return n.toLocaleString("en-US") + " " + word;
  }
  const pct = (part, whole) => (whole ? (100 * part / whole).toFixed(2) : "0.00") + "%";
  const signedPct = (d) => (d >= 0 ? "+" : "\u2212") + Math.abs(100 * d).toFixed(2) + "%";
  const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");

  // ---- colors -------------------------------------------------------------------------------
  function hash(text) {
    let h = 2166136261;
    for (let i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 16777619);
    }
    return h >>> 0;
  }
  const colorCache = new Array(nFrames);
  function kindColor(f) {
    if (f < 0) return "hsl(220,10%,80%)";
    let color = colorCache[f];
    if (color === undefined) {
      const p = PALETTE[frameKind[f]] || PALETTE.unknown;
      const module = frameModule[f].slice(frameModule[f].lastIndexOf("/") + 1);
      const hue = p.hue + (p.span ? hash(module || frameName[f]) % p.span : 0);
      const light = p.light + (hash(frameName[f]) % 7) - 3;
      color = colorCache[f] = "hsl(" + (hue % 360) + "," + p.sat + "%," + light + "%)";
    }
    return color;
  }
  // Diff: the change of a node's share of its profile's total; saturates at maxDelta.
  let maxDelta = 0;
  function shareDelta(n) {
    return (total ? value[n] / total : 0) - (baseTotal ? baseValue[n] / baseTotal : 0);
  }
  function computeMaxDelta() {
    maxDelta = 0;
    for (let n = 1; n < N; n++) {
      const d = Math.abs(shareDelta(n));
      if (d > maxDelta) maxDelta = d;
    }
  }
  function diffColor(n) {
    const d = shareDelta(n);
    const t = maxDelta > 0 ? Math.round(20 * Math.min(1, Math.abs(d) / maxDelta)) / 20 : 0; // 21 steps: few colors
    if (t < 0.05) return "rgb(222,222,222)";
    const k = 0.25 + 0.75 * t;
    const mix = (neutral, target) => Math.round(neutral + (target - neutral) * k);
    return d > 0 ? "rgb(" + mix(222, 220) + "," + mix(222, 40) + "," + mix(222, 30) + ")"
      : "rgb(" + mix(222, 40) + "," + mix(222, 100) + "," + mix(222, 225) + ")";
  }

  // ---- state --------------------------------------------------------------------------------
  let zoom = 0;
  let icicle = true; // root on top, like Pyroscope; the button flips to a flame graph (root at the bottom)
  let matches = null; // Uint8Array per frame, or null when there is no search
  let picked = -1; // frame picked in the table: highlighted like a search match
  let drawnCount = 0;
  let cssWidth = 0;
  let charWidth = 7;
  const rowY = (depth) => (icicle ? depth : shownDepth - depth) * ROW;
  const highlighted = (f) => f >= 0 && (f === picked || (matches !== null && matches[f] === 1));

  function resize() {
    const dpr = window.devicePixelRatio || 1;
    cssWidth = canvas.clientWidth || 800;
    const height = (shownDepth + 1) * ROW;
    canvas.width = Math.round(cssWidth * dpr);
    canvas.height = Math.round(height * dpr);
    canvas.style.height = height + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = FONT;
    charWidth = ctx.measureText("M").width || 7;
    draw();
  }

  // Boxes are collected per color and filled color by color: one fillStyle per color, not per
  // box (fillRect rasterizes faster here than one path of many rects). Labels go on top last.
  let buckets = new Map(); // color -> [x, y, w, x, y, w, ...]
  let labels = []; // [text, x, y, ...]
  function addBox(n, x, w) {
    const f = nodeFrame[n];
    const y = rowY(nodeDepth[n]);
    const color = highlighted(f) ? MATCH_COLOR : isDiff ? diffColor(n) : kindColor(f);
    let bucket = buckets.get(color);
    if (bucket === undefined) buckets.set(color, (bucket = []));
    bucket.push(x, y, w);
    drawnCount++;
    const fit = Math.floor((w - 6) / charWidth);
    if (fit >= 3) {
      const name = nameOf(f);
      labels.push(name.length > fit ? name.slice(0, fit - 1) + "\u2026" : name, x + 3, y + ROW - 5);
    }
  }
  function flush(alpha) {
    ctx.globalAlpha = alpha;
    for (const [color, b] of buckets) {
      ctx.fillStyle = color;
      for (let i = 0; i < b.length; i += 3) ctx.fillRect(b[i], b[i + 1], Math.max(b[i + 2] - 0.5, 0.5), ROW - 1);
    }
    ctx.globalAlpha = 1;
    ctx.fillStyle = "#111";
    for (let i = 0; i < labels.length; i += 3) ctx.fillText(labels[i], labels[i + 1], labels[i + 2]);
    buckets = new Map();
    labels = [];
  }

  const stack = new Int32Array(N + 1);
  function draw() {
    const t = performance.now();
    if (canvas.height !== Math.round((shownDepth + 1) * ROW * (window.devicePixelRatio || 1))) {
      resize(); // the selection changed the depth
      return;
    }
    ctx.clearRect(0, 0, cssWidth, (shownDepth + 1) * ROW);
    drawnCount = 0;
    if (!width[0]) {
      status.textContent = "no samples" + (selection ? " for this selection" : "");
      api.timings.lastDraw = performance.now() - t;
      return;
    }
    for (let a = nodeParent[zoom]; a >= 0; a = nodeParent[a]) addBox(a, 0, cssWidth);
    flush(0.55); // the zoomed node's ancestors, dimmed
    const scale = cssWidth / width[zoom];
    const x0 = xOf[zoom];
    let top = 0;
    stack[top++] = zoom;
    while (top) {
      const n = stack[--top];
      const w = width[n] * scale;
      if (w < 0.3) continue; // its children are narrower still
      addBox(n, (xOf[n] - x0) * scale, w);
      for (let i = childStart[n]; i < childStart[n + 1]; i++) stack[top++] = children[i];
    }
    flush(1);
    api.timings.lastDraw = performance.now() - t;
  }

  // The node under canvas point (px, py), or -1.
  function nodeAt(px, py) {
    const row = Math.floor(py / ROW);
    const depth = icicle ? row : shownDepth - row;
    if (depth < 0 || !width[zoom]) return -1;
    if (depth < nodeDepth[zoom]) {
      let a = zoom;
      while (nodeDepth[a] > depth) a = nodeParent[a];
      return a;
    }
    const at = xOf[zoom] + px * width[zoom] / cssWidth;
    if (at < xOf[zoom] || at >= xOf[zoom] + width[zoom]) return -1;
    let n = zoom;
    while (nodeDepth[n] < depth) {
      let lo = childStart[n];
      let hi = childStart[n + 1] - 1;
      let found = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        const c = children[mid];
        if (at < xOf[c]) hi = mid - 1;
        else if (at >= xOf[c] + width[c]) lo = mid + 1;
        else { found = c; break; }
      }
      if (found < 0) return -1;
      n = found;
    }
    return width[n] > 0 ? n : -1;
  }

  // ---- facts, legend, breadcrumb, status ----------------------------------------------------
  function factsHtml(m, label) {
    const items = [];
    if (label) items.push(["", label]);
    if (m.host) items.push(["host", m.host]);
    else if (m.source) items.push(["file", m.source]);
    if (m.start) items.push(["start", m.start]);
    if (m.duration_ns) items.push(["duration", (m.duration_ns / 1e9).toFixed(1) + " s"]);
    if (m.frequency_hz) items.push(["frequency", m.frequency_hz + " Hz"]);
    items.push([m.sample_type === "samples" ? "samples" : m.sample_type, fmtValue(m.total)]);
    let html = items.map((kv) => "<span>" + kv[0] + " <b>" + escapeHtml(kv[1]) + "</b></span>").join("");
    if (m.lost !== null && m.lost !== undefined) {
      html += "<span class=\"" + (m.lost ? "warn" : "") + "\" id=\"lost\">lost samples <b>" + m.lost + "</b></span>";
    }
    if (m.stacks_lost) html += "<span class=\"warn\">lost stacks <b>" + m.stacks_lost + "</b></span>";
    return html;
  }
  function showFacts() {
    const el = $("facts");
    el.innerHTML = isDiff ? factsHtml(data.base_meta, "base") + "<br>" + factsHtml(meta, "new") : factsHtml(meta, "");
    const counters = Object.keys(meta.counters).map((k) => k + "=" + meta.counters[k]).join(", ");
    if (counters) el.title = counters;
    if (isDiff) $("title").textContent = "hostflame diff";
    const legend = isDiff
      ? [["rgb(220,40,30)", "grew"], ["rgb(40,100,225)", "shrank"], ["rgb(222,222,222)", "same"]]
      : ["process", "kernel", "native", "inlined", "jit"].map((k) => ["hsl(" + PALETTE[k].hue + "," + PALETTE[k].sat +
        "%," + PALETTE[k].light + "%)", k]);
    $("legend").innerHTML = legend.map((c) => "<i style=\"background:" + c[0] + "\"></i>" + c[1]).join("");
  }

  function showCrumbs() {
    const path = [];
    for (let a = zoom; a >= 0; a = nodeParent[a]) path.push(a);
    path.reverse();
    const el = $("crumbs");
    el.innerHTML = path.map((n) => "<button type=\"button\" data-node=\"" + n + "\">" + escapeHtml(nameOf(nodeFrame[n])) +
      "</button>").join("<span class=\"sep\"> \u203a </span>");
  }

  let matchedValue = 0;
  function matchedShare() {
    // value under the outermost highlighted frames, so nothing counts twice
    matchedValue = 0;
    if (!matches && picked < 0) return 0;
    let top = 0;
    stack[top++] = 0;
    while (top) {
      const n = stack[--top];
      if (highlighted(nodeFrame[n])) matchedValue += value[n];
      else for (let i = childStart[n]; i < childStart[n + 1]; i++) stack[top++] = children[i];
    }
    return total ? matchedValue / total : 0;
  }

  function updateStatus() {
    const parts = [];
    if (zoom) parts.push("zoomed into " + escapeHtml(nameOf(nodeFrame[zoom])) + " (" + pct(value[zoom], total) + ")");
    if (matches || picked >= 0) {
      const share = matchedShare();
      const what = picked >= 0 ? escapeHtml(frameName[picked]) : "matched";
      parts.push("<span class=\"match\" id=\"matched\">" + what + " " + fmtValue(matchedValue) + ", " +
        (100 * share).toFixed(2) + "% of " + (selection ? "the selection" : "all") + "</span>");
    }
    if (selection) parts.push("showing " + escapeHtml(selection.key) + " = " + escapeHtml(selection.value) + ": " +
      fmtValue(total));
    status.innerHTML = parts.length ? parts.join(" \u00b7 ") : "click a frame to zoom; hover for details";
  }

  // ---- tooltip ------------------------------------------------------------------------------
  function showTooltip(n, event) {
    const f = nodeFrame[n];
    const lines = ["<div class=\"name\">" + escapeHtml(nameOf(f)) + "</div>"];
    if (f >= 0 && frameFile[f]) lines.push("<div>" + escapeHtml(frameFile[f] + (nodeLine[n] ? ":" + nodeLine[n] : "")) + "</div>");
    if (f >= 0 && frameModule[f]) lines.push("<div class=\"dim\">" + escapeHtml(frameModule[f]) + " (" + frameKind[f] + ")</div>");
    else if (f >= 0) lines.push("<div class=\"dim\">" + frameKind[f] + "</div>");
    let counts = "total " + fmtValue(value[n]) + ", " + pct(value[n], total);
    if (zoom) counts += " (" + pct(value[n], value[zoom]) + " of zoom)";
    lines.push("<div>" + counts + "</div>");
    lines.push("<div>self " + fmtValue(selfValue[n]) + ", " + pct(selfValue[n], total) + "</div>");
    if (isDiff) {
      lines.push("<div>base " + pct(baseValue[n], baseTotal) + " \u2192 new " + pct(value[n], total) + " (" +
        signedPct(shareDelta(n)) + ")</div>");
    }
    tooltip.innerHTML = lines.join("");
    tooltip.style.display = "block";
    const box = tooltip.getBoundingClientRect();
    const left = Math.min(event.clientX + 14, window.innerWidth - box.width - 4);
    const top = event.clientY + 16 + box.height > window.innerHeight ? event.clientY - box.height - 8 : event.clientY + 16;
    tooltip.style.left = Math.max(left, 0) + "px";
    tooltip.style.top = Math.max(top, 0) + "px";
  }

  // ---- top table ----------------------------------------------------------------------------
  // Per frame: self = samples ending in it; total = samples with it anywhere on the stack, once.
  function functionTotals(own, tot) {
    const selfBy = new Float64Array(nFrames);
    const totalBy = new Float64Array(nFrames);
    const onStack = new Int32Array(nFrames);
    const work = [0]; // DFS with exit markers: -(n + 1) leaves node n
    while (work.length) {
      const item = work.pop();
      if (item < 0) {
        const f = nodeFrame[-item - 1];
        if (f >= 0) onStack[f]--;
        continue;
      }
      const f = nodeFrame[item];
      if (f >= 0) {
        selfBy[f] += own[item];
        if (onStack[f] === 0) totalBy[f] += tot[item];
        onStack[f]++;
      }
      work.push(-item - 1);
      for (let i = childStart[item]; i < childStart[item + 1]; i++) if (tot[children[i]]) work.push(children[i]);
    }
    return [selfBy, totalBy];
  }

  let tableSort = isDiff ? "dself" : "self";
  let rows = [];
  function computeTable() {
    const [selfBy, totalBy] = functionTotals(selfValue, value);
    rows = [];
    if (isDiff) {
      const [bSelf, bTotal] = functionTotals(baseSelf, baseValue);
      for (let f = 0; f < nFrames; f++) {
        if (!totalBy[f] && !bTotal[f]) continue;
        const s = total ? selfBy[f] / total : 0;
        const t = total ? totalBy[f] / total : 0;
        const bs = baseTotal ? bSelf[f] / baseTotal : 0;
        const bt = baseTotal ? bTotal[f] / baseTotal : 0;
        rows.push({ f, bself: bs, self: s, dself: s - bs, btotal: bt, total: t, dtotal: t - bt });
      }
    } else {
      for (let f = 0; f < nFrames; f++) {
        if (totalBy[f]) rows.push({ f, self: selfBy[f], total: totalBy[f] });
      }
    }
    showTable();
  }

  const COLUMNS = isDiff
    ? [["fn", "function"], ["mod", "module"], ["bself", "base self"], ["self", "new self"], ["dself", "\u0394 self"],
      ["btotal", "base total"], ["total", "new total"], ["dtotal", "\u0394 total"]]
    : [["fn", "function"], ["mod", "module"], ["self", "self"], ["selfp", "self %"], ["total", "total"],
      ["totalp", "total %"]];
  function sortKey(row) {
    const k = tableSort.replace(/p$/, "");
    return tableSort[0] === "d" ? Math.abs(row[k]) : row[k];
  }
  function showTable() {
    rows.sort((a, b) => sortKey(b) - sortKey(a) || (frameName[a.f] < frameName[b.f] ? -1 : 1));
    const head = COLUMNS.map((c) => "<th data-sort=\"" + c[0] + "\" class=\"" + (c[0] === "fn" || c[0] === "mod" ? c[0] : "") +
      (c[0] === tableSort ? " sorted" : "") + "\">" + c[1] + "</th>").join("");
    document.querySelector("#top thead").innerHTML = "<tr>" + head + "</tr>";
    const html = [];
    const shown = matches ? rows.filter((row) => matches[row.f] === 1) : rows; // a search filters the table too
    for (const row of shown.slice(0, TABLE_ROWS)) {
      const f = row.f;
      const module = frameModule[f].slice(frameModule[f].lastIndexOf("/") + 1);
      let cells = "<td class=\"fn\">" + escapeHtml(frameName[f]) + "</td><td class=\"mod\">" + escapeHtml(module) + "</td>";
      if (isDiff) {
        const d = (x) => "<td><span class=\"" + (x > 0 ? "up" : x < 0 ? "down" : "") + "\">" + signedPct(x) + "</span></td>";
        const p = (x) => "<td>" + (100 * x).toFixed(2) + "%</td>";
        cells += p(row.bself) + p(row.self) + d(row.dself) + p(row.btotal) + p(row.total) + d(row.dtotal);
      } else {
        cells += "<td>" + fmtValue(row.self) + "</td><td>" + pct(row.self, total) + "</td><td>" + fmtValue(row.total) +
          "</td><td>" + pct(row.total, total) + "</td>";
      }
      html.push("<tr data-frame=\"" + f + "\"" + (f === picked ? " class=\"picked\"" : "") + ">" + cells + "</tr>");
    }
    document.querySelector("#top tbody").innerHTML = html.join("");
    $("table-title").textContent = (isDiff ? "Functions whose share changed most" : "Top functions") +
      " (" + Math.min(shown.length, TABLE_ROWS) + " of " + rows.length + (matches ? " matching the search" : "") +
      "; click a row to highlight it)";
  }

  // ---- actions ------------------------------------------------------------------------------
  function refresh() {
    tooltip.style.display = "none"; // what it said may no longer hold
    updateStatus();
    showCrumbs();
    draw();
  }
  function setZoom(n) {
    zoom = n >= 0 && width[n] > 0 ? n : 0;
    refresh();
  }
  function search(text) {
    matches = null;
    if (text) {
      let re;
      try {
        re = new RegExp(text, "i");
      } catch (err) {
        re = new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "i");
      }
      matches = new Uint8Array(nFrames);
      for (let f = 0; f < nFrames; f++) if (re.test(frameName[f])) matches[f] = 1;
    }
    showTable();
    refresh();
  }
  function pick(f) {
    picked = picked === f ? -1 : f;
    for (const tr of document.querySelectorAll("#top tbody tr")) {
      tr.classList.toggle("picked", Number(tr.dataset.frame) === picked);
    }
    refresh();
  }
  function fillValues() {
    const key = keySelect.value;
    valueSelect.hidden = !key;
    if (!key) return;
    const sums = new Map();
    const add = (samples) => {
      for (let i = 0; i < samples.node.length; i++) {
        const v = labelMaps[samples.labels[i]].get(key);
        if (v !== undefined) sums.set(v, (sums.get(v) || 0) + samples.value[i]);
      }
    };
    add(data.samples);
    if (isDiff) add(data.base_samples);
    const all = Array.from(sums.values()).reduce((a, b) => a + b, 0);
    const values = Array.from(sums.keys()).sort((a, b) => sums.get(b) - sums.get(a) || (a < b ? -1 : 1));
    valueSelect.innerHTML = values.map((v) => "<option value=\"" + escapeHtml(v) + "\">" + escapeHtml(v) + " (" +
      pct(sums.get(v), all) + ")</option>").join("");
  }
  function select(key, val) {
    selection = key ? { key, value: val } : null;
    computeValues();
    if (isDiff) computeMaxDelta();
    if (!width[zoom]) zoom = 0;
    computeTable();
    refresh();
  }

  canvas.addEventListener("mousemove", (event) => {
    const rect = canvas.getBoundingClientRect();
    const n = nodeAt(event.clientX - rect.left, event.clientY - rect.top);
    canvas.style.cursor = n >= 0 ? "pointer" : "default";
    if (n >= 0) showTooltip(n, event);
    else tooltip.style.display = "none";
  });
  canvas.addEventListener("mouseleave", () => { tooltip.style.display = "none"; });
  canvas.addEventListener("click", (event) => {
    const rect = canvas.getBoundingClientRect();
    const n = nodeAt(event.clientX - rect.left, event.clientY - rect.top);
    if (n >= 0) setZoom(n);
  });
  $("crumbs").addEventListener("click", (event) => {
    const node = event.target.dataset && event.target.dataset.node;
    if (node !== undefined) setZoom(Number(node));
  });
  $("reset").addEventListener("click", () => setZoom(0));
  $("orientation").addEventListener("click", () => {
    icicle = !icicle;
    $("orientation").textContent = icicle ? "Flame" : "Icicle";
    draw();
  });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") setZoom(0); });
  searchBox.addEventListener("input", () => search(searchBox.value.trim()));
  keySelect.addEventListener("change", () => {
    fillValues();
    select(keySelect.value, valueSelect.value);
  });
  valueSelect.addEventListener("change", () => select(keySelect.value, valueSelect.value));
  document.querySelector("#top thead").addEventListener("click", (event) => {
    const key = event.target.dataset && event.target.dataset.sort;
    if (key && key !== "fn" && key !== "mod") {
      tableSort = key;
      showTable();
    }
  });
  document.querySelector("#top tbody").addEventListener("click", (event) => {
    const tr = event.target.closest("tr");
    if (tr) pick(Number(tr.dataset.frame));
  });
  let pending = false;
  window.addEventListener("resize", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; resize(); });
  });

  // ---- the API tests and the benchmark use --------------------------------------------------
  const api = {
    timings: {},
    state() {
      return {
        diff: isDiff, nodes: N, frames: nFrames, drawn: drawnCount, total, baseTotal, zoom: nameOf(nodeFrame[zoom]),
        zoomDepth: nodeDepth[zoom], icicle, selection, matchedShare: (matches || picked >= 0) ? matchedShare() : null,
        picked: picked >= 0 ? frameName[picked] : null, maxDepth: shownDepth,
      };
    },
    // CSS-pixel box (relative to the canvas) of the widest drawn node of the frame named `name`.
    boxOf(name, kind) {
      if (!width[zoom]) return null;
      const scale = cssWidth / width[zoom];
      let best = -1;
      for (let n = 1; n < N; n++) {
        const f = nodeFrame[n];
        if (frameName[f] !== name || (kind && frameKind[f] !== kind) || width[n] * scale < 1) continue;
        if (xOf[n] < xOf[zoom] || xOf[n] >= xOf[zoom] + width[zoom] || nodeDepth[n] < nodeDepth[zoom]) continue;
        if (best < 0 || width[n] > width[best]) best = n;
      }
      if (best < 0) return null;
      return { x: (xOf[best] - xOf[zoom]) * scale, y: rowY(nodeDepth[best]), w: width[best] * scale, h: ROW - 1,
        delta: isDiff ? shareDelta(best) : null };
    },
    labelKeys: () => data.labelkeys.slice(),
    select(key, val) {
      keySelect.value = key;
      fillValues();
      if (val !== undefined) valueSelect.value = val;
      select(keySelect.value, valueSelect.value);
    },
    search(text) { searchBox.value = text; search(text); },
    zoomTo: setZoom,
    nodesAt(depth, limit) {
      const found = [];
      for (let n = 0; n < N && found.length < limit; n++) if (nodeDepth[n] === depth && width[n] > 0) found.push(n);
      return found;
    },
    redraw() { draw(); return api.timings.lastDraw; },
  };
  window.hostflame = api;

  for (const key of data.labelkeys) {
    const option = document.createElement("option");
    option.value = key;
    option.textContent = key;
    keySelect.appendChild(option);
  }
  const t1 = performance.now();
  computeValues();
  if (isDiff) computeMaxDelta();
  const t2 = performance.now();
  showFacts();
  computeTable();
  updateStatus();
  showCrumbs();
  const t3 = performance.now();
  resize();
  const t4 = performance.now();
  Object.assign(api.timings, { decode: t1 - t0, values: t2 - t1, table: t3 - t2, firstDraw: t4 - t3, script: t4 - t0,
    readyAt: t4 });
})();
