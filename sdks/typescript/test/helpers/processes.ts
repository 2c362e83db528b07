/**
 * The real server (and Redis) as child processes, and a TCP proxy that
 * can cut a client off — for the integration and browser tests.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is build/test/helpers/processes.js inside sdks/typescript). */
export const REPO_ROOT = fileURLToPath(new URL('../../../../../', import.meta.url));
/** The package root (sdks/typescript). */
export const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** The server binary: `ARQONBUS_SERVER_BIN`, else the workspace's debug build. Throws if missing. */
export function serverBinary(): string {
  const path = process.env['ARQONBUS_SERVER_BIN'] || `${REPO_ROOT}target/debug/arqonbus-server`;
  if (!existsSync(path)) {
    throw new Error(
      `arqonbus-server not found at ${path}: run \`cargo build -p arqonbus-server\` in ${REPO_ROOT} ` +
        `(or point ARQONBUS_SERVER_BIN at a built binary)`,
    );
  }
  return path;
}

export interface ServerOptions {
  /** Bus port (default 0: any free port). */
  port?: number;
  /** Extra `ARQONBUS_*` variables. */
  env?: Record<string, string>;
  /** Extra command-line arguments. */
  args?: string[];
}

/** A running arqonbus-server. */
export interface ServerProcess {
  /** `127.0.0.1:PORT` of the bus listener. */
  readonly bus: string;
  readonly port: number;
  /** `ws://127.0.0.1:PORT/`. */
  readonly url: string;
  readonly telemetry: string;
  /** SIGTERM, then wait for the exit (SIGKILL after 15 s). */
  stop(): Promise<void>;
  /** The last lines the server logged, for failure messages. */
  logs(): string;
}

/** Starts the server on `--port 0` (or `options.port`) and reads its `--print-addrs` line. */
export async function startServer(options: ServerOptions = {}): Promise<ServerProcess> {
  const binary = serverBinary();
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    // Only what the test sets: a developer's ARQONBUS_PORT must not leak in.
    if (value !== undefined && !key.startsWith('ARQONBUS_')) env[key] = value;
  }
  Object.assign(env, { ARQONBUS_SHUTDOWN_GRACE_SECS: '3', ARQONBUS_LOG_LEVEL: 'warn' }, options.env);
  const args = [
    '--host',
    '127.0.0.1',
    '--port',
    String(options.port ?? 0),
    '--telemetry-port',
    '0',
    '--print-addrs',
    ...(options.args ?? []),
  ];
  const child = spawn(binary, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  const log: string[] = [];
  const keep = (line: string): void => {
    log.push(line);
    if (log.length > 50) log.shift();
  };
  createInterface({ input: child.stderr! }).on('line', keep);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      running.delete(child);
      resolve(code);
    });
  });
  const lines = createInterface({ input: child.stdout! });
  const first = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`arqonbus-server printed no addresses within 20 s:\n${log.join('\n')}`));
    }, 20_000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`arqonbus-server exited with ${code} before listening:\n${log.join('\n')}`));
    });
  });
  lines.on('line', keep);
  const addrs = JSON.parse(first) as { bus: string; telemetry: string };
  const port = Number(addrs.bus.split(':').at(-1));
  return {
    bus: addrs.bus,
    port,
    url: `ws://${addrs.bus}/`,
    telemetry: addrs.telemetry,
    logs: () => log.join('\n'),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** A free TCP port on 127.0.0.1 (bound, then released). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** Whether `command` is on PATH. */
export function onPath(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

/** A running redis-server without persistence. */
export interface RedisProcess {
  readonly port: number;
  readonly url: string;
  stop(): Promise<void>;
}

/** Starts `redis-server` on a free port, or returns `null` when it is not installed. */
export async function startRedis(): Promise<RedisProcess | null> {
  if (!onPath('redis-server')) return null;
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  running.add(child);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      running.delete(child);
      resolve();
    }),
  );
  const deadline = Date.now() + 10_000;
  while (!(await redisPing(port))) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not answer PING on port ${port}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      await exited;
    },
  };
}

function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.setTimeout(500);
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => {
      socket.destroy();
      resolve(data.toString().startsWith('+PONG'));
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/**
 * A TCP proxy in front of the server: `cut()` drops every connection
 * through it and refuses new ones until `restore()`, so a test decides
 * when a client is away and when it may come back; `pause()` stops
 * reading from the server, so the client looks like a slow consumer.
 */
export class TcpProxy {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #upstreams = new Set<Socket>();
  #open = true;
  #paused = false;
  port = 0;

  private constructor(readonly targetPort: number) {
    this.#server = createServer((client) => {
      if (!this.#open) {
        client.destroy();
        return;
      }
      const upstream = createConnection({ host: '127.0.0.1', port: this.targetPort });
      this.#sockets.add(client);
      this.#sockets.add(upstream);
      this.#upstreams.add(upstream);
      const end = (): void => {
        client.destroy();
        upstream.destroy();
        this.#sockets.delete(client);
        this.#sockets.delete(upstream);
        this.#upstreams.delete(upstream);
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
      client.pipe(upstream);
      // Server to client by hand, so that pause() is not undone by a pipe.
      upstream.on('data', (chunk: Buffer) => {
        if (!client.write(chunk) && !this.#paused) {
          upstream.pause();
          client.once('drain', () => {
            if (!this.#paused) upstream.resume();
          });
        }
      });
      if (this.#paused) upstream.pause();
    });
  }

  /** Stops reading from the server on every connection. */
  pause(): void {
    this.#paused = true;
    for (const upstream of this.#upstreams) upstream.pause();
  }

  resume(): void {
    this.#paused = false;
    for (const upstream of this.#upstreams) upstream.resume();
  }

  static async start(targetPort: number): Promise<TcpProxy> {
    const proxy = new TcpProxy(targetPort);
    await new Promise<void>((resolve) => proxy.#server.listen(0, '127.0.0.1', resolve));
    const address = proxy.#server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    proxy.port = address.port;
    return proxy;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}/`;
  }

  /** Drops every connection and refuses new ones. */
  cut(): void {
    this.#open = false;
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
  }

  restore(): void {
    this.#open = true;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}
