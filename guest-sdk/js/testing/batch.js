// Packs events as the host does (`type batch` in wit/beehive.wit), for tests:
//   encodeBatch([{ id: '1-0', stream: 's', body: Uint8Array | null, meta: [['k', 'v']],
//                  deliveries: 1 }])
export function encodeBatch(events) {
  const out = [];
  const u32 = (n) => out.push(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  const bytes = (b) => {
    u32(b.length);
    for (const x of b) out.push(x);
  };
  const str = (s) => bytes(new TextEncoder().encode(s));
  u32(events.length);
  for (const e of events) {
    u32(e.deliveries ?? 1);
    str(e.id);
    str(e.stream);
    if (e.body == null) out.push(0);
    else {
      out.push(1);
      bytes(e.body);
    }
    const meta = e.meta ?? [];
    u32(meta.length);
    for (const [k, v] of meta) {
      str(k);
      str(v);
    }
  }
  return Uint8Array.from(out);
}
