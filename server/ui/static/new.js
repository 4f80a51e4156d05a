// Start a run in the background, then watch it live on its thread's page.

import { api } from "./api.js";
import { showError, startPage } from "./dom.js";

const form = document.getElementById("new-run");
const error = document.getElementById("new-error");
const NUMBERS = ["max_replans", "token_budget", "max_steps", "max_output_tokens"];

function body() {
  const data = new FormData(form);
  const out = {};
  for (const [name, value] of data.entries()) {
    const text = String(value).trim();
    if (!text || name === "approve_final") continue;
    if (NUMBERS.includes(name)) out[name] = Number(text);
    else if (name === "documents") out[name] = text === "true";
    else out[name] = text;
  }
  if (data.get("approve_final")) out.approve_final = true;
  return out;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  for (const span of form.querySelectorAll(".field-error")) span.textContent = "";
  showError(error, null);
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const run = await api("/api/v1/runs", { method: "POST", body: body() });
    location.assign(`/ui/threads/${encodeURIComponent(run.thread_id)}?run=${run.run_id}`);
  } catch (e) {
    button.disabled = false;
    const unplaced = [];
    for (const problem of e.body?.detail || []) {
      const field = (problem.loc || []).filter((p) => p !== "body")[0];
      const span = form.querySelector(`.field-error[data-for="${field}"]`);
      if (span) span.textContent = problem.msg;
      else unplaced.push(problem.msg);
    }
    showError(error, unplaced.length || !e.body?.detail ? new Error(unplaced.join("; ") || e.message) : null);
  }
});

startPage();
