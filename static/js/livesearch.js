/**
 * The live search demo: send a query, show each push of its top results.
 *
 * The server answers a search at once, then pushes again every interval
 * (`data-interval`, in seconds, drives the countdown). Results that were not
 * in the previous push come with `new: true` and are highlighted. Titles and
 * snippets go in as text, and links only if they are http(s). After a
 * reconnect the current search is sent again.
 */

import { el } from "./dom.js";
import { connect } from "./socket.js";

const root = document.getElementById("livesearch");
const form = document.getElementById("livesearch-form");
const queryInput = document.getElementById("livesearch-query");
const sourceSelect = document.getElementById("livesearch-source");
const submitButton = document.getElementById("livesearch-submit");
const updated = document.getElementById("livesearch-updated");
const countdown = document.getElementById("livesearch-countdown");
const errorBox = document.getElementById("livesearch-error");
const list = document.getElementById("livesearch-results");

const intervalMs = Number(root.dataset.interval) * 1000;

let current = null; // the search being followed, resent after a reconnect
let nextPushAt = null; // performance.now() when the next push is due

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = !message;
}

/** The link of a result if it is http(s); a URL from the network must not run code. */
function safeHref(url) {
  try {
    const parsed = new URL(url, location.href);
    return ["http:", "https:"].includes(parsed.protocol) ? parsed.href : null;
  } catch {
    return null;
  }
}

function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function renderResult(result) {
  const href = result.url ? safeHref(result.url) : null;
  const children = [
    href
      ? el("a", { class: "title", text: result.title, attrs: { href, rel: "noopener noreferrer" } })
      : el("span", { class: "title", text: result.title }),
  ];
  if (result.new) children.unshift(el("span", { class: "badge", text: "new" }));
  if (result.snippet) children.push(el("p", { class: "snippet", text: result.snippet }));
  if (result.published) {
    children.push(
      el("time", { class: "published", text: formatTime(result.published), attrs: { datetime: result.published } }),
    );
  }
  return el("li", { class: result.new ? "result new" : "result" }, children);
}

function showResults(message) {
  showError("");
  const label = sourceSelect.querySelector(`option[value="${CSS.escape(message.source)}"]`)?.textContent;
  const count = message.results.length;
  updated.textContent =
    `${count} result${count === 1 ? "" : "s"} for “${message.query}” on ${label ?? message.source}` +
    ` at ${new Date(message.at).toLocaleTimeString()}.`;
  list.replaceChildren(...message.results.map(renderResult));
  nextPushAt = performance.now() + intervalMs;
  tick();
}

function tick() {
  if (nextPushAt === null) {
    countdown.textContent = "";
    return;
  }
  const seconds = Math.ceil((nextPushAt - performance.now()) / 1000);
  countdown.textContent = seconds > 0 ? `Next refresh in ${seconds} s.` : "Refreshing…";
}
setInterval(tick, 250);

const socket = connect({
  path: root.dataset.socketUrl,
  statusElement: document.getElementById("livesearch-status"),
  onOpen() {
    submitButton.disabled = false;
    if (current !== null) socket.sendJson(current);
  },
  onClose() {
    submitButton.disabled = true;
    nextPushAt = null;
    tick();
  },
});

socket.onMessage("results", showResults);
socket.onMessage("error", (message) => {
  showError(message.message);
  nextPushAt = null; // the message says when the server retries
  tick();
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const search = { type: "search", query: queryInput.value, source: sourceSelect.value };
  if (!socket.sendJson(search)) return;
  current = search;
  updated.textContent = "Searching…";
});

sourceSelect.addEventListener("change", () => {
  if (current !== null && queryInput.value.trim()) form.requestSubmit();
});
