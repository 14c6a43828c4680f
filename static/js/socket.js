/**
 * The shared WebSocket client, and the only module that touches `WebSocket`.
 *
 * `connect({path, statusElement, onOpen, onClose, onRawMessage})` opens a
 * socket to `path` on this page's host (`wss:` under https, `ws:` otherwise),
 * reconnects with capped exponential backoff and jitter, and mirrors its state
 * on `statusElement`: `data-state="connecting|open|closed"` and a short text.
 * `path` may be a function, called before each attempt, for a URL that changes
 * between reconnections (the chat resumes with `?after=<last id>`).
 *
 * Messages are JSON objects with a `type` field, dispatched to the handlers
 * registered with `onMessage(type, handler)`; a message nobody handles is
 * noted on the status element's `data-note` and title, never on the console.
 * Pass `onRawMessage` to receive every message as is instead (the echo demo).
 */

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;

/** Build the socket URL for a server-rendered path, on this page's scheme and host. */
export function socketUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/** Open a reconnecting socket; see the module comment for the options. */
export function connect(options) {
  return new Socket(options);
}

export class Socket {
  #path;
  #status;
  #onOpen;
  #onClose;
  #onRawMessage;
  #handlers = new Map();
  #ws = null;
  #attempt = 0; // failed attempts since the last open, for the backoff
  #reconnectTimer = null;
  #countdownTimer = null;
  #stopped = false;

  constructor({ path, statusElement = null, onOpen, onClose, onRawMessage } = {}) {
    if (!path) throw new Error("connect() needs a path, e.g. from data-socket-url");
    this.#path = typeof path === "function" ? path : () => path;
    this.#status = statusElement;
    this.#onOpen = onOpen ?? (() => {});
    this.#onClose = onClose ?? (() => {});
    this.#onRawMessage = onRawMessage ?? null;
    this.#open();
  }

  /** True while messages can be sent. */
  get isOpen() {
    return this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
  }

  /** Send a text message; returns false, sending nothing, unless connected. */
  send(text) {
    if (!this.isOpen) return false;
    this.#ws.send(text);
    return true;
  }

  /** Send a value as a JSON text message; returns false unless connected. */
  sendJson(value) {
    return this.send(JSON.stringify(value));
  }

  /** Call `handler(message)` for each JSON message whose `type` is `type`. */
  onMessage(type, handler) {
    this.#handlers.set(type, handler);
    return this;
  }

  /** Close for good: no reconnecting after this. */
  close() {
    this.#stopped = true;
    this.#clearTimers();
    if (this.#ws !== null) this.#ws.close(1000);
    this.#show("closed", "disconnected");
  }

  #open() {
    this.#show("connecting", "connecting…");
    const ws = new WebSocket(socketUrl(this.#path()));
    this.#ws = ws;
    ws.addEventListener("open", () => {
      this.#attempt = 0;
      this.#show("open", "connected");
      this.#onOpen();
    });
    ws.addEventListener("message", (event) => this.#receive(event.data));
    ws.addEventListener("close", (event) => {
      if (this.#ws === ws) this.#closed(event);
    });
  }

  #closed(event) {
    this.#ws = null;
    this.#onClose(event);
    if (this.#stopped) return;
    // Equal jitter: half the capped exponential delay, plus up to as much
    // again at random, so clients dropped together do not return together.
    const cap = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.#attempt);
    const delay = cap / 2 + (Math.random() * cap) / 2;
    this.#attempt += 1;
    const due = performance.now() + delay;
    const countdown = () => {
      const seconds = Math.max(1, Math.ceil((due - performance.now()) / 1000));
      this.#show("closed", `disconnected — reconnecting in ${seconds}s`);
    };
    countdown();
    this.#countdownTimer = setInterval(countdown, 250);
    this.#reconnectTimer = setTimeout(() => {
      this.#clearTimers();
      this.#open();
    }, delay);
  }

  #receive(data) {
    if (this.#onRawMessage !== null) {
      this.#onRawMessage(data);
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this.#note("ignored a message that is not JSON");
      return;
    }
    const handler = this.#handlers.get(message?.type);
    if (handler) handler(message);
    else this.#note(`ignored a message of unknown type ${JSON.stringify(message?.type)}`);
  }

  #clearTimers() {
    clearTimeout(this.#reconnectTimer);
    clearInterval(this.#countdownTimer);
  }

  #show(state, text) {
    if (this.#status === null) return;
    this.#status.dataset.state = state;
    this.#status.textContent = text;
  }

  #note(text) {
    if (this.#status === null) return;
    this.#status.dataset.note = text;
    this.#status.title = text;
  }
}
