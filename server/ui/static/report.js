// The run report: a table per node, and a small bar chart of its tokens and latency.

import { cost, h, ms } from "./dom.js";

function chart(nodes) {
  const names = Object.keys(nodes);
  const maxTokens = Math.max(1, ...names.map((n) => nodes[n].total_tokens));
  const maxLatency = Math.max(1, ...names.map((n) => nodes[n].latency_ms));
  const label = 110;
  const bar = 200;
  const row = 30;
  const width = label + bar * 2 + 150;
  const rows = names.map((name, i) => {
    const t = nodes[name];
    const y = 24 + i * row;
    const tw = Math.max(1, (t.total_tokens / maxTokens) * bar);
    const lw = Math.max(1, (t.latency_ms / maxLatency) * bar);
    return h(
      "g",
      { transform: `translate(0,${y})` },
      h("text", { x: label - 8, y: 13, "text-anchor": "end", class: "chart-label" }, name),
      h("rect", { x: label, y: 0, width: tw, height: 8, class: "bar-tokens" }),
      h("text", { x: label + tw + 4, y: 8, class: "chart-value" }, `${t.total_tokens} tok`),
      h("rect", { x: label, y: 11, width: lw, height: 8, class: "bar-latency" }),
      h("text", { x: label + lw + 4, y: 19, class: "chart-value" }, ms(t.latency_ms)),
    );
  });
  return h(
    "svg",
    { class: "chart", viewBox: `0 0 ${width} ${30 + names.length * row}`, width, role: "img", "aria-label": "tokens and latency per node" },
    h("g", { class: "legend" },
      h("rect", { x: label, y: 4, width: 10, height: 10, class: "bar-tokens" }),
      h("text", { x: label + 14, y: 13, class: "chart-value" }, "tokens"),
      h("rect", { x: label + 70, y: 4, width: 10, height: 10, class: "bar-latency" }),
      h("text", { x: label + 84, y: 13, class: "chart-value" }, "latency"),
    ),
    ...rows,
  );
}

export function drawReport(report) {
  const nodes = report.nodes || {};
  const table = h(
    "table",
    { class: "list report" },
    h("thead", {}, h("tr", {}, ...["node", "calls", "tokens in", "tokens out", "cost", "latency", "retries"].map((c, i) => h("th", { class: i ? "num" : null }, c)))),
    h(
      "tbody",
      {},
      ...Object.entries(nodes).map(([name, t]) =>
        h("tr", {},
          h("td", {}, name),
          h("td", { class: "num" }, t.calls),
          h("td", { class: "num" }, t.input_tokens),
          h("td", { class: "num" }, t.output_tokens),
          h("td", { class: "num" }, cost(t.cost)),
          h("td", { class: "num" }, ms(t.latency_ms)),
          h("td", { class: "num" }, t.retries),
        ),
      ),
      h("tr", { class: "total" },
        h("td", {}, "total"),
        h("td", {}),
        h("td", { class: "num" }, report.input_tokens),
        h("td", { class: "num" }, report.output_tokens),
        h("td", { class: "num" }, cost(report.total_cost)),
        h("td", { class: "num" }, ms(report.latency_ms)),
        h("td", {}),
      ),
    ),
  );
  const facts = h(
    "p",
    { class: "muted" },
    `${report.total_tokens} tokens · ${report.plan_versions} plan version(s), ${report.replans} replan(s)`,
    report.budget_exhausted ? " · token budget exhausted" : "",
    (report.approvals || []).length
      ? ` · approvals: ${report.approvals.map((a) => `${a.gate} ${a.decision}${a.by ? ` by ${a.by}` : ""}${a.reason ? ` (${a.reason})` : ""}`).join(", ")}`
      : "",
  );
  const fallbacks = (report.model_fallbacks || []).map((f) =>
    h("li", {}, `${f.node}${f.step_id ? ` [${f.step_id}]` : ""}: ${f.model} → ${f.answered_by || "none"} (${f.reason}: ${f.error})`),
  );
  const taken = fallbacks.length ? h("div", { class: "muted" }, "model fallbacks:", h("ul", {}, ...fallbacks)) : null;
  return h("div", {}, facts, taken, h("div", { class: "report-grid" }, table, chart(nodes)));
}
