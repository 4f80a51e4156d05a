// A pending approval to judge: approve, reject with a reason, or edit the plan in a
// structured editor. The decision is queued as a background run of the thread; the API
// validates an edited plan as every plan is validated, and its errors are shown next to
// the field they are about.

import { api } from "./api.js";
import { h, showError } from "./dom.js";

const KINDS = ["reasoning", "rag", "tool"];

function stepRow(step) {
  const row = h(
    "div",
    { class: "step-row" },
    h("label", {}, "id", h("input", { name: "id", value: step.id, size: 6 }), h("span", { class: "field-error", "data-for": "id" })),
    h(
      "label",
      {},
      "kind",
      h("select", { name: "kind" }, ...KINDS.map((k) => h("option", { selected: k === step.kind }, k))),
      h("span", { class: "field-error", "data-for": "kind" }),
    ),
    h(
      "label",
      { class: "grow" },
      "instruction",
      h("textarea", { name: "instruction", rows: 2 }, step.instruction),
      h("span", { class: "field-error", "data-for": "instruction" }),
    ),
    h(
      "label",
      {},
      "depends on",
      h("input", { name: "depends_on", value: step.depends_on.join(", "), size: 8, placeholder: "ids, comma-separated" }),
      h("span", { class: "field-error", "data-for": "depends_on" }),
    ),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "requires_approval", checked: step.requires_approval }), "needs approval"),
    h("button", { type: "button", class: "link remove", onclick: () => row.remove(), title: "remove this step" }, "remove"),
    h("span", { class: "field-error row-error", "data-for": "" }),
  );
  row._extra = Object.fromEntries(Object.entries(step).filter(([k]) => ["agent", "tools", "pattern", "members"].includes(k)));
  return row;
}

function readPlan(editor, goal) {
  return {
    goal: editor.querySelector("[name=goal]").value || goal,
    steps: [...editor.querySelectorAll(".step-row")].map((row) => ({
      id: row.querySelector("[name=id]").value.trim(),
      kind: row.querySelector("[name=kind]").value,
      instruction: row.querySelector("[name=instruction]").value.trim(),
      depends_on: row.querySelector("[name=depends_on]").value.split(",").map((d) => d.trim()).filter(Boolean),
      requires_approval: row.querySelector("[name=requires_approval]").checked,
      ...row._extra,
    })),
  };
}

/** Show each problem of a 422 next to its field; return what could not be placed. */
function placeErrors(editor, detail) {
  const rows = [...editor.querySelectorAll(".step-row")];
  const unplaced = [];
  for (const { loc = [], msg } of detail) {
    const at = loc.indexOf("steps");
    const row = at >= 0 && typeof loc[at + 1] === "number" ? rows[loc[at + 1]] : null;
    const field = row ? loc[at + 2] ?? "" : null;
    const span = row?.querySelector(`.field-error[data-for="${field}"]`) || row?.querySelector(".row-error");
    if (span) {
      span.textContent = span.textContent ? `${span.textContent}; ${msg}` : msg;
      span.closest("label")?.classList.add("invalid");
    } else unplaced.push(msg);
  }
  return unplaced;
}

/**
 * Render the decision panel for `payload` (the interrupt's) into `container`; `onQueued(run)`
 * is called with the background run that carries the decision.
 */
export function renderApproval(container, { threadId, payload, onQueued }) {
  const error = h("p", { class: "error", hidden: true });
  const reason = h("input", { name: "reason", placeholder: "reason (for a rejection)", class: "grow" });
  const plan = payload.plan;
  const editable = payload.gate === "plan" && plan;
  const editor = editable
    ? h(
        "form",
        { class: "plan-editor", hidden: true, onsubmit: (e) => e.preventDefault() },
        h("label", { class: "wide" }, "goal", h("input", { name: "goal", value: plan.goal })),
        h("div", { class: "steps" }, ...plan.steps.map(stepRow)),
        h("button", {
          type: "button",
          class: "link",
          onclick: () => {
            const steps = editor.querySelector(".steps");
            steps.append(stepRow({ id: `s${steps.children.length + 1}`, kind: "reasoning", instruction: "", depends_on: [], requires_approval: false }));
          },
        }, "+ add a step"),
        h("div", { class: "actions" },
          h("button", { type: "button", class: "primary", onclick: () => decide("edit") }, "Run the edited plan"),
          h("button", { type: "button", onclick: () => editing(false) }, "Cancel"),
        ),
      )
    : null;
  const summary = h(
    "ol",
    { class: "plan-summary" },
    ...(plan?.steps || []).map((s) =>
      h("li", {}, h("code", {}, s.id), ` ${s.kind}`, s.depends_on.length ? ` ← ${s.depends_on.join(", ")}` : "", s.requires_approval ? " ⚑" : "", h("div", {}, s.instruction)),
    ),
  );
  const buttons = h(
    "div",
    { class: "actions" },
    h("button", { type: "button", class: "primary", onclick: () => decide("approve") }, "Approve"),
    reason,
    h("button", { type: "button", class: "danger", onclick: () => decide("reject") }, "Reject"),
    editable ? h("button", { type: "button", onclick: () => editing(true) }, "Edit the plan") : null,
  );

  function editing(on) {
    editor.hidden = !on;
    summary.hidden = on;
    buttons.hidden = on;
  }

  async function decide(decision) {
    for (const span of container.querySelectorAll(".field-error")) span.textContent = "";
    for (const label of container.querySelectorAll(".invalid")) label.classList.remove("invalid");
    showError(error, null);
    const resume = { decision };
    if (decision === "reject") resume.reason = reason.value.trim() || null;
    if (decision === "edit") resume.plan = readPlan(editor, plan.goal);
    for (const b of container.querySelectorAll("button")) b.disabled = true;
    try {
      const run = await api(`/api/v1/threads/${encodeURIComponent(threadId)}/runs`, { method: "POST", body: { resume } });
      container.dataset.answered = decision;
      onQueued(run);
    } catch (e) {
      for (const b of container.querySelectorAll("button")) b.disabled = false;
      const detail = e.body?.detail;
      if (!editor || !detail) {
        showError(error, e);
        return;
      }
      const unplaced = placeErrors(editor, detail);
      showError(error, new Error(unplaced.length ? unplaced.join("; ") : "The edited plan is invalid: see the marked fields."));
    }
  }

  const parts = [
    h("p", {}, h("strong", {}, payload.gate === "final" ? "Approve the answer" : "Approve the plan"), ` — ${payload.reason}`),
    payload.risk ? h("p", { class: "muted" }, `risk: ${payload.risk}`) : null,
    payload.deadline
      ? h("p", { class: "muted deadline" }, `deadline: ${new Date(payload.deadline).toLocaleString()}, then ${payload.on_timeout}${payload.low_risk ? " (low-risk gate)" : ""}`)
      : null,
    payload.answer ? h("blockquote", { class: "answer" }, payload.answer) : null,
    summary,
    editor,
    buttons,
    error,
  ];
  container.replaceChildren(...parts.filter(Boolean));
}
