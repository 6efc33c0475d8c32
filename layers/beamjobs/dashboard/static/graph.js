// The pipeline graph as SVG: one node per transform that runs, in columns by depth (the longest
// path from a source), ordered in each column by where their inputs are; an edge per PCollection
// from its producer to each consumer. Composite transforms are the path in a node's name.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const NODE_WIDTH = 200, NODE_HEIGHT = 42, COLUMN_GAP = 56, ROW_GAP = 14, MARGIN = 10;

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function depths(nodes, edges) {
  const depth = new Map(nodes.map((n) => [n.transform_id, 0]));
  const inputs = new Map(nodes.map((n) => [n.transform_id, []]));
  for (const edge of edges) inputs.get(edge.target).push(edge.source);
  // Nodes come parents first, as the SDK listed them; passes settle any order (a DAG has
  // at most as many levels as nodes).
  for (let pass = 0; pass < nodes.length; pass++) {
    let changed = false;
    for (const node of nodes) {
      for (const source of inputs.get(node.transform_id)) {
        const wanted = depth.get(source) + 1;
        if (wanted > depth.get(node.transform_id)) { depth.set(node.transform_id, wanted); changed = true; }
      }
    }
    if (!changed) break;
  }
  return { depth, inputs };
}

function cut(text, most) {
  return text.length > most ? `${text.slice(0, most - 1)}…` : text;
}

function shortName(name) {
  const parts = name.split("/");
  const last = parts.pop();
  return { last: cut(last, 24), path: cut(parts.join("/"), 34) };
}

function drawGraph(container, graph) {
  const { depth, inputs } = depths(graph.nodes, graph.edges);
  const columns = [];
  for (const node of graph.nodes) {
    const column = depth.get(node.transform_id);
    (columns[column] = columns[column] || []).push(node);
  }
  const row = new Map();
  columns.forEach((column) => {
    const key = (node) => {
      const rows = inputs.get(node.transform_id).map((s) => row.get(s)).filter((r) => r !== undefined);
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
    };
    column.sort((a, b) => key(a) - key(b));
    column.forEach((node, index) => row.set(node.transform_id, index));
  });
  const position = (id) => ({
    x: MARGIN + depth.get(id) * (NODE_WIDTH + COLUMN_GAP),
    y: MARGIN + row.get(id) * (NODE_HEIGHT + ROW_GAP),
  });
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const width = MARGIN * 2 + columns.length * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP;
  const height = MARGIN * 2 + tallest * (NODE_HEIGHT + ROW_GAP) - ROW_GAP;
  const drawing = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  for (const edge of graph.edges) {
    const from = position(edge.source), to = position(edge.target);
    const x1 = from.x + NODE_WIDTH, y1 = from.y + NODE_HEIGHT / 2, x2 = to.x, y2 = to.y + NODE_HEIGHT / 2;
    const path = svg("path", { class: "edge", d: `M${x1},${y1} C${x1 + 28},${y1} ${x2 - 28},${y2} ${x2},${y2}` });
    path.dataset.pcollection = edge.pcollection_id;
    path.append(Object.assign(svg("title"), { textContent: edge.pcollection }));
    drawing.append(path);
  }
  const outputs = new Map(graph.nodes.map((n) => [n.transform_id, []]));
  for (const edge of graph.edges) {
    if (!outputs.get(edge.source).includes(edge.pcollection_id)) outputs.get(edge.source).push(edge.pcollection_id);
  }
  for (const node of graph.nodes) {
    const { x, y } = position(node.transform_id);
    const group = svg("g", { class: "node", transform: `translate(${x},${y})` });
    group.dataset.transformId = node.transform_id;
    group.dataset.name = node.name;
    group.dataset.outputs = JSON.stringify(outputs.get(node.transform_id));
    const name = shortName(node.name);
    group.append(
      svg("rect", { width: NODE_WIDTH, height: NODE_HEIGHT }),
      Object.assign(svg("text", { x: 8, y: 16, "font-weight": 600 }), { textContent: name.last }),
      Object.assign(svg("text", { x: 8, y: 32, class: "count" }), { textContent: name.path || node.urn.replace("beam:transform:", "") }),
      Object.assign(svg("title"), { textContent: `${node.name}\n${node.urn}` }),
    );
    drawing.append(group);
  }
  container.replaceChildren(drawing);
}

function annotateGraph(counts) {
  for (const group of document.querySelectorAll(".node")) {
    const outputs = JSON.parse(group.dataset.outputs || "[]").filter((id) => id in counts);
    if (!outputs.length) continue;
    const total = outputs.reduce((sum, id) => sum + Number(counts[id] || 0), 0);
    let label = group.querySelector(".elements");
    if (!label) {
      label = svg("text", { x: NODE_WIDTH - 8, y: 16, "text-anchor": "end", class: "count elements" });
      group.append(label);
    }
    label.textContent = `${total} out`;
  }
}

// The step a failed job was running (its full name), and the composites holding it: marked.
function markFailedStep(step) {
  if (!step) return;
  for (const group of document.querySelectorAll("#graph g.node")) {
    const name = group.dataset.name || "";
    group.classList.toggle("failed", name === step || name.startsWith(`${step}/`));
  }
}
