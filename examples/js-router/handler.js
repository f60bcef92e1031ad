// Router, in JavaScript: the same contract as examples/router (Rust) and
// examples/python-router.
//
// Reads the `version` tag (1 or missing: v1, 2: v2), decodes the v1 ({color, price}) or v2
// ({name, price_cents}) body and republishes {color, price_cents} to `colors-normalized`
// with meta `source-id`, `source-version` and `router=js`. Unknown versions and bodies
// that do not decode are dead-lettered with the reason; a refused publish fails (and
// retries) the batch. Bodies are maps, as BeeORM writes structs (serde in the Rust router
// would also take a struct's array form; this router and the Python one do not).
//
// Build: ./build.sh (componentize-js 0.23.0, installed under target/js-tools when missing;
// beehive.js is the SDK, guest-sdk/js/beehive.js). Test: node --test examples/js-router/test/
import { BadInput, Ext, ack, each, exportHandler, info, publish } from './beehive.js';

const TARGET = 'colors-normalized';

/** `x.round() as i64` in Rust: halves away from zero, NaN to 0, saturating at the i64
 * bounds (a BigInt beyond 2^53, which publish encodes as a 64-bit int). */
function roundToI64(x) {
  if (Number.isNaN(x)) return 0;
  if (x >= 2 ** 63) return 2n ** 63n - 1n;
  if (x < -(2 ** 63)) return -(2n ** 63n);
  const a = Math.abs(x);
  const whole = Math.floor(a);
  const n = a - whole >= 0.5 ? whole + 1 : whole;
  const r = x < 0 ? -n : n;
  return Number.isSafeInteger(r) ? r : BigInt(r);
}

const isNumber = (v) => typeof v === 'number' || typeof v === 'bigint';
const isInteger = (v) => Number.isInteger(v)
  || (typeof v === 'bigint' && v >= -(2n ** 63n) && v < 2n ** 63n);

function kindOf(v) {
  if (v === null) return 'nil';
  if (Array.isArray(v)) return 'array';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof Ext) return 'ext';
  if (v instanceof Map) return 'map with non-string keys';
  return typeof v;
}

/** The body as an object with string keys, or BadInput. */
function bodyOf(event, version) {
  let body;
  try {
    body = event.unserialize();
  } catch (e) {
    if (e instanceof BadInput) throw new BadInput(`cannot decode v${version} body: ${e.message}`);
    throw e;
  }
  const kind = kindOf(body);
  if (kind !== 'object') throw new BadInput(`cannot decode v${version} body: expected a map, got ${kind}`);
  return body;
}

function normalize(event) {
  const version = event.tag('version');
  if (version === '1' || version === '') {
    const { color, price } = bodyOf(event, '1');
    if (typeof color !== 'string' || !isNumber(price)) {
      throw new BadInput('cannot decode v1 body: expected color (string) and price (number)');
    }
    return { color, price_cents: roundToI64(Number(price) * 100) };
  }
  if (version === '2') {
    const { name, price_cents: cents } = bodyOf(event, '2');
    if (typeof name !== 'string' || !isInteger(cents)) {
      throw new BadInput('cannot decode v2 body: expected name (string) and price_cents (integer)');
    }
    return { color: name, price_cents: cents };
  }
  throw new BadInput(`unknown version ${JSON.stringify(version)}`);
}

function route(event) {
  const normalized = normalize(event);
  // A refusal throws PublishError: the batch fails and is retried.
  publish(TARGET, normalized, [
    ['source-id', event.id],
    ['source-version', event.tag('version')],
    ['router', 'js'],
  ]);
  return ack();
}

export function handle(events) {
  const outcomes = each(events, route);
  info(`js router handled ${events.length} events`);
  return outcomes;
}

export const handler = exportHandler(handle);
