import type { KeyValue } from './wire';

/** Request metadata: each key may carry several values (Go ttrpc's `MD`). Keys are kept as given. */
export type Metadata = Record<string, string | readonly string[]>;

export function metadataToPairs(...sources: (Metadata | undefined)[]): KeyValue[] {
  const pairs: KeyValue[] = [];
  for (const md of sources) {
    if (!md) continue;
    for (const [key, value] of Object.entries(md)) {
      if (typeof value === 'string') pairs.push({ key, value });
      else for (const v of value) pairs.push({ key, value: v });
    }
  }
  return pairs;
}

export function pairsToMetadata(pairs: readonly KeyValue[]): Record<string, string[]> {
  const md: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
  for (const { key, value } of pairs) (md[key] ??= []).push(value);
  return md;
}
