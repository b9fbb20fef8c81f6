/**
 * Prometheus' text format, as much as hull-monitor needs: a shim's answer parsed into families (HELP, TYPE and
 * their samples), each sample given the monitor's labels, and the families of every shim written once each.
 * A line that is neither a comment nor a well-formed sample is dropped and counted.
 */

export interface Family {
  name: string;
  help: string;
  type: string;
  /** Sample lines, labels already added. */
  samples: string[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
/** `name`, optional `{labels}` (quoted values may hold anything escaped), value, optional timestamp. */
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)(\s+-?\d+)?$/;
const VALUE = /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)$/;

/** A label value as the text format writes it. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export function formatLabels(labels: Readonly<Record<string, string>>): string {
  return Object.entries(labels)
    .filter(([k]) => LABEL_NAME.test(k))
    .map(([k, v]) => `${k}="${escapeLabelValue(v)}"`)
    .join(',');
}

/** The family a sample belongs to: its own name, or the histogram/summary it is part of. */
function familyOf(sample: string, families: Map<string, Family>): Family | undefined {
  const direct = families.get(sample);
  if (direct) return direct;
  for (const suffix of ['_bucket', '_sum', '_count', '_created']) {
    if (sample.endsWith(suffix)) {
      const f = families.get(sample.slice(0, -suffix.length));
      if (f && (f.type === 'histogram' || f.type === 'summary')) return f;
    }
  }
  return undefined;
}

/**
 * Adds one shim's text to `into` (families by name), each sample with `extra` labels first. Returns how many lines
 * were dropped (malformed, or a sample of no declared family, or a family declared with another type before).
 */
export function mergeExposition(
  text: string,
  extra: Readonly<Record<string, string>>,
  into: Map<string, Family>,
): number {
  const prefix = formatLabels(extra);
  const local = new Map<string, Family>();
  let dropped = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(line);
      if (!m) continue; // a plain comment
      const [, kind, name, rest = ''] = m;
      if (!METRIC_NAME.test(name!)) {
        dropped++;
        continue;
      }
      let f = local.get(name!);
      if (!f) {
        f = into.get(name!) ?? { name: name!, help: '', type: 'untyped', samples: [] };
        local.set(name!, f);
      }
      if (kind === 'HELP') f.help ||= rest;
      else if (f.samples.length === 0 || f.type === rest) f.type = rest;
      else {
        dropped++;
        local.delete(name!); // another shim said otherwise: this one's samples of it are dropped
      }
      continue;
    }
    const m = SAMPLE.exec(line);
    if (!m || !VALUE.test(m[3]!)) {
      dropped++;
      continue;
    }
    const f = familyOf(m[1]!, local);
    if (!f) {
      dropped++;
      continue;
    }
    if (!into.has(f.name)) into.set(f.name, f);
    const own = m[2] ? m[2].slice(1, -1) : '';
    const labels = [prefix, own].filter((s) => s !== '').join(',');
    f.samples.push(`${m[1]}${labels ? `{${labels}}` : ''} ${m[3]}`);
  }
  return dropped;
}

export function writeExposition(families: Iterable<Family>): string {
  const out: string[] = [];
  for (const f of families) {
    if (f.samples.length === 0) continue;
    if (f.help) out.push(`# HELP ${f.name} ${f.help}`);
    out.push(`# TYPE ${f.name} ${f.type}`, ...f.samples);
  }
  return out.length ? `${out.join('\n')}\n` : '';
}
