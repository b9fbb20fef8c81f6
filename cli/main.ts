/**
 * `hull`, the operator's command: `hull check [--json]` (everything a pod needs on this host; exit status 1 when an
 * item fails), `hull env [--json]` (the effective configuration, artefacts, versions and host facts), `hull list`,
 * `hull exec` and `hull template make|list|remove` (VM templates made ahead of the first sandbox; cli/template.ts).
 *
 * The configuration file is found as the shim finds it (HULL_CONFIG, else /etc/hull/configuration.toml, else the
 * built-in defaults), or named with --config; the guest artefacts default to paths relative to this binary's folder,
 * as they do relative to the shim's (the two sit in the same bin/).
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  CONFIG_PATH_ENV,
  DEFAULT_CONFIG_PATH,
  defaultConfig,
  loadConfig,
  type HullConfig,
  type LoadedConfig,
} from '../core/config';
import type { Logger } from '../log';
import { DEFAULT_TEST_BOOT_MS, runChecks, type CheckItem } from './checks';
import { describeEnv, formatEnv } from './env';
import { RealHost, type Host } from './host';
import {
  EXEC_FAILED,
  findSandbox,
  helloFor,
  parseExecArgs,
  runSession,
  socketOf,
  type ExecArgs,
  type ExecIo,
} from './exec';
import { formatList, listSandboxes } from './list';
import {
  formatTemplates,
  listTemplates,
  makeTemplate,
  removeTemplates,
  type RemoveWhich,
  type TemplateCliOptions,
} from './template';
import { QemuHypervisor } from '../hypervisor';

const USAGE = `usage: hull check [--json] [--config FILE]
       hull env [--json] [--config FILE]
       hull list [--json] [--config FILE]
       hull exec [--config FILE] <sandbox-id> [--namespace NS] [-t|-T] [--] [command...]
       hull template make [--config FILE]
       hull template list [--json] [--config FILE]
       hull template remove [--all | <key>] [--config FILE]

  check   everything a pod needs on this host: ok / warning / fail, with the reason and the fix (exit 1 on a fail)
  env     the effective configuration (every key, its value and where it came from), artefacts, versions, host facts
  list    the sandboxes on this host (state_dir): shim and QEMU pids (alive or dead), accel, vCPUs, memory, containers
  exec    a shell (the guest's /bin/sh) or a command in the sandbox's guest itself, outside every container, when
          [agent] debug_console_enabled was on at its creation; -t/-T force a terminal or none (default: a terminal
          when stdin and stdout are); the exit status is the command's, 125 when hull exec itself fails
  template make    make (or find up to date) the VM template of the configuration ([hypervisor] enable_template)
  template list    the templates in state_dir: key, fingerprint, RAM file size, made when, current or stale
  template remove  the stale templates (default), all (--all) or those of one key; never one being built
  --json  machine-readable output
  --config FILE  the configuration file to use (default: $${CONFIG_PATH_ENV}, else ${DEFAULT_CONFIG_PATH})`;

export interface MainOptions {
  /** This binary, symlinks resolved: its folder locates the guest artefacts. */
  self: string;
  env?: NodeJS.ProcessEnv;
  host?: Host;
  out?: (text: string) => void;
  /** For tests: the file read when neither --config nor HULL_CONFIG names one. */
  defaultPath?: string;
  /** hull exec's terminal and streams (default: this process's). */
  io?: ExecIo;
  /** hull template's tmpfs test, VM driver, logger and host (default: the real ones). */
  template?: TemplateCliOptions;
}

interface Args {
  command: 'check' | 'env' | 'list' | 'exec' | 'template';
  json: boolean;
  config?: string;
  exec?: ExecArgs;
  template?: { action: 'make' | 'list' | 'remove'; all: boolean; key?: string };
}

export function parseArgs(argv: readonly string[]): Args | string {
  const [command, ...rest] = argv;
  if (command !== 'check' && command !== 'env' && command !== 'list' && command !== 'exec' && command !== 'template')
    return command ? `unknown command ${JSON.stringify(command)}` : '';
  const args: Args = { command, json: false };
  if (command === 'template') {
    const action = rest.shift();
    if (action !== 'make' && action !== 'list' && action !== 'remove')
      return `template needs make, list or remove${action ? `, not ${JSON.stringify(action)}` : ''}`;
    args.template = { action, all: false };
  }
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (args.template?.action === 'remove' && a === '--all') {
      args.template.all = true;
      continue;
    }
    if (args.template?.action === 'remove' && !a.startsWith('-') && args.template.key === undefined) {
      args.template.key = a;
      continue;
    }
    if (a === '--json' && args.template && args.template.action !== 'list')
      return `--json is for template list, not template ${args.template.action}`;
    if (command === 'exec' && !a.startsWith('--config')) {
      // Everything from the sandbox id on is exec's (its command may carry any option).
      const exec = parseExecArgs(rest.slice(i));
      if (typeof exec === 'string') return exec;
      args.exec = exec;
      break;
    }
    if (a === '--json') args.json = true;
    else if (a === '--config' && rest[i + 1] !== undefined) args.config = rest[++i]!;
    else if (a.startsWith('--config=')) args.config = a.slice('--config='.length);
    else return `unknown argument ${JSON.stringify(a)}`;
  }
  if (command === 'exec' && !args.exec) return 'exec needs a sandbox id (hull list shows them)';
  if (args.template?.all && args.template.key !== undefined) return 'template remove takes --all or a key, not both';
  return args;
}

function hullVersion(): string {
  for (const p of [path.join(__dirname, 'package.json'), path.join(__dirname, '..', '..', 'package.json')]) {
    try {
      const v = (JSON.parse(fs.readFileSync(p, 'utf8')) as { version?: unknown }).version;
      if (typeof v === 'string') return v;
    } catch {
      // next
    }
  }
  return 'unknown';
}

const MARK: Record<CheckItem['status'], string> = { ok: 'ok', warning: 'WARNING', fail: 'FAIL' };

export function formatChecks(items: readonly CheckItem[]): string {
  const lines: string[] = [];
  for (const i of items) {
    lines.push(`${MARK[i.status].padEnd(8)} ${i.name}: ${i.detail}`);
    if (i.fix) lines.push(`${' '.repeat(9)}fix: ${i.fix}`);
  }
  const count = (s: CheckItem['status']): number => items.filter((i) => i.status === s).length;
  lines.push(`${count('ok')} ok, ${count('warning')} warning(s), ${count('fail')} fail(s)`);
  return lines.join('\n');
}

/** Runs one command; resolves to the exit status (0, 1 when a check fails, 2 for a usage error). */
export async function run(argv: readonly string[], o: MainOptions): Promise<number> {
  const out = o.out ?? ((t: string): void => void process.stdout.write(`${t}\n`));
  const args = parseArgs(argv);
  if (typeof args === 'string') {
    out(args ? `hull: ${args}\n${USAGE}` : USAGE);
    return 2;
  }
  const env = o.env ?? process.env;
  const host = o.host ?? new RealHost();
  const binDir = path.dirname(o.self);
  const chosenBy = args.config ? '--config' : env[CONFIG_PATH_ENV] ? CONFIG_PATH_ENV : 'the default path';
  let loaded: LoadedConfig | undefined;
  let loadError: Error | undefined;
  try {
    loaded = loadConfig({
      ...(args.config ? { configPath: args.config } : {}),
      env,
      binDir,
      ...(o.defaultPath ? { defaultPath: o.defaultPath } : {}),
    });
  } catch (err) {
    loadError = err as Error;
  }
  const config = loaded?.config ?? defaultConfig(binDir);
  const source = loaded?.source ?? 'defaults';

  if (args.command === 'list' || args.command === 'exec') {
    // state_dir comes from the configuration: a broken one must not make hull look in the wrong place.
    if (loadError) {
      out(`hull: ${loadError.message}`);
      return args.command === 'exec' ? EXEC_FAILED : 1;
    }
    if (args.command === 'list') {
      const list = listSandboxes(config.runtime.stateDir);
      out(args.json ? JSON.stringify(list, null, 2) : formatList(list));
      return 0;
    }
    const configName = source === 'defaults' ? 'the built-in defaults' : source;
    const found = findSandbox(config.runtime.stateDir, args.exec!, configName);
    const io: ExecIo = o.io ?? {
      stdin: process.stdin,
      stdout: process.stdout,
      stderr: process.stderr,
      signals: ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'],
    };
    if (typeof found === 'string') {
      io.stderr.write(`hull exec: ${found}\n`);
      return EXEC_FAILED;
    }
    return runSession(socketOf(found), helloFor(args.exec!, io, env), io);
  }

  if (args.command === 'template') {
    if (loadError) {
      out(`hull: ${loadError.message}`);
      return 1;
    }
    return runTemplate(args, config, source === 'defaults' ? 'the built-in defaults' : source, out, o);
  }

  if (args.command === 'env') {
    if (loadError) {
      out(`hull: ${loadError.message}`);
      return 1;
    }
    const text = source === 'defaults' ? undefined : fs.readFileSync(source, 'utf8');
    const report = await describeEnv({
      host,
      config,
      file: source === 'defaults' ? undefined : source,
      text,
      chosenBy,
      binDir,
      hullVersion: hullVersion(),
    });
    out(args.json ? JSON.stringify(report, null, 2) : formatEnv(report));
    return 0;
  }

  const first: CheckItem = loadError
    ? {
        name: 'configuration',
        status: 'fail',
        detail: `${loadError.message} (the checks below use the built-in defaults)`,
        fix: 'correct the file or key named (config/configuration.toml documents every key)',
      }
    : {
        name: 'configuration',
        status: 'ok',
        detail: source === 'defaults' ? `no file (${chosenBy}): the built-in defaults` : `${source} (${chosenBy})`,
      };
  const items = [first, ...(await runChecks({ host, config, configSource: source, testBootMs: DEFAULT_TEST_BOOT_MS }))];
  out(
    args.json ? JSON.stringify({ items, ok: !items.some((i) => i.status === 'fail') }, null, 2) : formatChecks(items),
  );
  return items.some((i) => i.status === 'fail') ? 1 : 0;
}

/** Warnings and errors of a template build, on stderr (its progress stays quiet). */
const STDERR_LOGGER: Logger = {
  info: () => undefined,
  debug: () => undefined,
  warn: (obj, msg) => void process.stderr.write(`hull template make: warning: ${msg} ${JSON.stringify(obj)}\n`),
  error: (obj, msg) => void process.stderr.write(`hull template make: error: ${msg} ${JSON.stringify(obj)}\n`),
};

async function runTemplate(
  args: Args,
  config: HullConfig,
  source: string,
  out: (text: string) => void,
  o: MainOptions,
): Promise<number> {
  const t = args.template!;
  const opts = o.template ?? {};
  if (t.action === 'list') {
    const list = listTemplates(config, opts);
    out(args.json ? JSON.stringify(list, null, 2) : formatTemplates(list));
    return 0;
  }
  if (t.action === 'remove') {
    const which: RemoveWhich = t.all ? 'all' : t.key !== undefined ? { key: t.key } : 'stale';
    let r;
    try {
      r = removeTemplates(config, which, opts);
    } catch (err) {
      out(`hull template remove: ${(err as Error).message}`);
      return 1;
    }
    for (const name of r.removed) out(`removed ${name}`);
    for (const key of r.busy) out(`hull template remove: ${key} is being built now (its lock is held): not removed`);
    if (r.removed.length === 0 && r.busy.length === 0)
      out(
        which === 'stale' || which === 'all'
          ? `no ${which === 'stale' ? 'stale ' : ''}template to remove`
          : `hull template remove: no template of key ${which.key} (hull template list shows them)`,
      );
    return r.busy.length > 0 || (r.removed.length === 0 && which !== 'stale' && which !== 'all') ? 1 : 0;
  }
  const logger = opts.logger ?? STDERR_LOGGER;
  let made;
  try {
    made = await makeTemplate(config, source, {
      ...opts,
      logger,
      hypervisor: opts.hypervisor ?? ((): QemuHypervisor => new QemuHypervisor({ logger })),
    });
  } catch (err) {
    made = { ok: false as const, reason: `making the template failed: ${(err as Error).message}` };
  }
  if (!made.ok) {
    out(`hull template make: ${made.reason}`);
    return 1;
  }
  out(
    [
      `${made.made ? 'made' : 'up to date'}: ${made.dir}`,
      `key:         ${made.key}`,
      `fingerprint: ${made.fingerprint}`,
      `took:        ${(made.ms / 1000).toFixed(1)} s`,
    ].join('\n'),
  );
  return 0;
}

/** The entry point of bin/hull and of the installed launcher. */
export function main(self: string): void {
  run(process.argv.slice(2), { self: fs.realpathSync(self) }).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`hull: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
