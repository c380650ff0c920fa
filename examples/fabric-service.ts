/**
 * A TypeScript service on the AMQP fabric (wire-compatible with Python's amqp-fabric) and a client
 * that calls it, lists it from its keep-alives and gets a typed remote error back:
 *
 *   npx tsx examples/fabric-service.ts [amqp://guest:guest@127.0.0.1:5672]
 *
 * In an application: `import { FabricConnector, RemoteError, ServiceError } from 'amebo'`.
 */
import { FabricConnector, RemoteError, ServiceError } from '../src/index.js';

const url = process.argv[2] ?? process.env.AMEBO_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const domain = process.env.FABRIC_DOMAIN ?? 'shop';

/** What the pricing service offers; the proxy below is typed by it. */
interface Pricing {
  quote(args: { sku: string; qty?: number }): { sku: string; qty: number; total: number };
}

const PRICES: Record<string, number> = { 'A-1': 9.5, 'B-2': 20 };

// The service: an explicit set of methods, up to 8 calls at once on this instance.
const pricing = new FabricConnector({ amqpUrl: url, domain, type: 'pricing', id: 'p1', version: '1.0.0' });
await pricing.open({ timeoutMs: 10_000 });
await pricing.rpcRegister(
  {
    quote: async ({ sku, qty = 1 }: { sku: string; qty?: number }) => {
      const price = PRICES[sku];
      // A Python caller receives this as ValueError, a TypeScript one as RemoteError { type: 'ValueError' }.
      if (price === undefined) throw new ServiceError('ValueError', `unknown sku ${sku}`);
      return { sku, qty, total: price * qty };
    },
  },
  { concurrency: 8 },
);

// A client in another part of the system.
const storefront = new FabricConnector({ amqpUrl: url, domain, type: 'storefront', id: 's1' });
await storefront.open({ timeoutMs: 10_000 });
const prices = await storefront.rpcProxy<Pricing>(domain, 'p1', 'pricing', { timeoutMs: 2000 });

console.log('quote:', JSON.stringify(await prices.quote({ sku: 'A-1', qty: 3 })));
try {
  await prices.quote({ sku: 'Z-9' });
} catch (err) {
  if (!(err instanceof RemoteError)) throw err;
  console.log(`remote error: ${err.type}: ${err.message}`);
}
const services = await storefront.listServices({ domain, type: 'pricing' });
console.log('services:', services.map((s) => `${s.fqn} ${s.status} v${s.version}`).join(', '));

await storefront.close();
await pricing.close();
