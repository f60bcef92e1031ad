// Decodes every batch of wit/vectors/ and compares it with its JSON (see the README
// there); every input of wit/vectors/invalid/ must be refused with the named error.
//   node --test guest-sdk/js/test/
import '../testing/register.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const { decodeBatch, BatchError, _useTextCodecs } = await import('../beehive.js');
const { encodeBatch } = await import('../testing/batch.js');

const VECTORS = fileURLToPath(new URL('../../../wit/vectors/', import.meta.url));

function vectors(dir) {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.bin'))
    .sort()
    .map((f) => {
      const name = f.slice(0, -4);
      return {
        name,
        bin: new Uint8Array(readFileSync(join(dir, f))),
        json: JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')),
      };
    });
}

const hex = (bytes) => Buffer.from(bytes).toString('hex');

for (const codecs of [true, false]) {
  test(`every vector decodes to its JSON (${codecs ? 'TextDecoder' : 'the JS decoder'})`, () => {
    _useTextCodecs(codecs);
    try {
      everyVectorDecodes();
    } finally {
      _useTextCodecs(true);
    }
  });
}

function everyVectorDecodes() {
  const all = vectors(VECTORS);
  const names = all.map((v) => v.name);
  for (const name of ['empty', 'empty-meta', 'large-body', 'many-events', 'mixed', 'no-body',
    'redelivered', 'unicode']) {
    assert.ok(names.includes(name), `missing vector ${name}`);
  }
  for (const { name, bin, json } of all) {
    const events = decodeBatch(bin).map((e) => ({
      id: e.id,
      stream: e.stream,
      deliveries: e.deliveries,
      body: e.body === null ? null : hex(e.body),
      meta: e.meta,
    }));
    assert.equal(events.length, json.events.length, `${name}: event count`);
    events.forEach((e, i) => assert.deepEqual(e, json.events[i], `${name}: event ${i}`));
  }
}

test('a typed array of another realm decodes too', () => {
  // componentize-js passes list<u8> as a Uint8Array for which instanceof is false.
  const { bin, json } = vectors(VECTORS).find((v) => v.name === 'mixed');
  const foreign = { length: bin.length };
  for (let i = 0; i < bin.length; i++) foreign[i] = bin[i];
  assert.equal(decodeBatch(foreign).length, json.events.length);
});

test('the test encoder writes every vector byte for byte', () => {
  for (const { name, bin, json } of vectors(VECTORS)) {
    const events = json.events.map((e) => ({
      ...e,
      body: e.body === null ? null : Buffer.from(e.body, 'hex'),
    }));
    assert.equal(hex(encodeBatch(events)), hex(bin), name);
  }
});

test('every invalid input is refused with its error, by both decoders', () => {
  const all = vectors(join(VECTORS, 'invalid'));
  for (const codecs of [true, false]) {
    _useTextCodecs(codecs);
    try {
      refused(all);
    } finally {
      _useTextCodecs(true);
    }
  }
});

function refused(all) {
  assert.ok(all.length >= 5);
  for (const { name, bin, json } of all) {
    assert.throws(
      () => decodeBatch(bin),
      (e) => e instanceof BatchError && e.message.startsWith('malformed event batch at byte ')
        && e.message.includes(json.error),
      name,
    );
  }
}
