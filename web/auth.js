// Accounts, when the server has them (`--auth optional|required`): find
// out whether it does, sign in or register through `/api/login` and
// `/api/register`, keep the token for reconnects and file downloads.

const TOKEN_KEY = "chorus.token";

/**
 * Whether the server has accounts: `/api/login` answers 404
 * `accounts_disabled` when they are off, and refuses an empty body
 * otherwise. Null when the server could not be asked.
 */
export async function accountsEnabled() {
  try {
    const response = await fetch("/api/login", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    if (response.status !== 404) return true;
    const body = await response.json().catch(() => ({}));
    return body.error !== "accounts_disabled";
  } catch {
    return null;
  }
}

/** Whether the server answers at all (to tell "down" from "refused"). */
export async function serverUp() {
  try {
    const response = await fetch("/healthz", { cache: "no-store" });
    return response.ok;
  } catch {
    return false;
  }
}

/**
 * Sign in (`register` false) or create an account: `{ok: true, username,
 * token}` or `{ok: false, message}`.
 */
export async function signIn(username, password, register) {
  let response;
  try {
    response = await fetch(register ? "/api/register" : "/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
  } catch {
    return { ok: false, message: "The server cannot be reached; try again in a moment." };
  }
  const body = await response.json().catch(() => ({}));
  if (response.ok && typeof body.token === "string") {
    return { ok: true, username: body.username, token: body.token };
  }
  return { ok: false, message: body.message || `The server answered ${response.status}.` };
}

/** The stored token, unless it has expired (then it is forgotten). */
export function storedToken() {
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) return null;
  const exp = tokenClaims(token)?.exp;
  if (typeof exp === "number" && exp * 1000 <= Date.now()) {
    forgetToken();
    return null;
  }
  return token;
}

export function keepToken(token) {
  localStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  localStorage.removeItem(TOKEN_KEY);
}

/** The claims of a JWT (not verified: only to read its expiry and name). */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")));
  } catch {
    return null;
  }
}
