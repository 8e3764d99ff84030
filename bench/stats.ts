// Figures and their summaries: every figure keeps all its samples, the report shows min / median / max.

export interface Target {
  /** The figure's median must not exceed this ('at most') or fall below it ('at least'). */
  bound: 'at most' | 'at least';
  value: number;
}

export interface Figure {
  section: string;
  name: string;
  unit: string;
  samples: number[];
  target?: Target;
  /** How many decimals to show. */
  digits?: number;
}

export function quantile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  // Nearest rank: a p95 of 10 samples is the 10th, never an interpolation between two.
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export function summary(samples: readonly number[]): { min: number; median: number; max: number } {
  if (samples.length === 0) return { min: NaN, median: NaN, max: NaN };
  const sorted = [...samples].sort((a, b) => a - b);
  const middle = sorted.length / 2;
  const median = sorted.length % 2 ? sorted[Math.floor(middle)]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
  return { min: sorted[0]!, median, max: sorted.at(-1)! };
}

/** 'met', 'missed', or '' when the figure has no target. */
export function verdict(figure: Figure): string {
  if (!figure.target || figure.samples.length === 0) return '';
  const { median } = summary(figure.samples);
  const met = figure.target.bound === 'at most' ? median <= figure.target.value : median >= figure.target.value;
  return met ? 'met' : 'missed';
}

/** Per-run ratios a[i] / b[i] of two figures measured in the same runs. */
export function ratios(a: readonly number[], b: readonly number[]): number[] {
  return a.map((value, i) => value / b[i]!);
}

/** Total length of the union of [start, end] intervals: overlapping work counts once. */
export function unionLength(intervals: readonly [number, number][]): number {
  let total = 0;
  let reach = -Infinity;
  for (const [start, end] of [...intervals].sort((a, b) => a[0] - b[0])) {
    if (end <= reach || end <= start) continue;
    total += end - Math.max(start, reach);
    reach = end;
  }
  return total;
}
