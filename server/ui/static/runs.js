// The runs list: recent threads, filterable by status, refreshed every few seconds.

import { api } from "./api.js";
import { age, badge, cost, h, showError, startPage } from "./dom.js";

const filter = document.getElementById("status-filter");
const body = document.querySelector("#runs tbody");
const empty = document.getElementById("runs-empty");
const error = document.getElementById("runs-error");

filter.value = new URLSearchParams(location.search).get("status") || "";
filter.addEventListener("change", () => {
  const url = new URL(location.href);
  if (filter.value) url.searchParams.set("status", filter.value);
  else url.searchParams.delete("status");
  history.replaceState(null, "", url);
  refresh();
});

function row(t) {
  const link = `/ui/threads/${encodeURIComponent(t.thread_id)}`;
  return h(
    "tr",
    { dataset: { threadId: t.thread_id } },
    h("td", {}, badge(t.status)),
    h("td", { class: "question" }, h("a", { href: link }, t.question || t.thread_id)),
    h("td", { class: "num" }, t.total_tokens.toLocaleString()),
    h("td", { class: "num" }, cost(t.total_cost)),
    h("td", { title: t.updated_at }, age(t.age_s)),
    h("td", {}, t.started_by || "—"),
  );
}

async function refresh() {
  const query = new URLSearchParams({ limit: "50" });
  if (filter.value) query.set("status", filter.value);
  try {
    const threads = await api(`/api/v1/threads?${query}`);
    body.replaceChildren(...threads.map(row));
    empty.hidden = threads.length > 0;
    showError(error, null);
  } catch (e) {
    showError(error, e);
  }
}

startPage();
refresh();
setInterval(refresh, 3000);
