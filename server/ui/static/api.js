// Talking to the JSON and SSE API with the caller's API key (asked for once, on a 401).

const KEY = "agentgraph.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

let asking = null;

/** Ask for an API key in the page's dialog; resolves once one is entered. */
function askForKey(message) {
  if (asking) return asking;
  const dialog = document.getElementById("key-dialog");
  const error = document.getElementById("key-error");
  error.hidden = !message;
  error.textContent = message || "";
  asking = new Promise((resolve) => {
    const form = document.getElementById("key-form");
    form.addEventListener(
      "submit",
      () => {
        sessionStorage.setItem(KEY, document.getElementById("key-input").value.trim());
        asking = null;
        resolve();
      },
      { once: true },
    );
  });
  dialog.addEventListener("cancel", (event) => event.preventDefault());
  dialog.showModal();
  return asking;
}

/** fetch with the key; a 401 asks for a key and tries again. */
async function send(path, init = {}) {
  for (;;) {
    const response = await fetch(path, { ...init, headers: headers(init.headers) });
    if (response.status !== 401) return response;
    const body = await response.json().catch(() => null);
    const hadKey = Boolean(sessionStorage.getItem(KEY));
    sessionStorage.removeItem(KEY);
    await askForKey(hadKey ? (body && body.message) || "that key was refused" : "");
  }
}

/** Call a JSON route; resolves to its body, or throws ApiError. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "Content-Type": "application/json" };
  }
  const response = await send(path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** Parse the server-sent events of a response body, calling onEvent(name, data, id). */
async function readEvents(response, onEvent, signal) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let lastId = null;
  signal?.addEventListener("abort", () => reader.cancel().catch(() => {}));
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return lastId;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      let id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const [field, ...rest] = line.split(":");
        const text = rest.join(":").replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
        else if (field === "id") id = text;
      }
      if (id !== null) lastId = id;
      if (data.length) onEvent(name, JSON.parse(data.join("\n")), id);
    }
  }
}

/**
 * Follow an event stream to its end (GET, or POST with a body). A dropped connection is
 * picked up again after the last event seen (Last-Event-ID), as EventSource would.
 */
export async function follow(path, onEvent, { method = "GET", body, signal } = {}) {
  let lastId = null;
  for (let attempt = 0; attempt < 5; attempt++) {
    const init = { method, signal, headers: { Accept: "text/event-stream" } };
    if (lastId) init.headers["Last-Event-ID"] = lastId;
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await send(path, init);
    } catch (error) {
      if (signal?.aborted) return;
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    try {
      lastId = (await readEvents(response, onEvent, signal)) ?? lastId;
      return;
    } catch (error) {
      if (signal?.aborted) return;
      if (method !== "GET") throw error; // only a GET stream can be joined again
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

/** Who the page acts as, for the header: set once a key works. */
export function showWho() {
  const key = sessionStorage.getItem(KEY);
  const who = document.getElementById("who");
  if (!who) return;
  who.textContent = key ? `key ${key.split("_")[1] || ""}` : "";
  if (key) {
    const out = document.createElement("button");
    out.textContent = "forget key";
    out.className = "link";
    out.addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      location.reload();
    });
    who.append(" ", out);
  }
}
