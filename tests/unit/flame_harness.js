// Runs a hostflame flame graph page's script under Node with a stubbed DOM and canvas, then
// prints JSON of what it drew and showed. Usage: node flame_harness.js PAGE.html [SEARCH] [CLICK_LABEL]
// The test drives: load -> (search) -> (click the box labelled CLICK_LABEL, then hover it).
"use strict";
const fs = require("fs");
const vm = require("vm");

const [page, searchText, clickLabel] = process.argv.slice(2);
const html = fs.readFileSync(page, "utf8");
const dataText = /<script id="hostflame-data" type="application\/json">([\s\S]*?)<\/script>/.exec(html)[1];
const scriptText = /<script>\n([\s\S]*?)<\/script>/.exec(html)[1];

let drawn = [];
const ctx = {
  font: "", fillStyle: "", globalAlpha: 1,
  boxFill: "",
  setTransform() {}, clearRect() { drawn = []; }, fillRect() { this.boxFill = this.fillStyle; },
  measureText() { return { width: 7 }; },
  fillText(text, x, y) { drawn.push({ text, x, y, fill: this.boxFill }); },
};
function element(extra) {
  const handlers = {};
  return Object.assign({
    style: {}, innerHTML: "", textContent: "", title: "", value: "", handlers,
    addEventListener(type, fn) { handlers[type] = fn; },
    getBoundingClientRect() { return { left: 0, top: 0, width: 200, height: 60 }; },
  }, extra);
}
const elements = {
  "hostflame-data": element({ textContent: dataText }),
  flame: element({ clientWidth: 1200, getContext: () => ctx }),
};
const docHandlers = {};
const document = {
  getElementById(id) { return elements[id] || (elements[id] = element({})); },
  addEventListener(type, fn) { docHandlers[type] = fn; },
};
const window = { devicePixelRatio: 1, innerWidth: 1400, innerHeight: 900, addEventListener() {} };
vm.runInNewContext(scriptText, { document, window, requestAnimationFrame: (f) => f(), Math, JSON, Set, Map, RegExp });

const result = { labels: drawn.map((d) => d.text), boxes: drawn.map((d) => [d.text, d.x, d.y]), status: elements.status.innerHTML || elements.status.textContent,
  meta: elements.meta.innerHTML };
if (searchText) {
  elements.search.value = searchText;
  elements.search.handlers.input();
  result.searchStatus = elements.status.innerHTML;
  result.matchedLabels = drawn.filter((d) => d.fill === "#d63ad0").map((d) => d.text);
}
if (clickLabel) {
  const box = drawn.find((d) => d.text === clickLabel);
  const event = { clientX: box.x + 1, clientY: box.y - 4 };
  elements.flame.handlers.click(event);
  result.zoomStatus = elements.status.innerHTML;
  result.zoomLabels = drawn.map((d) => d.text);
  const after = drawn.find((d) => d.text === clickLabel);
  elements.flame.handlers.mousemove({ clientX: after.x + 1, clientY: after.y - 4 });
  result.tooltip = elements.tooltip.innerHTML;
}
process.stdout.write(JSON.stringify(result));
