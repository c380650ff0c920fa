// The event explorer: filters (action with `*`/`#` wildcards, application, delivery state, time
// range) with a delivery-state column; an event's page with every matching subscription's state,
// every attempt with its response excerpt, and a timeline.
import { useEffect, useState } from 'preact/hooks';
import { Action, api, Badge, Empty, Failure, html, Id, isoOf, qs, Table, useApi, usePaged, when } from './lib.js';

const RECORD_STATES = ['pending', 'retrying', 'delivered', 'dead'];

/** `{ delivered: 2, dead: 1 }` as badges; nothing recorded yet says so. */
function StatesCell({ states }) {
  const entries = Object.entries(states ?? {}).filter(([, n]) => n > 0);
  if (!entries.length) return html`<span class="muted">no attempt yet</span>`;
  return entries.map(([s, n]) => html`<span class="state-count"><${Badge} s=${s} />${n > 1 ? ` ×${n}` : ''} </span>`);
}

export function Events() {
  const [filters, setFilters] = useState({ action: '', application: '', state: '', from: '', to: '' });
  const { items, error, empty, more } = usePaged(`/v1/events${qs({ ...filters, with: 'states', limit: 50 })}`);
  const submit = (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    setFilters({
      action: String(f.get('action') ?? '').trim(),
      application: String(f.get('application') ?? '').trim(),
      state: String(f.get('state') ?? ''),
      from: isoOf(String(f.get('from') ?? '')),
      to: isoOf(String(f.get('to') ?? '')),
    });
  };
  const filtered = Object.values(filters).some(Boolean);
  return html`<section>
    <form class="filters" onSubmit=${submit} data-testid="event-filters">
      <input name="action" placeholder="action: order.*, order.#" aria-label="action or pattern" />
      <input name="application" placeholder="application" aria-label="application" />
      <select name="state" aria-label="delivery state">
        <option value="">any delivery state</option>
        ${RECORD_STATES.map((s) => html`<option value=${s}>${s}</option>`)}
      </select>
      <label>from <input type="datetime-local" name="from" /></label>
      <label>to <input type="datetime-local" name="to" /></label>
      <button type="submit">Filter</button>
    </form>
    <${Failure} error=${error} />
    <${Table} testid="events" head=${['created', 'action', 'application', 'event', 'deliveries', 'published']}>
      ${items.map(
        (e) =>
          html`<tr key=${e.id}>
            <td>${when(e.created_at)}</td>
            <td>${e.action}</td>
            <td>${e.application}</td>
            <td><${Id} id=${e.id} href=${`#/events/${e.id}`} /></td>
            <td data-testid="event-states"><${StatesCell} states=${e.delivery_states} /></td>
            <td>${e.published ? 'yes' : html`<span class="muted">relay</span>`}</td>
          </tr>`,
      )}
    <//>
    ${
      empty &&
      (filtered
        ? html`<${Empty}
            >No event matches these filters. Widen the time range, or try a pattern such as <code>order.#</code>.<//
          >`
        : html`<${Empty}>
            No event yet. Applications publish with <code>POST /v1/events</code> (or <code>amebo publish</code>); a
            subscription's page can send a test event.
          <//>`)
    }
    ${more && html`<button onClick=${more}>More</button>`}
  </section>`;
}

/** Every attempt of one delivery, with the handler's response excerpt. */
function Attempts({ items }) {
  return html`<${Table} testid="attempts" head=${['#', 'at', 'status', 'latency', 'error', 'response']}>
    ${items.map(
      (a) =>
        html`<tr key=${a.attempt + a.created_at}>
          <td>${a.attempt}</td>
          <td>${when(a.created_at)}</td>
          <td>${a.status ?? a.error_class ?? ''}</td>
          <td>${a.latency_ms ?? '—'} ms</td>
          <td class="mono">${a.error ?? ''}</td>
          <td><pre class="excerpt" data-testid="excerpt">${a.response_excerpt ?? ''}</pre></td>
        </tr>`,
    )}
  <//>`;
}

/** The attempt logs of every attempted delivery of the event (one request each). */
function useAttempts(event, deliveries) {
  const key = `${event}|${deliveries
    .filter((d) => d.attempts > 0)
    .map((d) => `${d.subscription}:${d.attempts}`)
    .join(',')}`;
  const [logs, setLogs] = useState({});
  useEffect(() => {
    if (!event) return undefined;
    let live = true;
    Promise.all(
      deliveries
        .filter((d) => d.attempts > 0)
        .map((d) =>
          api('GET', `/v1/deliveries/${event}/${d.subscription}/attempts`).then(
            (r) => [d.subscription, r.items],
            (err) => [d.subscription, err],
          ),
        ),
    ).then((pairs) => live && setLogs(Object.fromEntries(pairs)));
    return () => {
      live = false;
    };
  }, [key]);
  return logs;
}

/** The event's life: created, published, each attempt, what is scheduled next. */
function Timeline({ e, logs }) {
  const rows = [{ at: e.created_at, what: 'created', who: e.application }];
  if (e.deliver_at) rows.push({ at: e.deliver_at, what: 'due (deliver_at)', who: '' });
  for (const d of e.deliveries) {
    const log = Array.isArray(logs[d.subscription]) ? logs[d.subscription] : [];
    for (const a of log)
      rows.push({
        at: a.created_at,
        what: `attempt ${a.attempt}: ${a.status ?? a.error_class ?? '?'}${a.error ? ` (${a.error})` : ''}`,
        who: `${d.application}/${d.subscription_name}`,
        ok: a.status >= 200 && a.status < 300,
      });
    if (d.next_attempt_at && d.state !== 'delivered')
      rows.push({
        at: d.next_attempt_at,
        what: 'next attempt',
        who: `${d.application}/${d.subscription_name}`,
        future: true,
      });
    if (d.next_probe_at)
      rows.push({
        at: d.next_probe_at,
        what: 'next probe (circuit open)',
        who: `${d.application}/${d.subscription_name}`,
        future: true,
      });
  }
  rows.sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
  return html`<ol class="timeline" data-testid="timeline">
    ${rows.map(
      (r, i) =>
        html`<li key=${i} class=${r.future ? 'future' : r.ok === true ? 'ok' : r.ok === false ? 'bad' : ''}>
          <span class="muted">${when(r.at)}</span> <b>${r.what}</b> <span>${r.who}</span>
        </li>`,
    )}
  </ol>`;
}

export function EventDetail({ id }) {
  const { data: e, error, reload } = useApi(`/v1/events/${encodeURIComponent(id)}`);
  const logs = useAttempts(e?.id === id ? id : null, e?.deliveries ?? []);
  if (error) return html`<${Failure} error=${error} />`;
  if (!e) return html`<p class="muted">Loading…</p>`;
  return html`<section data-testid="event-detail">
    <h2>${e.action} <span class="mono muted">${e.id}</span></h2>
    <div class="grid">
      <span class="muted">id</span><span><${Id} id=${e.id} /></span> <span class="muted">application</span
      ><span>${e.application}</span> <span class="muted">created</span><span>${when(e.created_at)}</span>
      <span class="muted">published</span><span>${e.published ? 'yes' : 'not yet (the relay will)'}</span>
      <span class="muted">deduper</span><span>${e.deduper ?? '—'}</span> <span class="muted">conversation</span
      ><span class="mono">${e.conversation_id}</span> <span class="muted">schema version</span
      ><span>${e.schema_version}</span>
    </div>
    <pre data-testid="payload">${JSON.stringify(e.payload, null, 2)}</pre>
    <h3>Deliveries</h3>
    ${!e.deliveries.length && html`<${Empty}>No subscription matches this action: subscribe to it in <a href="#/manage">Manage</a>.<//>`}
    <${Table} testid="deliveries" head=${['subscription', 'state', 'attempts', 'last', '']}>
      ${e.deliveries.map(
        (d) =>
          html`<tr key=${d.subscription} data-testid=${`delivery-${d.subscription_name}`}>
              <td><a href=${`#/subscriptions/${d.subscription}`}>${d.application}/${d.subscription_name}</a></td>
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
                  d.transport === 'http' &&
                  (d.attempts > 0 || d.state === 'not_routed') &&
                  html`<${Action}
                    label="retry"
                    testid=${`retry-${d.subscription_name}`}
                    run=${async () => (await api('POST', `/v1/deliveries/${e.id}/${d.subscription}/retry`), 'retry queued')}
                    done=${() => setTimeout(reload, 1000)}
                  />`
                }
              </td>
            </tr>
            ${
              d.attempts > 0 &&
              html`<tr data-testid=${`attempts-${d.subscription_name}`}>
                <td colspan="5">
                  ${
                    logs[d.subscription] instanceof Error
                      ? html`<${Failure} error=${logs[d.subscription]} />`
                      : Array.isArray(logs[d.subscription])
                        ? html`<${Attempts} items=${logs[d.subscription]} />`
                        : html`<span class="muted">loading attempts…</span>`
                  }
                </td>
              </tr>`
            }`,
      )}
    <//>
    <h3>Timeline</h3>
    <${Timeline} e=${e} logs=${logs} />
  </section>`;
}
