// presence.mjs: the ES module entry re-exports the one implementation in presence.js.
import { test } from "node:test";
import assert from "node:assert/strict";

import DjangoPresence, {
  PresenceClient,
  backoffDelay,
} from "../../src/django_presence/static/django_presence/presence.mjs";

test("named and default exports are the API of presence.js", () => {
  assert.equal(typeof PresenceClient, "function");
  assert.equal(typeof backoffDelay, "function");
  assert.equal(DjangoPresence.PresenceClient, PresenceClient);
  assert.equal(globalThis.DjangoPresence, DjangoPresence);
});
