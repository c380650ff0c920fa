// Amebo dashboard: Preact + htm, no build step. Every view reads the public HTTP API with the admin
// token the operator typed in; the live tail uses the same websocket as `amebo monitor`.
import { render } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import {
  Action,
  api,
  askOtherTabs,
  Badge,
  Empty,
  Failure,
  html,
  Id,
  isoOf,
  localOf,
  onAuth,
  qs,
  setToken,
  shareToken,
  signOut,
  Table,
  token,
  useApi,
  useHash,
  usePaged,
  when,
} from './lib.js';
import { DeadLetters, HealthState, Home, SubscriptionPage } from './health.js';
import { EventDetail, Events } from './events.js';
import { ServicePage, Services } from './fabric.js';
import { Manage } from './manage.js';

function Login({ onDone }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    setToken(value.trim());
    try {
      await api('GET', '/v1/applications');
      shareToken();
      onDone();
    } catch (err) {
      signOut();
      setError(err);
    }
  };
  return html`<form class="login" onSubmit=${submit}>
    <h2>Amebo</h2>
    <p class="muted">
      The admin token (printed by <code>amebo serve</code> on first start, or <code>AMEBO_ADMIN_TOKEN</code>). It is
      kept for this browser session only, and shared with the dashboard's other tabs while one is open.
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
      <a href="#/manage">register or edit actions in Manage</a>
    </div>
    <${Failure} error=${error} />
    <${Table} testid="actions" head=${['action', 'application', 'version', 'description']}>
      ${(data?.items ?? []).map(
        (a) =>
          html`<tr key=${a.action}>
            <td><a href="#/actions" onClick=${(ev) => (ev.preventDefault(), setPicked(a))}>${a.action}</a></td>
            <td>${a.application}</td>
            <td>${a.version}</td>
            <td>${a.description ?? ''}</td>
          </tr>`,
      )}
    <//>
    ${
      data &&
      !data.items.length &&
      html`<${Empty}>${q ? `No action matches “${q}”.` : 'No action registered yet: register one in Manage.'}<//>`
    }
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

/** State (circuit open included), backlog and success rate of one subscription, from its health. */
function SubscriptionHealth({ s }) {
  const { data: h } = useApi(`/v1/subscriptions/${s.id}/health?window=1h`);
  return html`<td data-testid=${`state-${s.subscription}`}><${HealthState} h=${h} s=${s} /></td>
    <td data-testid=${`backlog-${s.subscription}`}>${h ? (h.backlog ?? '?') : ''}</td>
    <td>${h && h.success_rate !== null ? `${Math.round(h.success_rate * 1000) / 10}%` : '—'}</td>`;
}

function Subscriptions() {
  const { data, error, reload } = useApi('/v1/subscriptions');
  const [open, setOpen] = useState(null);
  return html`<section>
    <${Failure} error=${error} />
    <${Table}
      testid="subscriptions"
      head=${['subscription', 'action', 'transport', 'state', 'backlog', 'success (1 h)', '']}
    >
      ${(data?.items ?? []).map(
        (s) =>
          html`<tr key=${s.id} data-testid=${`sub-${s.subscription}`}>
              <td>
                <a href=${`#/subscriptions/${s.id}`}>${s.application}/${s.subscription}</a>
                <div><${Id} id=${s.id} /></div>
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
            }`,
      )}
    <//>
    ${data && !data.items.length && html`<${Empty}>No subscription yet: create one in <a href="#/manage">Manage</a>.<//>`}
  </section>`;
}

/**
 * Every dead letter that died since `since`, in every subscription, moved back to its queue (the
 * server's resurrect with `since`: older dead letters stay in their dead queues, in order).
 */
async function resurrectDeadSince(since) {
  const { items } = await api('GET', '/v1/subscriptions');
  let resurrected = 0;
  let older = 0;
  const failed = [];
  for (let i = 0; i < items.length; i += 4)
    await Promise.all(
      items.slice(i, i + 4).map((s) =>
        api('POST', `/v1/subscriptions/${s.id}/dead-letters/resurrect`, { since: new Date(since).toISOString() }).then(
          (r) => ((resurrected += r.resurrected), (older += r.older)),
          (e) => failed.push(`${s.application}/${s.subscription}: ${e.code}`),
        ),
      ),
    );
  return `resurrected ${resurrected} dead letter(s) from ${items.length - failed.length} subscription(s); ${older} older left${failed.length ? ` (${failed.length} refused: ${failed.slice(0, 3).join(', ')})` : ''}`;
}

function Deliveries() {
  const [state, setState] = useState('dead');
  const [since, setSince] = useState(() => localOf(new Date(Date.now() - 3600_000)));
  const { items, error, empty, more, reload } = usePaged(`/v1/deliveries${qs({ state, limit: 100 })}`);
  return html`<section>
    <div class="toolbar">
      <select value=${state} onChange=${(e) => setState(e.target.value)} data-testid="delivery-state">
        ${['dead', 'retrying', 'pending', 'delivered'].map((s) => html`<option value=${s}>${s}</option>`)}
      </select>
      <button onClick=${reload}>refresh</button>
    </div>
    <form class="filters" onSubmit=${(e) => e.preventDefault()} data-testid="bulk-resurrect">
      <label
        >everything dead since
        <input type="datetime-local" name="since" value=${since} onInput=${(e) => setSince(e.target.value)}
      /></label>
      <${Action}
        label="resurrect all"
        testid="resurrect-dead-since"
        confirmText="Move every dead letter that died since then back to its subscription (attempts reset)?"
        run=${() => resurrectDeadSince(Date.parse(isoOf(since)))}
        done=${() => setTimeout(reload, 1000)}
      />
    </form>
    <${Failure} error=${error} />
    <${Table} testid="delivery-list" head=${['event', 'subscription', 'state', 'attempts', 'last', 'updated', '']}>
      ${items.map(
        (d) =>
          html`<tr key=${d.event + d.subscription}>
            <td><${Id} id=${d.event} href=${`#/events/${d.event}`} /></td>
            <td><a href=${`#/subscriptions/${d.subscription}`}>${d.application}/${d.subscription_name}</a></td>
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
    <//>
    ${
      empty &&
      html`<${Empty}
        >${
          state === 'dead'
            ? 'Nothing dead: every delivery succeeded or is still being tried.'
            : `Nothing ${state} right now.`
        }<//
      >`
    }
    ${more && html`<button onClick=${more}>More</button>`}
  </section>`;
}

/** One live-tail line: what happened, to which event, for which subscription, and how it ended. */
function describe(m) {
  if (m.type === 'event')
    return html`<b>event</b> ${m.event.action} <a class="mono" href=${`#/events/${m.event.id}`}>${m.event.id}</a>`;
  if (m.type === 'delivery')
    return html`<b>delivery</b> <a class="mono" href=${`#/events/${m.event}`} data-testid="live-event">${m.event}</a> →
      <a href=${`#/subscriptions/${m.subscription}`} data-testid="live-subscription"
        >${m.application}/${m.subscription_name}</a
      >
      <${Badge} s=${m.state} /> attempt ${m.attempt} ${m.status ?? ''}
      ${m.error ? html`<span class="mono error-text" data-testid="live-error">${m.error}</span>` : ''}`;
  if (m.type === 'service') return html`<b>service</b> ${m.fqn} <${Badge} s=${m.status} />`;
  return html`<span class="mono">${JSON.stringify(m)}</span>`;
}

function Live() {
  const [pattern, setPattern] = useState('');
  const [items, setItems] = useState([]);
  const [status, setStatus] = useState('connecting');
  const [paused, setPaused] = useState(false);
  const [heldN, setHeldN] = useState(0);
  const held = useRef([]);
  const pausedRef = useRef(false);
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
          let m;
          try {
            m = JSON.parse(ev.data);
          } catch {
            return;
          }
          if (m.type === 'hello') return setStatus('live'); // the server is subscribed: nothing is missed from here
          const line = { k: ++seq.current, at: new Date(), m };
          // Paused: lines are held (the newest 1000), shown again on resume.
          if (pausedRef.current) {
            held.current = [line, ...held.current].slice(0, 1000);
            setHeldN(held.current.length);
          } else setItems((xs) => [line, ...xs].slice(0, 200));
        };
      },
      () => setStatus('closed'),
    );
    return () => {
      gone = true;
      ws?.close();
    };
  }, [pattern]);
  const toggle = () => {
    pausedRef.current = !paused;
    if (paused) {
      const h = held.current;
      held.current = [];
      setHeldN(0);
      setItems((xs) => [...h, ...xs].slice(0, 200));
    }
    setPaused(!paused);
  };
  return html`<section class="live">
    <form class="filters" onSubmit=${(e) => (e.preventDefault(), setPattern(new FormData(e.target).get('pattern')))}>
      <input name="pattern" placeholder="user.*, order.#" />
      <button type="submit">Tail</button>
      <span class=${`badge ${status === 'live' ? 'up' : 'down'}`} data-testid="live-status">${status}</span>
      <button type="button" onClick=${toggle} data-testid="live-pause">${paused ? 'resume' : 'pause'}</button>
      ${paused && html`<span class="muted" data-testid="live-held">paused: ${heldN} new line(s) held</span>`}
      <button type="button" onClick=${() => setItems([])}>clear</button>
    </form>
    ${
      !items.length &&
      html`<${Empty} testid="live-empty">
        Waiting for traffic${pattern ? ` matching ${pattern}` : ''}: events and delivery outcomes appear here as they
        happen. Publish one with <code>amebo publish</code>, or send a test event from a subscription's page.
      <//>`
    }
    <ul data-testid="live">
      ${items.map(
        (x) =>
          html`<li key=${x.k} data-testid=${`live-${x.m.type}`}>
            <span class="muted">${x.at.toLocaleTimeString()}</span> ${describe(x.m)}
          </li>`,
      )}
    </ul>
  </section>`;
}

const VIEWS = [
  ['home', 'Home'],
  ['events', 'Events'],
  ['deliveries', 'Failed deliveries'],
  ['subscriptions', 'Subscriptions'],
  ['actions', 'Actions'],
  ['manage', 'Manage'],
  ['services', 'Services'],
  ['live', 'Live'],
];

function route(view, arg) {
  if (view === 'events' && arg) return html`<${EventDetail} id=${arg} />`;
  if (view === 'subscriptions' && arg) return html`<${SubscriptionPage} id=${decodeURIComponent(arg)} />`;
  if (view === 'services' && arg) return html`<${ServicePage} fqn=${decodeURIComponent(arg)} />`;
  if (view === 'events') return html`<${Events} />`;
  if (view === 'deliveries') return html`<${Deliveries} />`;
  if (view === 'subscriptions') return html`<${Subscriptions} />`;
  if (view === 'actions') return html`<${Actions} />`;
  if (view === 'manage' || view === 'applications') return html`<${Manage} />`;
  if (view === 'services') return html`<${Services} />`;
  if (view === 'live') return html`<${Live} />`;
  return html`<${Home} />`;
}

function App() {
  const hash = useHash();
  // unknown: asking the other tabs for the token (a new tab of a signed-in session).
  const [signedIn, setSignedIn] = useState(token() ? true : null);
  useEffect(() => {
    const off = onAuth(setSignedIn);
    if (signedIn === null) askOtherTabs().then((ok) => setSignedIn(ok));
    return off;
  }, []);
  if (signedIn === null) return html`<p class="muted login">…</p>`;
  if (!signedIn) return html`<${Login} onDone=${() => setSignedIn(true)} />`;
  const [, view, arg] = hash.split('/');
  return html`<div>
    <header>
      <h1>Amebo</h1>
      <nav>
        ${VIEWS.map(
          ([k, label]) =>
            html`<a href=${`#/${k}`} class=${(view || 'home') === k ? 'active' : ''} data-testid=${`nav-${k}`}
              >${label}</a
            >`,
        )}
      </nav>
      <span class="right"
        ><a href="/docs" class="muted">API docs</a> ·
        <button onClick=${() => (signOut(), setSignedIn(false))} data-testid="sign-out">sign out</button></span
      >
    </header>
    <main>${route(view, arg)}</main>
  </div>`;
}

render(html`<${App} />`, document.getElementById('app'));
