// The composer's slash commands, as in the terminal client
// (src/client/interactive.rs): a typed line in, one command out. No DOM, no
// socket.

export const HISTORY_MAX = 500;

export const HELP = `commands:
  <text>              send a message to the room (Shift+Enter: a new line)
  /username <name>    change your name (also /name, /nick)
  /join <room>        move to another room (created if needed)
  /who                who is in this room
  /rooms              rooms and their member counts
  /history [n]        show the last n messages of this room (1-500)
  /binary <text>      send <text> as a binary message
  //text              send a message that starts with /
  /help               this help
files: the paperclip button, drag and drop onto the messages, or paste`;

/**
 * One typed line understood: `{kind: "chat", text}`, `{kind: "frame",
 * frame}` (a request to send as is), `{kind: "history", limit}`,
 * `{kind: "binary", text}`, `{kind: "help"}`, `{kind: "usage", text}`,
 * `{kind: "unknown", name}`, or `{kind: "nothing"}`.
 */
export function parseCommand(line) {
  const trimmed = line.trim();
  if (!trimmed) return { kind: "nothing" };
  if (!trimmed.startsWith("/")) return { kind: "chat", text: line };
  const rest = trimmed.slice(1);
  if (rest.startsWith("/")) return { kind: "chat", text: rest };
  const space = rest.search(/\s/);
  const name = space < 0 ? rest : rest.slice(0, space);
  const arg = space < 0 ? "" : rest.slice(space).trim();
  switch (name) {
    case "help": case "h": case "?":
      return { kind: "help" };
    case "username": case "name": case "nick":
      return arg ? { kind: "frame", frame: { type: "username", name: arg } } : usage("/username <name>");
    case "join":
      return arg ? { kind: "frame", frame: { type: "join", room: arg.replace(/^#+/, "") } } : usage("/join <room>");
    case "who":
      return { kind: "frame", frame: { type: "who" } };
    case "rooms":
      return { kind: "frame", frame: { type: "rooms" } };
    case "history": {
      if (!arg) return { kind: "history", limit: 50 };
      const limit = Number(arg);
      return Number.isInteger(limit) && limit >= 1 && limit <= HISTORY_MAX
        ? { kind: "history", limit }
        : usage("/history [n] (n from 1 to 500)");
    }
    case "binary":
      return arg ? { kind: "binary", text: rest.slice("binary".length).trimStart() } : usage("/binary <text>");
    case "file":
      return usage("to send a file, use the paperclip button, drag it onto the messages, or paste it");
    default:
      return { kind: "unknown", name };
  }
}

function usage(text) {
  return { kind: "usage", text };
}
