// One writer of the concurrency tests: appends N events {writer, n}, one
// call each, so that it interleaves with the other writers.
import { Writer } from '../src/index.js';

const [ledger, name, count] = process.argv.slice(2);
const w = new Writer(ledger);
// The Promise API: its lock is the same flock as everyone else's.
for (let i = 0; i < Number(count); i++) await w.append('concurrent', { writer: name, n: i });
