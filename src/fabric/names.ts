/**
 * Every broker name the fabric uses, in one place, exactly as amqp-fabric 0.2.3 spells them
 * (see /work/shared/amqp-fabric-wire.md §0). A different flag or argument on any of these makes the
 * broker answer 406 to whichever peer declares second, so declarations live here too.
 */
import type { Options } from 'amqplib';

/** Identity of a service: `domain.type.id` is its FQN. */
export interface ServiceAddress {
  domain: string;
  type: string;
  id: string;
}

/**
 * Python listers split the FQN on every dot, so a dot inside a part corrupts their listings; the
 * constructor regex of amqp-fabric allows it, we do not.
 */
const PART = /^[A-Za-z0-9_-]{1,63}$/;
/** Method names become part of a queue name and of a Python attribute lookup. */
const METHOD = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

export class InvalidNameError extends Error {
  override name = 'InvalidNameError';
}

export function isValidPart(s: unknown): s is string {
  return typeof s === 'string' && PART.test(s);
}

export function isValidMethod(s: unknown): s is string {
  return typeof s === 'string' && METHOD.test(s);
}

export function assertAddress(a: ServiceAddress): void {
  for (const k of ['domain', 'type', 'id'] as const)
    if (!isValidPart(a[k]))
      throw new InvalidNameError(`service ${k} must match [A-Za-z0-9_-]{1,63} (no dots), got ${JSON.stringify(a[k])}`);
}

export function assertMethod(m: string): void {
  if (!isValidMethod(m))
    throw new InvalidNameError(`method name must match [A-Za-z_][A-Za-z0-9_]{0,127}, got ${JSON.stringify(m)}`);
}

export const fqnOf = (a: ServiceAddress): string => `${a.domain}.${a.type}.${a.id}`;

/** The per-service direct exchange RPC calls are published to. */
export const rpcExchange = (a: ServiceAddress): string => `${a.domain}.api.${a.type}.${a.id}`;
/** The per-method queue; also the routing key of its binding and of every call. */
export const methodQueue = (exchange: string, method: string): string => `${exchange}::${method}`;

/** Global (not per domain): expired and rejected calls come back to their caller through it. */
export const RPC_DLX = 'rpc.dlx';
export const DEFAULT_DISCOVERY_EXCHANGE = 'msc.discovery';
export const DEFAULT_DATA_SUFFIX = 'data';
export const dataExchange = (domain: string, suffix = DEFAULT_DATA_SUFFIX): string => `${domain}.${suffix}`;
export const logExchange = (domain: string): string => `${domain}.log.records`;

export const DECLARE = {
  rpcExchange: { durable: false, autoDelete: true, internal: false } satisfies Options.AssertExchange,
  methodQueue: {
    durable: false,
    autoDelete: true,
    exclusive: false,
    arguments: { 'x-dead-letter-exchange': RPC_DLX },
  } satisfies Options.AssertQueue,
  dlx: { durable: false, autoDelete: true } satisfies Options.AssertExchange,
  /** Discovery, data and log exchanges are durable headers exchanges. */
  durableHeaders: { durable: true, autoDelete: false } satisfies Options.AssertExchange,
  /** amqp-fabric's data subscriber queues: shared by name, so not exclusive. */
  dataQueue: { durable: false, autoDelete: true, exclusive: false } satisfies Options.AssertQueue,
  /** Our own per-process queues (reply, keep-alive listener, log tail). */
  privateQueue: { durable: false, autoDelete: true, exclusive: true } satisfies Options.AssertQueue,
} as const;

export const MSG_TYPE = {
  keepAlive: 'keep_alive',
  /** Our addition: Python listeners bind on msg_type=keep_alive only, so they never see it. */
  goodbye: 'goodbye',
} as const;
