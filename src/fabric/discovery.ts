/**
 * Keep-alives on the discovery exchange (amqp-fabric's `msc.discovery`) and the bookkeeping that
 * turns them into a service list. The parsing and status rules here are shared by the SDK's
 * `listServices` and Amebo's presence role, so both call a service up, stale or down alike.
 */
import { hostname } from 'node:os';
import type { MessageProperties } from 'amqplib';
import { MSG_TYPE, type ServiceAddress } from './names.js';

export type ServiceStatus = 'up' | 'stale' | 'down';

/** One service (FQN) as listed, whatever the number of instances behind it. */
export interface ServiceInfo {
  domain: string;
  type: string;
  id: string;
  fqn: string;
  status: ServiceStatus;
  /** Instances heard from within the TTL that have not said goodbye. */
  instances: number;
  /** From the most recently heard instance; null for senders that do not say (Python services). */
  version: string | null;
  host: string | null;
  started_at: string | null;
  /** ISO time of the last keep-alive from any instance. */
  last_seen: string;
}

/**
 * Emitted when a service's status changes. Shaped for event streams that mix kinds
 * (`{ "type": "service", ... }` on /v1/stream), so the service's own type is `service_type`.
 */
export interface ServiceChange extends Omit<ServiceInfo, 'type'> {
  type: 'service';
  service_type: string;
  /** The status before this change; null the first time the service is heard. */
  previous: ServiceStatus | null;
}

export function changeOf(info: ServiceInfo, previous: ServiceStatus | null): ServiceChange {
  const { type, ...rest } = info;
  return { type: 'service', service_type: type, ...rest, previous };
}

/** Facts a keep-alive carries about the sending process (JSON body; empty from Python services). */
export interface KeepAliveFacts {
  version?: string;
  host?: string;
  pid?: number;
  started_at?: string;
  interval_ms?: number;
}

export interface Beat {
  address: ServiceAddress;
  fqn: string;
  goodbye: boolean;
  facts: KeepAliveFacts;
  /** Identifies one process among the instances of a FQN. */
  instance: string;
}

/** The headers every keep-alive carries; values must be strings (longstr) for Python listeners. */
export function keepAliveHeaders(a: ServiceAddress, goodbye = false): Record<string, string> {
  return {
    msg_type: goodbye ? MSG_TYPE.goodbye : MSG_TYPE.keepAlive,
    service_domain: a.domain,
    service_type: a.type,
    service_id: a.id,
  };
}

export function ownFacts(version: string, intervalMs: number, startedAt: Date): KeepAliveFacts {
  return { version, host: hostname(), pid: process.pid, started_at: startedAt.toISOString(), interval_ms: intervalMs };
}

const str = (v: unknown): string | undefined =>
  typeof v === 'string' ? v : Buffer.isBuffer(v) ? v.toString('utf8') : undefined;

/** Reads a keep-alive or goodbye; null when it is not one we can attribute (like Python, which rejects those). */
export function parseBeat(props: MessageProperties, body: Buffer): Beat | null {
  const h = props.headers ?? {};
  const msgType = str(h.msg_type);
  if (msgType !== MSG_TYPE.keepAlive && msgType !== MSG_TYPE.goodbye) return null;
  const domain = str(h.service_domain);
  const type = str(h.service_type);
  const id = str(h.service_id);
  if (!domain || !type || !id) return null;
  let facts: KeepAliveFacts = {};
  if (body.length > 0) {
    try {
      const v: unknown = JSON.parse(body.toString('utf8'));
      if (v && typeof v === 'object' && !Array.isArray(v)) facts = pickFacts(v as Record<string, unknown>);
    } catch {
      // Python listeners drop such a beat; we keep the service but not the facts.
    }
  }
  const instance =
    facts.host || facts.pid ? `${facts.host ?? '?'}:${facts.pid ?? '?'}:${facts.started_at ?? '?'}` : 'default';
  return {
    address: { domain, type, id },
    fqn: `${domain}.${type}.${id}`,
    goodbye: msgType === MSG_TYPE.goodbye,
    facts,
    instance,
  };
}

function pickFacts(v: Record<string, unknown>): KeepAliveFacts {
  const f: KeepAliveFacts = {};
  if (typeof v.version === 'string') f.version = v.version;
  if (typeof v.host === 'string') f.host = v.host;
  if (typeof v.pid === 'number') f.pid = v.pid;
  if (typeof v.started_at === 'string') f.started_at = v.started_at;
  if (typeof v.interval_ms === 'number' && v.interval_ms > 0) f.interval_ms = v.interval_ms;
  return f;
}

/** One instance as remembered (in memory, or as JSON in Redis by the presence role). */
export interface InstanceRecord {
  domain: string;
  type: string;
  id: string;
  version: string | null;
  host: string | null;
  pid: number | null;
  started_at: string | null;
  /** Epoch ms of the last keep-alive. */
  last_seen: number;
  /** Said goodbye: down at once rather than after the TTL. */
  gone: boolean;
}

export function recordOf(b: Beat, now: number): InstanceRecord {
  return {
    domain: b.address.domain,
    type: b.address.type,
    id: b.address.id,
    version: b.facts.version ?? null,
    host: b.facts.host ?? null,
    pid: b.facts.pid ?? null,
    started_at: b.facts.started_at ?? null,
    last_seen: now,
    gone: b.goodbye,
  };
}

/** When an instance counts as stale and as down. */
export interface Thresholds {
  staleAfterMs: number;
  downAfterMs: number;
}

/**
 * Folds the instances of one FQN into a listing entry: up when any live instance was heard within
 * `staleAfterMs`, stale when within `downAfterMs`, down otherwise or when all said goodbye.
 */
export function summarize(fqn: string, records: InstanceRecord[], now: number, t: Thresholds): ServiceInfo | null {
  let latest: InstanceRecord | null = null;
  let liveLatest = -Infinity;
  let instances = 0;
  for (const r of records) {
    if (!latest || r.last_seen > latest.last_seen) latest = r;
    if (r.gone) continue;
    const age = now - r.last_seen;
    if (age <= t.downAfterMs) instances++;
    if (r.last_seen > liveLatest) liveLatest = r.last_seen;
  }
  if (!latest) return null;
  const age = now - liveLatest;
  const status: ServiceStatus = age <= t.staleAfterMs ? 'up' : age <= t.downAfterMs ? 'stale' : 'down';
  return {
    domain: latest.domain,
    type: latest.type,
    id: latest.id,
    fqn,
    status,
    instances,
    version: latest.version,
    host: latest.host,
    started_at: latest.started_at,
    last_seen: new Date(latest.last_seen).toISOString(),
  };
}

/** Exact filters: `proj` does not match `project1` (amqp-fabric's domain filter is a prefix). */
export function matches(s: { domain: string; type: string }, f: { domain?: string; type?: string }): boolean {
  return (f.domain === undefined || f.domain === s.domain) && (f.type === undefined || f.type === s.type);
}

/**
 * In-memory directory of what one listener has heard. `sweep()` reports status changes (including
 * the silent ones: a service that stops sending goes stale, then down) and forgets old entries.
 */
export class Directory {
  private readonly services = new Map<string, Map<string, InstanceRecord>>();
  private readonly last = new Map<string, ServiceStatus>();
  private readonly t: Thresholds;
  private readonly forgetAfterMs: number;

  constructor(t: Thresholds, forgetAfterMs: number) {
    this.t = t;
    this.forgetAfterMs = forgetAfterMs;
  }

  /** Records a beat; returns the change it causes, if any. */
  observe(b: Beat, now = Date.now()): ServiceChange | null {
    let inst = this.services.get(b.fqn);
    if (!inst) this.services.set(b.fqn, (inst = new Map()));
    inst.set(b.instance, recordOf(b, now));
    return this.check(b.fqn, now);
  }

  private check(fqn: string, now: number): ServiceChange | null {
    const info = summarize(fqn, [...(this.services.get(fqn)?.values() ?? [])], now, this.t);
    if (!info) return null;
    const previous = this.last.get(fqn) ?? null;
    if (previous === info.status) return null;
    this.last.set(fqn, info.status);
    return changeOf(info, previous);
  }

  /** Status changes due to silence, and forgetting. */
  sweep(now = Date.now()): ServiceChange[] {
    const out: ServiceChange[] = [];
    for (const [fqn, inst] of this.services) {
      for (const [k, r] of inst) if (now - r.last_seen > this.forgetAfterMs) inst.delete(k);
      if (inst.size === 0) {
        this.services.delete(fqn);
        this.last.delete(fqn);
        continue;
      }
      const c = this.check(fqn, now);
      if (c) out.push(c);
    }
    return out;
  }

  list(filter: { domain?: string; type?: string } = {}, now = Date.now()): ServiceInfo[] {
    const out: ServiceInfo[] = [];
    for (const [fqn, inst] of this.services) {
      const info = summarize(fqn, [...inst.values()], now, this.t);
      if (info && matches(info, filter)) out.push(info);
    }
    return out.sort((a, b) => a.fqn.localeCompare(b.fqn));
  }
}
