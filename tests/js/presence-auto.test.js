// Tests of presence-auto.js ({% presence_script %}): it starts a client from its script
// tag's data attributes, subscribes to the page's dots and keeps them up to date.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");

const STATIC = path.join(__dirname, "..", "..", "src", "django_presence", "static", "django_presence");

class FakeElement {
  constructor(attributes) {
    this.attributes = { ...attributes };
  }
  getAttribute(name) {
    return name in this.attributes ? this.attributes[name] : null;
  }
  setAttribute(name, value) {
    this.attributes[name] = String(value);
  }
}

function dot(userId) {
  return new FakeElement({
    "data-presence-user": String(userId),
    "data-online": "false",
    "data-title-online": "En ligne",
    "data-title-offline": "Hors ligne",
    title: "Hors ligne",
  });
}

function page(dots, dataset) {
  const sockets = [];
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.sent = [];
      sockets.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close() {}
  }
  const fetched = [];
  const context = {
    console,
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
    Promise,
    WebSocket: FakeSocket,
    location: { protocol: "https:", host: "example.com", href: "https://example.com/page/" },
    fetch: (url, init) => {
      fetched.push({ url, init });
      return Promise.resolve({ ok: true, status: 200, json: () => Promise.resolve({ access: "tok" }) });
    },
    document: {
      currentScript: { dataset },
      querySelectorAll: (selector) => {
        assert.equal(selector, "[data-presence-user]");
        return dots;
      },
    },
  };
  context.window = context;
  vm.createContext(context);
  vm.runInContext(fs.readFileSync(path.join(STATIC, "presence.js"), "utf8"), context);
  vm.runInContext(fs.readFileSync(path.join(STATIC, "presence-auto.js"), "utf8"), context);
  return { context, sockets, fetched };
}

async function waitFor(condition, what, timeout = 3000) {
  const deadline = Date.now() + timeout;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error("Timed out waiting for " + what);
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

test("the dots of the page are watched and follow their users", async () => {
  const dots = [dot(7), dot(8), dot(7)];
  const { context, sockets } = page(dots, { url: "/ws/user/" });
  await waitFor(() => sockets.length === 1, "a socket");
  const socket = sockets[0];
  assert.equal(socket.url, "wss://example.com/ws/user/?recover=1");
  assert.deepEqual(Array.from(socket.protocols || []), []); // the session cookie authenticates
  assert.ok(context.DjangoPresence.client);
  socket.onopen({});
  const [subscribe] = socket.sent.filter((f) => f.type === "subscribe_presence");
  assert.deepEqual(subscribe.data.user_ids, [7, 8]); // each user once, as numbers
  socket.onmessage({
    data: JSON.stringify({ type: "presence_state", id: subscribe.id, data: { users: { 7: true, 8: false } } }),
  });
  await waitFor(() => dots[0].attributes["data-online"] === "true", "the dot of user 7");
  assert.equal(dots[2].attributes["data-online"], "true");
  assert.equal(dots[0].attributes.title, "En ligne");
  assert.equal(dots[0].attributes["aria-label"], "En ligne");
  assert.equal(dots[1].attributes["data-online"], "false");
  socket.onmessage({
    data: JSON.stringify({
      type: "status_changed",
      data: { user_id: 7, is_online: false, last_seen: "2026-12-06T04:00:00Z", seq: 99 },
    }),
  });
  await waitFor(() => dots[0].attributes["data-online"] === "false", "user 7 offline");
  assert.equal(dots[0].attributes["data-last-seen"], "2026-12-06T04:00:00Z");
  assert.equal(dots[0].attributes.title, "Hors ligne");
  assert.equal(dots[0].attributes["data-state"], "offline");
  // A state change without a transition: the dot says busy (presence.css colours it).
  socket.onmessage({
    data: JSON.stringify({
      type: "status_changed",
      data: { user_id: 8, is_online: true, last_seen: null, seq: 100, state: "busy" },
    }),
  });
  await waitFor(() => dots[1].attributes["data-state"] === "busy", "user 8 busy");
  assert.equal(dots[1].attributes["data-online"], "true");
  context.DjangoPresence.client.close();
});

test("with data-token-url the token is fetched and sent as a subprotocol", async () => {
  const { context, sockets, fetched } = page([dot(1)], {
    url: "/realtime/user/",
    tokenUrl: "/api/token/",
    storage: "session",
    device: "web",
  });
  await waitFor(() => sockets.length === 1, "a socket");
  assert.equal(fetched[0].url, "/api/token/");
  assert.equal(fetched[0].init.credentials, "same-origin");
  assert.deepEqual(Array.from(sockets[0].protocols), ["access_token", "tok"]);
  assert.ok(sockets[0].url.startsWith("wss://example.com/realtime/user/"));
  assert.ok(sockets[0].url.endsWith("&device=web"), sockets[0].url);
  context.DjangoPresence.client.close();
});
