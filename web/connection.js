// One WebSocket to the server that comes back by itself: after a close it
// waits a jittered, exponentially growing delay (0.5-1 s, then 1-2 s, 2-4 s,
// ... up to 15-30 s) and connects again, until `stop()`. Text frames are
// decoded as JSON events; a `binary` event is handed over together with the
// binary frame that follows it.

const BASE_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
/** A connection that lasted this long starts the backoff over. */
const STABLE_MS = 10000;

export class Connection {
  /**
   * `url()`: where to connect (asked again at every attempt);
   * `onOpen()`, `onEvent(event, bytes?)`, `onClose({code, reason, opened,
   * lasted})` (call `stop()` from it to stay closed), `onRetry({attempt,
   * delay})`: a reconnect is scheduled.
   */
  constructor({ url, onOpen, onEvent, onClose, onRetry }) {
    Object.assign(this, { url, onOpen, onEvent, onClose, onRetry });
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    /** A `binary` event waiting for its frame. */
    this.binaryEvent = null;
    window.addEventListener("online", () => this.retryNow());
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Bytes queued by `send` and not yet handed to the network. */
  get bufferedAmount() {
    return this.ws ? this.ws.bufferedAmount : 0;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  /** Close (if open) and do not reconnect until `start()`. */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.ws) this.ws.close(1000, "bye");
  }

  /** Skip the wait of a scheduled reconnect. */
  retryNow() {
    if (this.stopped || this.timer === null) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.open();
  }

  /** Send an event object, a string or bytes; false when not connected. */
  send(data) {
    if (!this.isOpen) return false;
    this.ws.send(typeof data === "object" && !(data instanceof ArrayBuffer) && !ArrayBuffer.isView(data)
      ? JSON.stringify(data)
      : data);
    return true;
  }

  open() {
    const ws = new WebSocket(this.url());
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.binaryEvent = null;
    let openedAt = 0;
    ws.onopen = () => {
      openedAt = Date.now();
      this.onOpen();
    };
    ws.onmessage = (message) => this.receive(message.data);
    ws.onclose = (close) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const lasted = openedAt ? Date.now() - openedAt : 0;
      if (lasted >= STABLE_MS) this.attempt = 0;
      this.onClose({ code: close.code, reason: close.reason, opened: openedAt !== 0, lasted });
      if (!this.stopped) this.schedule();
    };
  }

  receive(data) {
    if (typeof data !== "string") {
      const event = this.binaryEvent;
      this.binaryEvent = null;
      if (event) this.onEvent(event, new Uint8Array(data));
      return;
    }
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return; // the server only sends JSON; anything else is not for us
    }
    if (event.type === "binary" && event.data === undefined) {
      this.binaryEvent = event;
      return;
    }
    this.onEvent(event);
  }

  schedule() {
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempt);
    const delay = Math.round(ceiling * (0.5 + Math.random() / 2));
    this.attempt++;
    this.onRetry({ attempt: this.attempt, delay });
    this.timer = setTimeout(() => {
      this.timer = null;
      this.open();
    }, delay);
  }
}
