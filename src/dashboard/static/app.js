// Amebo dashboard: Preact + htm, no build step. Every view reads the public HTTP API with the admin
// token the operator typed in; the live tail uses the same websocket as `amebo monitor`.
import { h, render } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';

const html = htm.bind(h);
const TOKEN_KEY = 'amebo-admin-token';
const token = () => sessionStorage.getItem(TOKEN_KEY) ?? '';

/** One API call with a timeout; throws an Error carrying Amebo's error code and message. */
async function api(method, path, body) {
  const headers = { authorization: `Bearer ${token()}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
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
    throw err;
  }
  return data;
}

/** Loads `path` (null: nothing to load); `reload()` fetches again. */
function useApi(path) {
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

/**
 * A cursor-paged listing of `path` (query included, `limit` set by the caller): `more` loads the next
 * page and appends it; a new `path` starts over.
 */
function usePaged(path) {
  // The cursor belongs to the path it was read from: a new path (filters) starts at its first page.
  const [page, setPage] = useState({ path, cursor: null });
  const cursor = page.path === path ? page.cursor : null;
  const [items, setItems] = useState([]);
  const sep = path.includes('?') ? '&' : '?';
  const { data, error, loading, reload } = useApi(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
  useEffect(() => {
    if (data) setItems((xs) => (cursor ? [...xs, ...data.items] : data.items));
  }, [data]);
  return {
    items,
    error,
    loading,
    empty: Boolean(data) && !cursor && !data.items.length,
    more: data?.next_cursor ? () => setPage({ path, cursor: data.next_cursor }) : null,
    reload: cursor ? () => setPage({ path, cursor: null }) : reload,
  };
}

const useHash = () => {
  const [hash, setHash] = useState(location.hash || '#/events');
  useEffect(() => {
    const on = () => setHash(location.hash || '#/events');
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
};

const when = (t) => (t ? new Date(t).toLocaleString() : '—');
const qs = (o) => {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(o)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
};
const Badge = ({ s }) => html`<span class=${`badge ${s}`} data-testid="badge">${s}</span>`;
const Failure = ({ error }) =>
  error ? html`<div class="error" role="alert">${error.code ? `${error.code}: ` : ''}${error.message}</div>` : null;
function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '—';
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${mm}m` : mm ? `${mm}m ${s % 60}s` : `${s}s`;
}

/** A button that runs an API action, shows its outcome and then calls `done`. */
function Action({ label, run, done, confirmText, testid }) {
  const [busy, setBusy] = useState(false);
  const [msg, setMsg] = useState(null);
  const go = async () => {
    if (confirmText && !confirm(confirmText)) return;
    setBusy(true);
    setMsg(null);
    try {
      const r = await run();
      setMsg({ ok: true, text: typeof r === 'string' ? r : 'done' });
      done?.();
    } catch (e) {
      setMsg({ ok: false, text: `${e.code}: ${e.message}` });
    } finally {
      setBusy(false);
    }
  };
  return html`<span
    ><button disabled=${busy} onClick=${go} data-testid=${testid}>${label}</button>
    ${msg && html` <span class=${msg.ok ? 'note' : 'error'} data-testid="action-result">${msg.text}</span>`}</span
  >`;
}

function Login({ onDone }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, value.trim());
    try {
      await api('GET', '/v1/applications');
      onDone();
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      setError(err);
    }
  };
  return html`<form class="login" onSubmit=${submit}>
    <h2>Amebo</h2>
    <p class="muted">
      The admin token (printed by <code>amebo serve</code> on first start, or <code>AMEBO_ADMIN_TOKEN</code>).
    </p>
    <input
      type="password"
      name="token"
      placeholder="admin token"
      value=${value}
      onInput=${(e) => setValue(e.target.value)}
      autofocus
    />
    <button class="primary" type="submit">Sign in</button>
    <${Failure} error=${error} />
  </form>`;
}

function Events() {
  const [filters, setFilters] = useState({ action: '', application: '' });
  const { items, error, empty, more } = usePaged(`/v1/events${qs({ ...filters, limit: 50 })}`);
  const submit = (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setFilters({ action: f.get('action'), application: f.get('application') });
  };
  return html`<section>
    <form class="filters" onSubmit=${submit}>
      <input name="action" placeholder="action" value=${filters.action} />
      <input name="application" placeholder="application" value=${filters.application} />
      <button type="submit">Filter</button>
    </form>
    <${Failure} error=${error} />
    <table data-testid="events">
      <thead>
        <tr>
          <th>created</th>
          <th>action</th>
          <th>application</th>
          <th>event</th>
          <th>published</th>
        </tr>
      </thead>
      <tbody>
        ${items.map(
          (e) =>
            html`<tr key=${e.id}>
              <td>${when(e.created_at)}</td>
              <td>${e.action}</td>
              <td>${e.application}</td>
              <td class="mono"><a href=${`#/events/${e.id}`}>${e.id}</a></td>
              <td>${e.published ? 'yes' : html`<span class="muted">relay</span>`}</td>
            </tr>`,
        )}
      </tbody>
    </table>
    ${empty && html`<p class="muted">No events.</p>`} ${more && html`<button onClick=${more}>More</button>`}
  </section>`;
}

function Attempts({ event, sub }) {
  const { data, error } = useApi(`/v1/deliveries/${event}/${sub}/attempts`);
  if (error) return html`<${Failure} error=${error} />`;
  if (!data) return html`<span class="muted">loading…</span>`;
  return html`<table data-testid="attempts">
    <thead>
      <tr>
        <th>#</th>
        <th>at</th>
        <th>status</th>
        <th>latency</th>
        <th>error</th>
      </tr>
    </thead>
    <tbody>
      ${data.items.map(
        (a) =>
          html`<tr key=${a.attempt + a.created_at}>
            <td>${a.attempt}</td>
            <td>${when(a.created_at)}</td>
            <td>${a.status ?? a.error_class ?? ''}</td>
            <td>${a.latency_ms ?? '—'} ms</td>
            <td class="mono">${a.error ?? ''}</td>
          </tr>`,
      )}
    </tbody>
  </table>`;
}

function EventDetail({ id }) {
  const { data: e, error, reload } = useApi(`/v1/events/${id}`);
  const [open, setOpen] = useState(null);
  if (error) return html`<${Failure} error=${error} />`;
  if (!e) return html`<p class="muted">Loading…</p>`;
  return html`<section data-testid="event-detail">
    <h2>${e.action} <span class="mono muted">${e.id}</span></h2>
    <div class="grid">
      <span class="muted">application</span><span>${e.application}</span> <span class="muted">created</span
      ><span>${when(e.created_at)}</span> <span class="muted">published</span
      ><span>${e.published ? 'yes' : 'not yet (the relay will)'}</span> <span class="muted">deduper</span
      ><span>${e.deduper ?? '—'}</span> <span class="muted">conversation</span
      ><span class="mono">${e.conversation_id}</span> <span class="muted">schema version</span
      ><span>${e.schema_version}</span>
    </div>
    <pre data-testid="payload">${JSON.stringify(e.payload, null, 2)}</pre>
    <h3>Deliveries</h3>
    ${!e.deliveries.length && html`<p class="muted">No subscription matches this action.</p>`}
    <table data-testid="deliveries">
      <thead>
        <tr>
          <th>subscription</th>
          <th>state</th>
          <th>attempts</th>
          <th>last</th>
          <th></th>
        </tr>
      </thead>
      <tbody>
        ${e.deliveries.map(
          (d) =>
            html`<tr key=${d.subscription} data-testid=${`delivery-${d.subscription_name}`}>
                <td>${d.application}/${d.subscription_name}</td>
                <td>
                  <${Badge} s=${d.state} />
                  <div class="muted" data-testid="delivery-reason">
                    ${d.reason}${typeof d.backlog === 'number' ? ` · ${d.backlog} in its queue` : ''}${
                      d.next_probe_at ? ` · next probe ${when(d.next_probe_at)}` : ''
                    }${d.next_attempt_at && d.state !== 'delivered' ? ` · next attempt ${when(d.next_attempt_at)}` : ''}
                  </div>
                </td>
                <td data-testid="delivery-attempts">${d.attempts}</td>
                <td>${d.last_status ?? ''} <span class="mono">${d.last_error ?? ''}</span></td>
                <td>
                  ${
                    d.attempts > 0 &&
                    html`<button onClick=${() => setOpen(open === d.subscription ? null : d.subscription)}>
                        attempts
                      </button>
                      <${Action}
                        label="retry"
                        testid=${`retry-${d.subscription_name}`}
                        run=${async () => (await api('POST', `/v1/deliveries/${e.id}/${d.subscription}/retry`), 'retry queued')}
                        done=${() => setTimeout(reload, 1000)}
                      />`
                  }
                </td>
              </tr>
              ${
                open === d.subscription &&
                html`<tr>
                  <td colspan="5"><${Attempts} event=${e.id} sub=${d.subscription} /></td>
                </tr>`
              }`,
        )}
      </tbody>
    </table>
  </section>`;
}

function Actions() {
  const [q, setQ] = useState('');
  const [picked, setPicked] = useState(null);
  const { data, error } = useApi(`/v1/actions${qs({ q })}`);
  return html`<section>
    <div class="toolbar">
      <input
        type="search"
        placeholder="search actions"
        value=${q}
        onInput=${(e) => setQ(e.target.value)}
        data-testid="action-search"
      />
    </div>
    <${Failure} error=${error} />
    <table data-testid="actions">
      <thead>
        <tr>
          <th>action</th>
          <th>application</th>
          <th>version</th>
          <th>description</th>
        </tr>
      </thead>
      <tbody>
        ${(data?.items ?? []).map(
          (a) =>
            html`<tr key=${a.action}>
              <td><a href="#/actions" onClick=${(ev) => (ev.preventDefault(), setPicked(a))}>${a.action}</a></td>
              <td>${a.application}</td>
              <td>${a.version}</td>
              <td>${a.description ?? ''}</td>
            </tr>`,
        )}
      </tbody>
    </table>
    ${picked && html`<${Schema} action=${picked} />`}
  </section>`;
}

/** An action's schema, any of its versions (GET /v1/actions/:name/versions). */
function Schema({ action }) {
  const { data, error } = useApi(`/v1/actions/${encodeURIComponent(action.action)}/versions`);
  const [version, setVersion] = useState(null);
  const versions = data?.items ?? [];
  const shown = versions.find((v) => v.version === version) ?? { version: action.version, schemata: action.schemata };
  return html`<div>
    <h3>
      ${action.action}
      <select value=${shown.version} onChange=${(e) => setVersion(Number(e.target.value))} data-testid="schema-version">
        ${(versions.length ? versions : [shown]).map((v) => html`<option value=${v.version}>v${v.version}</option>`)}
      </select>
    </h3>
    <${Failure} error=${error} />
    <pre data-testid="schema">${JSON.stringify(shown.schemata, null, 2)}</pre>
  </div>`;
}

function Applications() {
  const { data, error } = useApi('/v1/applications');
  return html`<section>
    <${Failure} error=${error} />
    <table data-testid="applications">
      <thead>
        <tr>
          <th>application</th>
          <th>address</th>
          <th>created</th>
        </tr>
      </thead>
      <tbody>
        ${(data?.items ?? []).map(
          (a) =>
            html`<tr key=${a.application}>
              <td>${a.application}</td>
              <td>${a.address ?? ''}</td>
              <td>${when(a.created_at)}</td>
            </tr>`,
        )}
      </tbody>
    </table>
  </section>`;
}

function DeadLetters({ sub }) {
  const { data, error, reload } = useApi(`/v1/subscriptions/${sub.id}/dead-letters?limit=20`);
  return html`<div data-testid=${`dead-${sub.subscription}`}>
    <${Failure} error=${error} />
    ${
      data &&
      html`<p>
        <span data-testid="dead-count">${data.count}</span> dead letter(s)
        ${
          data.count > 0 &&
          html` <${Action}
            label="resurrect all"
            testid=${`resurrect-${sub.subscription}`}
            confirmText=${`Move ${data.count} dead letter(s) back to ${sub.subscription}?`}
            run=${async () => `resurrected ${(await api('POST', `/v1/subscriptions/${sub.id}/dead-letters/resurrect`, {})).resurrected}`}
            done=${() => setTimeout(reload, 500)}
          />`
        }
      </p>`
    }
    ${
      data?.items?.length > 0 &&
      html`<table>
        <thead>
          <tr>
            <th>event</th>
            <th>reason</th>
            <th>attempts</th>
            <th>last error</th>
            <th>dead at</th>
          </tr>
        </thead>
        <tbody>
          ${data.items.map(
            (d) =>
              html`<tr key=${d.event}>
                <td class="mono"><a href=${`#/events/${d.event}`}>${d.event}</a></td>
                <td><${Badge} s=${d.reason} /></td>
                <td>${d.attempts}</td>
                <td class="mono">${d.last_error ?? ''}</td>
                <td>${when(d.dead_at)}</td>
              </tr>`,
          )}
        </tbody>
      </table>`
    }
  </div>`;
}

/** State (circuit open included), backlog and success rate of one subscription, from its health. */
function SubscriptionHealth({ s }) {
  const { data: h } = useApi(`/v1/subscriptions/${s.id}/health?window=1h`);
  const fallback = s.disabled_reason ? 'disabled' : s.paused ? 'paused' : '…';
  return html`<td data-testid=${`state-${s.subscription}`}>
      <${Badge} s=${h?.state ?? fallback} />
      ${
        h?.state === 'circuit_open' && h.breaker.next_probe_at
          ? html`<div class="muted">next probe ${when(h.breaker.next_probe_at)}</div>`
          : ''
      }
    </td>
    <td data-testid=${`backlog-${s.subscription}`}>${h ? (h.backlog ?? '?') : ''}</td>
    <td>${h && h.success_rate !== null ? `${Math.round(h.success_rate * 1000) / 10}%` : '—'}</td>`;
}

function Subscriptions() {
  const { data, error, reload } = useApi('/v1/subscriptions');
  const [open, setOpen] = useState(null);
  return html`<section>
    <${Failure} error=${error} />
    <table data-testid="subscriptions">
      <thead>
        <tr>
          <th>subscription</th>
          <th>action</th>
          <th>transport</th>
          <th>state</th>
          <th>backlog</th>
          <th>success (1 h)</th>
          <th></th>
        </tr>
      </thead>
      <tbody>
        ${(data?.items ?? []).map((s) => {
          return html`<tr key=${s.id} data-testid=${`sub-${s.subscription}`}>
              <td>
                ${s.application}/${s.subscription}
                <div class="muted mono">${s.handler ?? s.queue}</div>
              </td>
              <td>${s.action}</td>
              <td>${s.transport}${s.ordered ? ' · ordered' : ''}</td>
              <${SubscriptionHealth} s=${s} />
              <td>
                <button
                  onClick=${() => setOpen(open === s.id ? null : s.id)}
                  data-testid=${`open-dead-${s.subscription}`}
                >
                  dead letters
                </button>
                <${Action}
                  label=${s.paused ? 'resume' : 'pause'}
                  run=${() => api('POST', `/v1/subscriptions/${s.id}/${s.paused ? 'resume' : 'pause'}`)}
                  done=${reload}
                />
              </td>
            </tr>
            ${
              open === s.id &&
              html`<tr>
                <td colspan="7"><${DeadLetters} sub=${s} /></td>
              </tr>`
            }`;
        })}
      </tbody>
    </table>
  </section>`;
}

function Deliveries() {
  const [state, setState] = useState('dead');
  const { items, error, empty, more, reload } = usePaged(`/v1/deliveries${qs({ state, limit: 100 })}`);
  return html`<section>
    <div class="toolbar">
      <select value=${state} onChange=${(e) => setState(e.target.value)} data-testid="delivery-state">
        ${['dead', 'retrying', 'pending', 'delivered'].map((s) => html`<option value=${s}>${s}</option>`)}
      </select>
      <button onClick=${reload}>refresh</button>
    </div>
    <${Failure} error=${error} />
    <table data-testid="delivery-list">
      <thead>
        <tr>
          <th>event</th>
          <th>subscription</th>
          <th>state</th>
          <th>attempts</th>
          <th>last</th>
          <th>updated</th>
          <th></th>
        </tr>
      </thead>
      <tbody>
        ${items.map(
          (d) =>
            html`<tr key=${d.event + d.subscription}>
              <td class="mono"><a href=${`#/events/${d.event}`}>${d.event}</a></td>
              <td>${d.application}/${d.subscription_name}</td>
              <td><${Badge} s=${d.state} /></td>
              <td>${d.attempts}</td>
              <td>${d.last_status ?? ''} <span class="mono">${d.last_error ?? ''}</span></td>
              <td>${when(d.updated_at)}</td>
              <td>
                <${Action}
                  label="retry"
                  run=${async () => (await api('POST', `/v1/deliveries/${d.event}/${d.subscription}/retry`), 'retry queued')}
                  done=${() => setTimeout(reload, 1000)}
                />
              </td>
            </tr>`,
        )}
      </tbody>
    </table>
    ${empty && html`<p class="muted">Nothing ${state}.</p>`} ${more && html`<button onClick=${more}>More</button>`}
  </section>`;
}

function Services() {
  const { data, error, reload } = useApi('/v1/services');
  useEffect(() => {
    const t = setInterval(reload, 5000);
    return () => clearInterval(t);
  }, [reload]);
  return html`<section>
    <${Failure} error=${error} />
    <table data-testid="services">
      <thead>
        <tr>
          <th>service</th>
          <th>status</th>
          <th>instances</th>
          <th>version</th>
          <th>host</th>
          <th>uptime</th>
          <th>last seen</th>
        </tr>
      </thead>
      <tbody>
        ${(data?.items ?? []).map(
          (s) =>
            html`<tr key=${s.fqn} data-testid=${`service-${s.fqn}`}>
              <td>${s.fqn}</td>
              <td><${Badge} s=${s.status} /></td>
              <td>${s.instances}</td>
              <td>${s.version ?? '—'}</td>
              <td>${s.host ?? '—'}</td>
              <td>${s.started_at && s.status !== 'down' ? duration(Date.now() - Date.parse(s.started_at)) : '—'}</td>
              <td>${when(s.last_seen)}</td>
            </tr>`,
        )}
      </tbody>
    </table>
    ${data && !data.items.length && html`<p class="muted">No service heard from.</p>`}
  </section>`;
}

function describe(m) {
  if (m.type === 'event')
    return html`<b>event</b> ${m.event.action} <a class="mono" href=${`#/events/${m.event.id}`}>${m.event.id}</a>`;
  if (m.type === 'delivery')
    return html`<b>delivery</b> ${m.application}/${m.subscription_name} <${Badge} s=${m.state} /> attempt ${m.attempt}
      ${m.status ?? ''}`;
  if (m.type === 'service') return html`<b>service</b> ${m.fqn} <${Badge} s=${m.status} />`;
  return html`<span class="mono">${JSON.stringify(m)}</span>`;
}

function Live() {
  const [pattern, setPattern] = useState('');
  const [items, setItems] = useState([]);
  const [status, setStatus] = useState('connecting');
  const seq = useRef(0);
  useEffect(() => {
    // A browser cannot set headers on a websocket, and the admin token must not ride in a URL: the
    // stream is opened with a one-use ticket asked for over the authenticated API.
    let ws = null;
    let gone = false;
    setStatus('connecting');
    api('POST', '/v1/stream/tickets').then(
      ({ ticket }) => {
        if (gone) return;
        const url = new URL('/v1/stream', location.href);
        url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
        url.searchParams.set('ticket', ticket);
        if (pattern) url.searchParams.set('actions', pattern);
        ws = new WebSocket(url);
        ws.onopen = () => setStatus('subscribing');
        ws.onclose = () => setStatus('closed');
        ws.onmessage = (ev) => {
          const m = JSON.parse(ev.data);
          if (m.type === 'hello') return setStatus('live'); // the server is subscribed: nothing is missed from here
          setItems((xs) => [{ k: ++seq.current, at: new Date(), m }, ...xs].slice(0, 200));
        };
      },
      () => setStatus('closed'),
    );
    return () => {
      gone = true;
      ws?.close();
    };
  }, [pattern]);
  return html`<section class="live">
    <form class="filters" onSubmit=${(e) => (e.preventDefault(), setPattern(new FormData(e.target).get('pattern')))}>
      <input name="pattern" placeholder="user.*, order.#" />
      <button type="submit">Tail</button>
      <span class=${`badge ${status === 'live' ? 'up' : 'down'}`} data-testid="live-status">${status}</span>
      <button type="button" onClick=${() => setItems([])}>clear</button>
    </form>
    <ul data-testid="live">
      ${items.map((x) => html`<li key=${x.k}><span class="muted">${x.at.toLocaleTimeString()}</span> ${describe(x.m)}</li>`)}
    </ul>
  </section>`;
}

const VIEWS = [
  ['events', 'Events'],
  ['deliveries', 'Failed deliveries'],
  ['subscriptions', 'Subscriptions'],
  ['actions', 'Actions'],
  ['applications', 'Applications'],
  ['services', 'Services'],
  ['live', 'Live'],
];

function App() {
  const hash = useHash();
  const [signedIn, setSignedIn] = useState(Boolean(token()));
  if (!signedIn) return html`<${Login} onDone=${() => setSignedIn(true)} />`;
  const [, view, arg] = hash.split('/');
  const body =
    view === 'events' && arg
      ? html`<${EventDetail} id=${arg} />`
      : view === 'deliveries'
        ? html`<${Deliveries} />`
        : view === 'subscriptions'
          ? html`<${Subscriptions} />`
          : view === 'actions'
            ? html`<${Actions} />`
            : view === 'applications'
              ? html`<${Applications} />`
              : view === 'services'
                ? html`<${Services} />`
                : view === 'live'
                  ? html`<${Live} />`
                  : html`<${Events} />`;
  return html`<div>
    <header>
      <h1>Amebo</h1>
      <nav>
        ${VIEWS.map(([k, label]) => html`<a href=${`#/${k}`} class=${view === k ? 'active' : ''} data-testid=${`nav-${k}`}>${label}</a>`)}
      </nav>
      <span class="right"
        ><a href="/docs" class="muted">API docs</a> ·
        <button onClick=${() => (sessionStorage.removeItem(TOKEN_KEY), setSignedIn(false))}>sign out</button></span
      >
    </header>
    <main>${body}</main>
  </div>`;
}

render(html`<${App} />`, document.getElementById('app'));
