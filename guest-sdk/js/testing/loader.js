// A Node module-resolution hook (registered by register.js): the host's imports resolve to
// fake-host.js.
const FAKE = new URL('./fake-host.js', import.meta.url).href;

export async function resolve(specifier, context, next) {
  if (specifier.startsWith('beehive:broker/')) return { url: FAKE, shortCircuit: true };
  return next(specifier, context);
}
