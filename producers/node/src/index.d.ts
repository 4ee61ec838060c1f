// Types of ledgertail-producer.
import type { KeyObject } from 'node:crypto';

/** A JSON value as this library seals it (plain objects and arrays only). */
export type Json = null | boolean | number | string | Json[] | { [name: string]: Json };

/** One appended event: its seq and its hash (64 hex digits). */
export interface Appended { seq: number; hash: string }

export interface WriterOptions {
  /** Signs every event (its key id goes into the event). */
  key?: KeyFile;
  /** The sidecar's `max_line_bytes` for this ledger (default 1048576). */
  maxLineBytes?: number;
  /** false only for test fixtures: appends are then not durable. */
  fsync?: boolean;
}

export class Writer {
  constructor (path: string, options?: WriterOptions);
  readonly path: string;
  /**
   * Seals `payload` as the next event of type `type` and appends it (one
   * lock, one write, one fsync); resolves once it is on disk. The lock,
   * write and fsync run on a worker thread: the event loop never waits.
   */
  append (type: string, payload: Json, options?: { id?: string; extensions?: Record<string, Json> }): Promise<Appended>;
  /** Several events under one lock and one fsync, off the event loop; all checked before any is written. */
  appendBatch (type: string, payloads: Json[], options?: { ids?: Array<string | null | undefined>; extensions?: Record<string, Json> }): Promise<Appended[]>;
  /** `append`, blocking the calling thread until the event is on disk. */
  appendSync (type: string, payload: Json, options?: { id?: string; extensions?: Record<string, Json> }): Appended;
  /** `appendBatch`, blocking the calling thread. */
  appendBatchSync (type: string, payloads: Json[], options?: { ids?: Array<string | null | undefined>; extensions?: Record<string, Json> }): Appended[];
}

export class KeyFile {
  constructor (keyId: string, seed: Buffer);
  readonly keyId: string;
  readonly privateKey: KeyObject;
  static generate (keyId: string): KeyFile;
  /** Reads a key file made by `ledgertail keygen` or `keygen`. */
  static load (path: string): KeyFile;
  publicBase64 (): string;
  /** The line for the sidecar's `[keys]`: `ID = "base64"`. */
  trustLine (): string;
  /** Mode 0600; never overwrites a file. */
  saveNew (path: string): void;
}

/** A new key in a new file (mode 0600, never overwriting); the id defaults to the file's stem. */
export function keygen (path: string, keyId?: string): KeyFile;
/** The RFC 8785 canonical text this library hashes; throws PayloadError for what cannot be sealed. */
export function canonical (value: Json, where?: string): string;
/** JSON text read as the contract reads it (repeated names, NaN, inexact big integers refused). */
export function strictParse (text: string): Json;

export const MAX_SAFE_INTEGER: number;
export const DEFAULT_MAX_LINE_BYTES: number;

export class LedgerError extends Error { readonly hint?: string }
export class PayloadError extends LedgerError { readonly index?: number }
export class UnfinishedLineError extends LedgerError { readonly path: string; readonly unfinished: number }
export class HeadCompressedError extends LedgerError {}
export class KeyFileError extends LedgerError {}
export class LedgerFullError extends LedgerError {}
export class WriteError extends LedgerError { readonly appended: Appended[] }
