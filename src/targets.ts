/**
 * Webhook target policy (design §6, issue "safe to expose"): which addresses a tenant's webhook may
 * reach. Addresses are classified with ipaddr.js (never with regexes); every IPv6 form that embeds
 * an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) is judged by the address it embeds.
 * The same policy runs when a subscription is registered and at connect time (DNS rebinding).
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

type Addr = ipaddr.IPv4 | ipaddr.IPv6;

/** Why an address is not a public unicast one, e.g. `loopback`, `ipv4Mapped(private)`; null when public. */
export function privateRange(address: string): string | null {
  let a: Addr;
  try {
    a = ipaddr.parse(address.replace(/^\[|\]$/g, '').replace(/%.*$/, ''));
  } catch {
    return 'not an IP address';
  }
  if (a.kind() === 'ipv4') {
    const r = a.range();
    return r === 'unicast' ? null : r;
  }
  const v6 = a as ipaddr.IPv6;
  const r = v6.range();
  const p = v6.parts;
  const v4 = (hi: number, lo: number): ipaddr.IPv4 => new ipaddr.IPv4([hi >> 8, hi & 255, lo >> 8, lo & 255]);
  const embedded = (name: string, ...inner: ipaddr.IPv4[]): string | null => {
    for (const x of inner) {
      const ir = x.range();
      if (ir !== 'unicast') return `${name}(${ir})`;
    }
    return null;
  };
  switch (r) {
    case 'ipv4Mapped': // ::ffff:a.b.c.d
    case 'rfc6145': // ::ffff:0:a.b.c.d
      return embedded(r, v4(p[6]!, p[7]!));
    case 'rfc6052': // NAT64: 64:ff9b::/96 embeds at the end; 64:ff9b:1::/48 is local use only
      return p[2] === 1 ? 'rfc6052(local-use)' : embedded(r, v4(p[6]!, p[7]!));
    case '6to4': // 2002:AABB:CCDD::
      return embedded(r, v4(p[1]!, p[2]!));
    case 'teredo': // 2001:0:server:server:flags:port:~client:~client
      return embedded(r, v4(p[2]!, p[3]!), v4(~p[6]! & 0xffff, ~p[7]! & 0xffff));
    case 'unicast':
      // IPv4-compatible (::a.b.c.d, deprecated): ipaddr.js has no range for it.
      if (p.slice(0, 6).every((x) => x === 0)) return embedded('ipv4Compatible', v4(p[6]!, p[7]!)) ?? 'ipv4Compatible';
      // AWS's IPv6 metadata endpoint lives in unique-local space (fd00:ec2::254), already private.
      return null;
    default:
      return r;
  }
}

interface Rule {
  host?: string;
  cidr?: [Addr, number];
  port?: number;
}

/**
 * `AMEBO_ALLOWED_TARGETS`: comma-separated host names, `host:port`, IP addresses (`[v6]:port` with
 * a port) and CIDRs. A host name exempts whatever it resolves to; an address or CIDR exempts the
 * addresses it covers, under any name.
 */
export function parseAllowList(spec: string): Rule[] {
  const rules: Rule[] = [];
  for (const raw of spec.split(',')) {
    const s = raw.trim().toLowerCase();
    if (!s) continue;
    if (s.includes('/')) {
      try {
        rules.push({ cidr: ipaddr.parseCIDR(s) });
      } catch {
        throw new Error(`"${raw.trim()}" is not a CIDR`);
      }
      continue;
    }
    let host = s;
    let port: number | undefined;
    const bracket = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(s);
    const hostPort = /^([^:]+):(\d{1,5})$/.exec(s);
    if (bracket) [host, port] = [bracket[1]!, bracket[2] ? Number(bracket[2]) : undefined];
    else if (hostPort) [host, port] = [hostPort[1]!, Number(hostPort[2])];
    if (port !== undefined && (port < 1 || port > 65535)) throw new Error(`bad port in allowed target "${raw}"`);
    if (isIP(host)) {
      const a = ipaddr.parse(host);
      rules.push({ cidr: [a, a.kind() === 'ipv4' ? 32 : 128], ...(port ? { port } : {}) });
    } else rules.push({ host, ...(port ? { port } : {}) });
  }
  return rules;
}

/** Normalises IPv4-mapped IPv6 to IPv4 so `127.0.0.0/8` covers `::ffff:127.0.0.1` too. */
function normal(address: string): Addr | null {
  try {
    return ipaddr.process(address.replace(/^\[|\]$/g, '').replace(/%.*$/, ''));
  } catch {
    return null;
  }
}

export class TargetForbiddenError extends Error {
  override name = 'TargetForbiddenError';
  readonly code = 'AMEBO_BLOCKED_TARGET';
  readonly address: string;
  readonly range: string;
  constructor(host: string, address: string, range: string) {
    super(host === address ? `${address} is a ${range} address` : `${host} resolves to ${address}, a ${range} address`);
    this.address = address;
    this.range = range;
  }
}

export interface TargetPolicyOptions {
  /** Refuse private targets. @default true */
  block: boolean;
  /** `AMEBO_ALLOWED_TARGETS`. */
  allowed: string;
}

/** The policy one process applies, at registration and at connect time. */
export class TargetPolicy {
  readonly block: boolean;
  private readonly rules: Rule[];

  constructor(o: TargetPolicyOptions) {
    this.block = o.block;
    this.rules = parseAllowList(o.allowed);
  }

  /** True when an explicit rule exempts this host name, port or address. */
  allows(host: string, port: number, address: string | null): boolean {
    const h = host.replace(/^\[|\]$/g, '').toLowerCase();
    const a = address ? normal(address) : null;
    return this.rules.some((r) => {
      if (r.port !== undefined && r.port !== port) return false;
      if (r.host !== undefined) return r.host === h;
      if (!a || !r.cidr) return false;
      const [net, bits] = r.cidr;
      const cand = a.kind() === net.kind() ? a : null;
      return cand !== null && cand.match(net, bits);
    });
  }

  /** Throws TargetForbiddenError when `address` (what `host` resolved to) may not be reached. */
  check(host: string, port: number, address: string): void {
    if (!this.block || this.allows(host, port, address)) return;
    const range = privateRange(address);
    if (range) throw new TargetForbiddenError(host.replace(/^\[|\]$/g, ''), address, range);
  }

  /**
   * The registration check: the URL's host, or every address its name resolves to now (bounded
   * wait). A name that does not resolve is accepted: the connect-time check still guards it.
   */
  async checkUrl(url: URL, timeoutMs = 3000): Promise<void> {
    if (!this.block) return;
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
    if (isIP(host)) return this.check(host, port, host);
    if (this.allows(host, port, null)) return;
    if (host === 'localhost' || host.endsWith('.localhost')) throw new TargetForbiddenError(host, host, 'loopback');
    const addresses = await resolveAll(host, timeoutMs).catch(() => [] as LookupAddress[]);
    for (const a of addresses) this.check(host, port, a.address);
  }

  /** Port of a URL the way the connect-time check sees it. */
  static port(url: URL): number {
    return Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
  }

  /**
   * A `lookup` for net/tls.connect that applies the policy to the addresses actually connected to,
   * so nothing can change between the check and the connect (DNS rebinding).
   */
  lookup(port: number) {
    return (
      hostname: string,
      options: { all?: boolean },
      callback: (err: Error | null, address?: string | LookupAddress[], family?: number) => void,
    ): void => {
      dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
        if (err) return callback(err);
        try {
          for (const a of addresses) this.check(hostname, port, a.address);
        } catch (e) {
          return callback(e as Error);
        }
        if (options.all) return callback(null, addresses);
        const first = addresses[0];
        if (!first) return callback(new Error(`no address for ${hostname}`));
        callback(null, first.address, first.family);
      });
    };
  }
}

function resolveAll(host: string, timeoutMs: number): Promise<LookupAddress[]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no DNS answer for ${host} within ${timeoutMs} ms`)), timeoutMs);
    dnsLookup(host, { all: true }, (err, addresses) => {
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(addresses);
    });
  });
}
