/**
 * The chat demo: a room's messages, who is here, and a form to post.
 *
 * Nothing is lost across reconnections: the page remembers the id of the last
 * message it has shown and reconnects with `?after=<id>`, and the server sends
 * exactly the messages after it, then the live stream. A message posted while
 * the page joins may arrive twice (in the history and live) or before the
 * history, so messages are kept by id: each is shown once, in id order, and
 * the resume point only moves once the history of the connection is in.
 */

import { el } from "./dom.js";
import { connect } from "./socket.js";

const MAX_SHOWN = 500;

const root = document.getElementById("chat");
const me = root.dataset.user;
const list = document.getElementById("chat-messages");
const presence = document.getElementById("chat-presence");
const errorLine = document.getElementById("chat-error");
const form = document.getElementById("chat-form");
const input = document.getElementById("chat-input");
const sendButton = document.getElementById("chat-send");

const shown = new Set(); // ids of the messages on the list
let lastId = null; // resume point: the highest id shown
let synced = false; // whether this connection's history has arrived
let early = []; // live messages that came before that history

function resumePath() {
  const path = root.dataset.socketUrl;
  return lastId === null ? path : `${path}?after=${lastId}`;
}

function show(message) {
  lastId = Math.max(lastId ?? 0, message.id);
  if (shown.has(message.id)) return;
  shown.add(message.id);
  const time = new Date(message.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const item = el("li", { class: message.user === me ? "message own" : "message", attrs: { "data-id": String(message.id) } }, [
    el("time", { class: "ts", text: time, attrs: { datetime: message.ts } }),
    el("span", { class: "user", text: message.user }),
    el("span", { class: "text", text: message.text }),
  ]);
  // Ids grow, so this appends, except for a message that overtook another.
  let next = null;
  for (let child = list.lastElementChild; child !== null; child = child.previousElementSibling) {
    if (Number(child.dataset.id) < message.id) break;
    next = child;
  }
  list.insertBefore(item, next);
  while (list.children.length > MAX_SHOWN) list.firstElementChild.remove();
}

function showError(text) {
  errorLine.textContent = text;
  errorLine.hidden = false;
}

const socket = connect({
  path: resumePath,
  statusElement: document.getElementById("chat-status"),
  onOpen() {
    sendButton.disabled = false;
  },
  onClose(event) {
    sendButton.disabled = true;
    synced = false;
    early = []; // they come again: the resume point did not move past them
    // 44xx: the server refused this room or nickname; retrying cannot help.
    if (event.code >= 4400 && event.code < 4500) {
      socket.close();
      showError(event.reason);
    }
  },
});

socket.onMessage("history", ({ messages, more }) => {
  for (const message of messages) show(message);
  // A long absence comes in pages: ask for the next one; live messages
  // wait until the last page is in, so the resume point never skips.
  if (more) {
    socket.sendJson({ type: "history", after: lastId });
    return;
  }
  for (const message of early) show(message);
  early = [];
  synced = true;
  lastId ??= 0; // an empty room: resume from its very first message
});

socket.onMessage("message", (message) => {
  if (synced) show(message);
  else early.push(message);
});

// Who is here: a snapshot when the connection opens, then deltas.
let here = new Set();

function showPresence() {
  const users = [...here].sort();
  presence.replaceChildren(...users.map((user) => el("li", { class: user === me ? "own" : "", text: user })));
}

socket.onMessage("presence", ({ users }) => {
  here = new Set(users);
  showPresence();
});

socket.onMessage("presence_change", ({ joined, left, count }) => {
  for (const user of joined) here.add(user);
  for (const user of left) here.delete(user);
  showPresence();
  // A change was lost (the room was briefly unreachable): ask for the list.
  if (here.size !== count) socket.sendJson({ type: "presence" });
});

socket.onMessage("error", ({ message }) => showError(message));

// The room's other servers cannot be heard for now (Redis is away) ...
socket.onMessage("unreachable", ({ message }) => showError(message));

// ... and now they can: fetch what was missed, and who is here.
socket.onMessage("resync", ({ after }) => {
  errorLine.hidden = true;
  socket.sendJson({ type: "history", after });
  socket.sendJson({ type: "presence" });
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!socket.sendJson({ type: "message", text: input.value })) return;
  errorLine.hidden = true;
  input.value = "";
  input.focus();
});
