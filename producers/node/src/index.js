// Write a ledgertail ledger correctly from Node.js:
//
//   import { Writer, KeyFile } from 'ledgertail-producer';
//   const writer = new Writer('ledger.jsonl', { key: KeyFile.load('producer.key') });
//   const { seq, hash } = writer.append('order.created', { order: 42, total: '19.90' });
//
// Each event is sealed as contract §1 says and appended with the rules of
// `ledgertail append` (§4): the shared flock(2) on the live file, the head
// found from the end of the file, one write per line, fsync per call, and
// nothing half-written on any error.

export { HeadCompressedError, KeyFileError, LedgerError, LedgerFullError, PayloadError, UnfinishedLineError, WriteError } from './errors.js';
export { KeyFile, keygen } from './keyfile.js';
export { DEFAULT_MAX_LINE_BYTES, MAX_SAFE_INTEGER, canonical, strictParse } from './seal.js';
export { Writer } from './writer.js';
