// Stands in for the host's imports under Node (see register.js): checks a publish as the
// host does and records publishes and log lines.
//
//   import { fakeHost } from '<sdk>/testing/fake-host.js';
//   fakeHost.reset({ allow: ['out'] });   // the group's publish allow-list (default: any)
//   ... run the handler ...
//   fakeHost.published  // [{ stream, body: Uint8Array | undefined, meta: [[k, v], ...] }]
//   fakeHost.logs       // [[level, message], ...]

/** A refusal, shaped as componentize-js shapes an import's `err`. */
class ComponentError extends Error {
  constructor(payload) {
    super(String(payload));
    this.payload = payload;
  }
}

export const fakeHost = {
  allow: null,
  published: [],
  logs: [],
  /** Forgets what was recorded; `allow` is the publish allow-list (null: every stream). */
  reset({ allow = null } = {}) {
    this.allow = allow === null ? null : new Set(allow);
    this.published = [];
    this.logs = [];
  },
};

/** `beehive:broker/publisher.publish`. */
export function publish(stream, body, meta) {
  let reason = null;
  const bad = meta.find(([k]) => k === 's' || k === '');
  if (fakeHost.allow !== null && !fakeHost.allow.has(stream)) {
    reason = `stream ${stream} is not in this group's publish allow-list`;
  } else if (body === undefined && meta.length === 0) {
    reason = `event for stream ${stream} has neither body nor metadata`;
  } else if (bad) {
    const why = bad[0] === 's' ? 'the key s is reserved for the body' : 'keys may not be empty';
    reason = `invalid metadata key ${JSON.stringify(bad[0])} for stream ${stream}: ${why}`;
  }
  if (reason !== null) throw new ComponentError(reason);
  fakeHost.published.push({ stream, body, meta: meta.map(([k, v]) => [k, v]) });
}

/** `beehive:broker/logging.log`. */
export function log(level, message) {
  fakeHost.logs.push([level, message]);
}
