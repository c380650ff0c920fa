import net from 'node:net';
import type { Config } from '../../src/config.js';
import { destroy, seedShop, start, testEnv, type Running, type TestEnv } from './harness.js';

/**
 * A TCP proxy on loopback in front of a real server, so a test can cut or stall a connection at
 * an exact moment (the broker's answers held back, then every socket destroyed).
 */
export class TcpProxy {
  private server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private holding = false;
  private refusing = false;
  port = 0;
  private readonly targetPort: number;
  private readonly targetHost: string;

  constructor(targetPort: number, targetHost = '127.0.0.1') {
    this.targetPort = targetPort;
    this.targetHost = targetHost;
    this.server = net.createServer((client) => {
      if (this.refusing) return void client.destroy();
      const upstream = net.connect(this.targetPort, this.targetHost);
      this.sockets.add(client);
      this.sockets.add(upstream);
      client.on('data', (d) => upstream.write(d));
      upstream.on('data', (d) => {
        if (!this.holding) client.write(d);
      });
      const close = (): void => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('close', close);
      upstream.on('close', close);
      client.on('error', close);
      upstream.on('error', close);
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this.port;
  }

  /** Server-to-client bytes are dropped from now on (confirms never arrive). */
  hold(): void {
    this.holding = true;
  }

  /** Destroys every connection; new ones pass again unless refusing. */
  cut(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    this.holding = false;
  }

  refuse(on: boolean): void {
    this.refusing = on;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }
}

/**
 * Amebo whose RabbitMQ connection runs through a TcpProxy (so a test can hold back or cut the
 * broker's answers), seeded with the shop application, its order.placed action and an amqp
 * subscription, whose queue is returned. `close()` stops Amebo and the proxy and drops the stores.
 */
export async function shopBehindProxy(overrides: Partial<Config>): Promise<{
  proxy: TcpProxy;
  env: TestEnv;
  srv: Running;
  queue: string;
  close: () => Promise<void>;
}> {
  const proxy = new TcpProxy(5672);
  const port = await proxy.listen();
  const env = testEnv({ amqpUrl: `amqp://guest:guest@127.0.0.1:${port}`, ...overrides });
  const srv = await start(env);
  const queue = await seedShop(srv, env);
  return {
    proxy,
    env,
    srv,
    queue,
    close: async () => {
      await srv.close();
      await proxy.close();
      await destroy(env);
    },
  };
}
