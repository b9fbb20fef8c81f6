/**
 * Containers in the guest, run by crun: CreateContainer writes an OCI bundle (/run/hull/containers/<cid>/) whose
 * rootfs is the container's folder in the virtio-fs share and runs `crun create` with stdio pipes the agent made
 * (the container's init inherits them); StartContainer is `crun start`, ExecProcess `crun exec --detach`,
 * RemoveContainer `crun delete --force`, UpdateContainer `crun update --resources` (crun converts the OCI values
 * to cgroup v2 files the same way as at creation). Container inits and exec'd processes are orphaned when crun
 * exits, so their exit codes come from hull-init's reaper. Each container's cgroup is watched for OOM kills
 * (oom.ts) from creation to removal. crun's own messages go to <bundle>/crun.log, not to the container's
 * stderr. Every id is a plain name; crun runs from argv arrays, never through a shell. A process with a terminal
 * gets the container's own pty instead of the pipes: crun opens it and sends its master on --console-socket
 * (terminal.ts).
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { Code, StatusError } from 'ttrpc-ts';
import { ConsoleSocket, pipe as makePipe, setPipeSize } from 'hull-vsock';
import type { grpc } from '../protos/agent';
import { SHARED_CONTAINERS } from './init';
import { log } from './log';
import { toOciProcess, toRuntimeSpec } from './oci';
import { OomEvents } from './oom';
import { ContainerProcess, READ_LIMIT } from './process';
import { cgroupPids, listFormat, processList } from './processes';
import type { Reaper } from './reaper';
import { onlineSets, toOciResources } from './resources';
import { CGROUP_ROOT, readCgroupStats } from './stats';
import { initialSize, Terminal, type TerminalSize } from './terminal';
import { guestSpan } from './tracing';
import { identifier, invalid, realPathUnder, uint16 } from './validate';

export interface ContainersOptions {
  crun?: string;
  /** crun's state folder. */
  crunRoot?: string;
  /** Where bundles are written, one folder per container. */
  bundleRoot?: string;
  /** Where the share shows container rootfs folders (<cid>/rootfs). */
  sharedContainers?: string;
  /** Where crun's console sockets are made, one per process with a terminal while crun runs (short: sun_path). */
  consoleRoot?: string;
}

const CRUN_TIMEOUT_MS = 60_000;
const MAX_EXECS = 1024;

interface Container {
  id: string;
  bundle: string;
  state: 'creating' | 'created' | 'running' | 'paused' | 'removing';
  init: ContainerProcess | undefined;
  execs: Map<string, ContainerProcess>;
}

export class Containers {
  private readonly containers = new Map<string, Container>();
  private readonly crun: string;
  private readonly crunRoot: string;
  private readonly bundleRoot: string;
  private readonly sharedContainers: string;
  /** OOM kills in the containers' cgroups, for GetOOMEvent. */
  readonly oomEvents = new OomEvents();
  private readonly consoleRoot: string;
  private consoles = 0;

  constructor(
    private readonly reaper: () => Reaper | undefined,
    options: ContainersOptions = {},
  ) {
    this.crun = options.crun ?? '/usr/bin/crun';
    this.crunRoot = options.crunRoot ?? '/run/hull/crun';
    this.bundleRoot = options.bundleRoot ?? '/run/hull/containers';
    this.sharedContainers = options.sharedContainers ?? SHARED_CONTAINERS;
    this.consoleRoot = options.consoleRoot ?? '/run/hull/consoles';
  }

  /**
   * The pid namespace a pod's containers share when Kubernetes asks (shareProcessNamespace): the one of the first
   * container created in this VM, which is always the pod's sandbox container (the host creates it first).
   */
  private podPidNamespace(): string | undefined {
    const first = this.containers.values().next().value;
    const pid = first?.init && !first.init.exited ? first.init.pid : 0;
    return pid > 1 ? `/proc/${pid}/ns/pid` : undefined;
  }

  async create(req: grpc.ICreateContainerRequest): Promise<void> {
    const cid = identifier(req.containerId ?? '', 'container id');
    const execId = req.execId ? identifier(req.execId, 'exec id') : '';
    if (this.containers.has(cid)) throw new StatusError(Code.ALREADY_EXISTS, `container ${cid} already exists`);
    const rootPath = `${this.sharedContainers}/${cid}/rootfs`;
    const { guestSysctls, ...config } = toRuntimeSpec(
      req.OCI,
      cid,
      rootPath,
      this.sharedContainers,
      this.podPidNamespace(),
    ); // checks everything before anything is done
    const reaper = this.requireReaper();
    let real: string;
    try {
      real = realPathUnder(this.sharedContainers, rootPath, `rootfs of container ${cid}`);
    } catch (err) {
      if (err instanceof StatusError && err.code === Code.NOT_FOUND) {
        throw new StatusError(
          Code.NOT_FOUND,
          `the rootfs of container ${cid} is not in the shared folder (${rootPath}): share it before CreateContainer (and CreateSandbox must have mounted the share)`,
        );
      }
      throw err;
    }
    if (!fs.statSync(real).isDirectory()) throw invalid(`the rootfs of container ${cid} (${rootPath}) is not a folder`);

    const bundle = path.join(this.bundleRoot, cid);
    const container: Container = { id: cid, bundle, state: 'creating', init: undefined, execs: new Map() };
    this.containers.set(cid, container);
    try {
      fs.rmSync(bundle, { recursive: true, force: true }); // a leftover of an earlier container of that id
      fs.mkdirSync(bundle, { recursive: true, mode: 0o700 });
      fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(config), { mode: 0o600 });
      const pidFile = path.join(bundle, 'init.pid');
      for (const { key, value } of guestSysctls ?? []) writeGuestSysctl(key, value);
      const terminal = config.process.terminal ? initialSize(config.process) : undefined;
      // Sharing the pod's pid namespace, the init is not that namespace's init: its exit would leave its children
      // running (and holding its stdout). runc's shim kills every process of such a container when its init exits
      // (ShouldKillAllOnExit); so does the agent, before the exit is reported.
      const sharesPid = (config.linux as { namespaces: { type: string; path?: string }[] }).namespaces.some(
        (n) => n.type === 'pid' && n.path !== undefined,
      );
      const afterExit = sharesPid ? () => killCgroup(cid) : undefined;
      container.init = await this.spawnWithPipes(
        execId,
        bundle,
        reaper,
        pidFile,
        ['create', '--bundle', bundle, '--pid-file', pidFile, cid],
        terminal,
        afterExit,
      );
      container.state = 'created';
      this.oomEvents.watch(cid, path.join(cgroupDir(cid), 'memory.events'));
      log.info('container created', { id: cid, pid: container.init.pid });
    } catch (err) {
      container.init?.close();
      await this.crunRun(['delete', '--force', cid], bundle).catch(() => undefined);
      fs.rmSync(bundle, { recursive: true, force: true });
      this.containers.delete(cid);
      throw err;
    }
  }

  async start(req: grpc.IStartContainerRequest): Promise<void> {
    const c = this.get(req.containerId);
    if (c.state !== 'created')
      throw new StatusError(Code.FAILED_PRECONDITION, `container ${c.id} is ${c.state}, not created`);
    await this.crunRun(['start', c.id], c.bundle);
    c.state = 'running';
    log.info('container started', { id: c.id });
  }

  async exec(req: grpc.IExecProcessRequest): Promise<void> {
    const c = this.get(req.containerId);
    const execId = identifier(req.execId ?? '', 'exec id');
    if (c.execs.has(execId) || execId === c.init?.execId)
      throw new StatusError(Code.ALREADY_EXISTS, `process ${execId} already exists in container ${c.id}`);
    if (c.state !== 'running')
      throw new StatusError(Code.FAILED_PRECONDITION, `container ${c.id} is ${c.state}, not running`);
    if (c.init?.exited) throw new StatusError(Code.FAILED_PRECONDITION, `container ${c.id} has exited`);
    if (c.execs.size >= MAX_EXECS)
      throw new StatusError(Code.RESOURCE_EXHAUSTED, `container ${c.id} has ${MAX_EXECS} processes already`);
    const ociProcess = toOciProcess(req.process);
    const reaper = this.requireReaper();
    const processFile = path.join(c.bundle, `exec-${execId}.json`);
    const pidFile = path.join(c.bundle, `exec-${execId}.pid`);
    const placeholder = new ContainerProcess(execId, null, null, null);
    c.execs.set(execId, placeholder); // reserves the id while crun runs
    try {
      fs.writeFileSync(processFile, JSON.stringify(ociProcess), { mode: 0o600 });
      const terminal = ociProcess.terminal ? initialSize(ociProcess) : undefined;
      const proc = await this.spawnWithPipes(
        execId,
        c.bundle,
        reaper,
        pidFile,
        ['exec', '--detach', '--pid-file', pidFile, '--process', processFile, c.id],
        terminal,
      );
      if (c.execs.get(execId) !== placeholder) {
        proc.close(); // removed meanwhile
        throw new StatusError(Code.NOT_FOUND, `container ${c.id} was removed`);
      }
      c.execs.set(execId, proc);
      log.info('process started', { id: c.id, execId, pid: proc.pid });
    } catch (err) {
      if (c.execs.get(execId) === placeholder) c.execs.delete(execId);
      throw err;
    } finally {
      fs.rmSync(processFile, { force: true });
    }
  }

  async wait(req: grpc.IWaitProcessRequest): Promise<number> {
    return this.process(req).wait();
  }

  async read(req: grpc.IReadStreamRequest, which: 'stdout' | 'stderr'): Promise<Buffer> {
    const len = Number(req.len ?? 0);
    if (!Number.isInteger(len) || len <= 0) throw invalid(`read length ${req.len} is not a positive integer`);
    return this.process(req)[which].read(Math.min(len, READ_LIMIT));
  }

  async write(req: grpc.IWriteStreamRequest): Promise<number> {
    return this.process(req).write(req.data ?? new Uint8Array());
  }

  closeStdin(req: grpc.ICloseStdinRequest): void {
    this.process(req).closeStdin();
  }

  /** TtyWinResize: the new size of the process's terminal (FAILED_PRECONDITION without one). */
  resize(req: grpc.ITtyWinResizeRequest): void {
    const size = { rows: uint16(req.row, 'row'), cols: uint16(req.column, 'column') };
    this.process(req).resize(size);
  }

  async signal(req: grpc.ISignalProcessRequest): Promise<void> {
    const signal = Number(req.signal ?? 0);
    if (!Number.isInteger(signal) || signal < 1 || signal > 64)
      throw invalid(`signal ${req.signal} is not a signal number (1-64)`);
    const c = this.get(req.containerId);
    const proc = this.process(req);
    if (proc.exited) return; // nothing left to signal (and its pid may be reused)
    if (proc === c.init && !req.execId) {
      // Kata: exec id "" signals every process of the container.
      if (c.state === 'created')
        process.kill(proc.pid, signal); // crun kill --all needs a started container's cgroup processes
      else await this.crunRun(['kill', '--all', c.id, String(signal)], c.bundle);
      return;
    }
    try {
      process.kill(proc.pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  /** Resource use from the container's cgroup (see stats.ts); its processes must have been started. */
  stats(req: grpc.IStatsContainerRequest): grpc.ICgroupStats {
    const c = this.get(req.containerId);
    if (c.state === 'creating' || c.state === 'removing')
      throw new StatusError(Code.FAILED_PRECONDITION, `container ${c.id} is ${c.state}`);
    const dir = path.join(CGROUP_ROOT, 'hull', c.id);
    if (!fs.existsSync(dir)) throw new StatusError(Code.NOT_FOUND, `container ${c.id} has no cgroup (${dir})`);
    return readCgroupStats(dir);
  }

  /** New memory, CPU and pids limits for a created, running or paused container. */
  async update(req: grpc.IUpdateContainerRequest): Promise<void> {
    const c = this.get(req.containerId);
    const resources = toOciResources(req.resources, onlineSets());
    if (c.state === 'creating' || c.state === 'removing')
      throw new StatusError(Code.FAILED_PRECONDITION, `container ${c.id} is ${c.state}`);
    if (c.init?.exited) throw new StatusError(Code.FAILED_PRECONDITION, `container ${c.id} has exited`);
    if (!resources) return; // nothing that applies in the guest
    const file = path.join(c.bundle, 'update.json');
    fs.writeFileSync(file, JSON.stringify(resources), { mode: 0o600 });
    try {
      await this.crunRun(['update', '--resources', file, c.id], c.bundle);
    } finally {
      fs.rmSync(file, { force: true });
    }
    log.info('container updated', { id: c.id, resources });
  }

  /** Kata's ListProcesses: the container's pids (its cgroup's processes) as JSON, or a ps-like table. */
  listProcesses(req: { containerId?: string | null; format?: string | null; args?: string[] | null }): Buffer {
    const format = listFormat(req.format, req.args);
    return processList(cgroupPids(this.cgroupOf(req.containerId)), format);
  }

  /** Freezes every process of the container (cgroup v2 freezer, through crun). */
  async pause(req: grpc.IPauseContainerRequest): Promise<void> {
    const c = this.get(req.containerId);
    if (c.state !== 'running')
      throw new StatusError(Code.FAILED_PRECONDITION, `container ${c.id} is ${c.state}, not running`);
    await this.crunRun(['pause', c.id], c.bundle);
    c.state = 'paused';
    log.info('container paused', { id: c.id });
  }

  async resume(req: grpc.IResumeContainerRequest): Promise<void> {
    const c = this.get(req.containerId);
    if (c.state !== 'paused')
      throw new StatusError(Code.FAILED_PRECONDITION, `container ${c.id} is ${c.state}, not paused`);
    await this.crunRun(['resume', c.id], c.bundle);
    c.state = 'running';
    log.info('container resumed', { id: c.id });
  }

  async remove(req: grpc.IRemoveContainerRequest): Promise<void> {
    const c = this.get(req.containerId);
    if (c.state === 'creating' || c.state === 'removing')
      throw new StatusError(Code.FAILED_PRECONDITION, `container ${c.id} is ${c.state}`);
    const before = c.state;
    c.state = 'removing';
    try {
      // Frozen processes cannot die: thaw a paused container before killing it.
      if (before === 'paused') await this.crunRun(['resume', c.id], c.bundle);
      this.oomEvents.unwatch(c.id); // reads memory.events a last time: a kill just before removal still counts
      await this.crunRun(['delete', '--force', c.id], c.bundle);
    } catch (err) {
      c.state = before;
      this.oomEvents.watch(c.id, path.join(cgroupDir(c.id), 'memory.events'));
      throw err;
    }
    c.init?.close();
    for (const p of c.execs.values()) p.close();
    c.execs.clear();
    fs.rmSync(c.bundle, { recursive: true, force: true });
    this.containers.delete(c.id);
    log.info('container removed', { id: c.id });
  }

  private get(containerId: string | null | undefined): Container {
    const cid = identifier(containerId ?? '', 'container id');
    const c = this.containers.get(cid);
    if (!c) throw new StatusError(Code.NOT_FOUND, `container ${cid} not found`);
    return c;
  }

  /** The container's init for exec id "" (or the init's own exec id), else that exec'd process. */
  private process(req: { containerId?: string | null; execId?: string | null }): ContainerProcess {
    const c = this.get(req.containerId);
    const execId = req.execId ? identifier(req.execId, 'exec id') : '';
    if (c.init && (execId === '' || execId === c.init.execId)) return c.init;
    const p = c.execs.get(execId);
    if (!p || p.pid === 0)
      throw new StatusError(Code.NOT_FOUND, `process ${execId || '(init)'} not found in container ${c.id}`);
    return p;
  }

  /** The cgroup folder of a started (or created) container. */
  private cgroupOf(containerId: string | null | undefined): string {
    const c = this.get(containerId);
    if (c.state === 'creating' || c.state === 'removing')
      throw new StatusError(Code.FAILED_PRECONDITION, `container ${c.id} is ${c.state}`);
    const dir = cgroupDir(c.id);
    if (!fs.existsSync(dir)) throw new StatusError(Code.NOT_FOUND, `container ${c.id} has no cgroup (${dir})`);
    return dir;
  }

  private requireReaper(): Reaper {
    const reaper = this.reaper();
    if (!reaper)
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        'containers need hull-init (the guest init) to report exit statuses; this agent runs without it',
      );
    return reaper;
  }

  private crunArgs(bundle: string, args: string[]): string[] {
    return ['--root', this.crunRoot, `--log=${path.join(bundle, 'crun.log')}`, ...args];
  }

  /**
   * crun with the agent's stdio pipes, which the process it starts inherits, or, for a process with a terminal
   * (`terminal`: its first size), with a console socket on which crun sends the container's pty; resolves once crun
   * exited 0.
   */
  private async spawnWithPipes(
    execId: string,
    bundle: string,
    reaper: Reaper,
    pidFile: string,
    args: string[],
    terminal?: TerminalSize,
    afterExit?: () => void,
  ): Promise<ContainerProcess> {
    return guestSpan(`crun ${args[0]}`, { 'hull.container.id': args.at(-1), 'hull.exec.id': execId }, () =>
      this.spawnCrun(execId, bundle, reaper, pidFile, args, terminal, afterExit),
    );
  }

  private async spawnCrun(
    execId: string,
    bundle: string,
    reaper: Reaper,
    pidFile: string,
    args: string[],
    terminal?: TerminalSize,
    afterExit?: () => void,
  ): Promise<ContainerProcess> {
    if (!terminal) return this.spawnCrunOnPipes(execId, bundle, reaper, pidFile, args, afterExit);
    const consoleSocket = this.consoleSocket();
    try {
      return await this.spawnCrunOnPipes(
        execId,
        bundle,
        reaper,
        pidFile,
        [args[0]!, `--console-socket=${consoleSocket.path}`, ...args.slice(1)],
        afterExit,
        (pipes) => {
          pipes.close(); // crun's own stdio: the process has the pty
          // crun has exited 0: it sent the master before it did. What the process writes meanwhile waits in the pty.
          const t = receiveTerminal(consoleSocket, terminal, `crun ${args[0]}`);
          return new ContainerProcess(execId, t.input, t.output, null, t);
        },
      );
    } finally {
      consoleSocket.close();
    }
  }

  /** A new console socket for one crun command; its path is short, as sun_path needs (108 bytes). */
  private consoleSocket(): ConsoleSocket {
    fs.mkdirSync(this.consoleRoot, { recursive: true, mode: 0o700 });
    const file = path.join(this.consoleRoot, `${++this.consoles}.sock`);
    fs.rmSync(file, { force: true }); // a leftover of an agent that died meanwhile (a new agent counts from 1)
    try {
      return ConsoleSocket.listen(file);
    } catch (err) {
      throw new StatusError(Code.INTERNAL, `console socket ${file}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * crun with stdio pipes; once it exited 0, `settle` may replace the process made on them (a terminal's: the
   * pipes are then only crun's own).
   */
  private async spawnCrunOnPipes(
    execId: string,
    bundle: string,
    reaper: Reaper,
    pidFile: string,
    args: string[],
    afterExit?: () => void,
    settle?: (pipes: ContainerProcess) => ContainerProcess,
  ): Promise<ContainerProcess> {
    fs.rmSync(pidFile, { force: true });
    const out = outputPipes();
    let child: ReturnType<typeof spawn>;
    try {
      // spawns: crun; the agent's crun (GUEST_PATHS.crun in the image)
      child = spawn(this.crun, this.crunArgs(bundle, args), {
        stdio: ['pipe', out?.stdout.write ?? 'pipe', out?.stderr.write ?? 'pipe'],
        env: {},
      });
    } catch (err) {
      if (out) for (const fd of [out.stdout.read, out.stderr.read]) fs.closeSync(fd);
      throw err;
    } finally {
      // The child has its own copies of the write ends (or failed to start): the agent keeps only the read ends.
      if (out) for (const fd of [out.stdout.write, out.stderr.write]) fs.closeSync(fd);
    }
    // Node destroys a child's stdin when the child exits; crun exits at once, the process it started keeps the pipe.
    const stdin = child.stdin;
    (child as { stdin: unknown }).stdin = null;
    let proc = new ContainerProcess(
      execId,
      stdin,
      out ? out.stdout.reader() : child.stdout,
      out ? out.stderr.reader() : child.stderr,
    );
    const timer = setTimeout(() => child.kill('SIGKILL'), CRUN_TIMEOUT_MS);
    const code = await new Promise<number | string>((resolve) => {
      child.on('error', (err) => resolve(err.message));
      child.on('exit', (c, sig) => resolve(c ?? `killed by ${sig}`));
    });
    clearTimeout(timer);
    if (code !== 0) {
      const stderr = (
        await Promise.race([
          proc.stderr.read(4096),
          new Promise<Buffer>((r) => setTimeout(() => r(Buffer.alloc(0)), 100)),
        ])
      ).toString();
      proc.close();
      throw new StatusError(
        Code.INTERNAL,
        `crun ${args[0]}: ${crunMessage(bundle) || stderr.trim() || `exit ${code}`}`,
      );
    }
    if (settle) {
      try {
        proc = settle(proc);
      } catch (err) {
        killStarted(pidFile); // an exec'd process nobody could talk to (a created init is deleted by the caller)
        throw err;
      }
    }
    let pid: number;
    try {
      pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
    } catch (err) {
      proc.close();
      throw new StatusError(Code.INTERNAL, `crun ${args[0]} wrote no pid file: ${(err as Error).message}`);
    }
    if (!Number.isInteger(pid) || pid <= 1) {
      proc.close();
      throw new StatusError(Code.INTERNAL, `crun ${args[0]} wrote a bad pid file`);
    }
    const exit = reaper.waitFor(pid);
    proc.started(
      pid,
      afterExit
        ? exit.then((code) => {
            afterExit();
            return code;
          })
        : exit,
    );
    return proc;
  }

  private async crunRun(args: string[], bundle: string): Promise<void> {
    await guestSpan(`crun ${args[0]}`, { 'hull.container.id': args.at(-1) }, () => this.crunRunUntraced(args, bundle));
  }

  private crunRunUntraced(args: string[], bundle: string): Promise<void> {
    return new Promise((resolve, reject) => {
      // spawns: crun; the agent's crun (GUEST_PATHS.crun in the image)
      execFile(
        this.crun,
        this.crunArgs(bundle, args),
        { timeout: CRUN_TIMEOUT_MS, env: {} },
        (err, _stdout, stderr) => {
          if (err)
            reject(
              new StatusError(
                Code.INTERNAL,
                `crun ${args[0]} ${args.at(-1) ?? ''}: ${crunMessage(bundle) || stderr.trim() || err.message}`,
                { cause: err },
              ),
            );
          else resolve();
        },
      );
    });
  }
}

/**
 * The capacity of the container's output pipes (the kernel's default is 64 KiB): a bulk writer then runs ahead by
 * that much before it blocks, and the agent takes more in one wake. Capped by /proc/sys/fs/pipe-max-size (1 MiB by
 * default) for an unprivileged caller; the agent is root.
 */
export const OUTPUT_PIPE_BYTES = 1 << 20;

interface OutputPipe {
  /** The write end, for the child; closed by the agent once the child has it. */
  write: number;
  read: number;
  /** The read end as a stream (called once). */
  reader(): net.Socket;
}

/**
 * Pipes for a child's stdout and stderr, rather than node's stdio 'pipe' (an AF_UNIX socket pair): a socket wakes
 * its reader at every write (busybox `head` writes 4 KiB at a time), a pipe only when it was empty, and a pipe's
 * size can be raised (OUTPUT_PIPE_BYTES). Undefined when they cannot be made (node's pipes are used then).
 */
function outputPipes(): { stdout: OutputPipe; stderr: OutputPipe } | undefined {
  const made: number[] = [];
  try {
    const one = (): OutputPipe => {
      const [r, w] = makePipe();
      made.push(r, w);
      try {
        setPipeSize(r, OUTPUT_PIPE_BYTES);
      } catch (err) {
        log.debug('output pipe keeps its size', { error: (err as Error).message });
      }
      return { write: w, read: r, reader: () => new net.Socket({ fd: r, readable: true, writable: false }) };
    };
    return { stdout: one(), stderr: one() };
  } catch (err) {
    for (const fd of made) fs.closeSync(fd);
    log.warn('output pipes could not be made; using socket pairs', { error: (err as Error).message });
    return undefined;
  }
}

/** The terminal crun sent on `socket`, set to `size`; INTERNAL when it sent none or something else. */
function receiveTerminal(socket: ConsoleSocket, size: TerminalSize, what: string): Terminal {
  try {
    return Terminal.fromConsole(socket.receive(), size);
  } catch (err) {
    throw new StatusError(Code.INTERNAL, `${what} sent no usable terminal: ${(err as Error).message}`, { cause: err });
  }
}

/** SIGKILL to the process crun wrote into `pidFile`, if any. */
function killStarted(pidFile: string): void {
  try {
    const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
    if (Number.isInteger(pid) && pid > 1) process.kill(pid, 'SIGKILL');
  } catch {
    // no pid file, or gone
  }
}

/** Where crun puts container `cid` (config.json's cgroupsPath /hull/<cid>). */
function cgroupDir(cid: string): string {
  return path.join(CGROUP_ROOT, 'hull', cid);
}

/**
 * SIGKILL to every process left in container `cid`'s cgroup (cgroup v2's cgroup.kill, else one by one), as runc's
 * shim does with `runc kill --all` when the init of a container without a pid namespace of its own exits.
 */
export function killCgroup(cid: string, dir = cgroupDir(cid)): void {
  try {
    fs.writeFileSync(path.join(dir, 'cgroup.kill'), '1');
    log.info('container init exited: its remaining processes are killed', { id: cid });
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !fs.existsSync(dir)) return; // no cgroup: nothing left
  }
  let pids: number[];
  try {
    pids = cgroupPids(dir);
  } catch {
    return;
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  log.info('container init exited: its remaining processes are killed', { id: cid, pids });
}

/** The last lines crun logged for this bundle (its error), then the log is emptied for the next command. */
function crunMessage(bundle: string): string {
  const file = path.join(bundle, 'crun.log');
  try {
    const text = fs.readFileSync(file, 'utf8').trim();
    fs.truncateSync(file, 0);
    return text.split('\n').slice(-3).join('; ').slice(0, 2000);
  } catch {
    return '';
  }
}

/**
 * A namespaced sysctl of a container that shares the guest's namespace (a pod's net and IPC are the VM's): written
 * into the guest itself. Keys use dots or, when they contain a slash, slashes as separators (Kubernetes' rule); oci.ts
 * has checked that no component is empty or a dot.
 */
function writeGuestSysctl(key: string, value: string): void {
  const rel = key.includes('/') ? key : key.replace(/\./g, '/');
  try {
    fs.writeFileSync(path.posix.join('/proc/sys', rel), value);
  } catch (err) {
    throw invalid(`sysctl ${key}=${value}: ${(err as Error).message}`);
  }
  log.info('sysctl set in the guest', { key, value });
}
