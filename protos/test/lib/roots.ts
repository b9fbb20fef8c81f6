/**
 * Reflection roots for the wire tests: our own .proto sources (protos/proto) and the upstream reference copies
 * (HULL_REFERENCE_PROTOS, else <repo>/../shared/reference/protos), loaded with protobufjs reflection.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as protobuf from 'protobufjs';

/** The repository root, from dist/protos/test/lib. */
export const REPO_ROOT = path.resolve(__dirname, '../../../..');
export const OUR_PROTOS = path.join(REPO_ROOT, 'protos', 'proto');

/** The reference directory, or undefined if it is not there (tests that need it skip). */
export function referenceDir(): string | undefined {
  const dir = process.env.HULL_REFERENCE_PROTOS ?? path.resolve(REPO_ROOT, '..', 'shared', 'reference', 'protos');
  return fs.existsSync(path.join(dir, 'containerd')) && fs.existsSync(path.join(dir, 'kata')) ? dir : undefined;
}

export const SKIP_REASON =
  'upstream reference protos not found: set HULL_REFERENCE_PROTOS or provide <repo>/../shared/reference/protos';

export interface LoadOptions {
  /** Keep proto field names as written (true) or camel-case them like the generated code (false). */
  keepCase: boolean;
}

const DESCRIPTOR_PROTO = require.resolve('protobufjs/google/protobuf/descriptor.proto');

function load(files: string[], resolve: (origin: string, target: string) => string, opts: LoadOptions): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    if (target === 'google/protobuf/descriptor.proto') return DESCRIPTOR_PROTO;
    return resolve(origin, target);
  };
  return root.loadSync(files, { keepCase: opts.keepCase });
}

export type ProtoModule = 'containerd' | 'agent' | 'cri';

/** Our .proto files of one generated module, relative to protos/proto. */
export function ourFiles(module: ProtoModule): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) walk(full);
      else if (e.name.endsWith('.proto')) out.push(path.relative(OUR_PROTOS, full).split(path.sep).join('/'));
    }
  };
  walk(OUR_PROTOS);
  // hull/ holds hull's own extension protocol, which has no upstream to compare with.
  const moduleOf = (f: string): ProtoModule =>
    f.startsWith('kata/') ? 'agent' : f.startsWith('cri/') ? 'cri' : 'containerd';
  return out.filter((f) => !f.startsWith('hull/') && moduleOf(f) === module).sort();
}

/** Our protos, loaded the way scripts/gen-protos.mjs compiles them (imports are relative to protos/proto). */
export function loadOurs(module: ProtoModule, opts: LoadOptions): protobuf.Root {
  const resolve = (_origin: string, target: string): string =>
    path.isAbsolute(target) ? target : path.join(OUR_PROTOS, target);
  return load(ourFiles(module), resolve, opts);
}

/**
 * The upstream files hull mirrors, grouped into separately loaded roots. ttrpc's request.proto gets a root of its
 * own: its stub `Status` has no package, and protobufjs tries a relative name as a fully qualified one first, so in
 * a shared root containerd's `Status` field (containerd.v1.types.Status) would resolve to the stub.
 */
export const UPSTREAM_FILES: Record<ProtoModule, string[][]> = {
  containerd: [
    [
      'containerd/runtime/v2/task/shim.proto',
      'containerd/api/types/mount.proto',
      'containerd/api/types/metrics.proto',
      'containerd/api/types/task/task.proto',
      'containerd/api/events/task.proto',
      'containerd/api/services/ttrpc/events/v1/events.proto',
      'containerd/pkg/runtimeoptions/v1/api.proto',
      'containerd/runtime/v2/runc/options/oci.proto',
      'containerd/vendor/github.com/containerd/cgroups/stats/v1/metrics.proto',
      'containerd/vendor/github.com/containerd/cgroups/v2/stats/metrics.proto',
      'containerd/vendor/github.com/gogo/googleapis/google/rpc/status.proto',
    ],
    ['ttrpc/request.proto'],
  ],
  agent: [['kata/agent.proto', 'kata/health.proto', 'kata/oci.proto', 'kata/types.proto', 'kata/csi.proto']],
  cri: [['cri/api.proto']],
};

/** Upstream reflection roots of one side; `lookup` searches them in order. */
export class UpstreamRoots {
  constructor(readonly roots: protobuf.Root[]) {}

  lookup(name: string): protobuf.ReflectionObject | null {
    const fq = name.startsWith('.') ? name : `.${name}`;
    for (const r of this.roots) {
      const found = r.lookup(fq);
      if (found) return found;
    }
    return null;
  }

  lookupType(name: string): protobuf.Type {
    const found = this.lookup(name);
    if (!(found instanceof protobuf.Type)) throw new Error(`no upstream message ${name}`);
    return found;
  }
}

/**
 * The upstream protos, with their Go-style imports mapped into the reference layout
 * (see the "Import paths" section of <reference>/containerd/README.md).
 */
export function loadUpstream(refDir: string, module: ProtoModule, opts: LoadOptions): UpstreamRoots {
  const gogo = path.join(refDir, 'containerd/vendor/github.com/gogo/protobuf/gogoproto/gogo.proto');
  const resolve = (origin: string, target: string): string => {
    if (path.isAbsolute(target)) return target;
    if (target === 'gogoproto/gogo.proto' || target === 'github.com/gogo/protobuf/gogoproto/gogo.proto') return gogo;
    const ctd = 'github.com/containerd/containerd/';
    if (target.startsWith(ctd)) return path.join(refDir, 'containerd', target.slice(ctd.length));
    // Everything else (kata's "oci.proto", ttrpc's "proto/status.proto") is relative to the importing file.
    return origin ? path.join(path.dirname(origin), target) : path.join(refDir, target);
  };
  return new UpstreamRoots(
    UPSTREAM_FILES[module].map((files) => {
      const root = load(
        files.map((f) => path.join(refDir, f)),
        resolve,
        opts,
      );
      root.resolveAll();
      return root;
    }),
  );
}
