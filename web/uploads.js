// Sending files over the chat's WebSocket, as the file contract says
// (README, "Files"): hash the file (SHA-256), `file_offer`, wait for
// `upload_ready`, then `file_chunk` headers each followed at once by one
// binary frame. Only a few chunks are in flight at a time (the server's
// `upload_progress` opens the window again), so chat lines typed meanwhile
// go out between chunks instead of queueing behind the whole file.

import { formatBytes, hex, textElement } from "./text.js";

/** Chunks sent ahead of the server's `upload_progress`. */
const WINDOW_CHUNKS = 4;
/** Wait while the socket holds more than this, so chat never queues long. */
const MAX_BUFFERED = 256 * 1024;
const NAME_MAX_BYTES = 255;

/** Why the browser cannot hash, or null when it can. */
export function hashingUnavailable() {
  if (window.isSecureContext && window.crypto?.subtle) return null;
  return "Files can only be sent from a secure page: open chorus over https://, or as http://localhost or http://127.0.0.1 (browsers compute a file's SHA-256 only there).";
}

/** A file name the server accepts: no control or bidi characters, no slashes, at most 255 bytes. */
export function cleanName(name) {
  let clean = Array.from(name || "file", (c) => (/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}/\\]/u.test(c) ? "_" : c)).join("");
  if (clean === "." || clean === ".." || !clean.trim()) clean = "file";
  const bytes = (s) => new TextEncoder().encode(s).length;
  if (bytes(clean) <= NAME_MAX_BYTES) return clean;
  const dot = clean.lastIndexOf(".");
  const ext = dot > 0 && clean.length - dot <= 16 ? clean.slice(dot) : "";
  let stem = Array.from(clean.slice(0, clean.length - ext.length));
  while (stem.length && bytes(stem.join("") + ext) > NAME_MAX_BYTES) stem.pop();
  return stem.join("") + ext;
}

export class Uploads {
  /**
   * `conn`: the Connection; `list`: the MessageList; `me()`: your name;
   * `newClientId()`; `onSent(ack)`: an upload was stored (for the seq).
   */
  constructor({ conn, list, me, newClientId, onSent }) {
    Object.assign(this, { conn, list, me, newClientId, onSent });
    /** upload_id -> upload in progress. */
    this.active = new Map();
    this.counter = 0;
  }

  /** Send `file` to the room. */
  async send(file) {
    const id = `u${++this.counter}-${Date.now().toString(36)}`;
    const name = cleanName(file.name);
    const upload = {
      id, file, name, size: file.size, sent: 0, received: 0, chunkSize: 0, bytes: null,
      clientId: this.newClientId(), state: "hashing",
    };
    upload.card = this.card(upload);
    upload.line = this.list.pending(this.me(), upload.card.root, "sending");
    const unavailable = hashingUnavailable();
    if (unavailable) return this.fail(upload, unavailable, false);
    if (!this.conn.isOpen) return this.fail(upload, "not connected; send it again once the connection is back", true);
    this.active.set(id, upload);
    this.status(upload, "computing SHA-256…");
    try {
      const buffer = await file.arrayBuffer();
      upload.bytes = new Uint8Array(buffer);
      upload.sha256 = hex(await crypto.subtle.digest("SHA-256", buffer));
    } catch (err) {
      return this.fail(upload, `could not read the file (${err.message})`, true);
    }
    if (upload.state !== "hashing") return; // cancelled or the connection dropped meanwhile
    upload.state = "offered";
    this.status(upload, "waiting for the server…");
    const offer = {
      type: "file_offer", upload_id: id, name, size: upload.size,
      media_type: file.type || "application/octet-stream", sha256: upload.sha256, client_id: upload.clientId,
    };
    if (!this.conn.send(offer)) this.fail(upload, "the connection dropped; send it again once it is back", true);
  }

  /** `upload_ready`: the server takes chunks of at most `chunk_size` bytes. */
  ready(event) {
    const upload = this.active.get(event.upload_id);
    if (!upload) return;
    upload.chunkSize = Math.max(1, Number(event.chunk_size) || 65536);
    upload.state = "sending";
    this.pump(upload);
  }

  /** `upload_progress`: the server has stored `received` bytes. */
  progress(event) {
    const upload = this.active.get(event.upload_id);
    if (!upload) return;
    upload.received = Number(event.received) || 0;
    upload.card.bar.value = upload.received;
    this.status(upload, `${formatBytes(upload.received)} of ${formatBytes(upload.size)}`);
    this.pump(upload);
  }

  /** An `ack` with `upload_id`: stored and announced. True when it was ours. */
  acked(event) {
    const upload = this.active.get(event.upload_id);
    if (!upload) return false;
    this.active.delete(upload.id);
    upload.state = "done";
    const file = {
      type: "file", name: upload.name, size: upload.size, url: event.url,
      media_type: upload.file.type || "application/octet-stream",
    };
    upload.line.setBody(this.list.fileBody(file));
    upload.line.confirm(event.seq, event.ts);
    this.onSent(event);
    return true;
  }

  /** An `error` with `upload_id`: the upload is over. True when it was ours. */
  refused(event) {
    const upload = this.active.get(event.upload_id);
    if (!upload) return false;
    this.fail(upload, `${event.message} (${event.code})`, event.code !== "file_too_large" && event.code !== "invalid_file");
    return true;
  }

  /** The connection dropped: every upload in progress is gone on the server too. */
  disconnected() {
    for (const upload of [...this.active.values()]) {
      this.fail(upload, "the connection dropped during the upload", true);
    }
  }

  cancel(upload) {
    if (!this.active.has(upload.id)) return;
    if (upload.state !== "hashing") this.conn.send({ type: "file_cancel", upload_id: upload.id });
    this.active.delete(upload.id);
    upload.state = "cancelled";
    upload.card.cancel.remove();
    upload.card.bar.hidden = true;
    this.status(upload, "");
    upload.line.fail("cancelled");
  }

  pump(upload) {
    while (upload.state === "sending" && upload.sent < upload.size) {
      if (upload.sent - upload.received >= WINDOW_CHUNKS * upload.chunkSize) return; // progress reopens it
      if (this.conn.bufferedAmount > MAX_BUFFERED) {
        clearTimeout(upload.timer);
        upload.timer = setTimeout(() => this.pump(upload), 25);
        return;
      }
      const end = Math.min(upload.size, upload.sent + upload.chunkSize);
      // The header and its bytes go out back to back: nothing can come between them.
      const sent = this.conn.send({ type: "file_chunk", upload_id: upload.id, offset: upload.sent })
        && this.conn.send(upload.bytes.subarray(upload.sent, end));
      if (!sent) return; // closed: `disconnected` fails it
      upload.sent = end;
    }
  }

  fail(upload, reason, canRetry) {
    this.active.delete(upload.id);
    clearTimeout(upload.timer);
    upload.state = "failed";
    upload.bytes = null;
    upload.card.cancel.remove();
    upload.card.bar.hidden = true;
    this.status(upload, "");
    upload.line.fail(reason, canRetry ? () => this.send(upload.file) : null);
  }

  status(upload, text) {
    upload.card.status.textContent = text;
  }

  card(upload) {
    const root = document.createElement("div");
    root.className = "upload";
    const name = textElement("div", "file-name", upload.name);
    name.append(textElement("span", "size", ` · ${formatBytes(upload.size)}`));
    const bar = document.createElement("progress");
    bar.max = Math.max(1, upload.size);
    bar.value = 0;
    bar.setAttribute("aria-label", `upload of ${upload.name}`);
    const status = document.createElement("span");
    status.className = "upload-status";
    status.setAttribute("aria-live", "polite");
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "link";
    cancel.textContent = "Cancel";
    cancel.addEventListener("click", () => this.cancel(upload));
    const row = document.createElement("div");
    row.className = "upload-row";
    row.append(bar, status, cancel);
    root.append(name, row);
    return { root, bar, status, cancel };
  }
}
