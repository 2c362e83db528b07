/**
 * Compiled (not run) by test/unit/types.test.ts as a browser consumer
 * would: the DOM lib only. The browser's WebSocket must fit the option.
 */
import { ArqonBus, type WebSocketConstructor } from 'arqonbus';

export async function browserConsumer(): Promise<void> {
  const ctor: WebSocketConstructor = WebSocket;
  const bus = new ArqonBus('wss://bus.example.invalid/', { WebSocket: ctor, token: 't' });
  await bus.connect();
  const sub = await bus.join('chat', 'general');
  const controller = new AbortController();
  await bus.history('chat', 'general', { signal: controller.signal });
  sub.on('message', (m) => document.title = String(m.seq));
  await bus.close();
}
