// The plan as a graph: steps in layers by depth (a step sits right of what it depends on),
// drawn as inline SVG and coloured by each step's status.

import { h } from "./dom.js";

const W = 190;
const H = 58;
const GAP_X = 56;
const GAP_Y = 18;
const PAD = 8;

/** Depth of each step: 0 without dependencies, else one more than its deepest dependency. */
export function depths(steps) {
  const byId = new Map(steps.map((s) => [s.id, s]));
  const depth = new Map();
  const visit = (id, seen) => {
    if (depth.has(id)) return depth.get(id);
    const step = byId.get(id);
    if (!step || seen.has(id)) return -1; // unknown or a cycle: drawn at the start
    seen.add(id);
    const d = 1 + Math.max(-1, ...step.depends_on.map((dep) => visit(dep, seen)));
    depth.set(id, d);
    return d;
  };
  for (const s of steps) visit(s.id, new Set());
  return depth;
}

function clip(text, size) {
  return text.length > size ? `${text.slice(0, size - 1)}…` : text;
}

/** An SVG of the plan; `statusOf(id)` names each step's status (pending, running, done, …). */
export function drawPlan(plan, statusOf) {
  const steps = plan?.steps || [];
  const depth = depths(steps);
  const layers = [];
  for (const s of steps) (layers[depth.get(s.id)] ||= []).push(s);
  const at = new Map();
  layers.forEach((layer, x) =>
    layer.forEach((s, y) => at.set(s.id, { x: PAD + x * (W + GAP_X), y: PAD + y * (H + GAP_Y) })),
  );
  const width = PAD * 2 + layers.length * W + Math.max(0, layers.length - 1) * GAP_X;
  const tallest = Math.max(1, ...layers.map((l) => l.length));
  const height = PAD * 2 + tallest * H + (tallest - 1) * GAP_Y;
  const edges = [];
  for (const s of steps) {
    for (const dep of s.depends_on) {
      const from = at.get(dep);
      const to = at.get(s.id);
      if (!from || !to) continue;
      const x1 = from.x + W;
      const y1 = from.y + H / 2;
      const x2 = to.x - 4;
      const y2 = to.y + H / 2;
      const mid = (x1 + x2) / 2;
      edges.push(
        h("path", {
          class: "edge",
          d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`,
          "marker-end": "url(#arrow)",
        }),
      );
    }
  }
  const nodes = steps.map((s) => {
    const { x, y } = at.get(s.id);
    const status = statusOf(s.id);
    return h(
      "g",
      { class: `node node-${status.replace(" ", "-")}`, transform: `translate(${x},${y})`, dataset: { stepId: s.id } },
      h("title", {}, `${s.id} (${s.kind}, ${status}): ${s.instruction}`),
      h("rect", { width: W, height: H, rx: 8 }),
      h("text", { x: 10, y: 20, class: "node-id" }, `${s.id} · ${s.kind}${s.requires_approval ? " ⚑" : ""}`),
      h("text", { x: W - 10, y: 20, class: "node-status", "text-anchor": "end" }, status),
      h("text", { x: 10, y: 42, class: "node-text" }, clip(s.instruction, 28)),
    );
  });
  return h(
    "svg",
    {
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-label": `plan of ${steps.length} steps`,
    },
    h(
      "defs",
      {},
      h(
        "marker",
        { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
        h("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }),
      ),
    ),
    ...edges,
    ...nodes,
  );
}
