/**
 * Live processes seen through /proc, for the tests' "nothing is left" checks.
 */
import fs from 'node:fs';
import path from 'node:path';

/**
 * `pid cmdline` of every live process (this one aside) whose command line mentions `marker`, and whose program's
 * base name matches `name` when given.
 */
export function processesMentioning(marker: string, name?: RegExp): string[] {
  const out: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      const cmd = argv.join(' ');
      if (Number(pid) === process.pid || !cmd.includes(marker)) continue;
      if (name && !name.test(path.basename(argv[0] ?? ''))) continue;
      out.push(`${pid} ${cmd.slice(0, 200)}`);
    } catch {
      /* gone */
    }
  }
  return out;
}
