/**
 * The host's side of the debug console (hull.agent.v1.DebugConsole, `hull exec`): a process in the guest itself,
 * outside every container. The agent serves it only when CreateSandbox enabled it (SandboxSpec.debugConsole).
 * What the guest answers is untrusted: reads are capped at what was asked, exit statuses and pids checked.
 */
import type { CallOptions, MethodDescriptor } from 'ttrpc-ts';
import { InternalError } from '../errors';
import { DebugConsoleService } from '../protos/hull';

/** The largest read asked of the guest at once. */
export const DEBUG_READ_CHUNK = 64 * 1024;

export interface DebugProcessSpec {
  /** The session's id (containerd's identifier rule). */
  execId: string;
  /** The program and its arguments. */
  args: string[];
  /** NAME=value entries added to the guest's base environment. */
  env: string[];
  /** A pty of `rows` x `columns` (0 x 0: 24 x 80). */
  terminal: boolean;
  rows: number;
  columns: number;
}

/** What the shim's debug socket drives (shim/debug-console.ts). */
export interface GuestDebugConsole {
  start(spec: DebugProcessSpec): Promise<{ pid: number }>;
  /** Output of stream 1 (stdout) or 2 (stderr); empty at end of file. Waits for some. */
  read(execId: string, stream: 1 | 2): Promise<Buffer>;
  write(execId: string, data: Buffer): Promise<void>;
  closeInput(execId: string): Promise<void>;
  resize(execId: string, rows: number, columns: number): Promise<void>;
  signal(execId: string, signal: number): Promise<void>;
  /** The exit status (0-255), once the process exited and its output ended (bounded by the agent). */
  wait(execId: string): Promise<number>;
  remove(execId: string): Promise<void>;
}

type Call = <Req, Res>(desc: MethodDescriptor<Req, Res>, request: Req, options?: CallOptions) => Promise<Res>;

export class AgentDebugConsole implements GuestDebugConsole {
  constructor(private readonly call: Call) {}

  async start(spec: DebugProcessSpec): Promise<{ pid: number }> {
    const res = await this.call(DebugConsoleService.StartProcess, {
      execId: spec.execId,
      args: spec.args,
      env: spec.env,
      terminal: spec.terminal,
      rows: spec.rows,
      columns: spec.columns,
    });
    const pid = res.pid ?? 0;
    if (!Number.isInteger(pid) || pid < 1 || pid > 0x3fffffff)
      throw new InternalError(`agent StartProcess: the guest answered pid ${pid}`);
    return { pid };
  }

  async read(execId: string, stream: 1 | 2): Promise<Buffer> {
    const res = await this.call(DebugConsoleService.ReadOutput, { execId, stream, len: DEBUG_READ_CHUNK });
    const data = Buffer.from(res.data ?? []);
    if (data.length > DEBUG_READ_CHUNK)
      throw new InternalError(`agent ReadOutput: ${data.length} bytes, more than the ${DEBUG_READ_CHUNK} asked for`);
    return data;
  }

  async write(execId: string, data: Buffer): Promise<void> {
    await this.call(DebugConsoleService.WriteInput, { execId, data });
  }

  async closeInput(execId: string): Promise<void> {
    await this.call(DebugConsoleService.CloseInput, { execId });
  }

  async resize(execId: string, rows: number, columns: number): Promise<void> {
    await this.call(DebugConsoleService.ResizeTerminal, { execId, rows, columns });
  }

  async signal(execId: string, signal: number): Promise<void> {
    await this.call(DebugConsoleService.SignalProcess, { execId, signal });
  }

  async wait(execId: string): Promise<number> {
    const res = await this.call(DebugConsoleService.WaitProcess, { execId });
    const status = res.status ?? 0;
    if (!Number.isInteger(status) || status < 0 || status > 255)
      throw new InternalError(`agent WaitProcess: the guest answered exit status ${status}`);
    return status;
  }

  async remove(execId: string): Promise<void> {
    await this.call(DebugConsoleService.RemoveProcess, { execId });
  }
}
