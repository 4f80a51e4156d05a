// The approvals inbox: every waiting thread, longest waiting first, polled every few
// seconds so that a thread someone else answered leaves the list. Each card shows how long it
// waited, the time left to its deadline (`approval_timeout`) and whether the deadline escalated it.

import { api } from "./api.js";
import { renderApproval } from "./approval.js";
import { age, h, showCount, showError, startPage } from "./dom.js";

const inbox = document.getElementById("inbox");
const empty = document.getElementById("inbox-empty");
const error = document.getElementById("inbox-error");
const cards = new Map();

function card(item) {
  const link = `/ui/threads/${encodeURIComponent(item.thread_id)}`;
  const waited = h("span", { class: "muted waited" });
  const left = h("span", { class: "muted time-left" });
  const flag = h("span", { class: "status status-escalated", hidden: true }, "escalated");
  const decision = h("div", { class: "decision" });
  const el = h(
    "section",
    { class: "card pending", dataset: { threadId: item.thread_id } },
    h("h2", {}, h("a", { href: link }, item.payload.plan?.goal || item.thread_id), " ", waited, " ", left, " ", flag),
    decision,
  );
  el._waited = waited;
  el._left = left;
  el._flag = flag;
  renderApproval(decision, {
    threadId: item.thread_id,
    payload: item.payload,
    onQueued: () => location.assign(link),
  });
  return el;
}

async function refresh() {
  let pending;
  try {
    pending = await api("/api/v1/approvals?limit=200");
    showError(error, null);
  } catch (e) {
    showError(error, e);
    return;
  }
  const order = [];
  for (const item of pending) {
    const key = `${item.thread_id}@${item.waiting_since}`;
    if (!cards.has(key)) cards.set(key, card(item));
    const el = cards.get(key);
    el._waited.textContent = `waiting ${age(item.waiting_s)}`;
    el._left.textContent = !item.deadline
      ? ""
      : item.time_left_s > 0
        ? `· ${age(item.time_left_s)} left (then ${item.payload.on_timeout})`
        : "· deadline passed";
    el._left.title = item.deadline ? `deadline ${new Date(item.deadline).toLocaleString()}` : "";
    el._flag.hidden = !item.escalated;
    el._flag.title = item.escalation || "";
    order.push(cards.get(key));
  }
  for (const [key, el] of cards) {
    if (!order.includes(el)) {
      cards.delete(key); // answered, here or elsewhere
      el.remove();
    }
  }
  // Moved only when out of place: moving a card would take the focus from its fields.
  order.forEach((el, i) => {
    if (inbox.children[i] !== el) inbox.insertBefore(el, inbox.children[i] || null);
  });
  empty.hidden = pending.length > 0;
  showCount(pending.length);
}

startPage({ count: false });
refresh();
setInterval(refresh, 2500);
