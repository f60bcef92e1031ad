// {{name}}: a Beehive event handler. Routes `activity` events by the `type` field of their
// body: `signup` to `signups`, `purchase` to `purchases` (the body unchanged, with the meta
// `source-id`). Bad input (no body, no string `type`, a type with no route) is
// dead-lettered with the reason; a refused publish fails the batch, which is retried.
//
// Build: `bash build.sh` (componentize-js; beehive.js is the SDK, wit/ the WIT contract).
// Test: see README.md.
import { BadInput, ack, each, exportHandler, info, publishRaw } from './beehive.js';

// Where each `type` goes.
const ROUTES = new Map([
  ['signup', 'signups'],
  ['purchase', 'purchases'],
]);

/** The body's `type`, when the body is a map and it is there. */
function typeOf(body) {
  if (body instanceof Map) return body.get('type');
  const isObject = body !== null && typeof body === 'object'
    && !Array.isArray(body) && !(body instanceof Uint8Array);
  return isObject ? body.type : undefined;
}

/** Publishes one event to its route; a thrown BadInput is dead-lettered by `each`. */
function route(event) {
  if (event.body === null) throw new BadInput('no body');
  const kind = typeOf(event.unserialize());
  if (typeof kind !== 'string') throw new BadInput('expected a map with a string "type"');
  const stream = ROUTES.get(kind);
  if (stream === undefined) throw new BadInput(`unknown type ${JSON.stringify(kind)}`);
  // A refusal throws PublishError, which is not bad input: it fails (and retries) the
  // whole batch.
  publishRaw(stream, event.body, [['source-id', event.id]]);
  info(`${event.id} ${kind} -> ${stream}`);
  return ack();
}

export const handler = exportHandler((events) => each(events, route));
