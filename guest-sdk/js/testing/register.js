// Run handlers under Node: import this module, then import the SDK (and your handler)
// dynamically, so the host's imports (`beehive:broker/...`) resolve to fake-host.js:
//
//   import '<sdk>/testing/register.js';
//   const { fakeHost } = await import('<sdk>/testing/fake-host.js');
//   const { handler } = await import('./handler.js');
//
// or run `node --import <sdk>/testing/register.js --test`.
import { register } from 'node:module';

register('./loader.js', import.meta.url);
