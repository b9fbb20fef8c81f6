/**
 * What Debian's CNI `portmap` plugin leaves in the host's nat table once its last pod is gone, and how a test run
 * removes it. portmap's DEL removes a pod's own chain (CNI-DN-<hash>) and the jump to it, but keeps its top-level
 * chains: CNI-HOSTPORT-DNAT (jumped to from PREROUTING and OUTPUT), CNI-HOSTPORT-MASQ (from POSTROUTING) and
 * CNI-HOSTPORT-SETMARK (from the pods' chains), the last two each holding one rule of portmap's own. With
 * iptables-nft the nft tables `ip nat` and `ip6 nat` (the latter made by portmap's ip6tables teardown) stay too.
 *
 * `natBaseline()` records, before the run's containerd starts, which of those exist. `removePortmapNat()` removes,
 * at the end, those that the run created, and only when no pod's mapping is left: CNI-HOSTPORT-DNAT holds no rule,
 * SETMARK and MASQ hold only portmap's own rule, and only built-in chains jump to them. Rules go one by one by their
 * exact spec (`-D <chain> <spec>`), never by number and never by a flush. An nft table goes only if it did not exist
 * at the start and holds nothing but empty built-in chains. Everything runs through execFile with argv arrays.
 */
import { execFile } from 'node:child_process';

const TOOLS = ['iptables', 'ip6tables'] as const;
type Tool = (typeof TOOLS)[number];
const NFT_FAMILY: Record<Tool, string> = { iptables: 'ip', ip6tables: 'ip6' };
/** portmap's top-level chains, each with the target of the one rule portmap puts into it (none in DNAT's case). */
const PORTMAP_CHAINS: ReadonlyMap<string, string | undefined> = new Map([
  ['CNI-HOSTPORT-DNAT', undefined],
  ['CNI-HOSTPORT-SETMARK', 'MARK'],
  ['CNI-HOSTPORT-MASQ', 'MASQUERADE'],
]);
const BUILTIN_CHAINS = new Set(['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING']);
const TOOL_TIMEOUT_MS = 30_000;

/** One `-A <chain> <spec…>` line of `iptables -S`. */
interface NatRule {
  chain: string;
  spec: string[];
  /** What `-j` (or `-g`) names. */
  target: string | undefined;
}

interface NatTable {
  chains: Set<string>;
  rules: NatRule[];
}

/** What existed before the run; a part that could not be read is undefined, and then nothing of it is removed. */
export interface NatBaseline {
  chains: Map<Tool, ReadonlySet<string> | undefined>;
  /** nft tables as `<family> <name>`, e.g. `ip nat`. */
  nftTables: ReadonlySet<string> | undefined;
}

function run(file: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    // spawns: wrapper; run's callers name the program
    execFile(file, args, { timeout: TOOL_TIMEOUT_MS, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${String(stderr).trim() || err.message}`));
      else resolve(String(stdout));
    });
  });
}

/** The words of one `iptables -S` line: iptables puts a word with blanks in "…", with \" and \\ inside. */
export function splitRuleLine(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quoted && c === '\\' && i + 1 < line.length) {
      word = (word ?? '') + line[++i];
    } else if (c === '"') {
      quoted = !quoted;
      word ??= '';
    } else if (!quoted && (c === ' ' || c === '\t')) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else {
      word = (word ?? '') + c;
    }
  }
  if (quoted) throw new Error(`unbalanced quotes in ${JSON.stringify(line)}`);
  if (word !== undefined) words.push(word);
  return words;
}

/** Parses `iptables -S` of one table. */
export function parseNatListing(text: string): NatTable {
  const table: NatTable = { chains: new Set(), rules: [] };
  for (const line of text.split('\n')) {
    const words = splitRuleLine(line);
    if (words[0] === '-N' && words[1]) table.chains.add(words[1]);
    if (words[0] !== '-A' || !words[1]) continue;
    const spec = words.slice(2);
    const at = spec.findIndex((w) => w === '-j' || w === '-g');
    table.rules.push({ chain: words[1], spec, target: at >= 0 ? spec[at + 1] : undefined });
  }
  return table;
}

async function listNat(tool: Tool): Promise<NatTable> {
  return parseNatListing(await run(tool, ['-w', '-t', 'nat', '-S'])); // spawns: iptables, ip6tables; the Tool type
}

async function listNftTables(): Promise<Set<string>> {
  const doc = JSON.parse(await run('nft', ['-j', 'list', 'tables'])) as {
    nftables?: Array<{ table?: { family?: string; name?: string } }>;
  };
  return new Set((doc.nftables ?? []).flatMap((i) => (i.table ? [`${i.table.family} ${i.table.name}`] : [])));
}

/** Reads what exists before the run starts; reading creates nothing. */
export async function natBaseline(): Promise<NatBaseline> {
  const chains = new Map<Tool, ReadonlySet<string> | undefined>();
  for (const tool of TOOLS)
    chains.set(
      tool,
      await listNat(tool).then(
        (t) => t.chains,
        () => undefined,
      ),
    );
  return { chains, nftTables: await listNftTables().catch(() => undefined) };
}

/**
 * True when no pod's mapping is left in `chain`: DNAT holds no rule, SETMARK and MASQ at most portmap's own, and only
 * built-in chains (portmap's entry jumps) jump to it.
 */
function idle(nat: NatTable, chain: string): boolean {
  const own = PORTMAP_CHAINS.get(chain);
  const inside = nat.rules.filter((r) => r.chain === chain);
  if (inside.length > (own === undefined ? 0 : 1) || inside.some((r) => r.target !== own)) return false;
  return nat.rules.every((r) => r.target !== chain || BUILTIN_CHAINS.has(r.chain));
}

async function removeChains(tool: Tool, before: ReadonlySet<string>, problems: string[]): Promise<void> {
  const nat = await listNat(tool);
  const present = [...PORTMAP_CHAINS.keys()].filter((c) => nat.chains.has(c));
  const ours = present.filter((c) => !before.has(c));
  if (ours.length === 0) return;
  // All or nothing: a pod of another run may still need MASQ while it holds DNAT and SETMARK.
  const busy = present.filter((c) => !idle(nat, c));
  if (busy.length > 0) {
    problems.push(`${tool}: kept nat chains ${ours.join(', ')}: ${busy.join(', ')} still in use`);
    return;
  }
  // spawns: iptables, ip6tables; the Tool type
  const del = (r: NatRule): Promise<string> => run(tool, ['-w', '-t', 'nat', '-D', r.chain, ...r.spec]);
  for (const r of nat.rules.filter((r) => r.target !== undefined && ours.includes(r.target))) await del(r);
  for (const r of nat.rules.filter((r) => ours.includes(r.chain))) await del(r);
  for (const c of ours) await run(tool, ['-w', '-t', 'nat', '-X', c]); // spawns: iptables, ip6tables; the Tool type
}

interface NftItem {
  table?: { handle?: number };
  chain?: { name?: string; hook?: string };
}

/** Deletes the nft table `<family> nat` if it holds nothing but built-in chains without rules. */
async function removeEmptyNftTable(family: string, problems: string[]): Promise<void> {
  let items: NftItem[];
  try {
    items = (
      (JSON.parse(await run('nft', ['-j', 'list', 'table', family, 'nat'])) as { nftables?: NftItem[] }).nftables ?? []
    ).filter((i) => !('metainfo' in i));
  } catch {
    return; // gone
  }
  const handle = items.find((i) => i.table)?.table?.handle;
  const empty = items.every(
    (i) =>
      i.table !== undefined ||
      (i.chain !== undefined && BUILTIN_CHAINS.has(i.chain.name ?? '') && i.chain.hook !== undefined),
  );
  if (!empty || typeof handle !== 'number') {
    problems.push(`kept nft table ${family} nat: it holds more than empty built-in chains`);
    return;
  }
  await run('nft', ['delete', 'table', family, 'handle', String(handle)]);
}

/** Removes what portmap left that was not there at `baseline` and that no pod uses any more (see the top). */
export async function removePortmapNat(baseline: NatBaseline, problems: string[]): Promise<void> {
  for (const tool of TOOLS) {
    const before = baseline.chains.get(tool);
    if (before === undefined) continue;
    try {
      await removeChains(tool, before, problems);
      if (baseline.nftTables && !baseline.nftTables.has(`${NFT_FAMILY[tool]} nat`))
        await removeEmptyNftTable(NFT_FAMILY[tool], problems);
    } catch (err) {
      problems.push(`${tool}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
}
