/**
 * Wire compatibility of our own .proto files with the upstream ones they mirror (containerd 1.6.20, cgroups 1.0.4,
 * ttrpc, kata-containers 3.32.0, CRI v1). For every message, enum and service we define, the upstream type with the
 * same full name must exist and agree on everything that reaches the wire: field numbers, names, types, labels, map
 * key types, oneofs, enum values, and each method's request and response types. The CRI protos are a subset (only
 * what the tests call): there each of our fields and methods must match upstream's, and upstream may have more.
 * Skips when the reference copies are not available (see lib/roots.ts).
 */
import assert from 'node:assert/strict';
import * as protobuf from 'protobufjs';
import { loadOurs, loadUpstream, referenceDir, SKIP_REASON, type UpstreamRoots } from './lib/roots';

type Side = 'containerd' | 'agent' | 'cri';

/** Sides whose messages and services keep only the fields and methods hull uses. */
const SUBSET_SIDES: ReadonlySet<Side> = new Set(['cri']);

/**
 * Where we deliberately differ. Upstream ttrpc generates Response.status from a stub (`Status { code = 1 }`, no
 * package); the bytes on the wire are a full google.rpc.Status, which is what we decode.
 */
const SUBSTITUTIONS: Record<string, { upstream: string; ours: string }> = {
  'ttrpc.Response.status': { upstream: 'Status', ours: 'google.rpc.Status' },
};

/** Upstream types in the mirrored files that we leave out on purpose. */
const OMITTED: Record<Side, string[]> = {
  containerd: ['containerd.runc.v1.Options', 'containerd.runc.v1.CheckpointOptions', 'ttrpc.StringList', 'Status'],
  agent: [],
  cri: [],
};

/**
 * Our types from containerd 2.x (task API v3, `-info`'s RuntimeInfo, 2.3's bootstrap protocol), which the 1.6.20
 * reference copies do not have: containerd2.test.ts checks them against the facts of containerd 2.1.9 and 2.3.4.
 */
const CONTAINERD_2X = [
  'containerd.task.v3',
  'containerd.runtime.bootstrap.v1',
  'containerd.types.RuntimeInfo',
  'containerd.types.RuntimeVersion',
];
const fromContainerd2 = (name: string): boolean => CONTAINERD_2X.some((p) => name === p || name.startsWith(`${p}.`));

/** Packages whose upstream types count for the coverage check (gogoproto, containerd.plugin: options only). */
const PACKAGES: Record<Side, string[]> = {
  containerd: ['containerd', 'io', 'runtimeoptions', 'google.rpc', 'ttrpc', 'Status'],
  agent: ['grpc', 'types'],
  cri: [],
};

const fullName = (o: protobuf.ReflectionObject): string => o.fullName.replace(/^\./, '');

function allTypes(ns: protobuf.NamespaceBase): protobuf.ReflectionObject[] {
  const out: protobuf.ReflectionObject[] = [];
  for (const o of ns.nestedArray) {
    if (o instanceof protobuf.Type || o instanceof protobuf.Enum || o instanceof protobuf.Service) out.push(o);
    if (o instanceof protobuf.Namespace) out.push(...allTypes(o));
  }
  return out;
}

/** Everything about a field that reaches the wire, with message and enum types fully resolved. */
function fieldShape(f: protobuf.Field): Record<string, unknown> {
  f.resolve();
  const mapField = f instanceof protobuf.MapField ? f : undefined;
  return {
    id: f.id,
    name: f.name,
    type: f.resolvedType ? fullName(f.resolvedType) : f.type,
    repeated: f.repeated,
    map: f.map,
    keyType: mapField?.keyType,
    // proto3 `optional` shows as a synthetic oneof: explicit presence changes what is encoded.
    oneof: f.partOf?.name,
    proto3Optional: f.options?.proto3_optional === true,
  };
}

function compareType(ours: protobuf.Type, up: protobuf.Type): void {
  const name = fullName(ours);
  assert.deepEqual(Object.keys(ours.fields).sort(), Object.keys(up.fields).sort(), `${name}: field names`);
  for (const f of ours.fieldsArray) {
    const key = `${name}.${f.name}`;
    const mine = fieldShape(f);
    const upField = up.fields[f.name]!;
    const theirs = fieldShape(upField);
    const sub = SUBSTITUTIONS[key];
    if (sub) {
      assert.equal(theirs.type, sub.upstream, `${key}: upstream type`);
      assert.equal(mine.type, sub.ours, `${key}: our type`);
      compareSubset(upField.resolvedType as protobuf.Type, f.resolvedType as protobuf.Type);
      mine.type = theirs.type;
    }
    assert.deepEqual(mine, theirs, `${key}: field`);
  }
  const oneofs = (t: protobuf.Type): Record<string, string[]> =>
    Object.fromEntries(t.oneofsArray.map((o) => [o.name, o.oneof.slice().sort()]));
  assert.deepEqual(oneofs(ours), oneofs(up), `${name}: oneofs`);
}

/** Every field of `narrow` exists in `wide` with the same number and type (and the same name if `sameNames`). */
function compareSubset(narrow: protobuf.Type, wide: protobuf.Type, sameNames = false): void {
  for (const f of narrow.fieldsArray) {
    const w = wide.fieldsById[f.id];
    assert.ok(w, `${fullName(wide)} has field ${f.id} of ${fullName(narrow)}`);
    const theirs = fieldShape(w);
    assert.deepEqual(
      sameNames ? theirs : { ...theirs, name: f.name },
      fieldShape(f),
      `${fullName(narrow)}.${f.name} vs ${fullName(wide)}`,
    );
  }
}

function compareEnum(ours: protobuf.Enum, up: protobuf.Enum): void {
  assert.deepEqual({ ...ours.values }, { ...up.values }, `${fullName(ours)}: values`);
}

function compareService(ours: protobuf.Service, up: protobuf.Service, subset = false): void {
  const name = fullName(ours);
  const methods = (s: protobuf.Service): Record<string, unknown> => {
    s.resolveAll();
    return Object.fromEntries(
      s.methodsArray.map((m) => [
        m.name,
        {
          request: fullName(m.resolvedRequestType!),
          response: fullName(m.resolvedResponseType!),
          requestStream: Boolean(m.requestStream),
          responseStream: Boolean(m.responseStream),
        },
      ]),
    );
  };
  const theirs = methods(up);
  if (subset) for (const m of Object.keys(theirs)) if (!ours.methods[m]) delete theirs[m];
  assert.deepEqual(methods(ours), theirs, `${name}: methods`);
}

for (const side of ['containerd', 'agent', 'cri'] as const) {
  describe(`protos wire compatibility: ${side}`, function () {
    let ours: protobuf.Root;
    let upstream: UpstreamRoots | undefined;

    before(function () {
      ours = loadOurs(side, { keepCase: true });
      ours.resolveAll();
      const ref = referenceDir();
      if (ref) upstream = loadUpstream(ref, side, { keepCase: true });
    });

    beforeEach(function () {
      if (!upstream) this.skip(); // SKIP_REASON
    });

    it('every message, enum and service matches the upstream type of the same name', function () {
      const up = upstream!;
      const types = allTypes(ours).filter((o) => !fromContainerd2(fullName(o)));
      assert.ok(types.length > 0);
      for (const o of types) {
        const theirs = up.lookup(o.fullName);
        assert.ok(theirs, `${fullName(o)} exists upstream`);
        assert.equal(theirs.constructor.name, o.constructor.name, `${fullName(o)} is a ${o.constructor.name} upstream`);
        const subset = SUBSET_SIDES.has(side);
        if (o instanceof protobuf.Type && subset) compareSubset(o, theirs as protobuf.Type, true);
        else if (o instanceof protobuf.Type) compareType(o, theirs as protobuf.Type);
        else if (o instanceof protobuf.Enum) compareEnum(o, theirs as protobuf.Enum);
        else compareService(o as protobuf.Service, theirs as protobuf.Service, subset);
      }
    });

    // A subset by design (only what the integration suite calls) has no list of omissions to check.
    if (!SUBSET_SIDES.has(side))
      it('leaves out only the upstream types listed as omitted', function () {
        const up = upstream!;
        const mine = new Set(allTypes(ours).map(fullName));
        const inScope = (n: string): boolean => PACKAGES[side].some((p) => n === p || n.startsWith(`${p}.`));
        const missing = up.roots
          .flatMap(allTypes)
          .map(fullName)
          .filter((n) => inScope(n) && !mine.has(n));
        assert.deepEqual(missing.sort(), OMITTED[side].slice().sort());
      });
  });
}

describe('protos wire compatibility: reference directory', function () {
  it('is present (otherwise the comparisons above are skipped)', function () {
    if (!referenceDir()) {
      console.warn(`      ${SKIP_REASON}`);
      this.skip();
    }
  });
});
