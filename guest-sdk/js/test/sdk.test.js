// MessagePack, outcomes, publishing, logging and the export wrapper, with the fake host.
import '../testing/register.js';
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

const bh = await import('../beehive.js');
const { fakeHost } = await import('../testing/fake-host.js');
const { encodeBatch } = await import('../testing/batch.js');

const hex = (bytes) => Buffer.from(bytes).toString('hex');

beforeEach(() => fakeHost.reset());

for (const codecs of [true, false]) {
  test(`MessagePack round trips (${codecs ? 'TextEncoder' : 'JS'} strings)`, () => {
    bh._useTextCodecs(codecs);
    try {
      roundTrips();
    } finally {
      bh._useTextCodecs(true);
    }
  });
}

function roundTrips() {
  const values = [null, true, false, 0, 127, 128, 255, 256, 65535, 65536, 2 ** 32,
    Number.MAX_SAFE_INTEGER, -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31),
    -(2 ** 31) - 1, Number.MIN_SAFE_INTEGER, 2n ** 64n - 1n, -(2n ** 63n), 1.5, -0.25, 1e300,
    '', 'a1', 'é'.repeat(40), '🐝'.repeat(10), 'x'.repeat(70000), new Uint8Array(0),
    new Uint8Array(300).fill(7), [], [1, [2, [3]]], Array.from({ length: 20 }, (_, i) => i),
    {}, { a: 1, b: 'two' }, Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
    new Map([[1, 'one'], [-2, 'minus two']])];
  for (const v of values) assert.deepEqual(bh.decode(bh.encode(v)), v, String(v).slice(0, 30));
  const ext = bh.decode(bh.encode(new bh.Ext(-1, new Uint8Array([0, 0, 0, 1]))));
  assert.ok(ext instanceof bh.Ext);
  assert.deepEqual([ext.type, [...ext.data]], [-1, [0, 0, 0, 1]]);
  const proto = bh.decode(bh.encode(JSON.parse('{"__proto__": 1}')));
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.deepEqual(Object.keys(proto), ['__proto__']);
  // A lone surrogate is written as U+FFFD either way.
  assert.equal(hex(bh.encode('\ud800')), 'a3efbfbd');
}

test('MessagePack encodings are the smallest, as rmp-serde writes them', () => {
  assert.equal(hex(bh.encode('a1')), 'a26131');
  assert.equal(hex(bh.encode({ color: 'red', price_cents: 1234 })),
    '82a5636f6c6f72a3726564ab70726963655f63656e7473cd04d2');
  assert.equal(hex(bh.encode(12.34)), 'cb4028ae147ae147ae');
  assert.equal(hex(bh.encode(-1)), 'ff');
  assert.equal(hex(bh.encode(new Date(1700000000000))), 'd6ff6553f100');
  assert.equal(hex(bh.encode(undefined)), 'c0');
  // An int beyond 2^53 decodes to a BigInt, exactly.
  assert.equal(bh.decode(Buffer.from('cfffffffffffffffff', 'hex')), 2n ** 64n - 1n);
  assert.equal(bh.decode(Buffer.from('ca3fc00000', 'hex')), 1.5);
});

test('MessagePack refuses what is not one value', () => {
  for (const h of ['', 'c1', 'a56162', '9201', '0102', 'ddffffffff', 'a1ff', 'edbfbf',
    '91'.repeat(1000) + '00']) {
    assert.throws(() => bh.decode(Buffer.from(h, 'hex')), bh.MessagePackError, h);
  }
  assert.throws(() => bh.encode(() => 1), bh.MessagePackError);
  assert.throws(() => bh.encode(2n ** 64n), bh.MessagePackError);
  assert.throws(() => bh.encode(Symbol('x')), bh.MessagePackError);
});

test('strings must be strict UTF-8, as Rust checks them', () => {
  for (const codecs of [true, false]) {
    bh._useTextCodecs(codecs);
    try {
      strictUtf8();
    } finally {
      bh._useTextCodecs(true);
    }
  }
});

function strictUtf8() {
  // Overlong, surrogate, above U+10FFFF, truncated: each refused inside a batch.
  for (const bad of [[0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]]) {
    const batch = encodeBatch([{ id: '1-0', stream: 's', meta: [['k', 'v']] }]);
    const withBad = Uint8Array.from([...batch.slice(0, 8), bad.length, 0, 0, 0, ...bad,
      ...batch.slice(8 + 4 + 3)]);
    assert.throws(() => bh.decodeBatch(withBad), /a string is not UTF-8/, bad.join(','));
  }
}

test('events: tags, bodies, redelivery', () => {
  const [e] = bh.decodeBatch(encodeBatch([{
    id: '1-0', stream: 's', body: bh.encode({ n: 1 }), meta: [['a', '1'], ['a', '2']], deliveries: 2,
  }]));
  assert.equal(e.tag('a'), '1');
  assert.equal(e.tag('b'), '');
  assert.equal(e.tryTag('b'), undefined);
  assert.throws(() => e.requireTag('b'), { name: 'BadInput', message: 'the event has no "b" tag' });
  assert.deepEqual(e.unserialize(), { n: 1 });
  assert.ok(e.isRedelivery);
  const [none] = bh.decodeBatch(encodeBatch([{ id: '1-1', stream: 's', meta: [['k', 'v']] }]));
  assert.throws(() => none.unserialize(), { name: 'BadInput', message: 'the event has no body' });
});

test('each dead-letters bad input and fails the batch on anything else', () => {
  fakeHost.reset({ allow: ['out'] });
  const events = bh.decodeBatch(encodeBatch([
    { id: '1-0', stream: 'in', body: bh.encode({ n: 1 }), meta: [] },
    { id: '1-1', stream: 'in', body: Uint8Array.from([0xc1]), meta: [] },
  ]));
  const outcomes = bh.each(events, (event) => {
    const body = event.unserialize();
    bh.publish('out', body, [['of', event.id]]);
    bh.info(event.id, 'ok', { n: 1n });
    return bh.ack();
  });
  assert.deepEqual(outcomes, [bh.ack(), bh.deadLetter('unsupported MessagePack type 0xc1 at byte 0')]);
  assert.deepEqual(fakeHost.published.map((p) => [p.stream, hex(p.body), p.meta]),
    [['out', hex(bh.encode({ n: 1 })), [['of', '1-0']]]]);
  assert.deepEqual(fakeHost.logs, [['info', '1-0 ok {"n":"1"}']]);
  assert.throws(() => bh.each(events, () => { throw new TypeError('boom'); }), TypeError);
});

test('publish refusals are PublishErrors naming the stream and the host reason', () => {
  fakeHost.reset({ allow: ['out'] });
  assert.throws(() => bh.publish('elsewhere', 1), {
    name: 'PublishError',
    message: "publish to elsewhere: stream elsewhere is not in this group's publish allow-list",
  });
  assert.throws(() => bh.publishMeta('out', []), /neither body nor metadata/);
  assert.throws(() => bh.publishMeta('out', { s: '1' }), /reserved/);
  assert.throws(() => bh.publish('out', () => 1), { name: 'PublishError' });
  bh.publishMeta('out', new Map([['a', 1]]));
  bh.publishRaw('out', Uint8Array.from([0xc0]));
  assert.deepEqual(fakeHost.published.map((p) => [p.body && hex(p.body), p.meta]),
    [[undefined, [['a', '1']]], ['c0', []]]);
});

test('outcome helpers', () => {
  assert.deepEqual(bh.ack(), { tag: 'ack' });
  assert.deepEqual(bh.retry(3), { tag: 'retry', val: '3' });
  assert.deepEqual(bh.deadLetter('x'), { tag: 'dead-letter', val: 'x' });
});

test('the export returns outcomes and turns anything thrown into the error string', () => {
  const batch = encodeBatch([{ id: '1-0', stream: 's', meta: [['k', 'v']] }]);
  assert.deepEqual(bh.exportHandler((events) => events.map(bh.ack)).handleEvents(batch),
    [bh.ack()]);
  const thrown = (handle, bytes = batch) => {
    try {
      bh.exportHandler(handle).handleEvents(bytes);
    } catch (e) {
      return e;
    }
    assert.fail('nothing thrown');
  };
  const err = thrown(function handle() { throw new RangeError('too far'); });
  assert.equal(typeof err, 'string');
  assert.ok(err.startsWith('RangeError: too far\n'), err);
  assert.match(err, /at handle .*sdk\.test\.js/);
  assert.equal(thrown(() => { throw 'plain'; }), 'plain');
  assert.equal(thrown(() => { throw { toString() { throw new Error(); } }; }), '[object Object]');
  assert.match(thrown(() => ['ack']), /^TypeError: outcome 0 is "ack": expected ack\(\)/);
  assert.match(thrown(() => [], Uint8Array.from([1, 0])),
    /^BatchError: malformed event batch at byte 0: truncated/);
});
