// The benchmark's result tables: per row the median of each side's samples,
// their ratio and whether it meets the row's target, in aligned columns.
import type { Unit } from './jobs';

/** What a row's ratio must satisfy; a row without one is shown for information. */
export interface Target { readonly op: '>=' | '<=' | '<'; readonly value: number }

export interface TableRow {
  readonly id: string;
  readonly label: string;
  readonly unit: Unit;
  readonly target: Target | null;
  /** samples of the measured side (the ratio's numerator) */
  readonly a: readonly number[];
  /** samples of the reference side (the denominator) */
  readonly b: readonly number[];
}

/** Column headings: the two sides, the ratio, and the spread (e.g. "spread t/n"). */
export interface TableColumns { readonly a: string; readonly b: string; readonly ratio: string; readonly spread: string }

export interface Side { samples: number[]; median: number | null }

export interface RenderedRow {
  id: string; label: string; unit: Unit; target: Target | null;
  a: Side; b: Side;
  ratio: number | null;
  /** null: no ratio (a side has no sample), or no target */
  pass: boolean | null;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

export function fmtValue(v: number | undefined, unit: string): string {
  if (v === undefined || !Number.isFinite(v)) return 'n/a';
  if (unit === 'IOPS') return Math.round(v).toString();
  if (unit === 's') return v.toFixed(2);
  return v.toFixed(1);
}

/** (max - min) / median, as a percentage: how much the rounds disagreed. */
export function spread(xs: readonly number[]): string {
  if (xs.length < 2) return '-';
  const m = median(xs);
  return m > 0 ? `${(((Math.max(...xs) - Math.min(...xs)) / m) * 100).toFixed(0)}%` : '-';
}

export function meets(ratio: number, t: Target): boolean {
  return t.op === '>=' ? ratio >= t.value : t.op === '<=' ? ratio <= t.value : ratio < t.value;
}

function fmtRatio(r: number): string {
  return Math.abs(r) < 0.1 && r !== 0 ? r.toFixed(3) : r.toFixed(2);
}

export function renderTable(cols: TableColumns, input: readonly TableRow[]): { text: string; rows: RenderedRow[] } {
  const rows: RenderedRow[] = input.map((r) => {
    const am = r.a.length > 0 ? median(r.a) : undefined;
    const bm = r.b.length > 0 ? median(r.b) : undefined;
    const ratio = am !== undefined && bm !== undefined && bm > 0 ? am / bm : undefined;
    return {
      id: r.id, label: r.label, unit: r.unit, target: r.target,
      a: { samples: [...r.a], median: am ?? null },
      b: { samples: [...r.b], median: bm ?? null },
      ratio: ratio ?? null,
      pass: ratio === undefined || r.target === null ? null : meets(ratio, r.target),
    };
  });
  const header = ['job', cols.a, cols.b, 'unit', cols.ratio, 'target', '', cols.spread];
  const body = rows.map((r) => [
    r.label,
    fmtValue(r.a.median ?? undefined, r.unit),
    fmtValue(r.b.median ?? undefined, r.unit),
    r.unit,
    r.ratio === null ? 'n/a' : fmtRatio(r.ratio),
    r.target === null ? '-' : `${r.target.op}${r.target.value.toFixed(Math.max(1, (String(r.target.value).split('.')[1] ?? '').length))}`,
    r.ratio === null ? 'ERROR' : r.pass === null ? 'info' : r.pass ? 'ok' : 'BELOW',
    `${spread(r.a.samples)}/${spread(r.b.samples)}`,
  ]);
  const numeric = new Set([1, 2, 4]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? '').length)));
  const line = (cells: string[]): string => cells
    .map((c, i) => (numeric.has(i) ? c.padStart(widths[i] as number) : c.padEnd(widths[i] as number)))
    .join('  ').trimEnd();
  const text = [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
  return { text, rows };
}
