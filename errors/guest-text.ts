/**
 * Text from the guest (agent error messages, console lines, details it reports) is untrusted: before it goes into
 * an error, a log line or an event, it passes through guestText(), which caps its size and makes control characters
 * harmless. One helper, used everywhere such text leaves the layer that received it.
 */

/** The default cap for one message from the guest, in UTF-8 bytes. */
export const GUEST_TEXT_MAX_BYTES = 1024;

/** C0 controls but tab and newline, DEL, C1 controls (terminal escape sequences start with ESC or CSI). */
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/**
 * At most `maxBytes` UTF-8 bytes of `text` (never cutting a character in two), followed by `…(N bytes more)` when
 * it was longer; control characters other than tab and newline become U+FFFD, and newlines ` | ` unless `multiline`.
 * Anything that is not a string is shown as String(value) first. `moreBytes`: bytes the caller already cut off the end.
 */
export function guestText(
  text: unknown,
  maxBytes = GUEST_TEXT_MAX_BYTES,
  options: { multiline?: boolean; moreBytes?: number } = {},
): string {
  const s = typeof text === 'string' ? text : String(text);
  const buf = Buffer.from(s, 'utf8');
  let head = s;
  let more = options.moreBytes ?? 0;
  if (buf.length > maxBytes) {
    let end = Math.max(0, maxBytes);
    while (end > 0 && (buf[end]! & 0xc0) === 0x80) end--; // back to the start of a character
    head = buf.subarray(0, end).toString('utf8');
    more += buf.length - end;
  }
  let cleaned = head.replace(CONTROL, '\ufffd');
  if (!options.multiline) cleaned = cleaned.replace(/\n/g, ' | ');
  return more > 0 ? `${cleaned}…(${more} bytes more)` : cleaned;
}
