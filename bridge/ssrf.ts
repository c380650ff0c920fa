import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';

/** Ranges a webhook must not reach when private targets are blocked (design §6). */
const V4_BLOCKED: [number, number][] = [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, cloud metadata (169.254.169.254)
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
].map(([a, bits]) => [v4(a as string), bits as number]);

function v4(a: string): number {
  return a.split('.').reduce((n, p) => (n << 8) + Number(p), 0) >>> 0;
}

/** True for loopback, private, link-local, CGNAT, multicast, reserved and metadata addresses. */
export function isPrivateAddress(addr: string): boolean {
  let a = addr.toLowerCase();
  if (a.startsWith('[')) a = a.slice(1, -1);
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (mapped) a = mapped[1]!;
  if (isIP(a) === 4) {
    const n = v4(a);
    return V4_BLOCKED.some(([base, bits]) => bits === 0 || n >>> (32 - bits) === base >>> (32 - bits));
  }
  if (isIP(a) === 6) {
    if (a === '::' || a === '::1') return true;
    const first = parseInt(a.split(':')[0] || '0', 16);
    if ((first & 0xfe00) === 0xfc00) return true; // fc00::/7 unique local
    if ((first & 0xffc0) === 0xfe80) return true; // fe80::/10 link-local
    if ((first & 0xff00) === 0xff00) return true; // multicast
    if (a.startsWith('fd00:ec2::254')) return true; // AWS metadata over IPv6
    return false;
  }
  return true; // not an address at all: refuse
}

export class BlockedTargetError extends Error {
  override name = 'BlockedTargetError';
  readonly code = 'AMEBO_BLOCKED_TARGET';
}

/**
 * A `lookup` for net.connect that refuses private addresses, so the address checked is the one
 * connected to (no DNS-rebinding window between a check and the connect).
 */
export function guardedLookup(allowedHosts: Set<string>): LookupFunction {
  return ((hostname: string, options: object, callback: (...a: unknown[]) => void) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err);
      if (!allowedHosts.has(hostname.toLowerCase())) {
        const bad = addresses.find((x) => isPrivateAddress(x.address));
        if (bad)
          return callback(new BlockedTargetError(`${hostname} resolves to ${bad.address}, a private/reserved address`));
      }
      if ((options as { all?: boolean }).all) return callback(null, addresses);
      const first = addresses[0];
      if (!first) return callback(new Error(`no address for ${hostname}`));
      callback(null, first.address, first.family);
    });
  }) as LookupFunction;
}

/** Checks a URL whose host is an IP literal (the lookup hook never sees those). */
export function checkLiteralHost(url: URL, allowedHosts: Set<string>): void {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (allowedHosts.has(host.toLowerCase())) return;
  if (isIP(host) && isPrivateAddress(host)) throw new BlockedTargetError(`${host} is a private/reserved address`);
  if (host === 'localhost' || host.endsWith('.localhost')) throw new BlockedTargetError(`${host} is a loopback name`);
}
