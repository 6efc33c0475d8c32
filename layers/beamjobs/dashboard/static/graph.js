// The pipeline graph as SVG, a layered DAG from top to bottom laid out by dagre: one node per
// transform that runs, or per composite while it is collapsed; an expanded composite is a box
// around its steps. Composites start collapsed, so the graph reads as the steps the user wrote;
// clicking a composite's node expands it, clicking its box's title collapses it. Ctrl+wheel (or a
// pinch) zooms, dragging pans, and the buttons zoom and fit. Nodes show the elements they put
// out and the wall time they spent; the step a failed job was running is marked.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const NODE_WIDTH = 220, NODE_HEIGHT = 46, TEXT_PADDING = 8;

// What the page knows, kept across redraws: the graph, what is expanded, and what is counted.
const view = {
  graph: null, container: null, expanded: new Set(), counts: {}, wallTimes: {}, failedStep: "",
  // Composites holding the whole pipeline (some SDKs wrap it in one): always open, never boxed.
  wholes: new Set(),
  scale: 1, x: 0, y: 0, width: 0, height: 0,
};

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function lastPart(name) {
  return name.split("/").pop();
}

// The outermost collapsed composite holding a transform (itself when none is), climbing the
// composite tree: what stands for it in the drawing.
function shownAs(id, parents) {
  let shown = id;
  for (let at = parents.get(id); at; at = parents.get(at)) {
    if (!view.expanded.has(at)) shown = at;
  }
  return shown;
}

// What is drawn: items (steps and collapsed composites), boxes (expanded composites holding
// something drawn), and edges between items, each carrying the PCollections it stands for.
function visibleGraph() {
  const { nodes, edges, composites } = view.graph;
  const parents = new Map([...nodes, ...composites].map((t) => [t.transform_id, t.parent]));
  const composite = new Map(composites.map((c) => [c.transform_id, c]));
  const items = new Map();
  const members = new Map(); // item -> the steps it stands for
  for (const node of nodes) {
    const id = shownAs(node.transform_id, parents);
    if (!items.has(id)) {
      const known = composite.get(id) || node;
      items.set(id, { id, name: known.name, urn: composite.has(id) ? "" : node.urn,
        parent: known.parent, collapsed: composite.has(id) });
      members.set(id, []);
    }
    members.get(id).push(node);
  }
  const boxes = new Map();
  for (const item of items.values()) {
    for (let at = item.parent; at && !boxes.has(at); at = parents.get(at)) {
      if (!view.wholes.has(at)) boxes.set(at, composite.get(at));
    }
  }
  const drawnEdges = new Map();
  for (const edge of edges) {
    const source = shownAs(edge.source, parents), target = shownAs(edge.target, parents);
    if (source === target) continue; // inside a collapsed composite
    const key = `${source}\u0000${target}`;
    if (!drawnEdges.has(key)) drawnEdges.set(key, { source, target, pcollections: new Map() });
    drawnEdges.get(key).pcollections.set(edge.pcollection_id, edge.pcollection);
  }
  return { items, members, boxes, edges: [...drawnEdges.values()] };
}

// A label cut (with an ellipsis) until it fits the width it has; cut again from its whole text.
function fitText(text, widest) {
  if (text.dataset.full === undefined) text.dataset.full = text.textContent;
  const full = text.dataset.full;
  text.textContent = full;
  if (text.getComputedTextLength() <= widest) return;
  let kept = full.length;
  while (kept > 1 && text.getComputedTextLength() > widest) {
    kept -= 1;
    text.textContent = `${full.slice(0, kept)}…`;
  }
}

function isFailed(name) {
  const step = view.failedStep;
  return Boolean(step) && (name === step || name.startsWith(`${step}/`) || step.startsWith(`${name}/`));
}

function draw() {
  const { items, members, boxes, edges } = visibleGraph();
  const layout = new dagre.graphlib.Graph({ compound: true });
  layout.setGraph({ rankdir: "TB", nodesep: 28, ranksep: 38, marginx: 12, marginy: 12 });
  layout.setDefaultEdgeLabel(() => ({}));
  for (const [id, box] of boxes) layout.setNode(id, { box });
  for (const [id, box] of boxes) if (box.parent && boxes.has(box.parent)) layout.setParent(id, box.parent);
  for (const [id, item] of items) {
    layout.setNode(id, { item, width: NODE_WIDTH, height: NODE_HEIGHT });
    if (item.parent && boxes.has(item.parent)) layout.setParent(id, item.parent);
  }
  for (const edge of edges) layout.setEdge(edge.source, edge.target, { edge });
  dagre.layout(layout);

  const size = layout.graph();
  view.width = size.width;
  view.height = size.height;
  const drawing = svg("svg", { role: "img", "aria-label": "pipeline graph" });
  const defs = svg("defs");
  const arrow = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
  arrow.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }));
  defs.append(arrow);
  const world = svg("g", { class: "world" });
  drawing.append(defs, world);
  // Boxes first (outermost first, so inner boxes lie on top), then edges, then nodes.
  const depth = (id) => { let d = 0; for (let at = boxes.get(id)?.parent; at; at = boxes.get(at)?.parent) d++; return d; };
  for (const id of [...boxes.keys()].sort((a, b) => depth(a) - depth(b))) {
    const { x, y, width, height } = layout.node(id);
    const box = boxes.get(id);
    const group = svg("g", { class: "composite", transform: `translate(${x - width / 2},${y - height / 2})` });
    group.dataset.transformId = id;
    group.dataset.name = box.name;
    const title = Object.assign(svg("text", { x: 8, y: 14, class: "composite-title" }), { textContent: `▾ ${lastPart(box.name)}` });
    title.append(Object.assign(svg("title"), { textContent: `${box.name}: collapse` }));
    activates(title, () => { view.expanded.delete(id); draw(); });
    group.append(svg("rect", { width, height }), title);
    world.append(group);
  }
  for (const edgeId of layout.edges()) {
    const { edge, points } = layout.edge(edgeId);
    const d = points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
    const path = svg("path", { class: "edge", d, "marker-end": "url(#arrow)" });
    path.dataset.pcollections = JSON.stringify([...edge.pcollections.keys()]);
    path.append(Object.assign(svg("title"), { textContent: [...edge.pcollections.values()].join("\n") }));
    world.append(path);
  }
  for (const [id, item] of items) {
    const { x, y } = layout.node(id);
    const group = svg("g", { class: item.collapsed ? "node collapsed" : "node",
      transform: `translate(${x - NODE_WIDTH / 2},${y - NODE_HEIGHT / 2})` });
    group.dataset.transformId = id;
    group.dataset.name = item.name;
    group.classList.toggle("failed", isFailed(item.name));
    const leaving = edges.filter((e) => e.source === id).flatMap((e) => [...e.pcollections.keys()]);
    group.dataset.outputs = JSON.stringify([...new Set(leaving)]);
    group.dataset.steps = JSON.stringify(members.get(id).map((n) => [n.transform_id, n.name]));
    const name = Object.assign(svg("text", { x: TEXT_PADDING, y: 18, class: "name" }),
      { textContent: `${item.collapsed ? "▸ " : ""}${lastPart(item.name)}` });
    const detail = Object.assign(svg("text", { x: TEXT_PADDING, y: 36, class: "count detail" }),
      { textContent: item.collapsed ? `${members.get(id).length} steps` : item.urn.replace("beam:transform:", "") });
    const tip = item.collapsed ? `${item.name}\n${members.get(id).length} steps: expand` : `${item.name}\n${item.urn}`;
    group.append(svg("rect", { width: NODE_WIDTH, height: NODE_HEIGHT }), name, detail,
      Object.assign(svg("title"), { textContent: tip }));
    if (item.collapsed) activates(group, () => { view.expanded.add(id); draw(); });
    world.append(group);
  }
  view.container.replaceChildren(controls(), drawing);
  for (const text of drawing.querySelectorAll(".node text.name, .node text.detail")) fitText(text, NODE_WIDTH - 2 * TEXT_PADDING);
  for (const text of drawing.querySelectorAll(".composite-title")) {
    fitText(text, Number(text.parentNode.querySelector("rect").getAttribute("width")) - 2 * TEXT_PADDING);
  }
  annotate();
  fit();
  pannable(drawing);
}

// A click, or Enter or Space once focused (Tab reaches it), does `act`.
function activates(target, act) {
  target.setAttribute("tabindex", "0");
  target.setAttribute("role", "button");
  target.addEventListener("click", act);
  target.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); act(); }
  });
}

function controls() {
  const bar = document.createElement("div");
  bar.className = "graph-controls";
  const button = (label, title, act) => {
    const b = Object.assign(document.createElement("button"), { type: "button", textContent: label, title });
    b.addEventListener("click", act);
    return b;
  };
  bar.append(button("+", "zoom in", () => zoomBy(1.25)), button("−", "zoom out", () => zoomBy(0.8)),
    button("Fit", "fit the graph to the page", fit),
    button("Expand all", "expand every composite", () => { view.graph.composites.forEach((c) => view.expanded.add(c.transform_id)); draw(); }),
    button("Collapse all", "collapse every composite", () => { view.expanded = new Set(view.wholes); draw(); }));
  return bar;
}

function place() {
  const drawing = view.container.querySelector("svg");
  const world = drawing.querySelector(".world");
  world.setAttribute("transform", `translate(${view.x.toFixed(1)},${view.y.toFixed(1)}) scale(${view.scale.toFixed(4)})`);
}

// The whole graph in the page's width (never enlarged), as tall as it then is: a layered graph
// grows downwards, and the page scrolls.
function fit() {
  const drawing = view.container.querySelector("svg");
  const width = view.container.clientWidth;
  view.scale = Math.min(1, width / view.width);
  view.x = Math.max(0, (width - view.width * view.scale) / 2);
  view.y = 0;
  drawing.setAttribute("width", width);
  drawing.setAttribute("height", Math.ceil(view.height * view.scale));
  place();
}

function zoomBy(factor, at) {
  const drawing = view.container.querySelector("svg");
  const point = at || { x: drawing.clientWidth / 2, y: drawing.clientHeight / 2 };
  const scale = Math.min(4, Math.max(0.1, view.scale * factor));
  view.x = point.x - (point.x - view.x) * (scale / view.scale);
  view.y = point.y - (point.y - view.y) * (scale / view.scale);
  view.scale = scale;
  place();
}

function pannable(drawing) {
  drawing.addEventListener("wheel", (event) => {
    if (!event.ctrlKey && !event.metaKey) return; // a plain wheel scrolls the page
    event.preventDefault();
    const bounds = drawing.getBoundingClientRect();
    zoomBy(Math.exp(-event.deltaY / 300), { x: event.clientX - bounds.left, y: event.clientY - bounds.top });
  }, { passive: false });
  let from = null;
  drawing.addEventListener("pointerdown", (event) => {
    if (event.target.closest(".node.collapsed, .composite-title")) return; // a click, not a drag
    from = { x: event.clientX - view.x, y: event.clientY - view.y };
    drawing.setPointerCapture(event.pointerId);
    drawing.classList.add("panning");
  });
  drawing.addEventListener("pointermove", (event) => {
    if (!from) return;
    view.x = event.clientX - from.x;
    view.y = event.clientY - from.y;
    place();
  });
  const stop = () => { from = null; drawing.classList.remove("panning"); };
  drawing.addEventListener("pointerup", stop);
  drawing.addEventListener("pointercancel", stop);
}

// A pipeline held whole in one composite would draw as one node: open such composites.
function expandLoneComposites() {
  for (;;) {
    const { items } = visibleGraph();
    const [only] = items.values();
    if (items.size !== 1 || !only.collapsed) return;
    view.expanded.add(only.id);
    view.wholes.add(only.id);
  }
}

function drawGraph(container, graph) {
  view.container = container;
  view.graph = graph;
  view.expanded.clear();
  view.wholes.clear();
  if (!graph.nodes.length) { container.replaceChildren(); return; }
  expandLoneComposites();
  draw();
}

// Elements each node puts out (the PCollections leaving it) and the wall time its steps spent.
function annotate() {
  for (const group of document.querySelectorAll("#graph .node")) {
    const outputs = JSON.parse(group.dataset.outputs || "[]").filter((id) => id in view.counts);
    const steps = JSON.parse(group.dataset.steps || "[]");
    const timed = steps.map(([id, name]) => view.wallTimes[id] ?? view.wallTimes[name]).filter((ms) => ms !== undefined);
    const parts = [];
    if (outputs.length) parts.push(`${outputs.reduce((sum, id) => sum + Number(view.counts[id] || 0), 0)} out`);
    if (timed.length) parts.push(elapsed(timed.reduce((sum, ms) => sum + Number(ms), 0)));
    let label = group.querySelector(".elements");
    const detail = group.querySelector(".detail");
    if (!parts.length) {
      if (label) label.remove();
      fitText(detail, NODE_WIDTH - 2 * TEXT_PADDING);
      continue;
    }
    if (!label) {
      label = svg("text", { x: NODE_WIDTH - TEXT_PADDING, y: 36, "text-anchor": "end", class: "count elements" });
      group.append(label);
    }
    label.textContent = parts.join(" · ");
    // The detail line gives way to the figures.
    fitText(detail, NODE_WIDTH - 3 * TEXT_PADDING - label.getComputedTextLength());
  }
}

// Metrics as the page reads them: element counts by PCollection id, wall times (ms) by step.
function annotateGraph(counts, wallTimes) {
  view.counts = counts;
  view.wallTimes = wallTimes;
  if (view.graph) annotate();
}

// The step a failed job was running (its full name), and the composites holding it: marked.
function markFailedStep(step) {
  view.failedStep = step || "";
  for (const group of document.querySelectorAll("#graph g.node")) {
    group.classList.toggle("failed", isFailed(group.dataset.name || ""));
  }
}
