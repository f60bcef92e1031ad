// The router's contract under Node with the SDK's fake host (the same cases as
// tests/tests/examples.rs runs on the built components):
//   node --test examples/js-router/test/
import '../../../guest-sdk/js/testing/register.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';

const { handler } = await import('../handler.js');
const bh = await import('../beehive.js');
const { fakeHost } = await import('../../../guest-sdk/js/testing/fake-host.js');
const { encodeBatch } = await import('../../../guest-sdk/js/testing/batch.js');

const event = (id, body, meta) => ({ id, stream: 'colors', body, meta });

test('normalizes v1 and v2, dead-letters unknown versions and bad bodies', () => {
  fakeHost.reset({ allow: ['colors-normalized'] });
  const outcomes = handler.handleEvents(encodeBatch([
    event('1-0', bh.encode({ color: 'red', price: 12.34 }), [['version', '1']]),
    event('1-1', bh.encode({ name: 'blue', price_cents: 99 }), [['version', '2']]),
    event('1-2', bh.encode({ name: 'green', price_cents: 1 }), [['version', '3']]),
    event('1-3', Uint8Array.from([0xc1, 0xff]), [['version', '1']]),
    event('1-4', bh.encode({ color: 'half', price: 0.125 }), []),
    event('1-5', null, [['version', '2']]),
    event('1-6', bh.encode(['red', 1]), [['version', '1']]),
    event('1-7', bh.encode({ color: 'dear', price: 1e300 }), [['version', '1']]),
  ]));
  assert.deepEqual(outcomes.slice(0, 2), [bh.ack(), bh.ack()]);
  assert.deepEqual(outcomes[2], bh.deadLetter('unknown version "3"'));
  assert.equal(outcomes[3].tag, 'dead-letter');
  assert.ok(outcomes[3].val.startsWith('cannot decode v1 body: '), outcomes[3].val);
  assert.deepEqual(outcomes[4], bh.ack());
  assert.deepEqual(outcomes[5], bh.deadLetter('cannot decode v2 body: the event has no body'));
  assert.deepEqual(outcomes[6], bh.deadLetter('cannot decode v1 body: expected a map, got array'));
  assert.deepEqual(fakeHost.published.map((p) => [p.stream, bh.decode(p.body), p.meta]), [
    ['colors-normalized', { color: 'red', price_cents: 1234 },
      [['source-id', '1-0'], ['source-version', '1'], ['router', 'js']]],
    ['colors-normalized', { color: 'blue', price_cents: 99 },
      [['source-id', '1-1'], ['source-version', '2'], ['router', 'js']]],
    // 12.5 cents rounds away from zero, as Rust's f64::round does.
    ['colors-normalized', { color: 'half', price_cents: 13 },
      [['source-id', '1-4'], ['source-version', ''], ['router', 'js']]],
    // Out of range saturates at i64::MAX, as `as i64` does.
    ['colors-normalized', { color: 'dear', price_cents: 2n ** 63n - 1n },
      [['source-id', '1-7'], ['source-version', '1'], ['router', 'js']]],
  ]);
  // The same bytes the Rust router publishes (rmp-serde: a fixmap, the smallest ints).
  assert.equal(Buffer.from(fakeHost.published[0].body).toString('hex'),
    '82a5636f6c6f72a3726564ab70726963655f63656e7473cd04d2');
  assert.deepEqual(fakeHost.logs, [['info', 'js router handled 8 events']]);
});

test('a refused publish fails the batch with the host reason', () => {
  fakeHost.reset({ allow: [] });
  assert.throws(
    () => handler.handleEvents(encodeBatch([event('1-0', bh.encode({ color: 'red', price: 1 }), [])])),
    (e) => typeof e === 'string'
      && e.startsWith("PublishError: publish to colors-normalized: stream colors-normalized is not in this group's publish allow-list\n"),
  );
});
