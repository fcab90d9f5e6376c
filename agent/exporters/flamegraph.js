// hostflame flame graph: draws the embedded "hostflame-flame/1" data on one <canvas>.
// Root on top; click a frame to zoom into it, Esc or "Reset zoom" to see everything again.
(function () {
  "use strict";

  const ROW = 18;
  const FONT = "12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
  const MATCH_COLOR = "#d63ad0";
  // Hue range and saturation per frame kind; the module picks a stable hue inside the range.
  const PALETTE = {
    process: { hue: 205, span: 30, sat: 35, light: 72 },
    kernel: { hue: 0, span: 22, sat: 72, light: 62 },
    native: { hue: 28, span: 30, sat: 85, light: 60 },
    jit: { hue: 95, span: 50, sat: 55, light: 55 },
    unknown: { hue: 0, span: 0, sat: 0, light: 72 },
  };

  const data = JSON.parse(document.getElementById("hostflame-data").textContent);
  const strings = data.strings;
  const canvas = document.getElementById("flame");
  const ctx = canvas.getContext("2d");
  const tooltip = document.getElementById("tooltip");
  const status = document.getElementById("status");
  const searchBox = document.getElementById("search");

  const frameInfo = (f) => {
    if (f < 0) return { name: "all", file: "", module: "", kind: "process" };
    const row = data.frames[f];
    return { name: strings[row[0]], file: strings[row[1]], module: strings[row[2]], kind: data.kinds[row[3]] };
  };

  // Rebuild the tree from its columns (parents come before children); siblings sorted by name,
  // x is a node's offset in samples from the left edge of the whole graph.
  function decodeTree(columns) {
    const n = columns.frame.length;
    const nodes = new Array(n);
    let maxDepth = 0;
    for (let i = 0; i < n; i++) {
      const parent = i ? nodes[columns.parent[i]] : null;
      const node = {
        f: columns.frame[i], line: columns.line[i], v: columns.samples[i], parent: parent,
        depth: parent ? parent.depth + 1 : 0, x: 0, children: [],
      };
      if (parent) parent.children.push(node);
      if (node.depth > maxDepth) maxDepth = node.depth;
      nodes[i] = node;
    }
    const names = data.frames.map((row) => strings[row[0]]);
    const byName = (a, b) => {
      const na = names[a.f];
      const nb = names[b.f];
      return na < nb ? -1 : na > nb ? 1 : a.f - b.f;
    };
    for (const node of nodes) {
      if (node.children.length > 1) node.children.sort(byName);
      let x = node.x;
      for (const child of node.children) {
        child.x = x;
        x += child.v;
      }
    }
    return { root: nodes[0], maxDepth: maxDepth };
  }

  const tree = decodeTree(data.tree);
  const root = tree.root;
  let zoom = root;
  let matches = null; // Set of frame indexes, or null when there is no search

  function hash(text) {
    let h = 2166136261;
    for (let i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 16777619);
    }
    return h >>> 0;
  }

  const colors = new Map();
  function colorOf(f) {
    let color = colors.get(f);
    if (color === undefined) {
      const info = frameInfo(f);
      const p = PALETTE[info.kind] || PALETTE.unknown;
      const hue = p.hue + (p.span ? hash(info.module || info.name) % p.span : 0);
      const light = p.light + (hash(info.name) % 9) - 4;
      color = "hsl(" + hue + "," + p.sat + "%," + light + "%)";
      colors.set(f, color);
    }
    return color;
  }

  const pct = (part, whole) => (whole ? (100 * part / whole).toFixed(2) : "0.00") + "%";
  const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");

  function showMeta() {
    const m = data.meta;
    const items = [
      ["host", m.host],
      ["start", m.start],
      ["duration", (m.duration_ns / 1e9).toFixed(1) + " s"],
      ["frequency", m.frequency_hz + " Hz"],
      ["samples", String(m.samples)],
    ];
    const html = items.map((kv) => "<span>" + kv[0] + " <b>" + escapeHtml(kv[1]) + "</b></span>");
    const counters = Object.keys(m.counters).map((k) => k + "=" + m.counters[k]).join(", ");
    const el = document.getElementById("meta");
    el.innerHTML = html.join("");
    if (counters) el.title = counters;
  }

  let width = 0;
  let charWidth = 7;
  function resize() {
    const dpr = window.devicePixelRatio || 1;
    width = canvas.clientWidth;
    const height = (tree.maxDepth + 1) * ROW;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    canvas.style.height = height + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = FONT;
    charWidth = ctx.measureText("M").width || 7;
    draw();
  }

  function drawBox(node, x, w, dim) {
    const info = frameInfo(node.f);
    const y = node.depth * ROW;
    ctx.fillStyle = matches && matches.has(node.f) ? MATCH_COLOR : colorOf(node.f);
    ctx.globalAlpha = dim ? 0.5 : 1;
    ctx.fillRect(x, y, Math.max(w - 0.5, 0.5), ROW - 1);
    ctx.globalAlpha = 1;
    const fit = Math.floor((w - 6) / charWidth);
    if (fit >= 3) {
      const label = info.name.length > fit ? info.name.slice(0, fit - 1) + "\u2026" : info.name;
      ctx.fillStyle = "#111";
      ctx.fillText(label, x + 3, y + ROW - 5);
    }
  }

  function draw() {
    ctx.clearRect(0, 0, width, (tree.maxDepth + 1) * ROW);
    if (!root.v) {
      status.textContent = "no samples";
      return;
    }
    for (let a = zoom.parent; a; a = a.parent) drawBox(a, 0, width, true);
    const scale = width / zoom.v;
    const stack = [zoom];
    while (stack.length) {
      const node = stack.pop();
      const w = node.v * scale;
      if (w < 0.3) continue; // its children are narrower still
      drawBox(node, (node.x - zoom.x) * scale, w, false);
      for (const child of node.children) stack.push(child);
    }
  }

  // The node under canvas point (px, py), or null.
  function nodeAt(px, py) {
    const depth = Math.floor(py / ROW);
    if (depth < zoom.depth) {
      let a = zoom;
      while (a.depth > depth) a = a.parent;
      return a;
    }
    const scale = width / zoom.v;
    const samples = zoom.x + px / scale;
    let node = zoom;
    if (samples < zoom.x || samples >= zoom.x + zoom.v) return null;
    while (node.depth < depth) {
      const kids = node.children;
      let lo = 0;
      let hi = kids.length - 1;
      let found = null;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (samples < kids[mid].x) hi = mid - 1;
        else if (samples >= kids[mid].x + kids[mid].v) lo = mid + 1;
        else { found = kids[mid]; break; }
      }
      if (!found) return null;
      node = found;
    }
    return node;
  }

  function selfSamples(node) {
    return node.children.reduce((rest, c) => rest - c.v, node.v);
  }

  function showTooltip(node, event) {
    const info = frameInfo(node.f);
    const where = info.file ? info.file + (node.line ? ":" + node.line : "") : "";
    const lines = ["<div class=\"name\">" + escapeHtml(info.name) + "</div>"];
    if (where) lines.push("<div>" + escapeHtml(where) + "</div>");
    if (info.module) lines.push("<div class=\"dim\">" + escapeHtml(info.module) + " (" + info.kind + ")</div>");
    let counts = node.v + " samples, " + pct(node.v, root.v) + " of all";
    if (zoom !== root) counts += ", " + pct(node.v, zoom.v) + " of zoom";
    lines.push("<div>" + counts + "</div>");
    lines.push("<div class=\"dim\">self " + selfSamples(node) + " samples</div>");
    tooltip.innerHTML = lines.join("");
    tooltip.style.display = "block";
    const box = tooltip.getBoundingClientRect();
    const left = Math.min(event.clientX + 14, window.innerWidth - box.width - 4);
    const top = event.clientY + 16 + box.height > window.innerHeight ? event.clientY - box.height - 8 : event.clientY + 16;
    tooltip.style.left = Math.max(left, 0) + "px";
    tooltip.style.top = Math.max(top, 0) + "px";
  }

  function canvasPoint(event) {
    const rect = canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  function updateStatus() {
    if (!root.v) return;
    const parts = [];
    if (zoom !== root) parts.push("zoomed into " + escapeHtml(frameInfo(zoom.f).name) + " (" + pct(zoom.v, root.v) + ")");
    if (matches) {
      let matched = 0; // samples under the outermost matching frames, so nothing counts twice
      const stack = [root];
      while (stack.length) {
        const node = stack.pop();
        if (matches.has(node.f)) matched += node.v;
        else for (const child of node.children) stack.push(child);
      }
      parts.push("<span class=\"match\">matched " + matched + " samples, " + pct(matched, root.v) + "</span>");
    }
    status.innerHTML = parts.length ? parts.join(" \u00b7 ") : "click a frame to zoom; hover for details";
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
      matches = new Set();
      data.frames.forEach((row, f) => { if (re.test(strings[row[0]])) matches.add(f); });
    }
    updateStatus();
    draw();
  }

  function setZoom(node) {
    zoom = node && node.v ? node : root;
    updateStatus();
    draw();
  }

  canvas.addEventListener("mousemove", (event) => {
    const p = canvasPoint(event);
    const node = nodeAt(p[0], p[1]);
    canvas.style.cursor = node ? "pointer" : "default";
    if (node) showTooltip(node, event);
    else tooltip.style.display = "none";
  });
  canvas.addEventListener("mouseleave", () => { tooltip.style.display = "none"; });
  canvas.addEventListener("click", (event) => {
    const p = canvasPoint(event);
    const node = nodeAt(p[0], p[1]);
    if (node) setZoom(node);
  });
  document.getElementById("reset").addEventListener("click", () => setZoom(root));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") setZoom(root);
  });
  searchBox.addEventListener("input", () => search(searchBox.value.trim()));
  let pending = false;
  window.addEventListener("resize", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; resize(); });
  });

  showMeta();
  updateStatus();
  resize();
})();
