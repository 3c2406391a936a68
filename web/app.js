// The chorus web client: wires the connection, the room on screen, the
// side panels, the composer, uploads and sign-in together. The protocol is
// README.md's "Wire protocol v1"; everything from the network reaches the
// page as text (see text.js), never as HTML.

import { accountsEnabled, forgetToken, keepToken, serverUp, signIn, storedToken } from "./auth.js";
import { HELP, parseCommand } from "./commands.js";
import { Connection } from "./connection.js";
import { MessageList } from "./messages.js";
import { People, RoomList } from "./sidebars.js";
import { Fetches, RoomSync } from "./sync.js";
import { Uploads } from "./uploads.js";

const NAME_KEY = "chorus.name";
const ROOM_KEY = "chorus.room";
const ROOMS_EVERY_MS = 15000;
const NAME_ERRORS = new Set(["invalid_name", "name_taken", "name_reserved", "name_locked"]);
const ROOM_ERRORS = new Set(["invalid_room", "too_many_rooms"]);

const $ = (id) => document.getElementById(id);

const state = {
  /** Whether the server has accounts (null: not known yet). */
  accounts: null,
  token: null,
  /** The account signed in on this connection, or null for a guest. */
  account: null,
  me: { user_id: "", username: "" },
  room: localStorage.getItem(ROOM_KEY) || "lobby",
  welcomed: false,
  everWelcomed: false,
  /** The room is complete (entered or caught up): new lines can go straight out. */
  ready: false,
  /** `{name, attempt}`: the remembered name, sent after `welcome`, until answered. */
  restoring: null,
  /** client_id -> {line, text, room}: own chat lines not acknowledged yet, in order. */
  own: new Map(),
  /** Own binary messages waiting for their ack (acks without client_id, in order). */
  binaries: [],
  asked: { who: 0, rooms: 0 },
  /** `history` is off on this server: no unread counts. */
  noHistory: false,
  /** The server answered HTTP but refused the WebSocket handshake. */
  refused: false,
};

const pageId = Math.random().toString(36).slice(2, 8);
let clientIds = 0;
const newClientId = () => `w${pageId}-${++clientIds}`;

const conn = new Connection({ url: socketUrl, onOpen, onEvent, onClose, onRetry });
const list = new MessageList($("messages"), { fileUrl });
const fetches = new Fetches((frame) => conn.send(frame));
const sync = new RoomSync({
  list,
  fetches,
  isOwn: (event) => event.user_id === state.me.user_id || (event.from !== undefined && event.from === state.me.username),
  ownLine: (clientId) => takeOwn(clientId)?.line ?? null,
  onSeen: (room, seq) => rooms.seen(room, seq),
  onCaughtUp: caughtUp,
  onEarlier: (more) => { $("load-earlier").hidden = !more; },
});
const rooms = new RoomList($("room-list"), { onSelect: (room) => join(room) });
const people = new People($("people"), [$("people-count"), $("people-count-top")]);
const uploads = new Uploads({
  conn,
  list,
  me: () => state.me.username,
  newClientId,
  onSent: (ack) => sync.seen(ack.seq),
});

// --- connecting

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const params = new URLSearchParams();
  if (state.room !== "lobby") params.set("room", state.room);
  if (state.token) params.set("token", state.token);
  const query = params.toString();
  return `${scheme}://${location.host}/${query ? `?${query}` : ""}`;
}

function onOpen() {
  setStatus("connecting", "Connected, joining…");
}

function onClose({ code, reason, opened }) {
  const wasWelcomed = state.welcomed;
  state.welcomed = false;
  state.ready = false;
  fetches.reset();
  sync.disconnected();
  uploads.disconnected();
  for (const entry of state.own.values()) {
    if (entry.line.el.dataset.state === "sending") entry.line.setState("unconfirmed");
  }
  for (const { line, bytes } of state.binaries.splice(0)) {
    line.fail("the connection dropped before the server confirmed it", () => sendBinary(bytes));
  }
  if (code === 1008 && /expired/i.test(reason) && state.token) {
    conn.stop();
    dropToken("Your sign-in expired. Sign in again to go on.");
    return;
  }
  if (wasWelcomed) {
    const why = code === 1001 ? "the server is restarting" : reason || `code ${code}`;
    list.notice(`Disconnected (${why}).`, { kind: "warning" });
  }
  if (!opened) refusedOrDown();
}

/** A handshake that never opened: the server is down, or it refused us. */
async function refusedOrDown() {
  if (!(await serverUp()) || conn.stopped) return;
  if (state.room !== "lobby") {
    state.room = "lobby"; // the remembered room may no longer be allowed: try the lobby
    return;
  }
  if (state.accounts === null) state.accounts = await accountsEnabled();
  if (!state.accounts) {
    // Up, yet the handshake failed: too many connections from here, or this origin is not allowed.
    state.refused = true;
    return;
  }
  conn.stop();
  if (state.token) {
    dropToken("Your sign-in is no longer valid. Sign in again, or go on as a guest if this server allows guests.");
  } else {
    showSignIn("This server needs an account: sign in, or create one.", false);
  }
}

function onRetry({ attempt, delay }) {
  const at = Date.now() + delay;
  const tick = () => {
    const left = Math.max(0, Math.ceil((at - Date.now()) / 1000));
    const why = state.refused
      ? "The server is up but refused the connection (too many connections from here, or this page's origin is not allowed)."
      : "Connection lost.";
    const text = `${why} Reconnecting in ${left} s (attempt ${attempt})…`;
    // The status is a live region: it changes once per attempt, not every second.
    setStatus("reconnecting", "Reconnecting…", attempt);
    showBanner(`${text} What you type now is sent once it is back.`);
  };
  clearInterval(onRetry.timer);
  tick();
  onRetry.timer = setInterval(() => (Date.now() < at + 500 ? tick() : clearInterval(onRetry.timer)), 1000);
}

function onEvent(event, payload) {
  switch (event.type) {
    case "welcome": return welcome(event);
    case "chat": case "file": return sync.live(event);
    case "binary": return sync.live(event, payload);
    case "ack": return acked(event);
    case "joined": return joined(event);
    case "left":
      people.left(event);
      sync.live(event);
      return refreshRoomsSoon();
    case "renamed": return renamed(event);
    case "who": return who(event);
    case "rooms": return roomsListed(event);
    case "history": return historyAnswer(event);
    case "gap": return sync.gap(event);
    case "upload_ready": return uploads.ready(event);
    case "upload_progress": return uploads.progress(event);
    case "error": return refused(event);
    default: return undefined; // newer servers may say more; nothing to do with it
  }
}

function welcome(event) {
  clearInterval(onRetry.timer);
  hideBanner();
  state.refused = false;
  state.welcomed = true;
  state.me = { user_id: event.user_id, username: event.username };
  state.account = state.token ? event.username : null;
  state.room = event.room;
  setStatus("connected", "Connected");
  showIdentity();
  restoreName(0);
  rooms.setCurrent(event.room);
  people.clear(event.room);
  showRoom(event.room);
  if (state.everWelcomed) sync.reconnected(event.room, unconfirmedSince(event.room));
  else sync.enter(event.room);
  state.everWelcomed = true;
  conn.send({ type: "who" });
  conn.send({ type: "rooms" });
}

/**
 * Take back the name this browser remembers. Right after a reconnect the
 * server may still hold it for the connection that was lost (until its
 * keepalive gives up), so a refusal is tried again a few times.
 */
function restoreName(attempt) {
  clearTimeout(restoreName.timer);
  const saved = localStorage.getItem(NAME_KEY);
  if (!state.welcomed || state.account || !saved || saved === state.me.username) {
    state.restoring = null;
    return;
  }
  state.restoring = { name: saved, attempt };
  conn.send({ type: "username", name: saved });
}

/** The room is complete on screen: lines waiting for the connection go out now, in order. */
function caughtUp() {
  state.ready = state.welcomed;
  rooms.seen(sync.room, sync.baseline ?? 0);
  if (!state.ready) return;
  for (const [clientId, entry] of state.own) {
    const waiting = entry.line.el.dataset.state;
    if (waiting !== "unsent" && waiting !== "unconfirmed") continue;
    if (entry.room !== sync.room) {
      state.own.delete(clientId);
      entry.line.fail(`you are in #${sync.room} now, not #${entry.room}`, () => sendChat(entry.text));
    } else if (waiting === "unconfirmed" && sync.historyOff) {
      state.own.delete(clientId);
      entry.line.fail("the connection dropped before the server confirmed it, and this server keeps no history to check", () => sendChat(entry.text));
    } else {
      transmit(clientId, entry);
    }
  }
}

// --- events

function acked(event) {
  if (event.upload_id !== undefined && uploads.acked(event)) return;
  const entry = event.client_id !== undefined ? takeOwn(event.client_id) : null;
  if (entry) {
    entry.line.confirm(event.seq, event.ts);
    if (entry.room === sync.room) sync.seen(event.seq);
    return;
  }
  if (event.client_id === undefined && state.binaries.length) {
    state.binaries.shift().line.confirm(event.seq, event.ts);
    sync.seen(event.seq);
  }
}

function joined(event) {
  const mine = event.user_id === state.me.user_id;
  if (mine && event.room !== sync.room) {
    rooms.seen(sync.room, sync.baseline ?? 0);
    state.room = event.room;
    localStorage.setItem(ROOM_KEY, event.room);
    state.ready = false;
    rooms.setCurrent(event.room);
    people.clear(event.room);
    showRoom(event.room);
    sync.enter(event.room);
    conn.send({ type: "who" });
    closePanels();
    $("input").focus();
  }
  people.joined(event);
  sync.live(event);
  refreshRoomsSoon();
}

function renamed(event) {
  people.renamed(event);
  const mine = event.user_id === state.me.user_id;
  const restored = mine && state.restoring?.name === event.new;
  if (mine) {
    state.me.username = event.new;
    if (!state.account) localStorage.setItem(NAME_KEY, event.new);
    state.restoring = null;
    showIdentity();
    if ($("name-dialog").open) $("name-dialog").close();
  }
  if (!restored) sync.live(event); // taking back your own name is no news to you
}

function who(event) {
  if (event.room === sync.room) people.set(event.room, event.users, state.me.user_id);
  if (state.asked.who > 0) {
    state.asked.who--;
    const names = (event.users ?? []).map((u) => (u.user_id === state.me.user_id ? `${u.username} (you)` : u.username));
    list.notice(`${names.length} in #${event.room}: ${names.join(", ")}`);
  }
}

function roomsListed(event) {
  rooms.update(event.rooms);
  if (state.asked.rooms > 0) {
    state.asked.rooms--;
    list.notice(`Rooms: ${(event.rooms ?? []).map((r) => `#${r.room} (${r.members})`).join(", ")}`);
  }
  if (state.noHistory) return;
  for (const room of rooms.toProbe()) fetches.ask({ kind: "unread", room }, { room, limit: 1 });
}

function historyAnswer(event) {
  const purpose = fetches.answered();
  if (!purpose) return;
  if (purpose.kind === "unread") rooms.latest(purpose.room, event.messages?.at(-1)?.seq ?? 0);
  else sync.answer(purpose, event);
}

function refused(event) {
  if (event.upload_id !== undefined && uploads.refused(event)) return;
  const entry = event.client_id !== undefined ? takeOwn(event.client_id) : null;
  if (entry) {
    entry.line.fail(event.message, () => sendChat(entry.text));
    return;
  }
  if (event.code === "unsupported" || event.code === "history_failed") {
    const purpose = fetches.answered();
    if (event.code === "unsupported") state.noHistory = true;
    if (purpose && purpose.kind !== "unread") sync.refused(purpose, event.code, event.message);
    return;
  }
  if (NAME_ERRORS.has(event.code)) {
    const restoring = state.restoring;
    if (restoring) {
      state.restoring = null;
      const again = event.code === "name_taken" && restoring.attempt < 3;
      if (restoring.attempt === 0) {
        const next = again ? " Trying again in a moment." : "";
        list.notice(`Your name ${restoring.name} could not be taken back (${event.message}); you are ${state.me.username} for now.${next}`, { kind: "warning" });
      }
      if (again) restoreName.timer = setTimeout(() => restoreName(restoring.attempt + 1), 15000);
      return;
    }
    if ($("name-dialog").open) {
      $("name-error").textContent = event.message;
      return;
    }
  }
  if (ROOM_ERRORS.has(event.code) && document.activeElement === $("new-room")) {
    $("new-room").setCustomValidity(event.message);
    $("new-room").reportValidity();
  }
  if (event.code === "rate_limited" && state.binaries.length) {
    const { line, bytes } = state.binaries.shift();
    line.fail(event.message, () => sendBinary(bytes));
    return;
  }
  list.notice(event.message || event.code, { kind: "error" });
}

// --- sending

function takeOwn(clientId) {
  const entry = state.own.get(clientId);
  if (entry) state.own.delete(clientId);
  return entry ?? null;
}

function sendChat(text) {
  const clientId = newClientId();
  const line = list.pending(state.me.username || "you", list.chatBody(text), "unsent");
  const entry = { line, text, room: sync.room };
  state.own.set(clientId, entry);
  const queued = [...state.own.values()].some((e) => e !== entry && e.line.el.dataset.state === "unsent");
  if (state.ready && !queued) transmit(clientId, entry);
}

function transmit(clientId, entry) {
  if (conn.send({ type: "chat", text: entry.text, room: entry.room, client_id: clientId })) {
    entry.line.setState("sending");
    // Its seq will be above what was seen by now: after a reconnect, history from here tells whether it was stored.
    entry.after = sync.baseline ?? 0;
  }
}

/** The lowest seq after which a line of ours in `room` may have been stored unconfirmed; null for none. */
function unconfirmedSince(room) {
  let since = null;
  for (const entry of state.own.values()) {
    if (entry.room === room && entry.line.el.dataset.state === "unconfirmed") {
      since = since === null ? entry.after : Math.min(since, entry.after);
    }
  }
  return since;
}

function sendBinary(bytes) {
  const line = list.pending(state.me.username || "you", list.binaryBody(bytes), "sending");
  if (!state.ready || !conn.send(bytes)) {
    line.fail("not connected", () => sendBinary(bytes));
    return;
  }
  state.binaries.push({ line, bytes });
}

function notConnected() {
  list.notice("Not connected right now: try again once the connection is back.", { kind: "warning" });
}

function sendFrame(frame) {
  if (!state.welcomed) return notConnected();
  if (frame.type === "who") state.asked.who++;
  if (frame.type === "rooms") state.asked.rooms++;
  if (frame.type === "username") state.restoring = null;
  conn.send(frame);
}

function join(room) {
  room = room.trim().replace(/^#+/, "");
  if (!room) return;
  if (room === sync.room) {
    closePanels();
    $("input").focus();
    return;
  }
  sendFrame({ type: "join", room });
}

function submit(line) {
  const command = parseCommand(line);
  switch (command.kind) {
    case "chat": return sendChat(command.text);
    case "frame": return sendFrame(command.frame);
    case "history": return state.welcomed ? sync.older(command.limit, true) : notConnected();
    case "binary": return sendBinary(new TextEncoder().encode(command.text));
    case "help": return list.notice(HELP, { kind: "help" });
    case "usage": return list.notice(`usage: ${command.text}`, { kind: "warning" });
    case "unknown": return list.notice(`Unknown command /${command.name}; /help lists the commands.`, { kind: "warning" });
    default: return undefined;
  }
}

function sendFiles(files) {
  for (const file of files) uploads.send(file);
}

// --- rooms list refresh

let roomsSoon = null;
function refreshRoomsSoon() {
  clearTimeout(roomsSoon);
  roomsSoon = setTimeout(() => state.welcomed && conn.send({ type: "rooms" }), 400);
}
setInterval(() => state.welcomed && conn.send({ type: "rooms" }), ROOMS_EVERY_MS);

// --- files

/** A file's address on this server, with the token when signed in; null for anything else. */
function fileUrl(url) {
  let parsed;
  try {
    parsed = new URL(url, location.origin);
  } catch {
    return null;
  }
  if (parsed.origin !== location.origin || !parsed.pathname.startsWith("/files/")) return null;
  if (state.token) parsed.searchParams.set("token", state.token);
  return parsed.pathname + parsed.search;
}

// --- the page

function setStatus(kind, text, attempt = 0) {
  $("status").dataset.state = kind;
  $("status").dataset.attempt = String(attempt);
  $("status-text").textContent = text;
}

function showBanner(text) {
  $("banner-text").textContent = text;
  $("banner").hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

function showRoom(room) {
  $("room-title").textContent = `#${room}`;
  $("messages").setAttribute("aria-label", `Messages in #${room}`);
  $("input").placeholder = `Message #${room}`;
  $("people-heading").firstChild.textContent = `People in #${room} `;
}

function showIdentity() {
  $("me-name").textContent = state.me.username;
  $("avatar").textContent = Array.from(state.me.username)[0]?.toUpperCase() ?? "";
  $("name-button").setAttribute("aria-label", state.account
    ? `Signed in as ${state.me.username}`
    : `Your name: ${state.me.username}. Change it`);
  $("auth-button").hidden = !state.accounts;
  $("auth-button").textContent = state.account ? "Sign out" : "Sign in";
}

function showSignIn(reason, guestAllowed) {
  $("auth-reason").textContent = reason;
  $("auth-guest").hidden = !guestAllowed;
  $("auth-error").textContent = "";
  setStatus("signin", "Sign in needed");
  if (!$("auth-dialog").open) $("auth-dialog").showModal();
  $("auth-user").focus();
}

function dropToken(reason) {
  forgetToken();
  state.token = null;
  showSignIn(reason, true);
}

function reconnectNow() {
  conn.stop();
  conn.start();
}

function closePanels() {
  for (const id of ["toggle-rooms", "toggle-people"]) $(id).setAttribute("aria-expanded", "false");
  document.body.dataset.panel = "";
}

function togglePanel(button, panel) {
  const open = button.getAttribute("aria-expanded") !== "true";
  closePanels();
  button.setAttribute("aria-expanded", String(open));
  document.body.dataset.panel = open ? panel : "";
  if (open) $(`${panel}-panel`).querySelector("button, input")?.focus();
}

function wire() {
  const input = $("input");
  const grow = () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight + 2, 160)}px`;
    input.style.overflowY = input.scrollHeight > 160 ? "auto" : "hidden";
  };
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    if (!input.value.trim()) return;
    submit(input.value);
    input.value = "";
    grow();
  });
  input.addEventListener("input", grow);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  input.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files ?? [])];
    if (files.length) {
      e.preventDefault();
      sendFiles(files);
    }
  });
  $("attach").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", (e) => {
    sendFiles([...e.target.files]);
    e.target.value = "";
  });
  const chat = $("chat");
  let dragDepth = 0;
  chat.addEventListener("dragenter", (e) => {
    if (![...(e.dataTransfer?.types ?? [])].includes("Files")) return;
    dragDepth++;
    $("drop-hint").hidden = false;
  });
  chat.addEventListener("dragleave", () => {
    if (--dragDepth <= 0) {
      dragDepth = 0;
      $("drop-hint").hidden = true;
    }
  });
  chat.addEventListener("dragover", (e) => e.preventDefault());
  chat.addEventListener("drop", (e) => {
    e.preventDefault();
    dragDepth = 0;
    $("drop-hint").hidden = true;
    sendFiles([...(e.dataTransfer?.files ?? [])]);
  });

  $("load-earlier").addEventListener("click", () => sync.older(50));
  $("retry-now").addEventListener("click", () => conn.retryNow());
  $("new-room-form").addEventListener("submit", (e) => {
    e.preventDefault();
    join($("new-room").value);
    $("new-room").value = "";
  });
  $("new-room").addEventListener("input", () => $("new-room").setCustomValidity(""));
  $("toggle-rooms").addEventListener("click", (e) => togglePanel(e.currentTarget, "rooms"));
  $("toggle-people").addEventListener("click", (e) => togglePanel(e.currentTarget, "people"));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.dataset.panel) closePanels();
    if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
      const names = [...document.querySelectorAll("#room-list button[data-room]")].map((b) => b.dataset.room);
      const at = names.indexOf(sync.room);
      const next = names[(at + (e.key === "ArrowUp" ? -1 : 1) + names.length) % names.length];
      if (next) join(next);
      e.preventDefault();
    }
  });

  $("name-button").addEventListener("click", () => {
    if (state.account) {
      list.notice(`You are signed in as ${state.account}; an account's name cannot change.`);
      return;
    }
    $("name-input").value = state.me.username;
    $("name-error").textContent = "";
    $("name-dialog").showModal();
    $("name-input").select();
  });
  $("name-cancel").addEventListener("click", () => $("name-dialog").close());
  $("name-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("name-input").value.trim();
    if (!name || name === state.me.username) return $("name-dialog").close();
    if (!state.welcomed) {
      $("name-error").textContent = "Not connected right now; try again once the connection is back.";
      return undefined;
    }
    $("name-error").textContent = "";
    return sendFrame({ type: "username", name });
  });

  $("auth-button").addEventListener("click", () => {
    if (state.account) {
      forgetToken();
      state.token = null;
      list.notice("Signed out.");
      reconnectNow();
    } else {
      showSignIn("Sign in to use your account's name.", true);
    }
  });
  const authSubmit = async (register) => {
    const form = $("auth-form");
    if (!form.reportValidity()) return;
    $("auth-error").textContent = register ? "Creating your account…" : "Signing in…";
    const result = await signIn($("auth-user").value.trim(), $("auth-password").value, register);
    if (!result.ok) {
      $("auth-error").textContent = result.message;
      return;
    }
    keepToken(result.token);
    state.token = result.token;
    $("auth-password").value = "";
    $("auth-dialog").close();
    reconnectNow();
  };
  $("auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    authSubmit(false);
  });
  $("auth-register").addEventListener("click", () => authSubmit(true));
  $("auth-guest").addEventListener("click", () => {
    $("auth-dialog").close();
    reconnectNow();
  });
  $("auth-dialog").addEventListener("cancel", (e) => {
    if (state.token || !$("auth-guest").hidden) return;
    e.preventDefault(); // nothing to go back to: the server needs an account
  });
}

async function boot() {
  wire();
  // A link with ?token=... (README, Security): keep it, and take it out of the address bar.
  const params = new URLSearchParams(location.search);
  if (params.get("token")) {
    keepToken(params.get("token"));
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.size ? `?${params}` : "") + location.hash);
  }
  if (location.hash.length > 1) state.room = decodeURIComponent(location.hash.slice(1));
  state.accounts = await accountsEnabled();
  state.token = state.accounts ? storedToken() : null;
  showIdentity();
  conn.start();
}

boot();
