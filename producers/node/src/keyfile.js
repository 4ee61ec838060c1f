// Key files, the format `ledgertail keygen` writes (contract §4): a JSON
// object {"key_id": ID, "seed": base64 of the 32-byte Ed25519 seed} in a
// file of mode 0600, never overwritten.

import { closeSync, constants, fchmodSync, fstatSync, fsyncSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { basename, extname } from 'node:path';

import { KeyFileError } from './errors.js';
import { validKeyId } from './seal.js';

// PKCS#8 wrapping of a raw Ed25519 seed (RFC 8410): node:crypto imports
// keys in that form.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export class KeyFile {
  #seed;

  /** @param {string} keyId @param {Buffer} seed 32 bytes */
  constructor (keyId, seed) {
    if (!validKeyId(keyId)) throw new KeyFileError(`key id ${JSON.stringify(keyId)} must be 1 to 128 bytes with no control character`);
    if (!Buffer.isBuffer(seed) || seed.length !== 32) throw new KeyFileError('an Ed25519 seed is 32 bytes');
    this.keyId = keyId;
    this.#seed = Buffer.from(seed);
    this.privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  }

  /** A new random key. */
  static generate (keyId) {
    return new KeyFile(keyId, randomBytes(32));
  }

  /** Reads a key file made by `ledgertail keygen` or `keygen`; warns when others may read it. */
  static load (path) {
    const bad = (why) => new KeyFileError(`key file ${path}: ${why}`);
    let text, mode;
    try {
      const fd = openSync(path, 'r');
      try {
        mode = fstatSync(fd).mode;
        text = readFileSync(fd, 'utf8');
      } finally {
        closeSync(fd);
      }
    } catch (e) {
      throw bad(e.code === 'ENOENT' ? 'no such file' : e.message);
    }
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw bad(`not a key file: ${e.message}`);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed) ||
        Object.keys(parsed).sort().join(',') !== 'key_id,seed') {
      throw bad('not a key file: it must hold exactly "key_id" and "seed"');
    }
    if (!validKeyId(parsed.key_id)) throw bad('key_id must be 1 to 128 bytes with no control character');
    const seedText = typeof parsed.seed === 'string' ? parsed.seed.trim() : '';
    const seed = Buffer.from(seedText, 'base64');
    if (seed.length !== 32 || seed.toString('base64') !== seedText) throw bad('seed is not base64 of 32 bytes');
    if (mode & 0o077) {
      process.emitWarning(`key file ${path} is readable by other users (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
    }
    return new KeyFile(parsed.key_id, seed);
  }

  /** The public key, base64: the value of its `[keys]` line. */
  publicBase64 () {
    const jwk = createPublicKey(this.privateKey).export({ format: 'jwk' });
    return Buffer.from(jwk.x, 'base64url').toString('base64');
  }

  /** The line to add under the sidecar's `[keys]`: `ID = "base64"`. */
  trustLine () {
    const name = /^[A-Za-z0-9_-]+$/.test(this.keyId) ? this.keyId : JSON.stringify(this.keyId);
    return `${name} = "${this.publicBase64()}"`;
  }

  /** Writes the key file with mode 0600; an existing file is never overwritten. */
  saveNew (path) {
    const body = JSON.stringify({ key_id: this.keyId, seed: this.#seed.toString('base64') }) + '\n';
    let fd;
    try {
      fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    } catch (e) {
      if (e.code === 'EEXIST') throw new KeyFileError(`key file ${path} exists already: a key file is never overwritten`);
      throw new KeyFileError(`key file ${path}: ${e.message}`);
    }
    try {
      fchmodSync(fd, 0o600); // whatever the umask
      writeSync(fd, body);
      fsyncSync(fd);
    } catch (e) {
      closeSync(fd);
      unlinkSync(path);
      throw new KeyFileError(`key file ${path}: ${e.message}`);
    }
    closeSync(fd);
  }

  toJSON () {
    return { keyId: this.keyId };
  }

  [Symbol.for('nodejs.util.inspect.custom')] () {
    return `KeyFile { keyId: ${JSON.stringify(this.keyId)} }`;
  }
}

/** `ledgertail keygen` in JavaScript: a new key in a new file (mode 0600); the id defaults to the file's stem. */
export function keygen (path, keyId) {
  const name = basename(path);
  const key = KeyFile.generate(keyId ?? name.slice(0, name.length - extname(name).length));
  key.saveNew(path);
  return key;
}
