import type { Transform } from 'node:stream';
import type { Writer } from './index.js';

/** What `pino.transport({ target: 'ledgertail-producer/pino', options })` passes. */
export interface LedgertailTransportOptions {
  /** The ledger's live file (created if missing). */
  path: string;
  /** A key file (`ledgertail keygen`) whose key signs every event. */
  keyFile?: string;
  /** The type of every event (else `typeField`'s member, else pino's `name`, else "log"). */
  type?: string;
  /** A member of each log line whose string value is the event's type. */
  typeField?: string;
  /** fsync before a batch counts as written (default true). */
  fsync?: boolean;
  /** The sidecar's line limit for this ledger. */
  maxLineBytes?: number;
}

/** The transport pino loads on its worker thread. */
export default function ledgertailTransport (options: LedgertailTransportOptions): Promise<Transform>;

/** Appends log lines (JSON text) as events; failures are reported on stderr, never thrown. */
export function appendLines (writer: Writer, lines: string[], options?: { type?: string, typeField?: string }): void;

/** A log line as a payload the ledger takes. */
export function payloadOf (line: string): unknown;
