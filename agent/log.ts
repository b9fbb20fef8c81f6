/** The agent logs one line per event to stderr, which is the guest console the host keeps in its console log. */
type Fields = Record<string, unknown>;

function write(level: string, msg: string, fields?: Fields): void {
  const extra = fields && Object.keys(fields).length ? ` ${JSON.stringify(fields)}` : '';
  process.stderr.write(`hull-agent ${level} ${msg}${extra}\n`);
}

export const log = {
  info: (msg: string, fields?: Fields): void => write('info', msg, fields),
  warn: (msg: string, fields?: Fields): void => write('warn', msg, fields),
  error: (msg: string, fields?: Fields): void => write('error', msg, fields),
};
