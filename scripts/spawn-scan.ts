/**
 * A static scan of the tree for every program it runs, so that scripts/test/host-programs.test.ts can check each one
 * against scripts/host-programs.mjs (and so against the Makefile's APT_PACKAGES).
 *
 * What counts as running a program (a "spawn site"):
 * - a call of node:child_process' spawn, spawnSync, execFile or execFileSync (imported by name, as a namespace, with
 *   require(), or through util.promisify), and of node-pty's spawn. child_process' exec and execSync (a shell
 *   string) and any `shell:` option other than `false` are refused outright;
 * - a call of a wrapper: a function (or a class's static method, called as Class.method) whose own spawn site takes
 *   the program from one of its parameters (or from element 0 of an array parameter) and says `// spawns: wrapper`.
 *   Its callers are then spawn sites, with the program in that argument (an omitted argument takes the parameter's
 *   default). Call wrappers by their name (directly, or imported by name from their file): a wrapper passed around as
 *   a value is not followed.
 *
 * How the program of a site is found: a string literal; `process.execPath` (node, the runtime); a `const` bound to
 *   one, in the same file or imported by name from another file of the tree (also `OBJ.key` of a const object
 *   literal, such as GUEST_PATHS.crun); either branch of `c ? a : b`. For nsenter and unshare the program they run
 *   counts too: the array literal's element after '--' (nsenter) or its first element not starting with '-'
 *   (unshare). chroot's argument is a path of the staged guest image, not a host program, and is not followed.
 *   A path under /proc/self/fd/ is a file the process holds open (e.g. a binary the test compiled), not a program.
 *
 * When the scan cannot see the program (a parameter, a configured path, a class field), the site must say it in a
 * comment on its statement (above it, or at the end of the call's first line):
 *   // spawns: qemu-system-x86_64, nsenter; free text after a ';'
 *   // spawns: wrapper; the program is the caller's (see above)
 *   // spawns: none; a reason (e.g. a program this test has just compiled)
 * Names are as in host-programs.mjs (name, host path, or guest path). A site the scan can see may carry a comment
 * too; what it resolves is checked either way.
 *
 * Files under agent/ other than agent/test/ run in the guest: their programs must be ones the guest image carries
 * (an entry with a `guest` path). Everything else runs on the host.
 */
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

export interface SpawnSite {
  /** Relative to the scanned root, with the line: `hypervisor/process.ts:71`. */
  where: string;
  /** What the site runs, as written (names or paths); `node` for process.execPath. */
  programs: string[];
  /** Runs inside the guest (the agent's code). */
  guest: boolean;
}

export interface ScanResult {
  sites: SpawnSite[];
  /** Sites whose program could not be seen and that carry no `// spawns:` comment, refused calls, bad comments. */
  problems: string[];
  files: number;
}

const CP_MODULES = new Set(['child_process', 'node:child_process']);
const CP_SPAWNERS = new Set(['spawn', 'spawnSync', 'execFile', 'execFileSync', 'fork']);
const CP_SHELL = new Set(['exec', 'execSync']);
const SKIP_DIRS = new Set(['node_modules', 'dist', 'build', 'out', 'gen', '.git']);
const EXTENSIONS: Record<string, ts.ScriptKind> = {
  '.ts': ts.ScriptKind.TS,
  '.mts': ts.ScriptKind.TS,
  '.cts': ts.ScriptKind.TS,
  '.js': ts.ScriptKind.JS,
  '.mjs': ts.ScriptKind.JS,
  '.cjs': ts.ScriptKind.JS,
};
/** Programs that run another program named in their argv. */
const LAUNCHERS = new Set(['nsenter', 'unshare']);
const MAX_DEPTH = 8;

/** Every source file of the tree: .ts/.js and friends (no .d.ts), and extension-less scripts run by node (bin/). */
export function sourceFiles(root: string, dir = root): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.name.startsWith('.') || SKIP_DIRS.has(entry.name)) continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      out.push(...sourceFiles(root, full));
    } else if (entry.isFile()) {
      const ext = path.extname(entry.name);
      if (ext in EXTENSIONS && !entry.name.endsWith('.d.ts')) out.push(full);
      else if (ext === '' && fs.readFileSync(full, 'utf8').startsWith('#!/usr/bin/env node')) out.push(full);
    }
  }
  return out;
}

interface Imported {
  file: string;
  /** The exported name, or undefined for a namespace import. */
  name: string | undefined;
}

interface FileInfo {
  file: string;
  rel: string;
  sf: ts.SourceFile;
  guest: boolean;
  /** Local name -> child_process function it is (also promisify()ed ones). */
  cp: Map<string, string>;
  /** Local names of the child_process module object. */
  cpNamespaces: Set<string>;
  /** Local names bound to node-pty's module, and to its spawn. */
  ptyNamespaces: Set<string>;
  ptySpawn: Set<string>;
  /** Local name -> what it is imported as, from another file of the tree. */
  imports: Map<string, Imported>;
  /** Top-level `const` initialisers by name. */
  consts: Map<string, ts.Expression>;
  /** Top-level classes and functions by name (wrapper keys of this file). */
  declared: Set<string>;
}

interface Wrapper {
  key: string;
  paramIndex: number;
  /** The program is element 0 of the (array) argument. */
  element0: boolean;
  /** The parameter's default, in the wrapper's file. */
  defaultValue: ts.Expression | undefined;
  info: FileInfo;
}

type Resolved = { names: string[]; unresolved: boolean };

function resolveModule(fromFile: string, spec: string): string | undefined {
  if (!spec.startsWith('.')) return undefined;
  const base = path.resolve(path.dirname(fromFile), spec);
  for (const c of [
    base,
    `${base}.ts`,
    base.replace(/\.js$/, '.ts'),
    base.replace(/\.mjs$/, '.mts'),
    path.join(base, 'index.ts'),
    `${base}.js`,
  ]) {
    if (fs.existsSync(c) && fs.statSync(c).isFile()) return c;
  }
  return undefined;
}

const unwrap = (e: ts.Expression): ts.Expression => {
  while (
    ts.isParenthesizedExpression(e) ||
    ts.isAsExpression(e) ||
    ts.isNonNullExpression(e) ||
    ts.isSatisfiesExpression(e) ||
    ts.isTypeAssertionExpression(e)
  )
    e = e.expression;
  return e;
};

const isRequireOf = (e: ts.Expression | undefined, modules: Set<string>): boolean =>
  !!e &&
  ts.isCallExpression(e) &&
  ts.isIdentifier(e.expression) &&
  e.expression.text === 'require' &&
  e.arguments.length === 1 &&
  ts.isStringLiteral(e.arguments[0]!) &&
  modules.has(e.arguments[0].text);

function fileInfo(root: string, file: string): FileInfo {
  const text = fs.readFileSync(file, 'utf8');
  const kind = EXTENSIONS[path.extname(file)] ?? ts.ScriptKind.JS;
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, kind);
  const rel = path.relative(root, file);
  const info: FileInfo = {
    file,
    rel,
    sf,
    guest: rel.startsWith(`agent${path.sep}`) && !rel.startsWith(path.join('agent', 'test') + path.sep),
    cp: new Map(),
    cpNamespaces: new Set(),
    ptyNamespaces: new Set(),
    ptySpawn: new Set(),
    imports: new Map(),
    consts: new Map(),
    declared: new Set(),
  };
  const PTY = new Set(['node-pty']);
  const bindModule = (spec: string, local: string | undefined, named: ReadonlyArray<[string, string]>): void => {
    if (CP_MODULES.has(spec)) {
      if (local) info.cpNamespaces.add(local);
      for (const [imported, as] of named) info.cp.set(as, imported);
    } else if (PTY.has(spec)) {
      if (local) info.ptyNamespaces.add(local);
      for (const [imported, as] of named) if (imported === 'spawn') info.ptySpawn.add(as);
    } else {
      const target = resolveModule(file, spec);
      if (!target) return;
      if (local) info.imports.set(local, { file: target, name: undefined });
      for (const [imported, as] of named) info.imports.set(as, { file: target, name: imported });
    }
  };
  for (const st of sf.statements) {
    if (ts.isImportDeclaration(st) && ts.isStringLiteral(st.moduleSpecifier)) {
      const clause = st.importClause;
      const named: Array<[string, string]> = [];
      let local: string | undefined;
      if (clause?.name) local = clause.name.text;
      const nb = clause?.namedBindings;
      if (nb && ts.isNamespaceImport(nb)) local = nb.name.text;
      if (nb && ts.isNamedImports(nb))
        for (const el of nb.elements) named.push([(el.propertyName ?? el.name).text, el.name.text]);
      bindModule(st.moduleSpecifier.text, local, named);
    } else if (
      ts.isImportEqualsDeclaration(st) &&
      ts.isExternalModuleReference(st.moduleReference) &&
      ts.isStringLiteral(st.moduleReference.expression)
    ) {
      bindModule(st.moduleReference.expression.text, st.name.text, []);
    } else if (ts.isVariableStatement(st)) {
      for (const d of st.declarationList.declarations) {
        const init = d.initializer ? unwrap(d.initializer) : undefined;
        const req =
          init &&
          ts.isCallExpression(init) &&
          ts.isIdentifier(init.expression) &&
          init.expression.text === 'require' &&
          init.arguments[0] &&
          ts.isStringLiteral(init.arguments[0])
            ? init.arguments[0].text
            : undefined;
        if (req !== undefined) {
          if (ts.isIdentifier(d.name)) bindModule(req, d.name.text, []);
          else if (ts.isObjectBindingPattern(d.name)) {
            bindModule(
              req,
              undefined,
              d.name.elements
                .filter((el) => ts.isIdentifier(el.name))
                .map((el) => [
                  ((el.propertyName as ts.Identifier | undefined) ?? (el.name as ts.Identifier)).text,
                  (el.name as ts.Identifier).text,
                ]),
            );
          }
        } else if (ts.isIdentifier(d.name) && init && st.declarationList.flags & ts.NodeFlags.Const) {
          info.consts.set(d.name.text, init);
          if (ts.isArrowFunction(init) || ts.isFunctionExpression(init)) info.declared.add(d.name.text);
        }
      }
    } else if ((ts.isFunctionDeclaration(st) || ts.isClassDeclaration(st)) && st.name) {
      info.declared.add(st.name.text);
    }
  }
  // promisify(execFile) and friends, anywhere at the top level or inside functions.
  const visit = (n: ts.Node): void => {
    if (ts.isVariableDeclaration(n) && ts.isIdentifier(n.name) && n.initializer) {
      const init = unwrap(n.initializer);
      if (ts.isCallExpression(init) && init.arguments.length === 1) {
        const callee = init.expression;
        const isPromisify =
          (ts.isIdentifier(callee) && callee.text === 'promisify') ||
          (ts.isPropertyAccessExpression(callee) && callee.name.text === 'promisify');
        const arg = unwrap(init.arguments[0]!);
        if (isPromisify) {
          if (ts.isIdentifier(arg) && info.cp.has(arg.text)) info.cp.set(n.name.text, info.cp.get(arg.text)!);
          if (
            ts.isPropertyAccessExpression(arg) &&
            ts.isIdentifier(arg.expression) &&
            info.cpNamespaces.has(arg.expression.text)
          )
            info.cp.set(n.name.text, arg.name.text);
        }
      }
      if (isRequireOf(init, CP_MODULES)) info.cpNamespaces.add(n.name.text);
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return info;
}

export function scanTree(dir: string): ScanResult {
  const root = path.resolve(dir);
  const files = sourceFiles(root);
  const infos = new Map(files.map((f) => [f, fileInfo(root, f)]));
  const problems: string[] = [];
  const sites: SpawnSite[] = [];
  const wrappers = new Map<string, Wrapper>();

  const lineOf = (info: FileInfo, node: ts.Node): string =>
    `${info.rel}:${info.sf.getLineAndCharacterOfPosition(node.getStart(info.sf)).line + 1}`;

  /** The const initialiser `name` stands for in `info` (following one import), with the file it is in. */
  const constOf = (info: FileInfo, name: string): [ts.Expression, FileInfo] | undefined => {
    const local = info.consts.get(name);
    if (local) return [local, info];
    const imp = info.imports.get(name);
    const target = imp?.name !== undefined ? infos.get(imp.file) : undefined;
    const init = target?.consts.get(imp!.name!);
    return init && target ? [init, target] : undefined;
  };

  const resolve = (info: FileInfo, expr: ts.Expression, depth = 0): Resolved => {
    const e = unwrap(expr);
    if (depth > MAX_DEPTH) return { names: [], unresolved: true };
    if (ts.isStringLiteral(e) || ts.isNoSubstitutionTemplateLiteral(e)) return { names: [e.text], unresolved: false };
    if (
      ts.isPropertyAccessExpression(e) &&
      ts.isIdentifier(e.expression) &&
      e.expression.text === 'process' &&
      e.name.text === 'execPath'
    ) {
      return { names: ['node'], unresolved: false };
    }
    if (ts.isConditionalExpression(e)) {
      const a = resolve(info, e.whenTrue, depth + 1);
      const b = resolve(info, e.whenFalse, depth + 1);
      return { names: [...a.names, ...b.names], unresolved: a.unresolved || b.unresolved };
    }
    if (ts.isIdentifier(e)) {
      const c = constOf(info, e.text);
      return c ? resolve(c[1], c[0], depth + 1) : { names: [], unresolved: true };
    }
    if (ts.isPropertyAccessExpression(e) && ts.isIdentifier(e.expression)) {
      const c = constOf(info, e.expression.text);
      const obj = c ? unwrap(c[0]) : undefined;
      if (c && obj && ts.isObjectLiteralExpression(obj)) {
        for (const p of obj.properties) {
          if (
            ts.isPropertyAssignment(p) &&
            (ts.isIdentifier(p.name) || ts.isStringLiteral(p.name)) &&
            p.name.text === e.name.text
          )
            return resolve(c[1], p.initializer, depth + 1);
        }
      }
    }
    return { names: [], unresolved: true };
  };

  /** `// spawns:` comments of the statement holding `call`, and on the call's first line. */
  const annotation = (
    info: FileInfo,
    call: ts.Node,
  ): { kind: 'names'; names: string[] } | { kind: 'wrapper' | 'none' } | { kind: 'bad'; text: string } | undefined => {
    const text = info.sf.text;
    const ranges = new Map<number, string>();
    for (let n: ts.Node | undefined = call; n && !ts.isSourceFile(n); n = n.parent) {
      for (const r of ts.getLeadingCommentRanges(text, n.getFullStart()) ?? [])
        ranges.set(r.pos, text.slice(r.pos, r.end));
      if (ts.isStatement(n) || ts.isClassElement(n)) break;
    }
    const start = call.getStart(info.sf);
    const eol = text.indexOf('\n', start);
    const line = text.slice(start, eol < 0 ? text.length : eol);
    const comments = [...ranges.values()];
    const trailing = /\/\/\s*spawns:.*$/.exec(line);
    if (trailing) comments.push(trailing[0]);
    const found = comments
      .flatMap((c) => c.split('\n'))
      .map((l) => /spawns:\s*([^;\n*]*)/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null);
    if (found.length === 0) return undefined;
    const body = found.map((m) => m[1]!.trim()).join(', ');
    if (body === 'wrapper') return { kind: 'wrapper' };
    if (/^none$/.test(body))
      return /spawns:\s*none\s*;\s*\S/.test(comments.join('\n'))
        ? { kind: 'none' }
        : { kind: 'bad', text: 'spawns: none needs a reason after a ";"' };
    const names = body
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    if (names.length === 0 || names.some((n) => !/^[\w./+-]+$/.test(n)))
      return { kind: 'bad', text: `cannot read "spawns: ${body}"` };
    return { kind: 'names', names };
  };

  /** The function-like the parameter `name` belongs to, walking out from `node`. */
  const ownerOfParameter = (
    node: ts.Node,
    name: string,
  ): { fn: ts.SignatureDeclaration; index: number } | undefined => {
    for (let n: ts.Node | undefined = node.parent; n; n = n.parent) {
      if (ts.isFunctionLike(n)) {
        const index = n.parameters.findIndex((p) => ts.isIdentifier(p.name) && p.name.text === name);
        if (index >= 0) return { fn: n, index };
      }
    }
    return undefined;
  };

  const wrapperKeyOf = (info: FileInfo, fn: ts.SignatureDeclaration): string | undefined => {
    if (ts.isFunctionDeclaration(fn) && fn.name) return `${info.file}#${fn.name.text}`;
    if (
      ts.isMethodDeclaration(fn) &&
      ts.isIdentifier(fn.name) &&
      fn.modifiers?.some((m) => m.kind === ts.SyntaxKind.StaticKeyword) &&
      ts.isClassDeclaration(fn.parent) &&
      fn.parent.name
    ) {
      return `${info.file}#${fn.parent.name.text}.${fn.name.text}`;
    }
    if (
      (ts.isArrowFunction(fn) || ts.isFunctionExpression(fn)) &&
      ts.isVariableDeclaration(fn.parent) &&
      ts.isIdentifier(fn.parent.name)
    )
      return `${info.file}#${fn.parent.name.text}`;
    return undefined;
  };

  /** The wrapper a call's callee names, if any. */
  const calledWrapper = (info: FileInfo, callee: ts.Expression): Wrapper | undefined => {
    let key: string | undefined;
    if (ts.isIdentifier(callee)) {
      const imp = info.imports.get(callee.text);
      key = imp ? (imp.name !== undefined ? `${imp.file}#${imp.name}` : undefined) : `${info.file}#${callee.text}`;
    } else if (ts.isPropertyAccessExpression(callee) && ts.isIdentifier(callee.expression)) {
      const owner = callee.expression.text;
      const imp = info.imports.get(owner);
      if (imp?.name !== undefined) key = `${imp.file}#${imp.name}.${callee.name.text}`;
      else if (imp)
        key = `${imp.file}#${callee.name.text}`; // namespace import: ns.fn
      else key = `${info.file}#${owner}.${callee.name.text}`;
    }
    return key === undefined ? undefined : wrappers.get(key);
  };

  /** Which child_process/node-pty function a callee is, if any. */
  const primitive = (info: FileInfo, callee: ts.Expression): string | undefined => {
    if (ts.isIdentifier(callee)) {
      if (info.cp.has(callee.text)) return info.cp.get(callee.text);
      if (info.ptySpawn.has(callee.text)) return 'pty.spawn';
    } else if (ts.isPropertyAccessExpression(callee) && ts.isIdentifier(callee.expression)) {
      if (
        info.cpNamespaces.has(callee.expression.text) &&
        (CP_SPAWNERS.has(callee.name.text) || CP_SHELL.has(callee.name.text))
      )
        return callee.name.text;
      if (info.ptyNamespaces.has(callee.expression.text) && callee.name.text === 'spawn') return 'pty.spawn';
    }
    return undefined;
  };

  /** The program nsenter/unshare runs, from their argv array literal. */
  const launched = (info: FileInfo, launcher: string, argv: ts.Expression | undefined): Resolved => {
    const arr = argv ? unwrap(argv) : undefined;
    if (!arr || !ts.isArrayLiteralExpression(arr)) return { names: [], unresolved: true };
    const els = arr.elements;
    let i: number;
    if (launcher === 'nsenter') {
      i = els.findIndex((el) => ts.isStringLiteral(el) && el.text === '--') + 1;
      if (i === 0) return { names: [], unresolved: true };
    } else {
      i = els.findIndex((el) => !(ts.isStringLiteral(el) && el.text.startsWith('-')));
      if (i < 0) return { names: [], unresolved: true };
    }
    const el = els[i];
    if (!el || ts.isSpreadElement(el)) return { names: [], unresolved: true };
    return resolve(info, el);
  };

  /**
   * One spawn site: the program is argument `index` of `call` (element 0 of it when `element0`; the default when the
   * argument is left out). Records the site, or a problem, or (for `// spawns: wrapper`) a wrapper.
   */
  const site = (
    info: FileInfo,
    call: ts.CallExpression,
    index: number,
    element0: boolean,
    fallback?: { expr: ts.Expression; info: FileInfo },
  ): boolean => {
    const where = lineOf(info, call);
    let arg = call.arguments[index];
    let argInfo = info;
    if (arg && element0) {
      const a = unwrap(arg);
      arg = ts.isArrayLiteralExpression(a) ? a.elements[0] : undefined;
      if (arg && ts.isSpreadElement(arg)) arg = undefined;
    } else if (!arg && fallback) {
      arg = fallback.expr;
      argInfo = fallback.info;
    }
    const r: Resolved = arg ? resolve(argInfo, arg) : { names: [], unresolved: true };
    const names = r.names.filter((n) => !n.startsWith('/proc/self/fd/'));
    let unresolved = r.unresolved;
    for (const n of r.names) {
      if (LAUNCHERS.has(path.basename(n))) {
        const inner = launched(info, path.basename(n), call.arguments[index + 1]);
        names.push(...inner.names);
        unresolved ||= inner.unresolved;
      }
    }
    const note = annotation(info, call);
    if (note?.kind === 'bad') {
      problems.push(`${where}: ${note.text}`);
      return false;
    }
    if (note?.kind === 'wrapper') {
      const program = arg ? unwrap(arg) : undefined;
      const viaElement =
        program &&
        ts.isElementAccessExpression(program) &&
        ts.isNumericLiteral(program.argumentExpression) &&
        program.argumentExpression.text === '0'
          ? unwrap(program.expression)
          : undefined;
      const param = viaElement ?? program;
      const owner = param && ts.isIdentifier(param) ? ownerOfParameter(call, param.text) : undefined;
      const key = owner && wrapperKeyOf(info, owner.fn);
      if (!owner || !key) {
        problems.push(
          `${where}: "spawns: wrapper" needs the program to be a parameter (or its element 0) of a named function or static method`,
        );
        return false;
      }
      if (wrappers.has(key)) return false;
      const decl = owner.fn.parameters[owner.index]!;
      wrappers.set(key, {
        key,
        paramIndex: owner.index,
        element0: viaElement !== undefined,
        defaultValue: decl.initializer,
        info,
      });
      return true;
    }
    if (note?.kind === 'names') names.push(...note.names);
    if (unresolved && !note)
      problems.push(
        `${where}: cannot see which program this runs: add a "// spawns: <program>" comment (see scripts/spawn-scan.ts)`,
      );
    sites.push({ where, programs: [...new Set(names)], guest: info.guest });
    return false;
  };

  // Rounds until no new wrapper turns up: a wrapper's callers may be wrappers in turn.
  for (let round = 0; ; round++) {
    const before = wrappers.size;
    sites.length = 0;
    problems.length = 0;
    for (const info of infos.values()) {
      const visit = (n: ts.Node): void => {
        if (ts.isCallExpression(n)) {
          const fn = primitive(info, n.expression);
          if (fn !== undefined && CP_SHELL.has(fn))
            problems.push(
              `${lineOf(info, n)}: child_process.${fn} runs a shell string: use execFile or spawn with an argv array`,
            );
          else if (fn === 'fork') sites.push({ where: lineOf(info, n), programs: ['node'], guest: info.guest });
          else if (fn !== undefined) site(info, n, 0, false);
          else {
            const w = calledWrapper(info, n.expression);
            if (w)
              site(
                info,
                n,
                w.paramIndex,
                w.element0,
                w.defaultValue ? { expr: w.defaultValue, info: w.info } : undefined,
              );
          }
          if (fn !== undefined) {
            for (const a of n.arguments) {
              const o = unwrap(a);
              if (!ts.isObjectLiteralExpression(o)) continue;
              for (const p of o.properties) {
                if (
                  ts.isPropertyAssignment(p) &&
                  ts.isIdentifier(p.name) &&
                  p.name.text === 'shell' &&
                  p.initializer.kind !== ts.SyntaxKind.FalseKeyword
                ) {
                  problems.push(
                    `${lineOf(info, p)}: a shell option: run programs with an argv array, never through a shell`,
                  );
                }
              }
            }
          }
        }
        ts.forEachChild(n, visit);
      };
      visit(info.sf);
    }
    if (wrappers.size === before || round > 10) break;
  }
  return { sites, problems, files: files.length };
}
