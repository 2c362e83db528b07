/**
 * Compiled (not run) by test/unit/types.test.ts as a Node consumer would:
 * @types/node and @types/ws, no DOM lib, strict, no skipLibCheck. It fails
 * to compile if the published declarations need DOM types, if `ws` or
 * Node's AbortSignal do not fit the options, or if the typing of the API
 * regresses (the @ts-expect-error lines must stay errors).
 */
import { WebSocket as WsWebSocket } from 'ws';

import {
  ArqonBus,
  ArqonConnectionError,
  ArqonError,
  ArqonTimeoutError,
  type ChannelMessage,
  type GapEvent,
  type PublishAck,
  type RecoveredEvent,
  type Subscription,
  type WebSocketConstructor,
} from 'arqonbus';

interface Chat {
  text: string;
}

export async function consumer(): Promise<void> {
  const ctor: WebSocketConstructor = WsWebSocket;
  const bus = new ArqonBus('ws://127.0.0.1:9100/', {
    WebSocket: ctor,
    getToken: async () => 'token',
    clientType: 'ai-agent',
    screenName: 'typed',
    reconnect: { initialDelayMs: 100, maxDelayMs: 5_000 },
  });
  const welcome = await bus.connect();
  const limit: number = welcome.limits.max_message_size;
  void limit;

  const sub: Subscription<Chat> = await bus.join<Chat>('chat', 'general', { presence: true });
  sub.on('message', (m: ChannelMessage<Chat>) => m.payload.text.toUpperCase());
  sub.on('gap', (g: GapEvent) => g.epochChanged);
  sub.on('recovered', (r: RecoveredEvent) => r.count);
  sub.on('presence', (p) => p.client.client_id);
  sub.on('lagged', (l) => l.firstDroppedSeq ?? 0);
  for await (const message of sub) {
    const text: string = message.payload.text;
    void text;
    break;
  }

  const ack: PublishAck = await bus.publish('chat', 'general', { text: 'hi' }, { ack: true });
  const none: void = await bus.publish('chat', 'general', { text: 'hi' });
  void [ack, none];
  const controller = new AbortController();
  await bus.ping({ timeoutMs: 100, signal: controller.signal });
  const history = await bus.history('chat', 'general', { afterSeq: 3, limit: 10 });
  const seq: number | undefined = history.messages[0]?.seq;
  void seq;
  const status = await bus.status();
  const degraded: boolean = status.storage.degraded;
  void degraded;

  bus.on('closed', (e) => e.reason === 'refused' && e.httpStatus);
  bus.on('state', (e) => e.state);

  try {
    await bus.channelInfo('a', 'b');
  } catch (error) {
    if (error instanceof ArqonError) void [error.code, error.errorCode, error.details];
    if (error instanceof ArqonTimeoutError) void error.timeoutMs;
    if (error instanceof ArqonConnectionError) void error.kind;
  }

  // @ts-expect-error unknown event
  bus.on('no-such-event', () => undefined);
  // @ts-expect-error the payload must be an object
  await bus.publish('chat', 'general', 'text');
  // @ts-expect-error an acked publish resolves with the ack, not void
  const wrong: void = await bus.publish('chat', 'general', {}, { ack: true });
  void wrong;
  // @ts-expect-error clientType is one of four kinds
  new ArqonBus('ws://x/', { clientType: 'robot' });
  await bus.close();
}
