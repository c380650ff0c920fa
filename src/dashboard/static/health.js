// Health at a glance: the home view (every subscription's state, backlog, success rate, p99 and a
// sparkline over the window) and a subscription's page (charts over 5 m / 1 h / 24 h, what waits for
// it, its dead letters, and what an operator does to it).
import { useState } from 'preact/hooks';
import {
  Action,
  api,
  Badge,
  Copy,
  Empty,
  enc,
  Failure,
  html,
  Id,
  isoOf,
  localOf,
  ms,
  pct,
  Table,
  useApi,
  useEvery,
  when,
  WindowPicker,
} from './lib.js';
import { Sparkline, TimeChart } from './charts.js';

/** The state badge of a subscription's health, with the next probe of an open circuit. */
export function HealthState({ h, s }) {
  const state = h?.state ?? (s?.disabled_reason ? 'disabled' : s?.paused ? 'paused' : null);
  if (!state) return html`<span class="muted">…</span>`;
  return html`<${Badge} s=${state} />
    ${state === 'circuit_open' && h?.breaker?.next_probe_at ? html`<div class="muted">next probe ${when(h.breaker.next_probe_at)}</div>` : ''}
    ${state === 'disabled' && (h?.disabled_reason ?? s?.disabled_reason) ? html`<div class="muted">${h?.disabled_reason ?? s?.disabled_reason}</div>` : ''}`;
}

function HomeRow({ s, win, tick }) {
  const { data: h, reload: r1 } = useApi(`/v1/subscriptions/${s.id}/health?window=${win}`);
  const { data: st, reload: r2 } = useApi(`/v1/subscriptions/${s.id}/stats?window=${win}`);
  useEvery(tick, () => (r1(), r2()));
  const b = st?.buckets ?? [];
  return html`<tr data-testid=${`home-${s.subscription}`}>
    <td>
      <a href=${`#/subscriptions/${s.id}`} data-testid="open">${s.application}/${s.subscription}</a>
      <div class="muted">${s.action}</div>
    </td>
    <td data-testid="home-state"><${HealthState} h=${h} s=${s} /></td>
    <td data-testid="home-backlog">${h ? (h.backlog ?? '?') : ''}</td>
    <td data-testid="home-success">${h ? pct(h.success_rate) : ''}</td>
    <td data-testid="home-p99">${h ? ms(h.latency_ms.p99) : ''}</td>
    <td>
      ${
        st &&
        html`<${Sparkline}
          values=${b.map((x) => x.attempts)}
          bad=${b.map((x) => x.failures)}
          label=${`attempts and failures over ${win}`}
        />`
      }
    </td>
  </tr>`;
}

export function Home() {
  const [win, setWin] = useState('1h');
  const { data, error } = useApi('/v1/subscriptions');
  const items = data?.items ?? [];
  return html`<section data-testid="home">
    <div class="toolbar">
      <h2>Subscriptions at a glance</h2>
      <${WindowPicker} value=${win} onChange=${setWin} />
    </div>
    <${Failure} error=${error} />
    ${
      data && !items.length
        ? html`<${Empty}>
            No subscription yet. Create one in <a href="#/manage">Manage</a> (or <code>amebo subscribe</code>): its
            state, backlog and success rate show up here.
          <//>`
        : html`<${Table}
            testid="home-table"
            head=${['subscription', 'state', 'backlog', `success (${win})`, `p99 (${win})`, 'attempts']}
          >
            ${items.map((s) => html`<${HomeRow} key=${s.id + win} s=${s} win=${win} tick=${10_000} />`)}
          <//>`
    }
  </section>`;
}

const CHARTS = [
  { title: 'attempts', testid: 'chart-attempts', series: [{ key: 'attempts', label: 'attempts' }] },
  {
    title: 'successes and failures',
    testid: 'chart-outcomes',
    series: [
      { key: 'successes', label: 'successes' },
      { key: 'failures', label: 'failures' },
    ],
  },
  {
    title: 'latency',
    testid: 'chart-latency',
    unit: ' ms',
    series: [
      { key: 'p50_ms', label: 'p50', color: '#1098ad', points: true },
      { key: 'p99_ms', label: 'p99', color: '#e67700', points: true },
    ],
  },
  { title: 'backlog', testid: 'chart-backlog', series: [{ key: 'backlog', label: 'backlog', points: true }] },
];

/** Events waiting for the subscription, from the event log (its queue is not touched). */
function Pending({ sub }) {
  const { data, error } = useApi(sub.transport === 'http' ? `/v1/subscriptions/${sub.id}/pending?limit=10` : null);
  if (sub.transport !== 'http')
    return html`<p class="muted">Consumed natively over AMQP: its consumer settles events.</p>`;
  if (error) return html`<${Failure} error=${error} />`;
  if (!data) return html`<p class="muted">loading…</p>`;
  if (!data.items.length) return html`<${Empty} testid="pending-empty">Nothing waits for it.<//>`;
  return html`<${Table} testid="pending" head=${['event', 'action', 'created', 'state', 'attempts']}>
    ${data.items.map(
      (e) =>
        html`<tr key=${e.id}>
          <td><${Id} id=${e.id} href=${`#/events/${e.id}`} /></td>
          <td>${e.action}</td>
          <td>${when(e.created_at)}</td>
          <td><${Badge} s=${e.state} /></td>
          <td>${e.attempts}</td>
        </tr>`,
    )}
  <//>`;
}

/** Dead letters of one subscription, resurrected in bulk. */
export function DeadLetters({ sub }) {
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
      html`<${Table} head=${['event', 'reason', 'attempts', 'last error', 'dead at']}>
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
      <//>`
    }
  </div>`;
}

/** A secret shown once, with a copy button; gone when the page is left. */
export const ShownOnce = ({ label, secret, testid }) =>
  html`<div class="secret" data-testid=${testid}>
    <span class="muted">${label} (shown only now):</span> <code data-testid="secret-value">${secret}</code>
    <${Copy} text=${secret} />
  </div>`;

/** Test send, rotate the signing secret, replay a time range. */
function Operate({ sub, reload }) {
  const [secret, setSecret] = useState(null);
  const [test, setTest] = useState(null);
  const [range, setRange] = useState(() => ({ from: localOf(new Date(Date.now() - 3600_000)), to: '' }));
  return html`<div class="operate">
    <div class="toolbar">
      <${Action}
        label=${sub.paused ? 'resume' : 'pause'}
        testid="pause"
        run=${() => api('POST', `/v1/subscriptions/${sub.id}/${sub.paused ? 'resume' : 'pause'}`)}
        done=${reload}
      />
      ${
        sub.transport === 'http' &&
        html`<${Action}
            label="send a test event"
            testid="test-send"
            run=${async () => {
              const r = await api('POST', `/v1/subscriptions/${sub.id}/test`, undefined, 30_000);
              setTest(r);
              return r.delivered
                ? `delivered: ${r.status} in ${r.latency_ms} ms`
                : `not delivered: ${r.status ?? r.error_class ?? ''}`;
            }}
          />
          <${Action}
            label="rotate signing secret"
            testid="rotate-secret"
            confirmText="A new signing secret; the previous ones keep signing for 24 h. Rotate?"
            run=${async () => {
              const r = await api('POST', `/v1/subscriptions/${sub.id}/rotate-secret`, {});
              setSecret(r.signing_secret);
              return 'rotated';
            }}
          />`
      }
    </div>
    ${secret && html`<${ShownOnce} label="new signing secret" secret=${secret} testid="new-secret" />`}
    ${
      test &&
      html`<div class="grid" data-testid="test-result">
        <span class="muted">event</span><span class="mono">${test.event}</span> <span class="muted">status</span
        ><span>${test.status ?? '—'} ${test.error ?? ''}</span> <span class="muted">response</span>
        <pre>${test.response_excerpt ?? ''}</pre>
      </div>`
    }
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      <label
        >replay from
        <input
          type="datetime-local"
          name="from"
          value=${range.from}
          onInput=${(e) => setRange({ ...range, from: e.target.value })}
      /></label>
      <label
        >to
        <input
          type="datetime-local"
          name="to"
          value=${range.to}
          onInput=${(e) => setRange({ ...range, to: e.target.value })}
      /></label>
      <${Action}
        label="replay"
        testid="replay"
        confirmText="Send the stored events of this time range to this subscription again?"
        run=${async () => {
          const r = await api('POST', `/v1/subscriptions/${sub.id}/replay`, {
            from: isoOf(range.from),
            ...(range.to ? { to: isoOf(range.to) } : {}),
          });
          return `replayed ${r.count}`;
        }}
      />
    </form>
  </div>`;
}

export function SubscriptionPage({ id }) {
  const [win, setWin] = useState('1h');
  const { data: s, error, reload } = useApi(`/v1/subscriptions/${enc(id)}`);
  const { data: h, reload: rh } = useApi(s ? `/v1/subscriptions/${s.id}/health?window=${win}` : null);
  const { data: st, error: se, reload: rs } = useApi(s ? `/v1/subscriptions/${s.id}/stats?window=${win}` : null);
  useEvery(15_000, () => (rh(), rs()));
  if (error) return html`<${Failure} error=${error} />`;
  if (!s) return html`<p class="muted">Loading…</p>`;
  return html`<section data-testid="subscription-page">
    <h2>${s.application}/${s.subscription} <${HealthState} h=${h} s=${s} /></h2>
    <div class="grid">
      <span class="muted">id</span><span data-testid="subscription-id"><${Id} id=${s.id} /></span>
      <span class="muted">action</span><span>${s.action}</span> <span class="muted">delivers to</span
      ><span class="mono">${s.handler ?? `queue ${s.queue}`}</span> <span class="muted">retries</span
      ><span>${s.max_attempts} attempts over at most ${s.max_age} s; schedule ${s.retry_schedule.join(', ')} s</span>
      <span class="muted">settings</span
      ><span
        >${s.ordered ? 'ordered · ' : ''}${s.rate_limit ? `${s.rate_limit}/s · ` : ''}timeout ${s.timeout_ms} ms ·
        format ${s.format}</span
      >
    </div>
    <div class="toolbar">
      <h3>Over the last</h3>
      <${WindowPicker} value=${win} onChange=${setWin} />
    </div>
    ${
      h &&
      html`<div class="figures" data-testid="figures">
        <div><b data-testid="fig-backlog">${h.backlog ?? '?'}</b><span class="muted">backlog</span></div>
        <div><b>${h.retrying}</b><span class="muted">retrying</span></div>
        <div><b>${h.dead ?? '?'}</b><span class="muted">dead</span></div>
        <div><b data-testid="fig-attempts">${h.attempts}</b><span class="muted">attempts</span></div>
        <div><b data-testid="fig-success">${pct(h.success_rate)}</b><span class="muted">success</span></div>
        <div><b>${ms(h.latency_ms.p50)}</b><span class="muted">p50</span></div>
        <div><b data-testid="fig-p99">${ms(h.latency_ms.p99)}</b><span class="muted">p99</span></div>
      </div>`
    }
    ${h?.last_error && html`<p class="muted">last error: <span class="mono">${h.last_error}</span></p>`}
    <${Failure} error=${se} />
    ${
      st &&
      html`<div class="charts" data-testid="charts">
        ${CHARTS.map((c) => html`<${TimeChart} key=${c.testid + win} ...${c} buckets=${st.buckets} />`)}
      </div>`
    }
    <h3>Operate</h3>
    <${Operate} sub=${s} reload=${reload} />
    <h3>Waiting</h3>
    <${Pending} sub=${s} />
    <h3>Dead letters</h3>
    <${DeadLetters} sub=${s} />
  </section>`;
}
