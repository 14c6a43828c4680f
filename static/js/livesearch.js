/**
 * The live search demo: send a query, show each push of its top results.
 *
 * The server answers a search at once, then pushes again on its own
 * schedule; every push (results or error) says in `next_poll_in` how many
 * seconds until the next one, which drives the countdown, so it is right
 * however the page joined (a second tab, the same search again, a refresh).
 * "Refresh now" asks for the next poll at once; the server may refuse, and
 * says why. Results that were not in the previous push come with
 * `new: true` and are highlighted. Titles and snippets go in as text, and
 * links only if they are http(s). After a reconnect the search is sent again.
 */

import { el, formatTime, timeElement } from "./dom.js";
import { connect } from "./socket.js";

const root = document.getElementById("livesearch");
const form = document.getElementById("livesearch-form");
const queryInput = document.getElementById("livesearch-query");
const sourceSelect = document.getElementById("livesearch-source");
const submitButton = document.getElementById("livesearch-submit");
const refreshButton = document.getElementById("livesearch-refresh");
const refreshNote = document.getElementById("livesearch-refresh-note");
const updated = document.getElementById("livesearch-updated");
const countdown = document.getElementById("livesearch-countdown");
const problem = document.getElementById("livesearch-problem");
const errorText = document.getElementById("livesearch-error");
const retryText = document.getElementById("livesearch-retry");
const detail = document.getElementById("livesearch-detail");
const detailText = document.getElementById("livesearch-detail-text");
const list = document.getElementById("livesearch-results");

let following = null; // the search the server pushes to this page: {source, query}
let pending = null; // a search sent and not answered yet
let nextPushAt = null; // performance.now() when the server's next poll is due
let failing = false; // the last push was an error: the countdown is its retry
let refreshing = false; // a refresh was asked for and not answered yet

/** The query as the server keys it: trimmed, inner whitespace collapsed. */
function normalize(query) {
  return query.trim().split(/\s+/).join(" ");
}

function sameSearch(a, b) {
  return a !== null && b !== null && a.source === b.source && a.query === b.query;
}

function sourceLabel(name) {
  return sourceSelect.querySelector(`option[value="${CSS.escape(name)}"]`)?.textContent ?? name;
}

/** Seconds as people say them: "45 s", "2 min", "1 min 30 s". */
function duration(seconds) {
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  const rest = seconds % 60;
  return rest ? `${minutes} min ${rest} s` : `${minutes} min`;
}

function showProblem(message, detailMessage = "") {
  errorText.textContent = message;
  detailText.textContent = detailMessage;
  detail.hidden = !detailMessage;
  problem.hidden = !message;
  if (!message) retryText.textContent = "";
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

function renderResult(result) {
  const href = result.url ? safeHref(result.url) : null;
  const children = [
    href
      ? el("a", { class: "title", text: result.title, attrs: { href, rel: "noopener noreferrer" } })
      : el("span", { class: "title", text: result.title }),
  ];
  if (result.new) children.unshift(el("span", { class: "badge", text: "new" }));
  if (result.snippet) children.push(el("p", { class: "snippet", text: result.snippet }));
  if (result.published) children.push(timeElement(result.published, { class: "published" }));
  return el("li", { class: result.new ? "result new" : "result" }, children);
}

/**
 * Take a push if it is for the search this page wants (the one sent last,
 * else the one followed); pushes of a search left behind may still arrive.
 */
function accept(message) {
  const wanted = pending ?? following;
  if (!sameSearch(message, wanted)) return false;
  following = wanted;
  pending = null;
  refreshing = false;
  refreshNote.textContent = "";
  refreshButton.disabled = !socket.isOpen;
  const seconds = Number(message.next_poll_in);
  nextPushAt = Number.isFinite(seconds) ? performance.now() + seconds * 1000 : null;
  return true;
}

function showResults(message) {
  if (!accept(message)) return;
  failing = false;
  showProblem("");
  const count = message.results.length;
  updated.textContent =
    `${count} result${count === 1 ? "" : "s"} for “${message.query}” on ${sourceLabel(message.source)}` +
    ` at ${formatTime(message.at)}.`;
  list.replaceChildren(...message.results.map(renderResult));
  tick();
}

function showError(message) {
  if (message.refused === "refresh") {
    refreshing = false;
    refreshNote.textContent = message.message;
    tick();
    return;
  }
  if (message.refused !== undefined) {
    // The search was not run; the server goes on with the one followed.
    if (pending !== null) updated.textContent = "";
    pending = null;
    showProblem(message.message);
    return;
  }
  if (message.source !== undefined && !accept(message)) return;
  // The results shown, if any, stay: they are those of the time they say.
  if (updated.textContent === "Searching…") updated.textContent = "";
  failing = nextPushAt !== null;
  showProblem(message.message, message.detail ?? "");
  tick();
}

function tick() {
  const seconds = nextPushAt === null ? null : Math.ceil((nextPushAt - performance.now()) / 1000);
  if (failing) {
    countdown.textContent = "";
    retryText.textContent =
      seconds > 0 && !refreshing ? `; retrying in ${duration(seconds)}.` : "; retrying now…";
  } else if (refreshing || (seconds !== null && seconds <= 0)) {
    countdown.textContent = "Refreshing…";
  } else {
    countdown.textContent = seconds === null ? "" : `Next refresh in ${duration(seconds)}.`;
  }
}
setInterval(tick, 250);

const socket = connect({
  path: root.dataset.socketUrl,
  statusElement: document.getElementById("livesearch-status"),
  onOpen() {
    submitButton.disabled = false;
    // The server forgot this page's search with the old connection.
    pending = pending ?? following;
    if (pending !== null) socket.sendJson({ type: "search", ...pending });
  },
  onClose() {
    submitButton.disabled = true;
    refreshButton.disabled = true;
    nextPushAt = null;
    failing = false;
    refreshing = false;
    tick();
  },
});

socket.onMessage("results", showResults);
socket.onMessage("error", showError);

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const search = { source: sourceSelect.value, query: normalize(queryInput.value) };
  if (!socket.sendJson({ type: "search", ...search })) return;
  if (!sameSearch(search, following)) {
    // Another search: what is shown belongs to the old one.
    list.replaceChildren();
    showProblem("");
    nextPushAt = null;
    failing = false;
    refreshButton.disabled = true;
  }
  pending = search;
  refreshNote.textContent = "";
  updated.textContent = "Searching…";
  tick();
});

refreshButton.addEventListener("click", () => {
  if (!socket.sendJson({ type: "refresh" })) return;
  refreshing = true;
  refreshNote.textContent = "";
  tick();
});

sourceSelect.addEventListener("change", () => {
  if ((following !== null || pending !== null) && queryInput.value.trim()) form.requestSubmit();
});
