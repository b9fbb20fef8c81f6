/**
 * Our protos of containerd 2.x, which the 1.6.20 reference copies do not have (wire-compat.test.ts leaves them
 * out): the field facts below are those of containerd 2.1.9's api/types/introspection.proto and
 * api/runtime/task/v3/shim.proto and of 2.3.4's api/runtime/bootstrap/v1/bootstrap.proto (read from their sources).
 * The task API v3's messages are field for field v2's (2.1.9 and 2.3.4 alike; only the package differs), so our v3
 * service must take exactly v2's messages, method for method.
 */
import assert from 'node:assert/strict';
import * as protobuf from 'protobufjs';
import { loadOurs } from './lib/roots';

type Facts = Record<string, [id: number, type: string, rule?: 'repeated' | 'map' | 'optional']>;

/** Upstream's fields: number, type (fully qualified for messages and enums), and label. */
const MESSAGES: Record<string, Facts> = {
  'containerd.types.RuntimeVersion': { version: [1, 'string'], revision: [2, 'string'] },
  'containerd.types.RuntimeInfo': {
    name: [1, 'string'],
    version: [2, 'containerd.types.RuntimeVersion'],
    options: [3, 'google.protobuf.Any'],
    features: [4, 'google.protobuf.Any'],
    annotations: [5, 'string', 'map'],
  },
  'containerd.runtime.bootstrap.v1.BootstrapParams': {
    instance_id: [1, 'string'],
    namespace: [2, 'string'],
    log_level: [3, 'containerd.runtime.bootstrap.v1.LogLevel'],
    containerd_version: [4, 'string'],
    containerd_ttrpc_address: [5, 'string'],
    containerd_grpc_address: [6, 'string'],
    containerd_binary: [7, 'string'],
    extensions: [8, 'containerd.runtime.bootstrap.v1.Extension', 'repeated'],
    socket_dir: [9, 'string', 'optional'],
  },
  'containerd.runtime.bootstrap.v1.Extension': { value: [1, 'google.protobuf.Any'] },
  'containerd.runtime.bootstrap.v1.BootstrapResult': {
    version: [1, 'int32'],
    address: [2, 'string'],
    protocol: [3, 'string'],
    capabilities: [4, 'containerd.runtime.bootstrap.v1.Capability', 'repeated'],
    metadata: [5, 'string', 'map'],
  },
};

const ENUMS: Record<string, Record<string, number>> = {
  'containerd.runtime.bootstrap.v1.LogLevel': {
    LOG_LEVEL_INFO: 0,
    LOG_LEVEL_TRACE: -8,
    LOG_LEVEL_DEBUG: -4,
    LOG_LEVEL_WARN: 4,
    LOG_LEVEL_ERROR: 8,
    LOG_LEVEL_FATAL: 10,
    LOG_LEVEL_PANIC: 12,
  },
  'containerd.runtime.bootstrap.v1.Capability': { CAPABILITY_UNSPECIFIED: 0 },
};

describe('protos: containerd 2.x (RuntimeInfo, bootstrap, task API v3)', function () {
  let root: protobuf.Root;
  before(function () {
    root = loadOurs('containerd', { keepCase: true });
    root.resolveAll();
  });

  for (const [name, facts] of Object.entries(MESSAGES)) {
    it(`${name} has upstream's fields`, function () {
      const t = root.lookupType(name);
      const ours = Object.fromEntries(
        t.fieldsArray.map((f) => {
          const type = f.resolvedType ? f.resolvedType.fullName.slice(1) : f.type;
          const rule = f.map
            ? 'map'
            : f.repeated
              ? 'repeated'
              : f.options?.proto3_optional === true
                ? 'optional'
                : undefined;
          if (f instanceof protobuf.MapField) assert.equal(f.keyType, 'string', `${name}.${f.name}: map key`);
          return [f.name, rule ? [f.id, type, rule] : [f.id, type]];
        }),
      );
      assert.deepEqual(ours, facts);
    });
  }

  for (const [name, values] of Object.entries(ENUMS)) {
    it(`${name} has upstream's values`, function () {
      assert.deepEqual({ ...root.lookupEnum(name).values }, values);
    });
  }

  it("containerd.task.v3.Task has v2's 17 methods with v2's messages (wire-identical)", function () {
    const methods = (s: protobuf.Service): Record<string, [string, string]> => {
      s.resolveAll();
      return Object.fromEntries(
        s.methodsArray.map((m) => [
          m.name,
          [m.resolvedRequestType!.fullName, m.resolvedResponseType!.fullName] as [string, string],
        ]),
      );
    };
    const v2 = methods(root.lookupService('containerd.task.v2.Task'));
    const v3 = methods(root.lookupService('containerd.task.v3.Task'));
    assert.equal(Object.keys(v3).length, 17);
    assert.deepEqual(v3, v2);
  });
});
