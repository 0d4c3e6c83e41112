// Text for people at a terminal: aligned tables, colour only where a terminal shows it,
// durations, rates, progress bars. Pure: callers decide where the text goes.
import type { ResyncStatus } from '../replication/status';
import { formatSize } from '../util/size';
import { UsageError } from './errors';

const ANSI = /\x1b\[[0-9;]*m/g;

export function visibleLength(s: string): number {
  return s.replace(ANSI, '').length;
}

export type Tone = 'good' | 'warn' | 'bad' | 'strong' | 'dim';

const TONES: Record<Tone, string> = { good: '32', warn: '33', bad: '31;1', strong: '1', dim: '2' };

export interface Painter {
  readonly color: boolean;
  paint(text: string, tone: Tone | null): string;
}

export function painter(color: boolean): Painter {
  return { color, paint: (text, tone) => (color && tone !== null && text !== '' ? `\x1b[${TONES[tone]}m${text}\x1b[0m` : text) };
}

/** Colour for a terminal only, and never when NO_COLOR asks for none (no-color.org). */
export function wantsColor(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && (env.NO_COLOR ?? '') === '' && env.TERM !== 'dumb';
}

/** A row of cells, or a line of its own under the row before it (indented to the second column). */
export type TableRow = readonly string[] | { readonly note: string };

/** Columns padded to their widest cell (colour codes do not count); the last column is not padded. */
export function table(headers: readonly string[], rows: readonly TableRow[], indent = '  '): string[] {
  const cells = rows.filter((r): r is readonly string[] => Array.isArray(r));
  const widths = headers.map((h, i) => Math.max(visibleLength(h), ...cells.map((r) => visibleLength(r[i] ?? ''))));
  const line = (r: readonly string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c + ' '.repeat((widths[i] as number) - visibleLength(c)))).join('  ').trimEnd();
  const noteIndent = indent + ' '.repeat((widths[0] ?? 0) + 2);
  return [indent + line(headers), ...rows.map((r) => (Array.isArray(r) ? indent + line(r as readonly string[]) : noteIndent + (r as { note: string }).note))];
}

/** 8 → "0:08", 125 → "2:05", 3725 → "1:02:05"; unknown → "?" */
export function formatEta(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** 65 s → "1 min 5 s": for elapsed times and timeouts in messages */
export function formatElapsed(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 === 0 ? '' : ` ${s % 60} s`}`;
  return `${Math.floor(s / 3600)} h${Math.floor((s % 3600) / 60) === 0 ? '' : ` ${Math.floor((s % 3600) / 60)} min`}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatSize(Math.max(0, Math.round(bytesPerSecond)))}/s`;
}

export function progressBar(fraction: number, width: number): string {
  const w = Math.max(4, width);
  const full = Math.round(Math.min(1, Math.max(0, fraction)) * w);
  return `[${'#'.repeat(full)}${'-'.repeat(w - full)}]`;
}

/** "90", "90s", "500ms", "5m", "2h" → ms; the bare number is seconds. */
export function parseDuration(text: string, option: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?$/.exec(text.trim());
  if (m === null) throw new UsageError(`${option}: ${JSON.stringify(text)} is not a duration (examples: 30, 30s, 500ms, 10m, 2h)`);
  const n = Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000 }[m[2] ?? 's'] as number);
  if (!Number.isFinite(n) || n <= 0 || n > 365 * 86_400_000) throw new UsageError(`${option}: ${JSON.stringify(text)} is out of range`);
  return Math.round(n);
}

/** What a resync report says, ready to print. `fraction` is null when its size is not known on this side. */
export interface ResyncFigures {
  readonly fraction: number | null;
  readonly doneBytes: number;
  readonly totalBytes: number;
  readonly rateBytesPerSecond: number;
  readonly etaSeconds: number | null;
}

export function resyncFigures(r: ResyncStatus): ResyncFigures {
  // a source that resumed a resync may not know how much is left: its target does
  const fraction = r.totalBytes > 0 ? Math.min(1, r.doneBytes / r.totalBytes) : null;
  return { fraction, doneBytes: r.doneBytes, totalBytes: r.totalBytes, rateBytesPerSecond: r.rateBytesPerSecond, etaSeconds: r.etaSeconds };
}

/** "42% (27.0 MiB of 64.0 MiB), 8.2 MiB/s, ETA 0:05" */
export function describeFigures(f: ResyncFigures): string {
  if (f.fraction === null) return `${formatSize(f.doneBytes)} sent so far, ${formatRate(f.rateBytesPerSecond)}`;
  return `${Math.floor(f.fraction * 100)}% (${formatSize(f.doneBytes)} of ${formatSize(f.totalBytes)}), ${formatRate(f.rateBytesPerSecond)}, ETA ${formatEta(f.etaSeconds)}`;
}
