/**
 * containerd runs shims with Go `flag` syntax: single-dash (or double-dash) flags, `-name value` or `-name=value`,
 * boolean flags alone or as `-name=true|false`, then the action (`start`, `delete`, or none for the daemon).
 */
import { InvalidArgumentError } from '../errors';

export interface ShimFlags {
  namespace: string;
  id: string;
  /** containerd's gRPC socket (plain path). */
  address: string;
  publishBinary: string;
  bundle: string;
  socket: string;
  debug: boolean;
  version: boolean;
  /** `-info`: print the RuntimeInfo (containerd 2.x) and exit. */
  info: boolean;
  action: 'start' | 'delete' | 'daemon';
}

const STRING_FLAGS: Record<string, keyof ShimFlags> = {
  namespace: 'namespace',
  id: 'id',
  address: 'address',
  'publish-binary': 'publishBinary',
  bundle: 'bundle',
  socket: 'socket',
};
const BOOL_FLAGS: Record<string, keyof ShimFlags> = {
  debug: 'debug',
  v: 'version',
  version: 'version',
  info: 'info',
};

export function parseFlags(argv: readonly string[]): ShimFlags {
  const f: ShimFlags = {
    namespace: '',
    id: '',
    address: '',
    publishBinary: '',
    bundle: '',
    socket: '',
    debug: false,
    version: false,
    info: false,
    action: 'daemon',
  };
  const out = f as unknown as Record<string, string | boolean>;
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      i++;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    if (name in BOOL_FLAGS) {
      const value = eq < 0 ? 'true' : body.slice(eq + 1);
      if (value !== 'true' && value !== 'false' && value !== '1' && value !== '0')
        throw new InvalidArgumentError(`invalid boolean value ${JSON.stringify(value)} for -${name}`);
      out[BOOL_FLAGS[name]!] = value === 'true' || value === '1';
    } else if (name in STRING_FLAGS) {
      let value: string;
      if (eq >= 0) value = body.slice(eq + 1);
      else {
        if (i + 1 >= argv.length) throw new InvalidArgumentError(`flag needs an argument: -${name}`);
        value = argv[++i]!;
      }
      out[STRING_FLAGS[name]!] = value;
    } else {
      throw new InvalidArgumentError(`flag provided but not defined: -${name}`);
    }
  }
  const rest = argv.slice(i);
  if (rest.length > 1)
    throw new InvalidArgumentError(`unexpected arguments after ${rest[0]}: ${rest.slice(1).join(' ')}`);
  const action = rest[0];
  if (action === undefined) f.action = 'daemon';
  else if (action === 'start' || action === 'delete') f.action = action;
  else throw new InvalidArgumentError(`unknown action ${JSON.stringify(action)}: expected start or delete`);
  return f;
}
