// Compiled (never run) by types.test.mjs with `tsc --strict --noEmit`:
// the declared API is what a TypeScript user writes against.
import { Writer, KeyFile, keygen, canonical, strictParse, PayloadError, WriteError, type Appended, type Json } from 'ledgertail-producer';

const key: KeyFile = KeyFile.load('producer.key');
const writer = new Writer('ledger.jsonl', { key, maxLineBytes: 4096 });
const one: Appended = writer.appendSync('order.created', { order: 42, tags: ['a'], ok: true, none: null }, { id: 'o-42', extensions: { tenant: 't1' } });
const many: Appended[] = writer.appendBatchSync('t', [1, 'two', [3]], { ids: ['a', null, undefined] });
const seq: number = one.seq + many.length;
const text: string = canonical(strictParse('{"a":1}')) + keygen('k.key').trustLine() + key.publicBase64();
try { writer.appendSync('t', 1); } catch (e) { if (e instanceof PayloadError) console.log(e.index, e.hint); if (e instanceof WriteError) console.log(e.appended.length); }
const payload: Json = { nested: { deep: [1, 2, { x: 'y' }] } };
console.log(seq, text, payload);
async function promised (): Promise<number> {
  const first: Appended = await writer.append('t', { async: true });
  const rest: Appended[] = await writer.appendBatch('t', [1, 2]);
  return first.seq + rest.length;
}
console.log(promised);
// The pino transport's module (pino loads it by name on its worker thread).
import ledgertailTransport, { appendLines, payloadOf, type LedgertailTransportOptions } from 'ledgertail-producer/pino';
const options: LedgertailTransportOptions = { path: 'audit.jsonl', keyFile: 'producer.key', typeField: 'kind', fsync: false };
appendLines(writer, ['{"msg":"x"}'], { type: 'log' });
console.log(ledgertailTransport, options, payloadOf('{}'));
