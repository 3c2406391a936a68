// The message list of the room on screen. Messages are kept in `seq`
// order whatever order they arrive in (live, from history, after a gap),
// each seq at most once; your own lines wait at the bottom until the server
// acknowledges them, then take their place. Consecutive messages from one
// sender within five minutes are grouped under one name.

import { appendVisible, formatBytes, formatTime, hexPreview, textElement } from "./text.js";

const GROUP_MS = 5 * 60 * 1000;
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"]);

/** What an own line's state says, for the eye and for screen readers. */
const STATE_LABELS = {
  sending: "sending…",
  unsent: "not sent yet: it goes out when the connection is back",
  unconfirmed: "not confirmed yet: the connection dropped before the server answered",
  failed: "not sent",
  confirmed: "",
};

export class MessageList {
  /**
   * `list`: the `<ol>`; `fileUrl(url)`: the address to fetch a file from
   * (adds the sign-in token), `null` for a url that is not a file of this
   * server.
   */
  constructor(list, { fileUrl }) {
    this.list = list;
    this.fileUrl = fileUrl;
    this.reset("");
  }

  /** Empty the list for `room`. */
  reset(room) {
    // Own lines still waiting stay when the same room is shown again.
    const waiting = room === this.room
      ? Array.from(this.list.children).filter((el) => el.classList.contains("msg") && !el.dataset.seq)
      : [];
    this.room = room;
    this.list.replaceChildren(...waiting);
    this.epoch = 0;
    /** seq -> element, for this epoch. */
    this.bySeq = new Map();
  }

  /** The server forgot the room's history (a restart without storage): seqs start over. */
  newEpoch() {
    this.epoch++;
    this.bySeq = new Map();
  }

  has(seq) {
    return this.bySeq.has(seq);
  }

  /** The highest seq shown, 0 for none. */
  get maxSeq() {
    let max = 0;
    for (const seq of this.bySeq.keys()) max = Math.max(max, seq);
    return max;
  }

  /** The lowest seq shown, 0 for none. */
  get minSeq() {
    let min = 0;
    for (const seq of this.bySeq.keys()) min = min === 0 ? seq : Math.min(min, seq);
    return min;
  }

  /**
   * Show a `chat`, `binary` (with `payload`: its bytes) or `file` event.
   * Returns the element, or null when that seq is already shown.
   */
  add(event, { own = false, payload = null } = {}) {
    if (this.bySeq.has(event.seq)) return null;
    const item = this.messageItem(event.from, event.ts, own);
    item.body.append(this.content(event, payload));
    this.place(item.el, event.seq);
    return item.el;
  }

  /** An own line that has no seq yet; returns a handle to confirm or fail it. */
  pending(from, content, state) {
    const item = this.messageItem(from, new Date().toISOString(), true);
    item.body.append(content);
    const handle = new OwnLine(this, item.el);
    handle.setState(state);
    this.place(item.el, null);
    return handle;
  }

  /** The body of a chat line (for own lines). */
  chatBody(text) {
    return textElement("div", "text", text);
  }

  /** The body of a binary message. */
  binaryBody(bytes, size = bytes.length) {
    const div = document.createElement("div");
    div.className = "binary";
    div.append(textElement("span", "tag", "binary"), ` ${formatBytes(size)} `);
    const code = document.createElement("code");
    code.textContent = hexPreview(bytes);
    code.setAttribute("aria-label", `starts with bytes ${hexPreview(bytes, 8)}`);
    div.append(code);
    return div;
  }

  /** The body of a `file` event: an image inline, anything else a download link. */
  fileBody(file) {
    const href = this.fileUrl(file.url);
    const size = formatBytes(file.size);
    if (href && IMAGE_TYPES.has(file.media_type)) {
      const figure = document.createElement("figure");
      figure.className = "file image";
      const link = document.createElement("a");
      link.href = href;
      link.target = "_blank";
      link.rel = "noopener";
      const img = document.createElement("img");
      img.src = href;
      img.alt = file.name;
      img.loading = "lazy";
      link.append(img);
      const caption = textElement("figcaption", "", file.name);
      caption.append(textElement("span", "size", ` · ${size}`));
      figure.append(link, caption);
      return figure;
    }
    const div = document.createElement("div");
    div.className = "file";
    const name = href ? document.createElement("a") : document.createElement("span");
    if (href) {
      name.href = href;
      name.download = file.name;
    }
    name.className = "file-name";
    appendVisible(name, file.name);
    div.append(fileIcon(), name, textElement("span", "size", size));
    name.setAttribute("aria-label", `download ${file.name}, ${size}`);
    return div;
  }

  content(event, payload) {
    if (event.type === "chat") return this.chatBody(event.text);
    if (event.type === "file") return this.fileBody(event);
    return this.binaryBody(payload ?? new Uint8Array(), event.bytes ?? payload?.length ?? 0);
  }

  /** A quiet line: joins, leaves, renames, and what the client itself says. */
  notice(text, { kind = "notice", ts = null } = {}) {
    const li = textElement("li", `notice ${kind}`, text);
    if (ts) {
      const time = formatTime(ts);
      li.title = time.long;
    }
    const stick = this.atBottom();
    this.list.insertBefore(li, this.firstTrailingPending());
    this.regroup(li.nextElementSibling);
    if (stick) this.scrollToBottom();
    return li;
  }

  messageItem(from, ts, own) {
    const el = document.createElement("li");
    el.className = own ? "msg own" : "msg";
    el.dataset.from = from;
    el.dataset.ts = ts;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.append(textElement("span", "from", from));
    const time = formatTime(ts);
    const timeEl = document.createElement("time");
    timeEl.dateTime = ts;
    timeEl.textContent = time.short;
    timeEl.title = time.long;
    meta.append(timeEl);
    const body = document.createElement("div");
    body.className = "body";
    el.append(meta, body);
    return { el, body };
  }

  /** Put `el` where its seq belongs (`null`: an own line without one yet, at the bottom). */
  place(el, seq) {
    const stick = this.atBottom();
    const scroller = this.list.parentElement;
    const height = scroller.scrollHeight;
    const before = el.previousElementSibling;
    const after = el.nextElementSibling;
    el.remove();
    if (seq === null) {
      this.list.append(el);
    } else {
      el.dataset.seq = String(seq);
      el.dataset.epoch = String(this.epoch);
      this.bySeq.set(seq, el);
      this.list.insertBefore(el, this.firstAfter(seq) ?? this.firstTrailingPending());
    }
    for (const touched of [before, after, el, el.nextElementSibling]) if (touched) this.regroup(touched);
    if (stick) this.scrollToBottom();
    else if (el.offsetTop < scroller.scrollTop) scroller.scrollTop += scroller.scrollHeight - height; // keep the reader's place
  }

  /** The first element of this epoch with a higher seq. */
  firstAfter(seq) {
    let found = null;
    for (const [other, el] of this.bySeq) {
      if (other > seq && el.isConnected && (!found || other < Number(found.dataset.seq))) found = el;
    }
    return found;
  }

  /** The first of the own lines still on their way at the bottom, or null. */
  firstTrailingPending() {
    let first = null;
    for (let el = this.list.lastElementChild; el && waiting(el); el = el.previousElementSibling) first = el;
    return first;
  }

  /**
   * Group `el` under the line before it when both are from one sender
   * within five minutes. A line whose state has something to say (sending,
   * not sent, failed) always shows its own header, where that is said.
   */
  regroup(el) {
    if (!el || !el.classList.contains("msg")) return;
    const prev = el.previousElementSibling;
    const quiet = (line) => !line.dataset.state || line.dataset.state === "confirmed";
    const same = prev && prev.classList.contains("msg") && prev.dataset.from === el.dataset.from
      && quiet(el) && quiet(prev) && Math.abs(Date.parse(el.dataset.ts) - Date.parse(prev.dataset.ts)) < GROUP_MS;
    el.classList.toggle("cont", Boolean(same));
  }

  atBottom() {
    const scroller = this.list.parentElement;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  }

  scrollToBottom() {
    const scroller = this.list.parentElement;
    scroller.scrollTop = scroller.scrollHeight;
  }
}

/** An own line on its way: sending, unsent, unconfirmed, failed, then confirmed. */
export class OwnLine {
  constructor(list, el) {
    this.list = list;
    this.room = list.room;
    this.el = el;
    this.status = document.createElement("span");
    this.status.className = "state";
    el.querySelector(".meta").append(this.status);
  }

  setState(state, detail = "") {
    this.el.dataset.state = state;
    const label = STATE_LABELS[state] + (detail ? `: ${detail}` : "");
    this.status.textContent = label;
    this.status.hidden = !label;
    this.list.regroup(this.el);
  }

  /** The server stored it as `seq`. */
  confirm(seq, ts) {
    this.setState("confirmed");
    if (ts) {
      this.el.dataset.ts = ts;
      const time = this.el.querySelector("time");
      time.dateTime = ts;
      time.textContent = formatTime(ts).short;
      time.title = formatTime(ts).long;
    }
    if (this.list.room !== this.room) return; // sent in a room no longer on screen
    const shown = this.list.bySeq.get(seq);
    if (shown) {
      // Already on screen (found in history after a reconnect): keep that one.
      shown.classList.add("own");
      this.el.remove();
    } else {
      this.list.place(this.el, seq);
    }
  }

  /** Refused: say why, and offer `retry()` (the line is removed first) when given. */
  fail(reason, retry = null) {
    this.setState("failed", reason);
    if (retry && !this.el.querySelector("button.retry")) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "retry link";
      button.textContent = "Send again";
      button.addEventListener("click", () => {
        this.el.remove();
        retry();
      });
      this.status.after(button);
    }
  }

  /** Replace the body (an upload becoming the file it sent). */
  setBody(node) {
    this.el.querySelector(".body").replaceChildren(node);
  }
}

/** An own line still on its way (a failed one stays where it is, like a notice). */
function waiting(el) {
  return el.classList.contains("msg") && !el.dataset.seq && el.dataset.state !== "failed";
}

function fileIcon() {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.classList.add("icon");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", "M6 2h8l6 6v14H6zM14 2v6h6");
  svg.append(path);
  return svg;
}
