// Pure helpers for showing network text safely: every string from the
// server reaches the page through text nodes (never HTML), and characters
// that are invisible or reorder text (bidi controls, zero-width characters,
// control codes) are shown as a visible marker such as ⟨U+202E⟩.

/** Characters shown as a marker instead of themselves. */
const HIDDEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\u034F\u115F\u1160\u3164\uFFA0]/u;
const PICTOGRAPHIC = /\p{Extended_Pictographic}/u;
/** What may stand before a joiner inside an emoji: a pictograph, VS16, a skin tone. */
const EMOJI_PART = /[\p{Extended_Pictographic}\uFE0F\u{1F3FB}-\u{1F3FF}]/u;

/** Names of the characters people are most likely to meet. */
const NAMES = {
  0x200b: "zero width space", 0x200c: "zero width non-joiner", 0x200d: "zero width joiner",
  0x200e: "left-to-right mark", 0x200f: "right-to-left mark", 0x202a: "left-to-right embedding",
  0x202b: "right-to-left embedding", 0x202c: "pop directional formatting",
  0x202d: "left-to-right override", 0x202e: "right-to-left override", 0x2066: "left-to-right isolate",
  0x2067: "right-to-left isolate", 0x2068: "first strong isolate", 0x2069: "pop directional isolate",
  0x2060: "word joiner", 0xfeff: "zero width no-break space", 0x00ad: "soft hyphen",
  0x3164: "hangul filler",
};

/** `U+202E`, four hex digits at least. */
export function codePoint(cp) {
  return "U+" + cp.toString(16).toUpperCase().padStart(4, "0");
}

/**
 * Whether the character at `chars[i]` is shown as a marker. Newlines and
 * tabs stay (messages keep their lines); a zero width joiner between two
 * pictographs (👩‍💻) and the tag characters of a subdivision flag (🏴 + tags)
 * are part of an emoji and stay too.
 */
function hidden(chars, i) {
  const c = chars[i];
  if (c === "\n" || c === "\t" || !HIDDEN.test(c)) return false;
  const cp = c.codePointAt(0);
  if (cp === 0x200d) return !(EMOJI_PART.test(chars[i - 1] ?? "") && PICTOGRAPHIC.test(chars[i + 1] ?? ""));
  if (cp >= 0xe0020 && cp <= 0xe007f) {
    let j = i - 1;
    while (j >= 0 && chars[j].codePointAt(0) >= 0xe0020 && chars[j].codePointAt(0) <= 0xe007f) j--;
    return chars[j] !== "\u{1F3F4}";
  }
  return true;
}

/**
 * Append `text` to `parent` as text nodes, with a visible marker element in
 * place of each hidden character. Returns `parent`.
 */
export function appendVisible(parent, text) {
  const chars = Array.from(String(text));
  let run = "";
  for (let i = 0; i < chars.length; i++) {
    if (!hidden(chars, i)) {
      run += chars[i];
      continue;
    }
    if (run) parent.append(run);
    run = "";
    const cp = chars[i].codePointAt(0);
    const mark = document.createElement("span");
    mark.className = "hidden-char";
    mark.textContent = `⟨${codePoint(cp)}⟩`;
    mark.title = `invisible character ${codePoint(cp)}${NAMES[cp] ? ` (${NAMES[cp]})` : ""}`;
    parent.append(mark);
  }
  if (run) parent.append(run);
  return parent;
}

/** A new element of `tag` with a class and visible text. */
export function textElement(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  return appendVisible(el, text);
}

/** `12 B`, `3.4 KiB`, `50.0 MiB`. */
export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** The first `max` bytes as hex pairs, with `…` when there are more. */
export function hexPreview(bytes, max = 16) {
  const shown = Array.from(bytes.subarray(0, max), (b) => b.toString(16).padStart(2, "0")).join(" ");
  return bytes.length > max ? `${shown} …` : shown;
}

/** Hex of a digest. */
export function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The bytes of a base64 string (a `binary` message in a `history` answer). */
export function fromBase64(data) {
  const raw = atob(data);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

/** `14:05` in the reader's locale; the full date and time for a tooltip. */
export function formatTime(ts) {
  const date = new Date(ts);
  if (Number.isNaN(date.getTime())) return { short: "", long: "" };
  return {
    short: date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }),
    long: date.toLocaleString(),
  };
}
