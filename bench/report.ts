// The results: a plain table on stdout, and RESULTS.md with the machine, the command and the method.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { promisify } from 'node:util';
import type pg from 'pg';
import { type Figure, summary, verdict } from './stats.js';

const run = promisify(execFile);

export interface Section {
  title: string;
  figures: Figure[];
  /** Lines shown under the table (e.g. CPU use per component). */
  notes: string[];
}

function format(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '-';
}

function targetText(figure: Figure): string {
  if (!figure.target) return '';
  return `${figure.target.bound === 'at most' ? '≤' : '≥'} ${figure.target.value}`;
}

function row(figure: Figure): string[] {
  const { min, median, max } = summary(figure.samples);
  const digits = figure.digits ?? 2;
  return [
    figure.name,
    figure.unit,
    format(min, digits),
    format(median, digits),
    format(max, digits),
    targetText(figure),
    verdict(figure),
  ];
}

const HEADER = ['figure', 'unit', 'min', 'median', 'max', 'target', ''];

export function renderText(sections: readonly Section[]): string {
  const lines: string[] = [];
  for (const section of sections) {
    const rows = [HEADER, ...section.figures.map(row)];
    const widths = HEADER.map((_, column) => Math.max(...rows.map((cells) => cells[column]!.length)));
    lines.push('', `== ${section.title}`);
    for (const cells of rows) {
      lines.push(
        cells
          .map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!)))
          .join('  ')
          .trimEnd(),
      );
    }
    lines.push(...section.notes.map((note) => `  ${note}`));
  }
  return lines.join('\n');
}

export function renderMarkdownTables(sections: readonly Section[]): string {
  const parts: string[] = [];
  for (const section of sections) {
    parts.push(`### ${section.title}`, '');
    parts.push(`| ${HEADER.map((cell) => cell || 'result').join(' | ')} |`);
    parts.push(`|${HEADER.map((_, i) => (i < 2 ? ' --- ' : ' ---: ')).join('|')}|`);
    for (const cells of section.figures.map(row)) parts.push(`| ${cells.join(' | ')} |`);
    if (section.notes.length > 0) parts.push('', ...section.notes.map((note) => `- ${note}`));
    parts.push('');
  }
  return parts.join('\n');
}

async function firstLine(command: string, args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await run(command, args);
    return (stdout.trim() || stderr.trim()).split('\n')[0]!.trim();
  } catch {
    return 'unknown';
  }
}

/** The machine and the versions of what runs on it, as `name: value` pairs. */
export async function describeMachine(pool: pg.Pool, virtType: 'kvm' | 'qemu'): Promise<[string, string][]> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8');
  const postgres = await pool
    .query<{ version: string }>('SELECT version()')
    .then(({ rows }) => rows[0]!.version.split(' on ')[0]!)
    .catch(() => 'unknown');
  return [
    ['CPUs (nproc)', String(os.availableParallelism())],
    ['CPU model', /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown'],
    ['memory', `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`],
    ['kernel', `${os.type()} ${os.release()}`],
    ['virtualisation', virtType === 'kvm' ? 'KVM (/dev/kvm)' : 'TCG (no /dev/kvm)'],
    ['QEMU', await firstLine('qemu-system-x86_64', ['--version'])],
    ['qemu-img', await firstLine('qemu-img', ['--version'])],
    ['libvirt', await firstLine('libvirtd', ['--version'])],
    ['Glance', `glance-api ${await firstLine('glance-api', ['--version'])}`],
    ['Temporal', await firstLine(process.env.TEMPORAL_CLI ?? 'temporal', ['--version'])],
    ['PostgreSQL', postgres],
    ['Node.js', process.version],
  ];
}

export interface ResultsDocument {
  command: string;
  date: Date;
  durationSeconds: number;
  machine: [string, string][];
  method: string[];
  sections: Section[];
  /** What limits each missed target and what was tried (bench/limits.md, written by hand from a full run). */
  limits: string;
}

export function renderResults(doc: ResultsDocument): string {
  return [
    '# vm-shelve benchmark results',
    '',
    `Written by \`${doc.command}\` on ${doc.date.toISOString()}; the run took ${(doc.durationSeconds / 60).toFixed(1)} min.`,
    'Each figure shows the min, median and max over its runs; a target is met when the median is within it.',
    'Targets are reported, never asserted.',
    '',
    '## Machine',
    '',
    '| | |',
    '| --- | --- |',
    ...doc.machine.map(([name, value]) => `| ${name} | ${value} |`),
    '',
    '## Method',
    '',
    ...doc.method.map((line) => `- ${line}`),
    '',
    '## Results',
    '',
    renderMarkdownTables(doc.sections),
    '## Where targets are missed, and why',
    '',
    doc.limits,
  ].join('\n');
}
