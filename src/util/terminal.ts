/**
 * Making guest-controlled text safe to print on a host terminal. The serial console, and the error
 * texts and status details that quote it, carry whatever bytes the guest wrote: an OSC 52 sequence
 * there writes the host user's clipboard, OSC 0 retitles the window, CSI 2J clears the screen. Text
 * output passes such text through `sanitizeTerminalText`; JSON output keeps it exact (JSON escapes
 * every control character) and `logs --raw` gives the bytes as written.
 */
import { stripVTControlCharacters } from "node:util";

/** What an unprintable control character becomes: visible, and never part of an escape sequence. */
export const CONTROL_REPLACEMENT = "\uFFFD";

/**
 * `text` with every terminal escape sequence (CSI, OSC, and the rest Node's ANSI pattern knows)
 * removed, CR LF folded to LF, and every other C0 control (except LF and TAB), DEL and C1 control
 * (U+0080-U+009F, which 8-bit terminals read as CSI/OSC/DCS introducers) replaced by U+FFFD. What
 * `stripVTControlCharacters` does not recognise as a whole sequence (DCS, an unterminated OSC)
 * loses its ESC here, so no sequence can reach the terminal.
 */
export function sanitizeTerminalText(text: string): string {
  // eslint-disable-next-line no-control-regex
  return stripVTControlCharacters(text).replace(/\r\n/g, "\n").replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, CONTROL_REPLACEMENT);
}

/** True when `text` holds nothing a terminal would interpret (what `sanitizeTerminalText` guarantees). */
export function isTerminalSafe(text: string): boolean {
  // eslint-disable-next-line no-control-regex
  return !/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/.test(text);
}
