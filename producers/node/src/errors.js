// The errors of the producer library: every refusal leaves the ledger as
// it was, except WriteError, which says which events reached the file whole.

export class LedgerError extends Error {
  constructor (message, hint) {
    super(hint ? `${message} (hint: ${hint})` : message);
    this.name = new.target.name;
    this.hint = hint;
  }
}

/** An event that cannot be sealed; nothing was written. `index`: its place in the batch. */
export class PayloadError extends LedgerError {
  constructor (message, index, hint = PAYLOAD_HINT) {
    super(index === undefined ? message : `event ${index + 1} of the batch: ${message}; nothing of the batch was written`, hint);
    this.index = index;
  }
}

const PAYLOAD_HINT = 'payloads are JSON values: plain objects, arrays, strings, finite numbers, booleans, null';

export class UnfinishedLineError extends LedgerError {
  constructor (path, unfinished) {
    super(
      `${path}: the ledger ends in an unfinished line (${unfinished} bytes after the last newline); refusing to append after it`,
      'if no writer is running, the line will never complete: investigate before removing it'
    );
    this.path = path;
    this.unfinished = unfinished;
  }
}

export class HeadCompressedError extends LedgerError {
  constructor (message) {
    super(message, "decompress the newest rotated file beside the ledger (rotate with logrotate's delaycompress)");
  }
}

export class KeyFileError extends LedgerError {
  constructor (message) {
    super(message, 'a key file is {"key_id": "ID", "seed": "base64 of 32 bytes"}, as `ledgertail keygen` writes it');
  }
}

export class LedgerFullError extends LedgerError {}

/** A write or fsync failed midway; `appended` lists what reached the file whole. */
export class WriteError extends LedgerError {
  constructor (message, appended) {
    super(message, 'free disk space (or raise the file size limit) and append the rest again');
    this.appended = appended;
  }
}
