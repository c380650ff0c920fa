// The fabric: services on the bus (filtered by domain and type; long-down entries hidden unless
// asked for), and a service's page with a form that calls one of its methods through the HTTP RPC
// gateway (result, remote error or timeout shown).
import { useCallback, useState } from 'preact/hooks';
import { api, Badge, duration, Empty, enc, Failure, html, Id, qs, Table, useApi, useEvery, when } from './lib.js';

/** A service down for longer than this is "long down": hidden unless the operator asks. */
const LONG_DOWN_MS = 15 * 60_000;
const longDown = (s) => s.status === 'down' && Date.now() - Date.parse(s.last_seen) > LONG_DOWN_MS;

export function Services() {
  const [f, setF] = useState({ domain: '', type: '' });
  const [showDown, setShowDown] = useState(false);
  const { data, error, reload } = useApi(`/v1/services${qs(f)}`);
  useEvery(5000, reload);
  const all = data?.items ?? [];
  const shown = showDown ? all : all.filter((s) => !longDown(s));
  const hidden = all.length - shown.length;
  const submit = (e) => {
    e.preventDefault();
    const d = new FormData(e.target);
    setF({ domain: String(d.get('domain') ?? '').trim(), type: String(d.get('type') ?? '').trim() });
  };
  return html`<section>
    <form class="filters" onSubmit=${submit} data-testid="service-filters">
      <input name="domain" placeholder="domain" aria-label="domain" />
      <input name="type" placeholder="type" aria-label="type" />
      <button type="submit">Filter</button>
      <label
        ><input
          type="checkbox"
          checked=${showDown}
          onChange=${(e) => setShowDown(e.target.checked)}
          data-testid="show-down"
        />
        show services down for over 15 min${hidden ? ` (${hidden} hidden)` : ''}</label
      >
    </form>
    <${Failure} error=${error} />
    <${Table} testid="services" head=${['service', 'status', 'instances', 'version', 'host', 'uptime', 'last seen']}>
      ${shown.map(
        (s) =>
          html`<tr key=${s.fqn} data-testid=${`service-${s.fqn}`}>
            <td><a href=${`#/services/${enc(s.fqn)}`}>${s.fqn}</a></td>
            <td><${Badge} s=${s.status} /></td>
            <td>${s.instances}</td>
            <td>${s.version ?? '—'}</td>
            <td>${s.host ?? '—'}</td>
            <td>${s.started_at && s.status !== 'down' ? duration(Date.now() - Date.parse(s.started_at)) : '—'}</td>
            <td>${when(s.last_seen)}</td>
          </tr>`,
      )}
    <//>
    ${
      data &&
      !shown.length &&
      html`<${Empty}>
        ${
          all.length
            ? 'Every service that matches has been down for a while: tick the box above to see them.'
            : f.domain || f.type
              ? 'No service matches (domain and type match exactly).'
              : 'No service heard from. Services announce themselves with keep-alives (amqp-fabric, or the fabric SDK: new FabricConnector({...}).open()).'
        }
      <//>`
    }
  </section>`;
}

/** A call through the gateway: method, keyword arguments (JSON) and a deadline. */
function CallForm({ svc }) {
  const [out, setOut] = useState(null);
  const [busy, setBusy] = useState(false);
  const call = useCallback(
    async (e) => {
      e.preventDefault();
      const d = new FormData(e.target);
      const method = String(d.get('method') ?? '').trim();
      const timeout = Number(d.get('timeout_ms') || 10_000);
      let args;
      try {
        args = JSON.parse(String(d.get('args') || '{}'));
      } catch (err) {
        return setOut({ error: { code: 'INVALID_JSON', message: `the arguments are not JSON: ${err.message}` } });
      }
      setBusy(true);
      setOut(null);
      const t0 = performance.now();
      try {
        const path = `/v1/rpc/${enc(svc.domain)}/${enc(svc.type)}/${enc(svc.id)}/${enc(method)}${qs({ timeout_ms: timeout })}`;
        const r = await api('POST', path, args, timeout + 5000);
        setOut({ result: r, ms: Math.round(performance.now() - t0) });
      } catch (err) {
        setOut({ error: err, ms: Math.round(performance.now() - t0) });
      } finally {
        setBusy(false);
      }
    },
    [svc],
  );
  return html`<form class="call" onSubmit=${call} data-testid="call-form">
    <label>method <input name="method" required placeholder="multiply" /></label>
    <label>arguments (JSON object of keyword arguments)<textarea name="args" rows="4">{}</textarea></label>
    <label>timeout (ms) <input name="timeout_ms" type="number" min="1" value="10000" /></label>
    <button class="primary" type="submit" disabled=${busy}>${busy ? 'calling…' : 'call'}</button>
    ${
      out?.result !== undefined &&
      html`<div data-testid="call-result">
        <span class="note">answered in ${out.ms} ms</span>
        <pre>${JSON.stringify(out.result, null, 2)}</pre>
      </div>`
    }
    ${out?.error && html`<div data-testid="call-error"><${Failure} error=${out.error} /></div>`}
  </form>`;
}

export function ServicePage({ fqn }) {
  const parts = fqn.split('.');
  const [domain, type] = [parts[0], parts[1]];
  const { data, error, reload } = useApi(`/v1/services${qs({ domain, type })}`);
  useEvery(5000, reload);
  const svc = data?.items?.find((s) => s.fqn === fqn);
  if (error) return html`<${Failure} error=${error} />`;
  if (!data) return html`<p class="muted">Loading…</p>`;
  if (!svc)
    return html`<${Empty}
      >No service <span class="mono">${fqn}</span> heard from. <a href="#/services">All services</a><//
    >`;
  return html`<section data-testid="service-page">
    <h2>${svc.fqn} <${Badge} s=${svc.status} /></h2>
    <div class="grid">
      <span class="muted">fqn</span><span><${Id} id=${svc.fqn} /></span> <span class="muted">instances</span
      ><span>${svc.instances}</span> <span class="muted">version</span><span>${svc.version ?? '—'}</span>
      <span class="muted">host</span><span>${svc.host ?? '—'}</span> <span class="muted">up since</span
      ><span>${when(svc.started_at)}</span> <span class="muted">last seen</span><span>${when(svc.last_seen)}</span>
    </div>
    <h3>Call a method</h3>
    <p class="muted">
      Keep-alives do not list a service's methods: name the method. The call goes through
      <code>POST /v1/rpc/${svc.domain}/${svc.type}/${svc.id}/:method</code>.
    </p>
    <${CallForm} svc=${svc} />
  </section>`;
}
