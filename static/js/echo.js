/**
 * The echo demo: send plain text, log each echo with its round-trip time.
 *
 * The server answers messages in order, so the send times wait in a FIFO and
 * each echo takes the oldest one.
 */

import { el } from "./dom.js";
import { connect } from "./socket.js";

const MAX_LOG_ENTRIES = 100;

const root = document.getElementById("echo");
const form = document.getElementById("echo-form");
const input = document.getElementById("echo-input");
const sendButton = document.getElementById("echo-send");
const log = document.getElementById("echo-log");

const sentAt = []; // performance.now() of each message awaiting its echo, oldest first

function addEntry(direction, text, latency = "") {
  log.append(
    el("li", { class: direction }, [
      el("span", { class: "direction", text: direction === "sent" ? "→" : "←" }),
      el("span", { class: "text", text }),
      el("span", { class: "latency", text: latency }),
    ]),
  );
  while (log.children.length > MAX_LOG_ENTRIES) log.firstElementChild.remove();
}

const socket = connect({
  path: root.dataset.socketUrl,
  statusElement: document.getElementById("echo-status"),
  onOpen() {
    sendButton.disabled = false;
  },
  onClose() {
    sendButton.disabled = true;
    sentAt.length = 0; // echoes of these will never come
  },
  onRawMessage(data) {
    const started = sentAt.shift();
    const latency = started === undefined ? "" : `${(performance.now() - started).toFixed(1)} ms`;
    addEntry("received", typeof data === "string" ? data : "(binary message)", latency);
  },
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value;
  const started = performance.now();
  if (!socket.send(text)) return;
  sentAt.push(started);
  addEntry("sent", text);
  input.value = "";
  input.focus();
});
