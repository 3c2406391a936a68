// The two side panels: the rooms (member counts from `rooms`, unread
// counts for rooms you have been in) and the people in your room (from
// `who`, kept current by joined / left / renamed).
//
// Unread counts are exact or absent: a room's `seq` grows by one per
// message, so "the room's latest seq" minus "the last seq you saw there" is
// the number of messages posted since you left. The latest seq comes from a
// one-message `history` request when the list refreshes.

import { textElement } from "./text.js";

const SEEN_KEY = "chorus.seen";

export class RoomList {
  /** `onSelect(room)`: a room was chosen. */
  constructor(list, { onSelect }) {
    this.list = list;
    this.onSelect = onSelect;
    this.rooms = [];
    this.current = "";
    /** room -> the last seq seen there (kept across reloads). */
    this.lastSeen = new Map(Object.entries(readJson(SEEN_KEY)));
    /** room -> messages since lastSeen. */
    this.unread = new Map();
    /** room -> its list item, kept across updates. */
    this.items = new Map();
  }

  /** A `rooms` event. */
  update(rooms) {
    this.rooms = Array.isArray(rooms) ? rooms : [];
    this.render();
  }

  setCurrent(room) {
    this.current = room;
    this.unread.delete(room);
    this.render();
  }

  /** The last seq seen in `room` (the one on screen). */
  seen(room, seq) {
    if ((this.lastSeen.get(room) ?? -1) === seq) return;
    this.lastSeen.set(room, seq);
    localStorage.setItem(SEEN_KEY, JSON.stringify(Object.fromEntries(this.lastSeen)));
  }

  /** Rooms whose unread count is worth asking for: seen before, not on screen. */
  toProbe() {
    const listed = new Set(this.rooms.map((r) => r.room));
    return [...this.lastSeen.keys()].filter((room) => room !== this.current && (listed.has(room) || this.unread.get(room))).slice(0, 20);
  }

  /** The latest seq of `room` (0: no messages). */
  latest(room, seq) {
    const seen = this.lastSeen.get(room);
    if (seen === undefined || room === this.current) return;
    if (seq < seen) this.seen(room, seq); // the server's history started over: nothing to count from
    const count = Math.max(0, seq - Math.min(seen, seq));
    if (count) this.unread.set(room, count);
    else this.unread.delete(room);
    this.render();
  }

  render() {
    const rooms = this.rooms.map((r) => ({ room: r.room, members: r.members }));
    const names = new Set(rooms.map((r) => r.room));
    for (const room of [this.current, ...this.unread.keys()]) {
      if (room && !names.has(room)) {
        rooms.push({ room, members: room === this.current ? 1 : 0 });
        names.add(room);
      }
    }
    rooms.sort((a, b) => (a.room < b.room ? -1 : a.room > b.room ? 1 : 0));
    // Update in place (a button being clicked or focused is never replaced), then fix the order.
    const items = rooms.map((r) => this.fill(this.items.get(r.room) ?? this.item(r.room), r));
    for (const [room, li] of this.items) if (!names.has(room)) li.remove();
    items.forEach((li, i) => {
      if (this.list.children[i] !== li) this.list.insertBefore(li, this.list.children[i] ?? null);
    });
    this.items = new Map(rooms.map((r, i) => [r.room, items[i]]));
  }

  item(room) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "room";
    button.dataset.room = room;
    const count = document.createElement("span");
    count.className = "members";
    const badge = document.createElement("span");
    badge.className = "unread";
    button.append(textElement("span", "room-name", `#${room}`), count, badge);
    button.addEventListener("click", () => this.onSelect(room));
    li.append(button);
    return li;
  }

  /** Show `members` and the unread count on a room's item. */
  fill(li, { room, members }) {
    const button = li.firstChild;
    const [, count, badge] = button.children;
    const unread = this.unread.get(room) ?? 0;
    count.textContent = String(members);
    count.title = `${members} ${members === 1 ? "person" : "people"} here`;
    badge.textContent = unread > 999 ? "999+" : String(unread);
    badge.hidden = !unread;
    const label = [`#${room}`, `${members} ${members === 1 ? "member" : "members"}`];
    if (unread) label.push(`${unread} unread`);
    button.setAttribute("aria-label", label.join(", "));
    if (room === this.current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
    return li;
  }
}

export class People {
  /** `counts`: the elements that show how many people are here. */
  constructor(list, counts) {
    this.list = list;
    this.counts = counts;
    this.room = "";
    this.me = "";
    /** user_id -> username. */
    this.users = new Map();
  }

  /** A `who` answer. */
  set(room, users, me) {
    this.room = room;
    this.me = me;
    this.users = new Map((users ?? []).map((u) => [u.user_id, u.username]));
    this.render();
  }

  /** Another room is on screen: empty until its `who` comes. */
  clear(room) {
    this.room = room;
    this.users = new Map();
    this.render();
  }

  joined(event) {
    if (event.room !== this.room) return;
    this.users.set(event.user_id, event.username);
    this.render();
  }

  left(event) {
    if (event.room !== this.room) return;
    this.users.delete(event.user_id);
    this.render();
  }

  renamed(event) {
    if (event.room !== this.room || !this.users.has(event.user_id)) return;
    this.users.set(event.user_id, event.new);
    this.render();
  }

  names() {
    return [...this.users.values()];
  }

  render() {
    const people = [...this.users.entries()].sort((a, b) => a[1].localeCompare(b[1]));
    this.list.replaceChildren(...people.map(([id, name]) => {
      const li = textElement("li", id === this.me ? "person me" : "person", name);
      if (id === this.me) li.append(textElement("span", "you", " (you)"));
      return li;
    }));
    for (const count of this.counts) count.textContent = String(people.length);
  }
}

function readJson(key) {
  try {
    const value = JSON.parse(localStorage.getItem(key) ?? "{}");
    return value && typeof value === "object" ? value : {};
  } catch {
    return {};
  }
}
