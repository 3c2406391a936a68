// Keeping the room on screen complete: its last messages on entering it,
// what was missed after a reconnect (from the last seq seen), the ranges a
// `gap` announces, and older pages on request; every message once, in seq
// order. While a fetch that must come first is in flight, live events of
// the room are held, then shown after it (as the terminal client's
// src/client/recovery.rs does).

import { fromBase64 } from "./text.js";

/** Messages shown on entering a room. */
export const ENTRY_LIMIT = 50;
/** The most messages one `history` request asks for. */
const PAGE = 500;

/** Why a `left` happened, in words. */
const LEFT_REASONS = {
  quit: "left", lost: "lost the connection", moved: "went to another room", timeout: "timed out",
  slow: "could not keep up", shutdown: "left (server restarting)", expired: "left (sign-in expired)",
  rate_limited: "was disconnected for sending too fast",
};

/**
 * `history` requests in flight. The server answers a connection's requests
 * in order, so answers (and refusals) match requests first in, first out.
 */
export class Fetches {
  constructor(send) {
    this.send = send;
    this.queue = [];
  }

  /** Send a `history` request; false when not connected. */
  ask(purpose, params) {
    if (!this.send({ type: "history", ...params })) return false;
    this.queue.push(purpose);
    return true;
  }

  /** The purpose of the request this answer (or refusal) is for. */
  answered() {
    return this.queue.shift() ?? null;
  }

  /** The connection is gone, and with it every answer still due. */
  reset() {
    this.queue = [];
  }
}

export class RoomSync {
  /**
   * `list`: the MessageList; `fetches`: Fetches; `isOwn(event)`;
   * `ownLine(client_id)`: this page's own line waiting for that id, or null;
   * `onSeen(room, seq)`; `onCaughtUp()`: the room is complete after entering
   * or reconnecting; `onEarlier(bool)`: whether older messages exist.
   */
  constructor(hooks) {
    Object.assign(this, hooks);
    this.room = "";
    /** Bumped whenever answers still due stop mattering (a new room, a lost connection). */
    this.gen = 0;
    /** Fetches that must land before live events are shown. */
    this.blocking = 0;
    this.held = [];
    /** The highest seq seen in this room; null until the entry answer came. */
    this.baseline = null;
    /** The server said it keeps no history. */
    this.historyOff = false;
  }

  /** Show `room` from scratch: its last messages, then what arrives live. */
  enter(room) {
    this.restart();
    this.room = room;
    this.baseline = null;
    this.list.reset(room);
    this.onEarlier(false);
    if (this.historyOff) {
      this.baseline = 0;
      this.onCaughtUp();
      return;
    }
    this.block({ kind: "entry" }, { room, limit: ENTRY_LIMIT });
  }

  /**
   * A new connection is in `room`: fill what was missed, or start over.
   * `ownSince`: own lines the server may have stored without confirming
   * have seqs above this (null: none), so the fetch starts there at the latest.
   */
  reconnected(room, ownSince = null) {
    if (room !== this.room || this.baseline === null) return this.enter(room);
    this.restart();
    if (this.historyOff) {
      this.list.notice("Reconnected. This server keeps no history, so messages sent while you were away cannot be shown.");
      this.onCaughtUp();
      return;
    }
    this.block({ kind: "probe", since: this.baseline, from: Math.min(this.baseline, ownSince ?? this.baseline) }, { room, limit: 1 });
  }

  /** The connection dropped: answers due will never come; show what was held. */
  disconnected() {
    this.gen++;
    this.blocking = 0;
    this.release();
  }

  /** A live room event. */
  live(event, payload = null) {
    if (event.room !== this.room) return;
    if (this.blocking > 0) this.held.push([event, payload]);
    else this.show(event, payload);
  }

  /** `gap`: this connection missed `from_seq..=to_seq`; fetch them before going on. */
  gap(event) {
    if (event.room !== this.room || this.historyOff) {
      if (event.room === this.room) this.list.notice(`You fell behind and missed ${event.to_seq - event.from_seq + 1} messages; this server keeps no history to fetch them from.`, { kind: "warning" });
      return;
    }
    const since = event.from_seq - 1;
    this.fill({ kind: "fill", reason: "gap", since, upTo: event.to_seq, got: 0 }, since);
  }

  /**
   * Show up to `limit` messages before the oldest on screen, or (`latest`)
   * the room's last `limit` messages, those not on screen yet.
   */
  older(limit, latest = false) {
    if (this.historyOff) {
      this.list.notice("This server keeps no history.");
      return;
    }
    const before = this.list.minSeq;
    const params = before && !latest ? { room: this.room, before_seq: before, limit } : { room: this.room, limit };
    this.fetches.ask({ kind: "older", gen: this.gen, room: this.room, limit, latest }, params);
  }

  /** A `history` answer for one of our requests. */
  answer(purpose, event) {
    if (purpose.gen !== this.gen || purpose.room !== this.room) return;
    const messages = Array.isArray(event.messages) ? event.messages : [];
    if (purpose.kind === "entry") {
      for (const message of messages) this.showStored(message);
      this.baseline = Math.max(this.baseline ?? 0, messages.at(-1)?.seq ?? 0);
      this.onEarlier(this.list.minSeq > 1);
      this.unblock();
      this.onCaughtUp();
    } else if (purpose.kind === "probe") {
      this.probed(purpose.since, purpose.from, messages.at(-1)?.seq ?? 0);
    } else if (purpose.kind === "fill") {
      this.filled(purpose, messages);
    } else if (purpose.kind === "older") {
      let shown = 0;
      for (const message of messages) if (this.showStored(message) === "new") shown++;
      this.onEarlier(this.list.minSeq > 1 && (messages.length > 0 || purpose.latest));
      const none = purpose.latest ? `The last ${purpose.limit} messages are all on screen.` : "No earlier messages.";
      this.list.notice(shown ? `${shown} earlier message${shown === 1 ? "" : "s"} loaded.` : none);
    }
  }

  /** A `history` request of ours was refused (`unsupported`, `history_failed`). */
  refused(purpose, code, message) {
    if (code === "unsupported") this.historyOff = true;
    if (purpose.gen !== this.gen || purpose.room !== this.room) return;
    const why = code === "unsupported" ? "this server keeps no history" : `the history could not be read (${message})`;
    if (purpose.kind === "entry") {
      this.baseline = 0;
      this.list.notice(`No earlier messages: ${why}.`);
    } else if (purpose.kind === "older") {
      this.list.notice(`No earlier messages: ${why}.`);
      return;
    } else {
      this.list.notice(`Messages you missed cannot be shown: ${why}.`, { kind: "warning" });
    }
    this.unblock();
    if (purpose.kind !== "fill" || purpose.reason === "resume") this.onCaughtUp();
  }

  // --- internals

  restart() {
    this.gen++;
    this.blocking = 0;
    this.held = [];
  }

  block(purpose, params) {
    purpose.gen = this.gen;
    purpose.room = this.room;
    if (this.fetches.ask(purpose, params)) this.blocking++;
  }

  fill(purpose, after) {
    this.block(purpose, { room: this.room, after_seq: after, before_seq: purpose.upTo + 1, limit: PAGE });
  }

  /**
   * The room's latest seq after a reconnect: anything newer than what we
   * saw (`since`) is fetched, from `from` (<= since, for own lines to check).
   */
  probed(since, from, latest) {
    if (latest < since) {
      // The server lost its history (a restart without storage): seqs start again.
      this.list.newEpoch();
      this.baseline = 0;
      this.list.notice("The server restarted without keeping its history: earlier messages cannot be fetched, and numbering starts over.", { kind: "warning" });
      since = 0;
      from = 0;
    }
    if (latest === since && from === since) {
      this.list.notice("Reconnected. You missed nothing.");
      this.unblock();
      this.onCaughtUp();
      return;
    }
    this.fill({ kind: "fill", reason: "resume", since: from, upTo: latest, got: 0 }, from);
    this.unblock(); // the probe itself; the fill still blocks
  }

  filled(purpose, messages) {
    for (const message of messages) {
      if (message.seq > purpose.since && this.showStored(message) === "new") purpose.got++;
    }
    const last = messages.at(-1)?.seq ?? purpose.upTo;
    if (messages.length > 0 && last < purpose.upTo) {
      this.fill({ ...purpose }, last); // the next page
      this.unblock();
      return;
    }
    let present = 0;
    for (const seq of this.list.bySeq.keys()) if (seq > purpose.since && seq <= purpose.upTo) present++;
    const lost = Math.max(0, purpose.upTo - purpose.since - present);
    const got = purpose.got;
    const plural = got === 1 ? "message" : "messages";
    let text;
    if (purpose.reason === "resume") {
      text = got ? `Reconnected. ${got} ${plural} you missed ${got === 1 ? "is" : "are"} shown above.` : "Reconnected. You missed nothing.";
    } else {
      text = got ? `You fell behind; ${got} missed ${plural} ${got === 1 ? "was" : "were"} filled in.` : "";
    }
    if (lost) text += ` ${lost} ${lost === 1 ? "message is" : "messages are"} no longer in the history and cannot be shown.`;
    if (text.trim()) this.list.notice(text.trim(), { kind: lost ? "warning" : "notice" });
    this.unblock();
    if (purpose.reason === "resume") this.onCaughtUp();
  }

  unblock() {
    this.blocking = Math.max(0, this.blocking - 1);
    if (this.blocking === 0) this.release();
  }

  release() {
    const held = this.held;
    this.held = [];
    for (const [event, payload] of held) this.show(event, payload);
  }

  /** A message from a `history` answer (a binary's bytes are in `data`). */
  showStored(message) {
    const payload = message.type === "binary" && typeof message.data === "string" ? fromBase64(message.data) : null;
    return this.show({ ...message, room: this.room }, payload);
  }

  /** Show one event; "new", "own" (an own line confirmed), "dup" or "notice". */
  show(event, payload) {
    if (event.type === "chat" || event.type === "binary" || event.type === "file") {
      if (typeof event.seq !== "number") return "dup";
      const line = event.client_id ? this.ownLine(event.client_id) : null;
      if (line) {
        line.confirm(event.seq, event.ts);
        this.seen(event.seq);
        return "own";
      }
      const shown = this.list.add(event, { own: this.isOwn(event), payload });
      this.seen(event.seq);
      return shown ? "new" : "dup";
    }
    const text = this.describe(event);
    if (text) this.list.notice(text, { ts: event.ts });
    return "notice";
  }

  seen(seq) {
    this.baseline = Math.max(this.baseline ?? 0, seq);
    this.onSeen(this.room, this.baseline);
  }

  describe(event) {
    const me = this.isOwn(event);
    if (event.type === "joined") return me ? `You joined #${event.room}.` : `${event.username} joined.`;
    if (event.type === "left") return me ? "" : `${event.username} ${LEFT_REASONS[event.reason] ?? `left (${event.reason})`}.`;
    if (event.type === "renamed") return me ? `You are now ${event.new}.` : `${event.old} is now ${event.new}.`;
    return "";
  }
}
