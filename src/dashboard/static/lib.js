// Shared pieces of the dashboard: the API client (timeouts, Amebo's error codes), the admin token
// (per tab in sessionStorage, handed to the operator's other tabs over a BroadcastChannel), hooks
// and small components. Everything user-supplied is rendered as text (htm never sets innerHTML).
import { h } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';

export const html = htm.bind(h);

const TOKEN_KEY = 'amebo-admin-token';
export const token = () => sessionStorage.getItem(TOKEN_KEY) ?? '';

/*
 * Sign-in remembered across tabs for the session, without writing the token to disk: each tab keeps
 * it in its own sessionStorage; a new tab asks the open ones over a BroadcastChannel and one answers.
 * When the last tab closes the token is gone; signing out in one tab signs out all of them.
 */
const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel('amebo-auth') : null;
const authListeners = new Set();
const authChanged = () => authListeners.forEach((f) => f(Boolean(token())));
if (channel)
  channel.onmessage = ({ data }) => {
    if (data?.type === 'ask' && token()) channel.postMessage({ type: 'token', token: token() });
    else if (data?.type === 'token' && typeof data.token === 'string' && !token()) {
      sessionStorage.setItem(TOKEN_KEY, data.token);
      authChanged();
    } else if (data?.type === 'signout' && token()) {
      sessionStorage.removeItem(TOKEN_KEY);
      authChanged();
    }
  };
export const onAuth = (f) => (authListeners.add(f), () => authListeners.delete(f));
export function setToken(t) {
  sessionStorage.setItem(TOKEN_KEY, t);
}
/** Tells the other tabs (those without a token take it). */
export const shareToken = () => channel?.postMessage({ type: 'token', token: token() });
export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  channel?.postMessage({ type: 'signout' });
  authChanged();
}
/** Asks the other tabs for the token; resolves true when one answered within `ms`. */
export function askOtherTabs(ms = 400) {
  if (!channel || token()) return Promise.resolve(Boolean(token()));
  return new Promise((resolve) => {
    const off = onAuth((ok) => ok && (off(), clearTimeout(t), resolve(true)));
    const t = setTimeout(() => (off(), resolve(Boolean(token()))), ms);
    channel.postMessage({ type: 'ask' });
  });
}

/** One API call with a timeout; throws an Error carrying Amebo's error code and message. */
export async function api(method, path, body, timeoutMs = 15_000) {
  const headers = { authorization: `Bearer ${token()}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    const err = new Error(e?.name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : String(e?.message));
    err.code = e?.name === 'TimeoutError' ? 'TIMEOUT' : 'NETWORK';
    throw err;
  }
  const text = await res.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { raw: text };
  }
  if (!res.ok) {
    const err = new Error(data?.error?.message ?? `HTTP ${res.status}`);
    err.code = data?.error?.code ?? `HTTP_${res.status}`;
    err.status = res.status;
    err.details = data?.error?.details;
    throw err;
  }
  return data;
}

/** Loads `path` (null: nothing to load); `reload()` fetches again. */
export function useApi(path) {
  const [state, setState] = useState({ data: null, error: null, loading: Boolean(path) });
  const [n, setN] = useState(0);
  useEffect(() => {
    if (!path) return undefined;
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    api('GET', path).then(
      (data) => live && setState({ data, error: null, loading: false }),
      (error) => live && setState({ data: null, error, loading: false }),
    );
    return () => {
      live = false;
    };
  }, [path, n]);
  return { ...state, reload: useCallback(() => setN((x) => x + 1), []) };
}

/** Calls `f` every `ms` while mounted. */
export function useEvery(ms, f) {
  const latest = useRef(f);
  latest.current = f;
  useEffect(() => {
    const t = setInterval(() => latest.current(), ms);
    return () => clearInterval(t);
  }, [ms]);
}

/**
 * A cursor-paged listing of `path` (query included, `limit` set by the caller): `more` loads the next
 * page and appends it; a new `path` starts over.
 */
export function usePaged(path) {
  // The cursor belongs to the path it was read from: a new path (filters) starts at its first page.
  const [page, setPage] = useState({ path, cursor: null });
  const cursor = page.path === path ? page.cursor : null;
  const [items, setItems] = useState([]);
  const sep = path.includes('?') ? '&' : '?';
  const { data, error, loading, reload } = useApi(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
  useEffect(() => {
    if (data) setItems((xs) => (cursor ? [...xs, ...data.items] : data.items));
    else if (error) setItems([]);
  }, [data, error]);
  return {
    items,
    error,
    loading,
    empty: Boolean(data) && !cursor && !data.items.length,
    more: data?.next_cursor ? () => setPage({ path, cursor: data.next_cursor }) : null,
    reload: cursor ? () => setPage({ path, cursor: null }) : reload,
  };
}

export const useHash = () => {
  const [hash, setHash] = useState(location.hash || '#/home');
  useEffect(() => {
    const on = () => setHash(location.hash || '#/home');
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
};

export const when = (t) => (t ? new Date(t).toLocaleString() : '—');
export const qs = (o) => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(o)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
};
export const pct = (r) => (r === null || r === undefined ? '—' : `${Math.round(r * 1000) / 10}%`);
export const ms = (v) => (v === null || v === undefined ? '—' : `${Math.round(v)} ms`);
export const enc = encodeURIComponent;
export function duration(t) {
  if (!Number.isFinite(t) || t < 0) return '—';
  const s = Math.floor(t / 1000);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${mm}m` : mm ? `${mm}m ${s % 60}s` : `${s}s`;
}
/** A `datetime-local` value as RFC 3339 (empty stays empty). */
export const isoOf = (local) => (local ? new Date(local).toISOString() : '');
/** A time as a `datetime-local` value, in local time. */
export function localOf(d) {
  const x = new Date(d.getTime() - d.getTimezoneOffset() * 60_000);
  return x.toISOString().slice(0, 16);
}

export const Badge = ({ s }) => html`<span class=${`badge ${s}`} data-testid="badge">${s}</span>`;
export const Failure = ({ error }) =>
  error
    ? html`<div class="error" role="alert">
        ${error.code ? `${error.code}: ` : ''}${error.message}
        ${
          Array.isArray(error.details) && error.details.length
            ? html`<ul class="details">
                ${error.details.slice(0, 20).map((d) => html`<li>${d.instancePath ?? ''} ${d.message ?? ''}</li>`)}
              </ul>`
            : error.details && typeof error.details === 'object' && !Array.isArray(error.details)
              ? html`<pre class="details" data-testid="error-details">${JSON.stringify(error.details, null, 2)}</pre>`
              : ''
        }
      </div>`
    : null;
/** An empty state: what is missing and what to do next. */
export const Empty = ({ children, testid = 'empty' }) =>
  html`<div class="empty" data-testid=${testid}>${children}</div>`;

/** Copies `text`; the clipboard API where allowed, else a selected text field. */
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const t = document.createElement('textarea');
    t.value = text;
    t.setAttribute('readonly', '');
    t.className = 'offscreen';
    document.body.appendChild(t);
    t.select();
    const ok = document.execCommand('copy');
    t.remove();
    return ok;
  }
}

/** A copy button for `text`. */
export function Copy({ text, label = 'copy' }) {
  const [done, setDone] = useState(null);
  const go = async (e) => {
    e.preventDefault();
    e.stopPropagation();
    setDone((await copyText(text)) ? 'copied' : 'copy failed');
    setTimeout(() => setDone(null), 1500);
  };
  return html`<button class="copy" type="button" onClick=${go} title=${`copy ${text}`} data-testid="copy">
    ${done ?? label}
  </button>`;
}

/** An id, shown whole and copyable. */
export const Id = ({ id, href }) =>
  html`<span class="id"
    >${href ? html`<a class="mono" href=${href}>${id}</a>` : html`<span class="mono">${id}</span>`}<${Copy} text=${id}
  /></span>`;

/** A button that runs an API action, shows its outcome and then calls `done`. */
export function Action({ label, run, done, confirmText, testid, cls }) {
  const [busy, setBusy] = useState(false);
  const [msg, setMsg] = useState(null);
  const go = async () => {
    if (confirmText && !confirm(confirmText)) return;
    setBusy(true);
    setMsg(null);
    try {
      const r = await run();
      setMsg({ ok: true, text: typeof r === 'string' ? r : 'done' });
      done?.(r);
    } catch (e) {
      setMsg({ ok: false, text: `${e.code}: ${e.message}` });
    } finally {
      setBusy(false);
    }
  };
  return html`<span
    ><button class=${cls ?? ''} type="button" disabled=${busy} onClick=${go} data-testid=${testid}>${label}</button>
    ${msg && html` <span class=${msg.ok ? 'note' : 'error'} data-testid="action-result">${msg.text}</span>`}</span
  >`;
}

/** A table that scrolls sideways inside its box on a narrow screen instead of widening the page. */
export const Table = ({ testid, head, children }) =>
  html`<div class="scroll">
    <table data-testid=${testid}>
      <thead>
        <tr>
          ${head.map((x) => html`<th>${x}</th>`)}
        </tr>
      </thead>
      <tbody>
        ${children}
      </tbody>
    </table>
  </div>`;

/** Window picker for health and stats. */
export const WINDOWS = ['5m', '1h', '24h'];
export const WindowPicker = ({ value, onChange }) =>
  html`<span class="seg" role="group" aria-label="window" data-testid="window"
    >${WINDOWS.map(
      (w) =>
        html`<button
          type="button"
          class=${w === value ? 'on' : ''}
          aria-pressed=${w === value}
          onClick=${() => onChange(w)}
        >
          ${w}
        </button>`,
    )}</span
  >`;
