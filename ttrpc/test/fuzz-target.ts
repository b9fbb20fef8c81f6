/** A small server for fuzzing ttrpc's own server: echo, a handler that waits on its deadline, one that fails. */
import { fuzzMethods, type ServerTarget } from '../src/fuzz';
import { method, type Codec } from '../src/method';
import { Server } from '../src/server';
import { Code, StatusError } from '../src/status';

const raw: Codec<Uint8Array> = { encode: (v) => v, decode: (b) => b };

export const FuzzService = {
  Echo: method('fuzz.Echo', 'Echo', raw, raw),
  /** Waits a turn of the event loop or 1-2 ms, or until the request's deadline (INTERNAL if that deadline fires early). */
  Wait: method('fuzz.Echo', 'Wait', raw, raw),
  /** NOT_FOUND, with the request in its message (as a handler quoting a bad id does). */
  Fail: method('fuzz.Echo', 'Fail', raw, raw),
};

export function echoTarget(): ServerTarget {
  const server = new Server().register(FuzzService, {
    Echo: (req) => req,
    Wait: async (req, ctx) => {
      await new Promise<void>((resolve, reject) => {
        // Mostly the next turn of the event loop, sometimes 1-2 ms: answers come out of order.
        const t = req.length % 16 === 0 ? setTimeout(resolve, 1 + (req.length % 2)) : setImmediate(resolve);
        ctx.signal.addEventListener('abort', () => {
          clearTimeout(t as NodeJS.Timeout);
          clearImmediate(t as NodeJS.Immediate);
          const early = ctx.deadline !== undefined && ctx.deadline - Date.now() > 1_000;
          reject(
            early
              ? new StatusError(Code.INTERNAL, `deadline ${ctx.deadline} fired at ${Date.now()}`)
              : (ctx.signal.reason as Error),
          );
        });
      });
      return req;
    },
    Fail: (req) => {
      throw new StatusError(Code.NOT_FOUND, `${JSON.stringify(Buffer.from(req).toString('latin1'))}: not found`);
    },
  });
  return {
    name: 'ttrpc server (echo)',
    server,
    methods: fuzzMethods(FuzzService, [Code.OK], {
      codes: { Fail: [Code.NOT_FOUND] },
      examples: { Echo: [Buffer.from('hello')], Wait: [Buffer.from('x')], Fail: [Buffer.alloc(0)] },
    }),
    answerTimeoutMs: 2_000,
  };
}
