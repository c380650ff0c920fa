// Manage: applications (create, edit the address, rotate the secret, delete), actions (register with
// a schema, new versions through an editor with the compatibility check's answer, a diff between
// versions, a test event built from the schema, delete) and subscriptions (create, edit with the
// pattern, delete).
import { useState } from 'preact/hooks';
import { Action, api, Empty, enc, Failure, html, Id, Table, useApi, when } from './lib.js';
import { ShownOnce } from './health.js';

/** Form fields as an object of trimmed strings. */
const fields = (form) => Object.fromEntries([...new FormData(form)].map(([k, v]) => [k, String(v).trim()]));

/** A form that submits through `run` (an API call); shows the refusal, or `ok`'s text. */
function ApiForm({ run, children, testid, label, cls = 'stack' }) {
  const [busy, setBusy] = useState(false);
  const [msg, setMsg] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setMsg(null);
    try {
      const text = await run(fields(e.target), e.target);
      setMsg({ ok: true, text: text ?? 'saved' });
    } catch (err) {
      setMsg({ ok: false, err });
    } finally {
      setBusy(false);
    }
  };
  return html`<form class=${cls} onSubmit=${submit} data-testid=${testid}>
    ${children}
    <div>
      <button class="primary" type="submit" disabled=${busy}>${label}</button>
      ${msg?.ok && html` <span class="note" data-testid="form-result">${msg.text}</span>`}
    </div>
    ${msg && !msg.ok && html`<${Failure} error=${msg.err} />`}
  </form>`;
}

// ------------------------------------------------------------------ applications

function Applications({ apps: { data, error, reload } }) {
  const [secret, setSecret] = useState(null);
  const items = data?.items ?? [];
  return html`<section data-testid="manage-applications">
    <h3>Applications</h3>
    <${Failure} error=${error} />
    ${secret && html`<${ShownOnce} label=${`secret of ${secret.app}`} secret=${secret.secret} testid="app-secret" />`}
    <${Table} testid="applications" head=${['application', 'address', 'created', '']}>
      ${items.map(
        (a) =>
          html`<tr key=${a.application} data-testid=${`app-${a.application}`}>
            <td>${a.application}</td>
            <td>
              <${ApiForm}
                cls="inline"
                label="save"
                testid="save-address"
                run=${async (f) => {
                  // The address is shown with its credentials redacted: sent only when changed.
                  if ((f.address || null) === (a.address ?? null)) return 'unchanged';
                  await api('PATCH', `/v1/applications/${enc(a.application)}`, { address: f.address || null });
                  reload();
                  return 'saved';
                }}
              >
                <input
                  name="address"
                  defaultValue=${a.address ?? ''}
                  placeholder="address (optional)"
                  aria-label="address"
                />
              <//>
            </td>
            <td>${when(a.created_at)}</td>
            <td>
              <${Action}
                label="rotate secret"
                testid="rotate-app-secret"
                confirmText=${`A new secret for ${a.application}: the current one stops working now. Rotate?`}
                run=${async () => {
                  const r = await api('POST', `/v1/applications/${enc(a.application)}/secret`, {});
                  setSecret({ app: a.application, secret: r.secret });
                  return 'rotated';
                }}
              />
              <${Action}
                label="delete"
                cls="danger"
                testid="delete-app"
                confirmText=${`Delete ${a.application} with its actions and subscriptions (and their queues)?`}
                run=${() => api('DELETE', `/v1/applications/${enc(a.application)}`)}
                done=${reload}
              />
            </td>
          </tr>`,
      )}
    <//>
    ${data && !items.length && html`<${Empty}>No application yet: register the first one below.<//>`}
    <details>
      <summary>Register an application</summary>
      <${ApiForm}
        testid="new-application"
        label="register"
        run=${async (f) => {
          const r = await api('POST', '/v1/applications', {
            application: f.application,
            ...(f.address ? { address: f.address } : {}),
          });
          setSecret({ app: r.application, secret: r.secret });
          reload();
          return `registered ${r.application}`;
        }}
      >
        <label>name <input name="application" required placeholder="shop" /></label>
        <label>address <input name="address" placeholder="https://shop.example (optional)" /></label>
      <//>
    </details>
  </section>`;
}

// ------------------------------------------------------------------ actions

/** A line diff of two texts (LCS; schemas are small), as `[kind, line]` with kind ' ', '+' or '-'. */
export function diffLines(a, b) {
  const x = a.split('\n');
  const y = b.split('\n');
  if (x.length * y.length > 250_000)
    return [
      ['-', a],
      ['+', b],
    ];
  const n = x.length;
  const m = y.length;
  const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) (out.push([' ', x[i++]]), j++);
    else if (L[i + 1][j] >= L[i][j + 1]) out.push(['-', x[i++]]);
    else out.push(['+', y[j++]]);
  }
  while (i < n) out.push(['-', x[i++]]);
  while (j < m) out.push(['+', y[j++]]);
  return out;
}

const pretty = (v) => JSON.stringify(v, null, 2);

/** An example payload from a JSON Schema (defaults, examples, enums, then a value of the type). */
export function exampleOf(s, depth = 0) {
  if (!s || typeof s !== 'object' || depth > 8) return {};
  if ('default' in s) return s.default;
  if (Array.isArray(s.examples) && s.examples.length) return s.examples[0];
  if ('const' in s) return s.const;
  if (Array.isArray(s.enum) && s.enum.length) return s.enum[0];
  const t = Array.isArray(s.type) ? s.type.find((x) => x !== 'null') : s.type;
  if (t === 'object' || (!t && s.properties)) {
    const o = {};
    for (const [k, p] of Object.entries(s.properties ?? {})) o[k] = exampleOf(p, depth + 1);
    return o;
  }
  if (t === 'array') return s.items ? [exampleOf(s.items, depth + 1)] : [];
  if (t === 'string')
    return s.format === 'date-time' ? new Date().toISOString() : s.format === 'email' ? 'someone@example.com' : 'text';
  if (t === 'integer' || t === 'number') return s.minimum ?? 1;
  if (t === 'boolean') return true;
  return {};
}

function Diff({ from, to }) {
  return html`<pre class="diff" data-testid="diff">
${diffLines(pretty(from), pretty(to)).map(
      ([k, line]) => html`<span class=${k === '+' ? 'add' : k === '-' ? 'del' : ''}>${`${k} ${line}\n`}</span>`,
    )}</pre>`;
}

/** What the compatibility check answered: the version a save would make, or each break. */
function CheckAnswer({ r }) {
  if (r.compatible)
    return html`<span class="note" data-testid="schema-check-result"
      >compatible (${r.mode}) with v${r.current_version}: saving makes v${r.version}</span
    >`;
  return html`<div class="error" data-testid="schema-check-result">
    not compatible (${r.mode}) with v${r.current_version}: a save would be refused
    <ul>
      ${r.violations.map((v) => html`<li data-testid="schema-violation">${v}</li>`)}
    </ul>
  </div>`;
}

/** One action: its versions with a diff, a new version through the editor, a test event. */
function ActionEditor({ action, done }) {
  const { data, reload } = useApi(`/v1/actions/${enc(action.action)}/versions`);
  const versions = data?.items ?? [];
  const [a, setA] = useState(null);
  const [b, setB] = useState(null);
  const [draft, setDraft] = useState(() => pretty(action.schemata));
  const [parseError, setParseError] = useState(null);
  const [payload, setPayload] = useState(() => pretty(exampleOf(action.schemata)));
  const [mode, setMode] = useState('BACKWARD');
  // The compatibility check's answer for this draft and mode (cleared when either changes).
  const [check, setCheck] = useState(null);
  const runCheck = async () => {
    if (parsed === undefined) return setCheck({ err: { code: 'INVALID_JSON', message: 'the schema is not JSON' } });
    setCheck({ busy: true });
    try {
      const r = await api('POST', `/v1/actions/${enc(action.action)}/schema/check?compatibility=${mode}`, {
        schemata: parsed,
      });
      setCheck({ r });
    } catch (err) {
      setCheck({ err });
    }
  };
  const last = versions[versions.length - 1];
  const va = versions.find((v) => v.version === a) ?? versions[versions.length - 2] ?? last;
  const vb = versions.find((v) => v.version === b) ?? last;
  let parsed = null;
  try {
    parsed = JSON.parse(draft);
  } catch {
    parsed = undefined;
  }
  return html`<div class="editor" data-testid="action-editor">
    <h4>${action.action} <span class="muted">v${action.version} · ${action.application}</span></h4>
    <${ApiForm}
      testid="action-settings"
      label="save"
      cls="inline"
      run=${async (f) => {
        const subscribers = f.subscribers ? f.subscribers.split(/[\s,]+/).filter(Boolean) : null;
        await api('PATCH', `/v1/actions/${enc(action.action)}`, { description: f.description || null, subscribers });
        done?.();
        return 'saved';
      }}
    >
      <input
        name="description"
        defaultValue=${action.description ?? ''}
        placeholder="description"
        aria-label="description"
      />
      <input
        name="subscribers"
        defaultValue=${action.subscribers?.join(', ') ?? ''}
        placeholder="who may subscribe (empty: everyone)"
        aria-label="subscribers"
      />
    <//>
    ${
      versions.length > 1 &&
      html`<div>
        <label
          >diff
          <select value=${va?.version} onChange=${(e) => setA(Number(e.target.value))} data-testid="diff-from">
            ${versions.map((v) => html`<option value=${v.version}>v${v.version}</option>`)}
          </select></label
        >
        <label
          >→
          <select value=${vb?.version} onChange=${(e) => setB(Number(e.target.value))} data-testid="diff-to">
            ${versions.map((v) => html`<option value=${v.version}>v${v.version}</option>`)}
          </select></label
        >
        ${va && vb && html`<${Diff} from=${va.schemata} to=${vb.schemata} />`}
      </div>`
    }
    <${ApiForm}
      testid="schema-editor"
      label="check and save as a new version"
      run=${async (f) => {
        if (parsed === undefined) throw Object.assign(new Error('the schema is not JSON'), { code: 'INVALID_JSON' });
        const r = await api('PUT', `/v1/actions/${enc(action.action)}/schema?compatibility=${f.compatibility}`, {
          schemata: parsed,
        });
        reload();
        done?.();
        return `compatible (${f.compatibility}): saved as v${r.version}`;
      }}
    >
      <label
        >schema (JSON Schema 2020-12)
        <textarea
          name="schemata"
          rows="10"
          class="mono"
          value=${draft}
          onInput=${(e) => {
            setDraft(e.target.value);
            setCheck(null);
            try {
              JSON.parse(e.target.value);
              setParseError(null);
            } catch (err) {
              setParseError(err.message);
            }
          }}
          data-testid="schema-text"
        ></textarea>
      </label>
      ${parseError && html`<div class="error" data-testid="schema-parse-error">not JSON: ${parseError}</div>`}
      ${
        parsed !== undefined &&
        last &&
        html`<details>
          <summary>changes from v${last.version}</summary>
          <${Diff} from=${last.schemata} to=${parsed} />
        </details>`
      }
      <label
        >compatibility
        <select
          name="compatibility"
          value=${mode}
          onChange=${(e) => (setMode(e.target.value), setCheck(null))}
          data-testid="compatibility"
        >
          ${['BACKWARD', 'FORWARD', 'FULL', 'NONE'].map((c) => html`<option value=${c}>${c}</option>`)}
        </select>
      </label>
      <div data-testid="schema-check">
        <button type="button" onClick=${runCheck} disabled=${check?.busy}>check compatibility</button>
        ${check?.r && html` <${CheckAnswer} r=${check.r} />`} ${check?.err && html`<${Failure} error=${check.err} />`}
      </div>
    <//>
    <${ApiForm}
      testid="test-event"
      label="publish this test event"
      run=${async () => {
        const r = await api('POST', '/v1/events', { action: action.action, payload: JSON.parse(payload) });
        return html`published <a href=${`#/events/${r.event}`} data-testid="test-event-link">${r.event}</a>`;
      }}
    >
      <label
        >payload (built from the schema; edit it)
        <textarea
          name="payload"
          rows="6"
          class="mono"
          value=${payload}
          onInput=${(e) => setPayload(e.target.value)}
        ></textarea>
      </label>
    <//>
  </div>`;
}

function Actions({ apps }) {
  const { data, error, reload } = useApi('/v1/actions');
  const [open, setOpen] = useState(null);
  const items = data?.items ?? [];
  return html`<section data-testid="manage-actions">
    <h3>Actions</h3>
    <${Failure} error=${error} />
    <${Table} testid="manage-action-list" head=${['action', 'application', 'version', 'description', '']}>
      ${items.map(
        (a) =>
          html`<tr key=${a.action} data-testid=${`action-${a.action}`}>
            <td>${a.action}</td>
            <td>${a.application}</td>
            <td>v${a.version}</td>
            <td>${a.description ?? ''}</td>
            <td>
              <button
                type="button"
                onClick=${() => setOpen(open === a.action ? null : a.action)}
                data-testid="edit-action"
              >
                ${open === a.action ? 'close' : 'schema, test event'}
              </button>
              <${Action}
                label="delete"
                cls="danger"
                testid="delete-action"
                confirmText=${`Delete the action ${a.action} and its schema versions? Stored events keep their action name; it is refused while a subscription names it.`}
                run=${() => api('DELETE', `/v1/actions/${enc(a.action)}`)}
                done=${() => (open === a.action && setOpen(null), reload())}
              />
            </td>
          </tr>`,
      )}
    <//>
    ${(() => {
      // Below the table, not in a row of it: a long schema line must not widen the table.
      const a = items.find((x) => x.action === open);
      return a ? html`<${ActionEditor} key=${a.action} action=${a} done=${reload} />` : '';
    })()}
    ${data && !items.length && html`<${Empty}>No action yet: register one below (an application must exist first).<//>`}
    <details>
      <summary>Register an action</summary>
      <${ApiForm}
        testid="new-action"
        label="register"
        run=${async (f) => {
          const schemata = f.schemata ? JSON.parse(f.schemata) : {};
          const r = await api('POST', '/v1/actions', {
            action: f.action,
            application: f.application,
            schemata,
            ...(f.description ? { description: f.description } : {}),
          });
          reload();
          return `registered ${r.action}`;
        }}
      >
        <label>name <input name="action" required placeholder="order.v1.placed" /></label>
        <label
          >application
          <select name="application" required>
            ${apps.map((a) => html`<option value=${a.application}>${a.application}</option>`)}
          </select></label
        >
        <label>description <input name="description" /></label>
        <label>schema (JSON) <textarea name="schemata" rows="5" class="mono">{"type": "object"}</textarea></label>
      <//>
    </details>
  </section>`;
}

// ------------------------------------------------------------------ subscriptions

const numOrNull = (v) => (v === '' || v === undefined ? undefined : Number(v));
/** The delivery settings of a subscription form, only those filled in. */
function settings(f, form) {
  const out = {};
  if (f.handler) out.handler = f.handler;
  if (f.max_attempts) out.max_attempts = numOrNull(f.max_attempts);
  if (f.max_age) out.max_age = numOrNull(f.max_age);
  if (f.retry_schedule)
    out.retry_schedule = f.retry_schedule
      .split(/[\s,]+/)
      .filter(Boolean)
      .map(Number);
  if (f.timeout_ms) out.timeout_ms = numOrNull(f.timeout_ms);
  out.rate_limit = f.rate_limit ? Number(f.rate_limit) : null;
  if ('description' in f) out.description = f.description || null;
  void form;
  return out;
}

const SettingsFields = ({ s }) => html`
  <label
    >handler URL <input name="handler" defaultValue=${s?.handler ?? ''} placeholder="https://example.com/hooks"
  /></label>
  <label>max attempts <input name="max_attempts" type="number" min="1" defaultValue=${s?.max_attempts ?? ''} /></label>
  <label>max age (s) <input name="max_age" type="number" min="1" defaultValue=${s?.max_age ?? ''} /></label>
  <label
    >retry schedule (s)
    <input name="retry_schedule" defaultValue=${s?.retry_schedule?.join(', ') ?? ''} placeholder="5, 30, 120"
  /></label>
  <label>timeout (ms) <input name="timeout_ms" type="number" min="100" defaultValue=${s?.timeout_ms ?? ''} /></label>
  <label>rate limit (/s) <input name="rate_limit" type="number" min="1" defaultValue=${s?.rate_limit ?? ''} /></label>
  <label>description <input name="description" defaultValue=${s?.description ?? ''} /></label>
`;

function Subscriptions({ apps }) {
  const { data, error, reload } = useApi('/v1/subscriptions');
  const [open, setOpen] = useState(null);
  const [secret, setSecret] = useState(null);
  const items = data?.items ?? [];
  return html`<section data-testid="manage-subscriptions">
    <h3>Subscriptions</h3>
    <${Failure} error=${error} />
    ${secret && html`<${ShownOnce} label=${`signing secret of ${secret.name}`} secret=${secret.secret} testid="new-subscription-secret" />`}
    <${Table} testid="manage-subscription-list" head=${['subscription', 'action', 'delivers to', '']}>
      ${items.map(
        (s) =>
          html`<tr key=${s.id} data-testid=${`msub-${s.subscription}`}>
              <td>
                <a href=${`#/subscriptions/${s.id}`}>${s.application}/${s.subscription}</a>
                <div><${Id} id=${s.id} /></div>
              </td>
              <td>${s.action}</td>
              <td class="mono">${s.handler ?? `queue ${s.queue}`}</td>
              <td>
                <button
                  type="button"
                  onClick=${() => setOpen(open === s.id ? null : s.id)}
                  data-testid="edit-subscription"
                >
                  ${open === s.id ? 'close' : 'edit'}
                </button>
                <${Action}
                  label="delete"
                  cls="danger"
                  testid="delete-subscription"
                  confirmText=${`Delete ${s.application}/${s.subscription} and its queues (waiting messages are lost)?`}
                  run=${() => api('DELETE', `/v1/subscriptions/${s.id}`)}
                  done=${reload}
                />
              </td>
            </tr>
            ${
              open === s.id &&
              html`<tr>
                <td colspan="4">
                  <${ApiForm}
                    testid="subscription-editor"
                    label="save"
                    run=${async (f) => {
                      const body = settings(f);
                      // The handler is shown with its credentials redacted: sent only when changed.
                      if (s.transport !== 'http' || body.handler === s.handler) delete body.handler;
                      // A new pattern rebinds the queue (the new binding first, then the old one goes).
                      if (f.action && f.action !== s.action) body.action = f.action;
                      await api('PATCH', `/v1/subscriptions/${s.id}`, body);
                      reload();
                      return 'saved';
                    }}
                  >
                    <label
                      >action or pattern
                      <input name="action" required defaultValue=${s.action} placeholder="order.* or order.#"
                    /></label>
                    <label class="check"
                      ><input type="checkbox" checked=${s.ordered} disabled data-testid="ordered-readonly" /> ordered
                      <span class="muted">(set at creation only: a queue argument RabbitMQ cannot change)</span></label
                    >
                    <${SettingsFields} s=${s} />
                  <//>
                </td>
              </tr>`
            }`,
      )}
    <//>
    ${data && !items.length && html`<${Empty}>No subscription yet: create one below.<//>`}
    <details>
      <summary>Create a subscription</summary>
      <${ApiForm}
        testid="new-subscription"
        label="create"
        run=${async (f) => {
          const r = await api('POST', '/v1/subscriptions', {
            application: f.application,
            subscription: f.subscription,
            action: f.action,
            transport: f.transport,
            ordered: f.ordered === 'on',
            ...settings(f),
          });
          setSecret({ name: `${r.application}/${r.subscription}`, secret: r.signing_secret });
          reload();
          return `created ${r.subscription}`;
        }}
      >
        <label
          >application
          <select name="application" required>
            ${apps.map((a) => html`<option value=${a.application}>${a.application}</option>`)}
          </select></label
        >
        <label>name <input name="subscription" required placeholder="billing" /></label>
        <label>action or pattern <input name="action" required placeholder="order.* or order.#" /></label>
        <label
          >transport
          <select name="transport">
            <option value="http">http (webhook)</option>
            <option value="amqp">amqp (native queue)</option>
          </select></label
        >
        <label class="check"><input type="checkbox" name="ordered" /> ordered (one at a time, in order)</label>
        <${SettingsFields} />
      <//>
    </details>
  </section>`;
}

export function Manage() {
  const all = useApi('/v1/applications');
  const apps = all.data?.items ?? [];
  return html`<section data-testid="manage">
    <${Applications} apps=${all} />
    <${Actions} apps=${apps} />
    <${Subscriptions} apps=${apps} />
  </section>`;
}
