// One thread: its plan as a graph, each step's tokens as they stream, results with their
// citations, the critic's verdict, the run report and the plan's history. It follows the
// thread's background runs live (their event streams) and polls while anything else runs.

import { ApiError, api, follow } from "./api.js";
import { renderApproval } from "./approval.js";
import { badge, h, ms, showError, sleep, startPage } from "./dom.js";
import { drawPlan } from "./dag.js";
import { drawReport } from "./report.js";

const root = document.getElementById("thread");
const threadId = root.dataset.threadId;
const base = `/api/v1/threads/${encodeURIComponent(threadId)}`;
const $ = (id) => document.getElementById(id);

const view = {
  status: "queued",
  question: null,
  plan: null,
  history: new Map(), // version → plan revision
  results: new Map(), // step id → step result
  running: new Set(), // step ids handed to a worker and not finished
  live: new Map(), // step id → text streamed so far
  passages: new Map(), // chunk id → retrieved chunk text
  liveAnswer: "",
  critique: null,
  critic: null, // the critic's handoff reason, until the thread says more
  answer: null,
  citations: [],
  report: null,
  pending: null,
  pendingKey: null,
  error: null,
};

function absorb(doc) {
  view.status = doc.status;
  view.question = doc.request;
  view.plan = doc.plan;
  view.history = new Map(doc.plan_history.map((r) => [r.version, r]));
  view.results = new Map(doc.results.map((r) => [r.step_id, r]));
  if (doc.status !== "running") view.running.clear();
  view.critique = doc.critique;
  view.answer = doc.answer;
  view.citations = doc.citations;
  view.report = doc.report;
  view.pending = doc.pending_approval;
  view.pendingKey = doc.pending_approval ? doc.checkpoint_id : null;
}

const CLOSING = ["interrupt", "final", "error", "metadata"];

function apply(name, event) {
  if (!CLOSING.includes(name) && view.status !== "running") {
    view.status = "running"; // the run has started: whatever the thread said before is past
    view.pending = null;
  }
  switch (name) {
    case "plan_update":
      view.history.set(event.version, event);
      view.plan = event.plan;
      view.pending = null;
      break;
    case "handoff":
      if (event.source === "dispatch" && event.step_id) {
        view.running.add(event.step_id);
        view.results.delete(event.step_id);
        view.live.set(event.step_id, "");
      } else if (event.source === "critic") {
        view.critic = event.reason;
      }
      break;
    case "delta":
      if (event.step_id) {
        view.live.set(event.step_id, (view.live.get(event.step_id) || "") + event.text);
        appendLive(event.step_id, event.text);
        return; // a token: only its text changes
      }
      view.liveAnswer += event.text;
      break;
    case "retrieval":
      for (const p of event.passages || []) view.passages.set(p.chunk_id, p);
      return;
    case "fallback":
      // A model failed part-way: its streamed text is no part of the answer.
      if (!event.discard) return;
      if (event.step_id) view.live.set(event.step_id, "");
      else view.liveAnswer = "";
      break;
    case "step_result":
      view.results.set(event.result.step_id, event.result);
      view.running.delete(event.result.step_id);
      break;
    case "interrupt":
      view.status = "interrupted";
      view.pending = event.payload;
      break;
    case "final":
      view.status = event.status;
      view.answer = event.answer;
      view.citations = event.citations;
      view.report = event.report;
      view.running.clear();
      break;
    case "error":
      view.error = event.message;
      break;
    default:
      return;
  }
  render();
}

const ENDED = ["done", "failed", "rejected"];

function statusOf(id) {
  const result = view.results.get(id);
  if (result) return result.status;
  if (view.running.has(id)) return "running";
  return ENDED.includes(view.status) ? "not run" : "pending";
}

function appendLive(stepId, text) {
  const out = document.querySelector(`[data-step-output="${CSS.escape(stepId)}"]`);
  if (out) {
    out.textContent += text;
    out.closest(".step")?.classList.add("streaming");
  } else render();
}

function citationList(citations) {
  if (!citations?.length) return null;
  return h(
    "ul",
    { class: "citations" },
    ...citations.map((c) =>
      h(
        "li",
        {},
        h(
          "details",
          {},
          h("summary", {}, h("code", {}, c.chunk_id), ` ${c.source}`, h("span", { class: "muted" }, ` score ${Number(c.score).toFixed(3)}`)),
          h("blockquote", { class: "quote" }, c.quote),
          view.passages.get(c.chunk_id) && view.passages.get(c.chunk_id).text !== c.quote
            ? h("details", { class: "chunk" }, h("summary", {}, "whole chunk"), h("p", {}, view.passages.get(c.chunk_id).text))
            : null,
        ),
      ),
    ),
  );
}

function stepPanel(step) {
  const result = view.results.get(step.id);
  const status = statusOf(step.id);
  const text = result ? result.output : view.live.get(step.id) || "";
  return h(
    "section",
    { class: `step step-${status.replace(" ", "-")}`, dataset: { stepId: step.id } },
    h(
      "header",
      {},
      h("code", {}, step.id),
      ` ${step.kind} `,
      badge(status),
      result
        ? h("span", { class: "muted" }, ` ${result.usage.input_tokens + result.usage.output_tokens} tok · ${ms(result.latency_ms)} · ${result.attempts} attempt(s)`)
        : null,
    ),
    h("p", { class: "instruction" }, step.instruction),
    h("pre", { class: "output", dataset: { stepOutput: step.id } }, text),
    result?.error ? h("p", { class: "error" }, result.error) : null,
    citationList(result?.citations),
  );
}

function render() {
  $("t-status").replaceChildren(badge(view.status));
  $("t-question").textContent = view.question || (view.plan ? view.plan.goal : "");
  showError($("t-error"), view.error ? new Error(view.error) : null);
  const latest = Math.max(0, ...view.history.keys());
  $("t-plan-version").textContent = latest ? `v${latest}` : "";
  $("t-dag").replaceChildren(view.plan ? drawPlan(view.plan, statusOf) : h("p", { class: "muted" }, "no plan yet"));
  $("t-steps").replaceChildren(...(view.plan?.steps || []).map(stepPanel));

  const answer = view.answer || view.liveAnswer;
  $("t-answer-card").hidden = !answer;
  $("t-answer").textContent = answer || "";
  $("t-citations").replaceChildren(citationList(view.citations) || "");

  const critique = view.critique;
  $("t-critic-card").hidden = !critique && !view.critic;
  $("t-critic").replaceChildren(
    critique
      ? h(
          "p",
          {},
          h("strong", { class: `verdict verdict-${critique.verdict}` }, critique.verdict),
          ` — ${critique.reason}`,
          h("span", { class: "muted" }, ` · coverage ${Math.round(critique.coverage * 100)}%`, critique.grounding != null ? ` · grounding ${critique.grounding.toFixed(2)}` : ""),
          critique.feedback ? h("div", { class: "muted" }, critique.feedback) : null,
        )
      : h("p", {}, view.critic || ""),
  );

  $("t-report-card").hidden = !view.report;
  $("t-report").replaceChildren(view.report ? drawReport(view.report) : "");
  $("t-report-note").textContent = ENDED.includes(view.status) ? "" : "so far";

  const revisions = [...view.history.values()].sort((a, b) => b.version - a.version);
  $("t-history-card").hidden = revisions.length === 0;
  $("t-history").replaceChildren(
    ...revisions.map((r) =>
      h(
        "details",
        { class: "revision", open: r.version === latest && revisions.length > 1 ? true : null },
        h("summary", {}, `v${r.version} (${r.source}) — ${r.reason}`, r.fallback_reason ? h("span", { class: "error" }, ` fallback: ${r.fallback_reason}`) : null),
        h("div", { class: "dag small" }, drawPlan(r.plan, () => "plan")),
      ),
    ),
  );
  renderPending();
}

let shownPending = null;

function renderPending() {
  const box = $("t-approval");
  const key = view.pending ? view.pendingKey || JSON.stringify(view.pending.plan) : null;
  box.hidden = !view.pending;
  if (key === shownPending) return; // keep what a person is typing
  shownPending = key;
  if (view.pending) {
    renderApproval(box, { threadId, payload: view.pending, onQueued: (run) => watchRun(run) });
  } else box.replaceChildren();
}

let following = false;

async function followRun(run) {
  following = true;
  $("t-live").textContent = `· following run ${run.run_id}`;
  try {
    await follow(run.stream_url, (name, data) => apply(name, data));
  } finally {
    following = false;
    $("t-live").textContent = "";
  }
}

function watchRun(run) {
  view.pending = null;
  view.status = "running";
  render();
  if (!following) followRun(run).then(load);
}

async function latestRun() {
  const runs = await api(`${base}/runs?limit=1`);
  return runs[0];
}

async function load() {
  try {
    absorb(await api(base));
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e;
  }
  render();
}

async function watch() {
  for (;;) {
    if (following) {
      await sleep(1000); // a stream started on this page brings the news
      continue;
    }
    try {
      await load();
      const run = await latestRun();
      if (run && (run.status === "queued" || run.status === "running")) {
        await followRun(run);
        continue;
      }
      if (view.status === "running" || view.status === "queued") await sleep(1500);
      else if (view.status === "interrupted") await sleep(3000); // someone else may answer
      else return;
    } catch (e) {
      view.error = e.message;
      render();
      await sleep(3000);
    }
  }
}

startPage();
watch();
