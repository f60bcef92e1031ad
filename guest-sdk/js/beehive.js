// Beehive's JavaScript SDK: write event handlers as WebAssembly components with
// componentize-js (world `consumer` of wit/beehive.wit). Zero dependencies; one ES module.
//
//   import { each, ack, publish, exportHandler, info, BadInput } from './beehive.js';
//
//   function handle(events) {
//     return each(events, (event) => {
//       const order = event.unserialize();          // BadInput when it does not decode
//       if (typeof order?.total !== 'number') throw new BadInput('expected a total');
//       publish('receipts', { order: event.id }, [['of', event.id]]);
//       info(`${event.id} ok`);
//       return ack();
//     });
//   }
//
//   export const handler = exportHandler(handle);
//
// Build: componentize-js handler.js --wit <repo>/wit -n consumer -d http fetch-event -o h.wasm
// with this file next to handler.js (componentize-js resolves relative imports only inside
// the handler's folder). Without `-d http fetch-event` the component imports wasi:http and
// the host refuses it.
//
// - decodeBatch(bytes) -> Event[]: the packed batch (`type batch` in wit/beehive.wit).
// - Event: id, stream, body (Uint8Array | null), meta ([key, value][]), deliveries;
//   tag(key), tryTag(key), requireTag(key), unserialize(), isRedelivery.
// - ack(), retry(reason), deadLetter(reason); each(events, decide): BadInput dead-letters
//   that event with its message, any other exception fails (retries) the whole batch.
// - publish(stream, value, meta): value encoded as MessagePack; publishMeta, publishRaw;
//   a refusal throws PublishError. Committed with the batch's acknowledgement.
// - trace/debug/info/warn/error(...parts): the host's log.
// - exportHandler(handle): decodes the batch and turns a thrown exception into the batch
//   error, `String(e)` followed by its stack (a thrown Error would otherwise trap with
//   "expected a string, received [object]").
// - encode(value) / decode(bytes): MessagePack (see below for the type mapping).
//
// Under Node (tests), testing/register.js maps the host imports to testing/fake-host.js.

import { publish as hostPublish } from 'beehive:broker/publisher@0.2.0';
import { log as hostLog } from 'beehive:broker/logging@0.2.0';

// ---------------------------------------------------------------------------------------
// Errors

/** The event itself is bad (no body, a body that does not decode, a missing tag):
 * retrying will not help. `each` dead-letters the event with the message. */
export class BadInput extends Error {
  constructor(message) {
    super(message);
    this.name = 'BadInput';
  }
}

/** The host refused a publish (a stream outside the group's `publish` allow-list, the
 * reserved key `s`, an event with neither body nor metadata, too many publishes), or the
 * value does not encode as MessagePack. */
export class PublishError extends Error {
  constructor(message) {
    super(message);
    this.name = 'PublishError';
  }
}

/** Bytes that are not one MessagePack value, or a value MessagePack cannot hold. */
export class MessagePackError extends Error {
  constructor(message) {
    super(message);
    this.name = 'MessagePackError';
  }
}

/** A malformed batch: the SDK and the host disagree on the layout. */
export class BatchError extends Error {
  constructor(at, what) {
    super(`malformed event batch at byte ${at}: ${what}`);
    this.name = 'BatchError';
  }
}

// ---------------------------------------------------------------------------------------
// UTF-8, validated as strictly as Rust's str::from_utf8 (no overlongs, no surrogates,
// nothing above U+10FFFF), identically under Node and StarlingMonkey.

// The engine's decoder where there is one (native: much faster than JS code in
// StarlingMonkey's interpreter); `fatal` refuses what Rust refuses, `ignoreBOM` keeps a
// leading U+FEFF as a character.
let textDecoder = null;
try {
  textDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
} catch {
  textDecoder = null;
}


/** The string `bytes[start, end)` holds, or null when it is not valid UTF-8. */
function utf8(bytes, start, end) {
  if (textDecoder !== null) {
    try {
      return textDecoder.decode(bytes.subarray(start, end));
    } catch {
      return null;
    }
  }
  return utf8js(bytes, start, end);
}

function utf8js(bytes, start, end) {
  const units = [];
  let out = '';
  const flush = () => {
    out += String.fromCharCode.apply(null, units);
    units.length = 0;
  };
  let i = start;
  while (i < end) {
    const b0 = bytes[i];
    let cp;
    if (b0 < 0x80) {
      cp = b0;
      i += 1;
    } else if (b0 >= 0xc2 && b0 <= 0xdf) {
      if (i + 1 >= end) return null;
      const b1 = bytes[i + 1];
      if ((b1 & 0xc0) !== 0x80) return null;
      cp = ((b0 & 0x1f) << 6) | (b1 & 0x3f);
      i += 2;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      if (i + 2 >= end) return null;
      const b1 = bytes[i + 1];
      const b2 = bytes[i + 2];
      const lo = b0 === 0xe0 ? 0xa0 : 0x80;
      const hi = b0 === 0xed ? 0x9f : 0xbf;
      if (b1 < lo || b1 > hi || (b2 & 0xc0) !== 0x80) return null;
      cp = ((b0 & 0x0f) << 12) | ((b1 & 0x3f) << 6) | (b2 & 0x3f);
      i += 3;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      if (i + 3 >= end) return null;
      const b1 = bytes[i + 1];
      const b2 = bytes[i + 2];
      const b3 = bytes[i + 3];
      const lo = b0 === 0xf0 ? 0x90 : 0x80;
      const hi = b0 === 0xf4 ? 0x8f : 0xbf;
      if (b1 < lo || b1 > hi || (b2 & 0xc0) !== 0x80 || (b3 & 0xc0) !== 0x80) return null;
      cp = ((b0 & 0x07) << 18) | ((b1 & 0x3f) << 12) | ((b2 & 0x3f) << 6) | (b3 & 0x3f);
      i += 4;
    } else {
      return null;
    }
    if (cp > 0xffff) {
      cp -= 0x10000;
      units.push(0xd800 | (cp >> 10), 0xdc00 | (cp & 0x3ff));
    } else {
      units.push(cp);
    }
    if (units.length >= 8192) flush();
  }
  flush();
  return out;
}

let textEncoder = null;
try {
  textEncoder = new TextEncoder();
} catch {
  textEncoder = null;
}

/** For tests: convert strings with this module's JS code (false) or with the engine's
 * TextDecoder and TextEncoder (true, the default where they exist). */
export function _useTextCodecs(on) {
  textDecoder = on ? new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }) : null;
  textEncoder = on ? new TextEncoder() : null;
}

/** The UTF-8 bytes of `text` (lone surrogates become U+FFFD, as TextEncoder does). */
function utf8Bytes(text) {
  if (textEncoder !== null) return textEncoder.encode(text);
  const out = [];
  for (let i = 0; i < text.length; i++) {
    let cp = text.charCodeAt(i);
    if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (next - 0xdc00);
        i++;
      }
    }
    if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
    if (cp < 0x80) {
      out.push(cp);
    } else if (cp < 0x800) {
      out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    } else {
      out.push(
        0xf0 | (cp >> 18),
        0x80 | ((cp >> 12) & 0x3f),
        0x80 | ((cp >> 6) & 0x3f),
        0x80 | (cp & 0x3f),
      );
    }
  }
  return Uint8Array.from(out);
}

/** A Uint8Array of this realm over `bytes` (the host's list<u8> arrives as a typed array
 * of another realm, for which `instanceof Uint8Array` is false). */
function asBytes(bytes) {
  if (bytes instanceof Uint8Array) return bytes;
  // A view, not a copy: Uint8Array.from would iterate in the interpreter (~1 s per 100 KB).
  if (ArrayBuffer.isView(bytes)) return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes instanceof ArrayBuffer) return new Uint8Array(bytes);
  if (bytes && typeof bytes.length === 'number') return Uint8Array.from(bytes);
  throw new TypeError(`expected bytes, got ${typeof bytes}`);
}

// ---------------------------------------------------------------------------------------
// The batch

/** One stream entry of a batch. */
export class Event {
  constructor(id, stream, body, meta, deliveries) {
    /** The entry ID, e.g. "1700000000000-0". */
    this.id = id;
    /** The stream it was read from. */
    this.stream = stream;
    /** The MessagePack body, a Uint8Array; null for metadata only. */
    this.body = body;
    /** Metadata pairs [key, value], in publish order. */
    this.meta = meta;
    /** How many times the group delivered it; 1 the first time. */
    this.deliveries = deliveries;
  }

  /** The value of metadata `key` (its first occurrence), "" when missing. */
  tag(key) {
    const v = this.tryTag(key);
    return v === undefined ? '' : v;
  }

  /** The value of metadata `key` (its first occurrence), undefined when missing. */
  tryTag(key) {
    for (const [k, v] of this.meta) if (k === key) return v;
    return undefined;
  }

  /** The value of metadata `key`; BadInput when missing. */
  requireTag(key) {
    const v = this.tryTag(key);
    if (v === undefined) throw new BadInput(`the event has no ${JSON.stringify(key)} tag`);
    return v;
  }

  /** Whether the entry was delivered before (and not acknowledged then). */
  get isRedelivery() {
    return this.deliveries > 1;
  }

  /** The body decoded from MessagePack (see `decode`); BadInput when there is no body or
   * it does not decode. */
  unserialize() {
    if (this.body === null) throw new BadInput('the event has no body');
    try {
      return decode(this.body);
    } catch (e) {
      if (e instanceof MessagePackError) throw new BadInput(e.message);
      throw e;
    }
  }
}

/** The events of a packed batch; BatchError names the offset of a malformed one. */
export function decodeBatch(batch) {
  const bytes = asBytes(batch);
  const end = bytes.length;
  let at = 0;
  const take = (n) => {
    const start = at;
    if (n > end - at) throw new BatchError(start, 'truncated');
    at += n;
    return start;
  };
  const u32 = () => {
    const i = take(4);
    return (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16)) + bytes[i + 3] * 0x1000000;
  };
  const str = () => {
    const n = u32();
    const start = take(n);
    const s = utf8(bytes, start, at);
    if (s === null) throw new BatchError(start, 'a string is not UTF-8');
    return s;
  };
  const count = u32();
  const events = [];
  for (let e = 0; e < count; e++) {
    const deliveries = u32();
    const id = str();
    const stream = str();
    const flagAt = take(1);
    let body = null;
    if (bytes[flagAt] === 1) {
      const n = u32();
      const start = take(n);
      body = bytes.slice(start, at);
    } else if (bytes[flagAt] !== 0) {
      throw new BatchError(flagAt, `body flag ${bytes[flagAt]}`);
    }
    const pairs = u32();
    const meta = [];
    for (let p = 0; p < pairs; p++) meta.push([str(), str()]);
    events.push(new Event(id, stream, body, meta, deliveries));
  }
  if (at !== end) throw new BatchError(at, 'trailing bytes');
  return events;
}

// ---------------------------------------------------------------------------------------
// MessagePack
//
// JS <-> MessagePack: null/undefined -> nil -> null; boolean; a safe integer <-> int (the
// smallest encoding); other numbers -> float 64 (float 32 and 64 decode to numbers); an
// int beyond 2^53 decodes to a BigInt, and a BigInt encodes as int; string <-> str;
// Uint8Array/ArrayBuffer -> bin -> Uint8Array; Array <-> array; a plain object -> map
// (own enumerable keys, undefined values as nil); a map decodes to a plain object when
// every key is a string, else to a Map (and a Map encodes as map); Ext <-> ext (e.g. type
// -1, the timestamp BeeORM writes for a Go time.Time); Date -> timestamp ext.

/** A MessagePack extension value: a type (-128..127) and its bytes. */
export class Ext {
  constructor(type, data) {
    if (!Number.isInteger(type) || type < -128 || type > 127) {
      throw new MessagePackError(`ext type ${type} outside -128..127`);
    }
    this.type = type;
    this.data = asBytes(data);
  }
}

const MAX_DEPTH = 512;

/** The one MessagePack value `bytes` holds; MessagePackError when it is not exactly one. */
export function decode(bytes) {
  const b = asBytes(bytes);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let at = 0;
  const need = (n) => {
    if (n > b.length - at) throw new MessagePackError(`truncated MessagePack at byte ${at}`);
  };
  const str = (n) => {
    need(n);
    const s = utf8(b, at, at + n);
    if (s === null) throw new MessagePackError(`a MessagePack string at byte ${at} is not UTF-8`);
    at += n;
    return s;
  };
  const bin = (n) => {
    need(n);
    const out = b.slice(at, at + n);
    at += n;
    return out;
  };
  const int64 = (signed) => {
    need(8);
    const big = signed ? view.getBigInt64(at) : view.getBigUint64(at);
    at += 8;
    const n = Number(big);
    return Number.isSafeInteger(n) ? n : big;
  };
  const ext = (n) => {
    need(1 + n);
    const type = view.getInt8(at);
    at += 1;
    return new Ext(type, bin(n));
  };
  const array = (n, depth) => {
    need(n); // every item takes a byte at least: refuse a count larger than what is left
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = value(depth + 1);
    return out;
  };
  const map = (n, depth) => {
    need(2 * n);
    const entries = [];
    let strings = true;
    for (let i = 0; i < n; i++) {
      const k = value(depth + 1);
      const v = value(depth + 1);
      if (typeof k !== 'string') strings = false;
      entries.push([k, v]);
    }
    if (!strings) return new Map(entries);
    const out = {};
    for (const [k, v] of entries) {
      if (k === '__proto__') {
        Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
      } else {
        out[k] = v;
      }
    }
    return out;
  };
  const u = (n) => {
    need(n);
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + b[at + i];
    at += n;
    return v;
  };
  const value = (depth) => {
    if (depth > MAX_DEPTH) throw new MessagePackError('MessagePack nested too deeply');
    need(1);
    const t = b[at++];
    if (t <= 0x7f) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t <= 0x8f) return map(t & 0x0f, depth);
    if (t <= 0x9f) return array(t & 0x0f, depth);
    if (t <= 0xbf) return str(t & 0x1f);
    let v;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u(1));
      case 0xc5: return bin(u(2));
      case 0xc6: return bin(u(4));
      case 0xc7: return ext(u(1));
      case 0xc8: return ext(u(2));
      case 0xc9: return ext(u(4));
      case 0xca: need(4); v = view.getFloat32(at); at += 4; return v;
      case 0xcb: need(8); v = view.getFloat64(at); at += 8; return v;
      case 0xcc: return u(1);
      case 0xcd: return u(2);
      case 0xce: return u(4);
      case 0xcf: return int64(false);
      case 0xd0: need(1); v = view.getInt8(at); at += 1; return v;
      case 0xd1: need(2); v = view.getInt16(at); at += 2; return v;
      case 0xd2: need(4); v = view.getInt32(at); at += 4; return v;
      case 0xd3: return int64(true);
      case 0xd4: return ext(1);
      case 0xd5: return ext(2);
      case 0xd6: return ext(4);
      case 0xd7: return ext(8);
      case 0xd8: return ext(16);
      case 0xd9: return str(u(1));
      case 0xda: return str(u(2));
      case 0xdb: return str(u(4));
      case 0xdc: return array(u(2), depth);
      case 0xdd: return array(u(4), depth);
      case 0xde: return map(u(2), depth);
      case 0xdf: return map(u(4), depth);
      default:
        throw new MessagePackError(`unsupported MessagePack type 0x${t.toString(16)} at byte ${at - 1}`);
    }
  };
  const result = value(0);
  if (at !== b.length) {
    throw new MessagePackError(`${b.length - at} trailing bytes after the MessagePack value`);
  }
  return result;
}

/** `value` as MessagePack bytes (a Uint8Array); MessagePackError for what it cannot hold. */
export function encode(value) {
  // A growing buffer: bytes are copied with set(), never one by one through an Array.
  let buf = new Uint8Array(64);
  let len = 0;
  const room = (n) => {
    if (len + n <= buf.length) return;
    let size = buf.length * 2;
    while (size < len + n) size *= 2;
    const bigger = new Uint8Array(size);
    bigger.set(buf.subarray(0, len));
    buf = bigger;
  };
  const scratch = new DataView(new ArrayBuffer(8));
  const scratchBytes = new Uint8Array(scratch.buffer);
  const push = (...b) => {
    room(b.length);
    for (const x of b) buf[len++] = x;
  };
  const be = (n) => {
    room(n);
    buf.set(scratchBytes.subarray(0, n), len);
    len += n;
  };
  const bytes = (data) => {
    room(data.length);
    buf.set(data, len);
    len += data.length;
  };
  const uint = (n) => {
    if (n <= 0xff) push(0xcc, n);
    else if (n <= 0xffff) push(0xcd, n >> 8, n & 0xff);
    else if (n <= 0xffffffff) {
      scratch.setUint32(0, n);
      push(0xce);
      be(4);
    } else {
      scratch.setBigUint64(0, BigInt(n));
      push(0xcf);
      be(8);
    }
  };
  const int = (n) => {
    if (n >= 0 && n <= 0x7f) push(n);
    else if (n < 0 && n >= -32) push(n & 0xff);
    else if (n >= 0) uint(n);
    else if (n >= -0x80) push(0xd0, n & 0xff);
    else if (n >= -0x8000) {
      scratch.setInt16(0, n);
      push(0xd1);
      be(2);
    } else if (n >= -0x80000000) {
      scratch.setInt32(0, n);
      push(0xd2);
      be(4);
    } else {
      scratch.setBigInt64(0, BigInt(n));
      push(0xd3);
      be(8);
    }
  };
  const length = (n, m8, m16, m32) => {
    if (m8 !== null && n <= 0xff) push(m8, n);
    else if (n <= 0xffff) push(m16, n >> 8, n & 0xff);
    else if (n <= 0xffffffff) {
      scratch.setUint32(0, n);
      push(m32);
      be(4);
    } else throw new MessagePackError('value too long for MessagePack');
  };
  const ext = (type, data) => {
    const fix = { 1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8 }[data.length];
    if (fix !== undefined) push(fix);
    else length(data.length, 0xc7, 0xc8, 0xc9);
    push(type & 0xff);
    bytes(data);
  };
  const item = (v, depth) => {
    if (depth > MAX_DEPTH) throw new MessagePackError('value nested too deeply');
    if (v === null || v === undefined) push(0xc0);
    else if (v === true) push(0xc3);
    else if (v === false) push(0xc2);
    else if (typeof v === 'number') {
      if (Number.isSafeInteger(v) && !Object.is(v, -0)) int(v);
      else {
        scratch.setFloat64(0, v);
        push(0xcb);
        be(8);
      }
    } else if (typeof v === 'bigint') {
      if (v >= -(2n ** 63n) && v < 2n ** 64n) {
        if (v >= 0n && v > BigInt(Number.MAX_SAFE_INTEGER)) {
          scratch.setBigUint64(0, v);
          push(0xcf);
          be(8);
        } else if (v < 0n && v < BigInt(Number.MIN_SAFE_INTEGER)) {
          scratch.setBigInt64(0, v);
          push(0xd3);
          be(8);
        } else int(Number(v));
      } else throw new MessagePackError(`integer ${v} does not fit in 64 bits`);
    } else if (typeof v === 'string') {
      const data = utf8Bytes(v);
      if (data.length <= 31) push(0xa0 | data.length);
      else length(data.length, 0xd9, 0xda, 0xdb);
      bytes(data);
    } else if (v instanceof Uint8Array || v instanceof ArrayBuffer) {
      const data = asBytes(v);
      length(data.length, 0xc4, 0xc5, 0xc6);
      bytes(data);
    } else if (ArrayBuffer.isView(v)) {
      const data = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      length(data.length, 0xc4, 0xc5, 0xc6);
      bytes(data);
    } else if (Array.isArray(v)) {
      if (v.length <= 15) push(0x90 | v.length);
      else length(v.length, null, 0xdc, 0xdd);
      for (const x of v) item(x, depth + 1);
    } else if (v instanceof Ext) {
      ext(v.type, v.data);
    } else if (v instanceof Date) {
      const ms = v.getTime();
      if (Number.isNaN(ms)) throw new MessagePackError('cannot encode an invalid Date');
      const seconds = Math.floor(ms / 1000);
      const nanos = (ms - seconds * 1000) * 1e6;
      const d = new DataView(new ArrayBuffer(12));
      if (nanos === 0 && seconds >= 0 && seconds <= 0xffffffff) {
        d.setUint32(0, seconds);
        ext(-1, new Uint8Array(d.buffer, 0, 4));
      } else if (seconds >= 0 && seconds < 2 ** 34) {
        d.setBigUint64(0, (BigInt(nanos) << 34n) | BigInt(seconds));
        ext(-1, new Uint8Array(d.buffer, 0, 8));
      } else {
        d.setUint32(0, nanos);
        d.setBigInt64(4, BigInt(seconds));
        ext(-1, new Uint8Array(d.buffer, 0, 12));
      }
    } else if (v instanceof Map) {
      if (v.size <= 15) push(0x80 | v.size);
      else length(v.size, null, 0xde, 0xdf);
      for (const [k, x] of v) {
        item(k, depth + 1);
        item(x, depth + 1);
      }
    } else if (typeof v === 'object') {
      const keys = Object.keys(v);
      if (keys.length <= 15) push(0x80 | keys.length);
      else length(keys.length, null, 0xde, 0xdf);
      for (const k of keys) {
        item(k, depth + 1);
        item(v[k], depth + 1);
      }
    } else {
      throw new MessagePackError(`cannot encode a ${typeof v} as MessagePack`);
    }
  };
  item(value, 0);
  return buf.slice(0, len);
}

// ---------------------------------------------------------------------------------------
// Outcomes

/** Handled: acknowledge the event. */
export function ack() {
  return { tag: 'ack' };
}

/** Not now: leave the event pending; the host dead-letters it after `max-deliveries`. */
export function retry(reason) {
  return { tag: 'retry', val: String(reason) };
}

/** Never: move the event to the group's dead-letter stream with `reason`. */
export function deadLetter(reason) {
  return { tag: 'dead-letter', val: String(reason) };
}

/** `decide(event)` for every event: a thrown BadInput dead-letters that event with its
 * message; any other exception propagates and fails (retries) the whole batch. */
export function each(events, decide) {
  const outcomes = [];
  for (const event of events) {
    try {
      outcomes.push(decide(event));
    } catch (e) {
      if (e instanceof BadInput) outcomes.push(deadLetter(e.message));
      else throw e;
    }
  }
  return outcomes;
}

// ---------------------------------------------------------------------------------------
// Publishing and logging

function pairs(meta) {
  const items = meta instanceof Map || Array.isArray(meta) ? [...meta] : Object.entries(meta ?? {});
  return items.map(([k, v]) => [String(k), String(v)]);
}

function send(stream, body, meta) {
  try {
    hostPublish(stream, body, pairs(meta));
  } catch (e) {
    const reason = e && typeof e === 'object' && 'payload' in e ? e.payload : e?.message ?? e;
    throw new PublishError(`publish to ${stream}: ${reason}`);
  }
}

/** Publishes `value`, encoded as MessagePack, with `meta` (an array of [key, value]
 * pairs, a Map or an object) to `stream`, committed with the batch's acknowledgement.
 * PublishError when the host refuses it or the value does not encode. */
export function publish(stream, value, meta = []) {
  let body;
  try {
    body = encode(value);
  } catch (e) {
    if (e instanceof MessagePackError) throw new PublishError(`publish to ${stream}: ${e.message}`);
    throw e;
  }
  send(stream, body, meta);
}

/** Publishes a metadata-only event. */
export function publishMeta(stream, meta) {
  send(stream, undefined, meta);
}

/** Publishes already encoded MessagePack bytes (null or undefined: metadata only). */
export function publishRaw(stream, body, meta = []) {
  send(stream, body == null ? undefined : asBytes(body), meta);
}

function show(part) {
  if (typeof part === 'string') return part;
  if (part instanceof Error) return String(part);
  try {
    const json = JSON.stringify(part, (_, v) => (typeof v === 'bigint' ? `${v}` : v));
    return json === undefined ? String(part) : json;
  } catch {
    return String(part);
  }
}

/** One line in the host's log; level is trace, debug, info, warn or error. */
export function log(level, ...parts) {
  hostLog(level, parts.map(show).join(' '));
}
export const trace = (...parts) => log('trace', ...parts);
export const debug = (...parts) => log('debug', ...parts);
export const info = (...parts) => log('info', ...parts);
export const warn = (...parts) => log('warn', ...parts);
export const error = (...parts) => log('error', ...parts);

// ---------------------------------------------------------------------------------------
// The export

/** The batch error of a thrown value: `String(e)`, then its stack when it has one. */
export function describe(e) {
  let head;
  try {
    head = String(e);
  } catch {
    head = Object.prototype.toString.call(e);
  }
  const stack = e && typeof e === 'object' && typeof e.stack === 'string' ? e.stack.trimEnd() : '';
  if (!stack) return head;
  // V8 starts the stack with the message; SpiderMonkey (componentize-js) does not.
  return stack.startsWith(head) ? stack : `${head}\n${stack}`;
}

const TAGS = new Set(['ack', 'retry', 'dead-letter']);

function checked(outcomes) {
  const list = Array.from(outcomes ?? []);
  for (let i = 0; i < list.length; i++) {
    const o = list[i];
    if (!o || !TAGS.has(o.tag) || (o.tag !== 'ack' && typeof o.val !== 'string')) {
      throw new TypeError(
        `outcome ${i} is ${typeof o === 'string' ? JSON.stringify(o) : show(o)}: expected ack(), retry(reason) or deadLetter(reason)`,
      );
    }
  }
  return list;
}

/** The `handler` export (assign it: `export const handler = exportHandler(handle)`):
 * decodes the batch, calls `handle(events)` (synchronous, returning one outcome per
 * event), and turns anything thrown into the batch's error string (`describe`), which
 * fails the batch (every event is retried) instead of trapping the component. */
export function exportHandler(handle) {
  return {
    handleEvents(batch) {
      try {
        return checked(handle(decodeBatch(batch)));
      } catch (e) {
        // componentize-js returns a thrown string as the `err` of result<_, string>.
        throw describe(e);
      }
    },
  };
}
