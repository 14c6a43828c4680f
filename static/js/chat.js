/**
 * The chat demo: a room's messages, who is here, and a form to post.
 *
 * Nothing is lost across reconnections: the page remembers the id of the last
 * message it has shown and reconnects with `?after=<id>`, and the server sends
 * exactly the messages after it, then the live stream. A message posted while
 * the page joins may arrive twice (in the history and live) or before the
 * history, so messages are kept by id: each is shown once, in id order, and
 * the resume point only moves once the history of the connection is in.
 *
 * The log behaves like a chat's: it stays on the newest message unless the
 * reader has scrolled up (then a "new messages" button takes them down), older
 * pages load at its top without moving what is on screen, days are marked
 * where they change, and joins, leaves and typing show up. What you send stays
 * in the box until the server echoes it back, so a refused message (too fast,
 * not stored) is never lost. The wire format is in docs/chat.md.
 */

import { el, timeElement } from "./dom.js";
import { connect } from "./socket.js";

const MAX_SHOWN = 500; // messages kept on the page while the reader is at the newest
const PINNED_SLACK_PX = 24; // this close to the bottom counts as reading the newest
const TYPING_SHOWN_MS = 4000; // how long "ada is typing…" stays after a notice
const TYPING_SENT_MS = 2000; // at most one typing notice sent this often
const FULL_RETRY_MS = 60_000; // a full room (4503) is tried again this much later
const DEFAULT_COOLDOWN_S = 5; // when a "slow down" says not how long

const root = document.getElementById("chat");
const me = root.dataset.user;
// Who posted a message: the server's key for this visitor, never the name
// alone (someone else may take the nickname once its holder has left).
const myKey = root.dataset.authorKey;
const mine = (message) => (message.by ? message.by === myKey : message.user === me);
const scroller = document.getElementById("chat-log");
const list = document.getElementById("chat-messages");
const olderButton = document.getElementById("chat-older");
const newButton = document.getElementById("chat-new");
const presence = document.getElementById("chat-presence");
const presenceStale = document.getElementById("chat-presence-stale");
const typingLine = document.getElementById("chat-typing");
const errorLine = document.getElementById("chat-error");
const form = document.getElementById("chat-form");
const input = document.getElementById("chat-input");
const sendButton = document.getElementById("chat-send");
const title = document.title;

const shown = new Map(); // id -> the <li> of each message on the list
const deleted = new Set(); // ids deleted by a moderator: never shown again
let lastId = null; // resume point: the highest id shown
let synced = false; // whether this connection's history has arrived
let loaded = false; // whether the page's first history has arrived
let early = []; // live messages that came before that history
let socket = null;

// Times.

/** A day as a heading in the log: "Today", "Yesterday", "Monday 3 March". */
function dayLabel(date, now = new Date()) {
  const yesterday = new Date(now);
  yesterday.setDate(now.getDate() - 1);
  if (date.toDateString() === now.toDateString()) return "Today";
  if (date.toDateString() === yesterday.toDateString()) return "Yesterday";
  const options = { weekday: "long", day: "numeric", month: "long" };
  if (date.getFullYear() !== now.getFullYear()) options.year = "numeric";
  return date.toLocaleDateString([], options);
}

// Scrolling: pinned to the newest message unless the reader scrolled up.

let unseen = 0; // messages from others that arrived below the reader's view

function atNewest() {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight <= PINNED_SLACK_PX;
}

function scrollToNewest() {
  scroller.scrollTop = scroller.scrollHeight;
  unseen = 0;
  newButton.hidden = true;
}

scroller.addEventListener("scroll", () => {
  if (atNewest()) {
    unseen = 0;
    newButton.hidden = true;
  }
});

newButton.addEventListener("click", scrollToNewest);

// The log: messages in id order, day headings and notices between them.

function resumePath() {
  const path = root.dataset.socketUrl;
  return lastId === null ? path : `${path}?after=${lastId}`;
}

function oldestId() {
  const first = list.querySelector("li[data-id]");
  return first === null ? null : Number(first.dataset.id);
}

function messageItem(message) {
  const meta = [el("span", { class: "user", text: message.user, attrs: { title: message.user } })];
  if (message.verified) {
    meta.push(
      el("span", { class: "chat-verified", text: "✓", attrs: { title: "a logged-in user: the name is theirs" } }, [
        el("span", { class: "chat-hidden", text: " verified" }),
      ]),
    );
  }
  meta.push(timeElement(message.ts, { class: "ts" }));
  const attrs = { "data-id": String(message.id), "data-day": new Date(message.ts).toDateString() };
  return el("li", { class: mine(message) ? "message own" : "message", attrs }, [
    el("span", { class: "chat-meta" }, meta),
    el("span", { class: "text", text: message.text }),
  ]);
}

/** Put a message in its place by id; false if it is not to be shown. */
function insert(message, { older }) {
  lastId = Math.max(lastId ?? 0, message.id);
  if (shown.has(message.id) || deleted.has(message.id)) return false;
  // Below the oldest one shown, only a page asked for with "Load older"
  // comes in: anything else was trimmed from the top, and that button
  // brings it back in order.
  const oldest = oldestId();
  if (!older && oldest !== null && message.id < oldest) return false;
  const item = messageItem(message);
  // Ids grow, so this appends, except for a message that overtook another
  // and for older pages.
  let next = null;
  for (let child = list.lastElementChild; child !== null; child = child.previousElementSibling) {
    if (child.dataset.id === undefined) continue;
    if (Number(child.dataset.id) < message.id) break;
    next = child;
  }
  list.insertBefore(item, next);
  shown.set(message.id, item);
  return true;
}

/** Put a day heading wherever the day changes (after any change to the log). */
function markDays() {
  for (const heading of list.querySelectorAll(".chat-day")) heading.remove();
  let previous = null;
  for (const item of [...list.children]) {
    if (item.dataset.day === previous) continue;
    previous = item.dataset.day;
    item.before(el("li", { class: "chat-day", text: dayLabel(new Date(previous)) }));
  }
}

/** Trim the top of a long log, while the reader is at the bottom. */
function trim() {
  if (shown.size <= MAX_SHOWN) return;
  while (shown.size > MAX_SHOWN) {
    const first = list.firstElementChild;
    if (first.dataset.id !== undefined) shown.delete(Number(first.dataset.id));
    first.remove();
  }
  showOlder(true);
}

/** Show messages from history or live; older pages go through showOlderPage. */
function show(messages) {
  const pinned = atNewest();
  let added = 0;
  let fromOthers = 0;
  let sentHere = false; // the echo of a post from this page
  for (const message of messages) {
    if (!insert(message, { older: false })) continue;
    added += 1;
    if (mine(message)) {
      sentHere = settle(message) || sentHere;
    } else {
      fromOthers += 1;
      stopTyping(message.user);
    }
  }
  if (added === 0) return;
  // Your own post always comes into view: you just sent it.
  const toNewest = pinned || sentHere;
  if (toNewest) trim();
  markDays();
  if (loaded) countUnread(fromOthers);
  if (toNewest) {
    scrollToNewest();
  } else if (fromOthers > 0) {
    unseen += fromOthers;
    newButton.textContent = `${unseen} new message${unseen === 1 ? "" : "s"} ↓`;
    newButton.hidden = false;
  }
}

/** Add a notice ("bob joined") at the end of the log. */
function notice(text) {
  const pinned = atNewest();
  const now = new Date();
  list.append(
    el("li", { class: "chat-notice", attrs: { "data-day": now.toDateString() } }, [
      el("span", { text }),
      timeElement(now.toISOString(), { class: "ts" }),
    ]),
  );
  markDays();
  if (pinned) scrollToNewest();
}

function remove(id) {
  deleted.add(id);
  early = early.filter((message) => message.id !== id);
  const item = shown.get(id);
  if (item === undefined) return;
  const pinned = atNewest();
  item.remove();
  shown.delete(id);
  markDays();
  if (pinned) scrollToNewest();
}

// Older pages, asked for at the top of the log.

function showOlder(more) {
  olderButton.hidden = !more;
  olderButton.disabled = false;
  olderButton.textContent = "Load older messages";
}

olderButton.addEventListener("click", () => {
  const before = oldestId();
  if (before === null || !socket.sendJson({ type: "older", before })) return;
  olderButton.disabled = true;
  olderButton.textContent = "Loading…";
});

function showOlderPage({ messages, older }) {
  // What is on screen stays put: keep the distance from the bottom.
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  for (const message of messages) insert(message, { older: true });
  markDays();
  scroller.scrollTop = scroller.scrollHeight - fromBottom;
  showOlder(older);
}

// The unread count in the tab's title while it is hidden.

let unread = 0;

function countUnread(count) {
  if (document.visibilityState !== "hidden" || count === 0) return;
  unread += count;
  document.title = `(${unread}) ${title}`;
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") return;
  unread = 0;
  document.title = title;
});

// Who is here: a snapshot when the connection opens, then deltas.

let here = new Set();
let hereKnown = false; // whether this connection's snapshot has come

function showPresence() {
  const users = [...here].sort();
  presence.replaceChildren(...users.map((user) => el("li", { class: user === me ? "own" : "", text: user })));
}

function presenceSnapshot({ users }) {
  here = new Set(users);
  hereKnown = true;
  presenceStale.hidden = true;
  showPresence();
}

function presenceChange({ joined, left, count }) {
  for (const user of joined) {
    if (here.has(user)) continue;
    here.add(user);
    if (hereKnown && user !== me) notice(`${user} joined`);
  }
  for (const user of left) {
    if (!here.has(user)) continue;
    here.delete(user);
    stopTyping(user);
    if (hereKnown && user !== me) notice(`${user} left`);
  }
  showPresence();
  // A change was lost (the room was briefly unreachable): ask for the list.
  if (here.size !== count) socket.sendJson({ type: "presence" });
}

// Typing, both ways.

const typists = new Map(); // user -> the timer that stops showing them

function showTyping() {
  const users = [...typists.keys()];
  if (users.length === 0) typingLine.textContent = "";
  else if (users.length === 1) typingLine.textContent = `${users[0]} is typing…`;
  else if (users.length === 2) typingLine.textContent = `${users[0]} and ${users[1]} are typing…`;
  else typingLine.textContent = `${users.length} people are typing…`;
}

function startTyping({ user }) {
  if (user === me) return; // your other tab, or this one
  clearTimeout(typists.get(user));
  typists.set(user, setTimeout(() => stopTyping(user), TYPING_SHOWN_MS));
  showTyping();
}

function stopTyping(user) {
  if (!typists.has(user)) return;
  clearTimeout(typists.get(user));
  typists.delete(user);
  showTyping();
}

let typingSentAt = -Infinity;

input.addEventListener("input", () => {
  const now = performance.now();
  if (input.value.trim() === "" || now - typingSentAt < TYPING_SENT_MS) return;
  if (socket.sendJson({ type: "typing" })) typingSentAt = now;
});

// Posting: the text stays in the box until the server has it.

let pending = null; // {text, sentAt, open}: the post awaiting its echo
const posted = []; // when the last few accepted posts were sent (performance.now())
let cooldownEnd = 0;
let cooldownTimer = null;

function updateSend() {
  const wait = Math.ceil((cooldownEnd - performance.now()) / 1000);
  sendButton.textContent = wait > 0 ? `Send (${wait} s)` : "Send";
  sendButton.disabled = socket === null || !socket.isOpen || wait > 0 || pending?.open === true;
}

/** The post's echo: clear what of it is still in the box. */
function settle(message) {
  if (pending === null || message.text !== pending.text) return false;
  if (input.value.startsWith(pending.text)) input.value = input.value.slice(pending.text.length).trimStart();
  posted.push(pending.sentAt);
  posted.splice(0, posted.length - 50);
  pending = null;
  updateSend();
  return true;
}

/** Seconds until the server takes posts again, from its "slow down" error. */
function cooldownFor(message) {
  const stated = /try again in (\d+) s\b/.exec(message);
  if (stated !== null) return Number(stated[1]);
  // "at most 10 messages every 10 seconds" on this connection: count from
  // the oldest of the last 10 posts, as the server does.
  const window = /at most (\d+) messages every ([\d.]+) seconds/.exec(message);
  if (window !== null && posted.length >= Number(window[1])) {
    const since = posted[posted.length - Number(window[1])];
    const wait = (since + Number(window[2]) * 1000 - performance.now()) / 1000;
    if (wait > 0) return Math.ceil(wait + 0.25);
  }
  return DEFAULT_COOLDOWN_S;
}

function startCooldown(seconds) {
  cooldownEnd = performance.now() + seconds * 1000;
  clearInterval(cooldownTimer);
  cooldownTimer = setInterval(() => {
    updateSend();
    if (performance.now() < cooldownEnd) return;
    clearInterval(cooldownTimer);
    if (errorLine.dataset.kind === "slow") errorLine.hidden = true;
  }, 250);
  updateSend();
}

function refused({ message, stored }) {
  const slow = message.startsWith("slow down");
  showError(message, slow ? "slow" : "");
  if (slow) startCooldown(cooldownFor(message));
  if (pending?.open !== true) return;
  // Not stored: it can be sent again, so it is in the box; stored: it is
  // in the room (its echo clears the box, or has).
  if (!stored && input.value === "") input.value = pending.text;
  if (stored && input.value === pending.text) input.value = "";
  pending = null;
  updateSend();
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (sendButton.disabled) return;
  const text = input.value;
  if (!socket.sendJson({ type: "message", text })) return;
  pending = { text, sentAt: performance.now(), open: true };
  errorLine.hidden = true;
  updateSend();
  input.focus();
});

// Errors and notices.

function showError(text, kind = "") {
  errorLine.textContent = text;
  errorLine.dataset.kind = kind;
  errorLine.hidden = false;
}

// The connection.

const handlers = {
  history({ messages, more, older }) {
    show(messages);
    if (older !== undefined) showOlder(older);
    // A long absence comes in pages: ask for the next one; live messages
    // wait until the last page is in, so the resume point never skips.
    if (more) {
      socket.sendJson({ type: "history", after: lastId });
      return;
    }
    show(early);
    early = [];
    synced = true;
    loaded = true;
    lastId ??= 0; // an empty room: resume from its very first message
  },
  message(message) {
    if (synced) show([message]);
    else early.push(message);
  },
  older: showOlderPage,
  deleted: ({ id }) => remove(id),
  presence: presenceSnapshot,
  presence_change: presenceChange,
  typing: startTyping,
  error: refused,
  // The room's other servers cannot be heard for now (Redis is away) ...
  unreachable: ({ message }) => showError(message, "unreachable"),
  // ... and now they can: fetch what was missed, and who is here.
  resync({ after }) {
    if (errorLine.dataset.kind === "unreachable") errorLine.hidden = true;
    socket.sendJson({ type: "history", after });
    socket.sendJson({ type: "presence" });
  },
};

function away() {
  synced = false;
  early = []; // they come again: the resume point did not move past them
  if (pending !== null) pending.open = false; // its echo may still come in the history
  // Who is here is not known until the next snapshot.
  here = new Set();
  hereKnown = false;
  showPresence();
  presenceStale.hidden = false;
  for (const user of [...typists.keys()]) stopTyping(user);
  if (olderButton.disabled) showOlder(true); // its answer is not coming
}

function join() {
  socket = connect({
    path: resumePath,
    statusElement: document.getElementById("chat-status"),
    onOpen() {
      if (errorLine.dataset.kind === "full") errorLine.hidden = true;
      updateSend();
    },
    onClose(event) {
      away();
      if (event.code === 4503) {
        // The room is full: waiting helps, but not hammering it.
        socket.close();
        showError(`${event.reason} (the page tries again in a minute)`, "full");
        setTimeout(join, FULL_RETRY_MS);
      } else if (event.code >= 4400 && event.code < 4500) {
        // 44xx: the server refused this room or nickname; retrying cannot help.
        socket.close();
        showError(event.reason, "refused");
      }
      updateSend();
    },
  });
  for (const [type, handler] of Object.entries(handlers)) socket.onMessage(type, handler);
}

join();
