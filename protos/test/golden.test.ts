/**
 * Golden wire bytes. Each case in lib/golden-cases.ts is encoded by our generated code and must equal, byte for
 * byte, the hex stored in golden.json (always checked) and the encoding by protobufjs reflection of the upstream
 * reference protos (checked when the reference directory is available).
 *
 * UPDATE_GOLDEN=1 rewrites golden.json from the upstream reflection encoding (needs the reference directory).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as agentProtos from '../agent';
import * as containerdProtos from '../containerd';
import { GOLDEN_CASES, type GoldenCase } from './lib/golden-cases';
import { REPO_ROOT, SKIP_REASON, loadUpstream, referenceDir, type UpstreamRoots } from './lib/roots';

const GOLDEN_FILE = path.join(REPO_ROOT, 'protos', 'test', 'golden.json');

interface GeneratedClass {
  fromObject(object: Record<string, unknown>): object;
  encode(message: object): { finish(): Uint8Array };
  decode(bytes: Uint8Array): object;
}

const GENERATED_ROOTS: Record<GoldenCase['side'], Record<string, unknown>> = {
  containerd: {
    containerd: containerdProtos.containerd,
    google: containerdProtos.google,
    io: containerdProtos.io,
    runtimeoptions: containerdProtos.runtimeoptions,
    ttrpc: containerdProtos.ttrpc,
  },
  agent: { grpc: agentProtos.grpc, types: agentProtos.types, google: agentProtos.google },
};

/** The generated class of a fully qualified message name. */
function generatedClass(side: GoldenCase['side'], type: string): GeneratedClass {
  let node: unknown = GENERATED_ROOTS[side];
  for (const part of type.split('.')) node = (node as Record<string, unknown> | undefined)?.[part];
  assert.equal(typeof node, 'function', `generated class ${type}`);
  return node as GeneratedClass;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

function encodeGenerated(c: GoldenCase): Uint8Array {
  const cls = generatedClass(c.side, c.type);
  return cls.encode(cls.fromObject(c.value)).finish();
}

function encodeUpstream(roots: UpstreamRoots, c: GoldenCase): Uint8Array {
  const type = roots.lookupType(c.type);
  return type.encode(type.fromObject(c.value)).finish();
}

function readGolden(): Record<string, string> {
  return JSON.parse(fs.readFileSync(GOLDEN_FILE, 'utf8')) as Record<string, string>;
}

describe('protos golden wire bytes', function () {
  let golden: Record<string, string>;
  let upstream: Record<GoldenCase['side'], UpstreamRoots> | undefined;

  before(function () {
    const ref = referenceDir();
    if (ref) {
      // Default options: field names camel-cased, as in the generated code, so both take the same plain object.
      upstream = {
        containerd: loadUpstream(ref, 'containerd', { keepCase: false }),
        agent: loadUpstream(ref, 'agent', { keepCase: false }),
      };
    }
    if (process.env.UPDATE_GOLDEN === '1') {
      if (!upstream) throw new Error(`UPDATE_GOLDEN=1: ${SKIP_REASON}`);
      const roots = upstream;
      const fresh = Object.fromEntries(GOLDEN_CASES.map((c) => [c.name, hex(encodeUpstream(roots[c.side], c))]));
      fs.writeFileSync(GOLDEN_FILE, `${JSON.stringify(fresh, null, 2)}\n`);
    }
    golden = readGolden();
  });

  it('golden.json has exactly one entry per case', function () {
    assert.ok(GOLDEN_CASES.length >= 6);
    assert.deepEqual(Object.keys(golden).sort(), GOLDEN_CASES.map((c) => c.name).sort());
  });

  for (const c of GOLDEN_CASES) {
    describe(c.name, function () {
      it('generated code encodes the golden bytes and decodes them back', function () {
        const bytes = encodeGenerated(c);
        assert.equal(hex(bytes), golden[c.name]);
        const cls = generatedClass(c.side, c.type);
        assert.equal(hex(cls.encode(cls.decode(bytes)).finish()), golden[c.name], 'decode, re-encode');
      });

      it('upstream protos (reflection) encode the same bytes', function () {
        if (!upstream) this.skip();
        assert.equal(hex(encodeUpstream(upstream[c.side], c)), hex(encodeGenerated(c)));
      });
    });
  }
});
