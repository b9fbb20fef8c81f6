/** Services by full name, methods by bare name, each resolved to a raw handler (bytes in, bytes out). */
import type { Metadata } from './metadata';
import type { RequestOf, ResponseOf, ServiceDefinition } from './method';
import { Code, StatusError } from './status';

export interface HandlerContext {
  readonly service: string;
  readonly method: string;
  readonly metadata: Readonly<Record<string, string[]>>;
  /** Aborted when the request's deadline passes, the connection closes, or the server is forced to stop. */
  readonly signal: AbortSignal;
  /** Epoch milliseconds of the caller's deadline, if it sent one. */
  readonly deadline: number | undefined;
}

export type RawHandler = (payload: Buffer, context: HandlerContext) => Promise<Uint8Array> | Uint8Array;

export type ServiceImplementation<S extends ServiceDefinition> = {
  [K in keyof S]: (request: RequestOf<S[K]>, context: HandlerContext) => Promise<ResponseOf<S[K]>> | ResponseOf<S[K]>;
};

export type { Metadata };

function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}

export class ServiceRegistry {
  private readonly services = new Map<string, Map<string, RawHandler>>();

  /** Registers every method of a typed service definition. Methods missing from `impl` answer UNIMPLEMENTED. */
  register<S extends ServiceDefinition>(definition: S, impl: Partial<ServiceImplementation<S>>): void {
    for (const [name, desc] of Object.entries(definition)) {
      const fn = impl[name as keyof S];
      if (!fn) continue;
      const encode = (response: unknown): Uint8Array => desc.response.encode(response);
      this.registerRaw(desc.service, desc.method, (payload, context) => {
        let request: unknown;
        try {
          request = desc.request.decode(payload);
        } catch (cause) {
          throw new StatusError(Code.INVALID_ARGUMENT, `${desc.service}/${desc.method}: undecodable request`, {
            cause,
          });
        }
        const result = fn.call(impl, request as RequestOf<S[keyof S]>, context);
        return isPromise(result) ? result.then(encode) : encode(result);
      });
    }
  }

  registerRaw(service: string, method: string, handler: RawHandler): void {
    let methods = this.services.get(service);
    if (!methods) this.services.set(service, (methods = new Map()));
    if (methods.has(method)) throw new Error(`${service}/${method} is already registered`);
    methods.set(method, handler);
  }

  /** The handler, or the status that says why there is none. */
  lookup(service: string, method: string): RawHandler | StatusError {
    const methods = this.services.get(service);
    if (!methods) return new StatusError(Code.UNIMPLEMENTED, `service ${service} is not implemented`);
    return methods.get(method) ?? new StatusError(Code.UNIMPLEMENTED, `method ${service}/${method} is not implemented`);
  }

  get serviceNames(): string[] {
    return [...this.services.keys()];
  }
}
