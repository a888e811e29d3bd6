// Tests of presence.js's activity tracking (trackActivity) on a page.
//
// The file installs a fake page (window and document as EventTargets, with
// document.visibilityState) before presence.js loads, so the client sees a browser; it is
// a file of its own because node --test runs each file in its own process. The throttle
// reads Date.now(), which the tests replace with a clock they move by hand.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");

/** An EventTarget that counts its listeners (type -> number), as a page's would hold. */
class FakeTarget extends EventTarget {
  constructor() {
    super();
    this.listening = new Map();
    this.options = new Map();
  }
  addEventListener(type, fn, options) {
    this.listening.set(type, (this.listening.get(type) || 0) + 1);
    this.options.set(type, options);
    super.addEventListener(type, fn, options);
  }
  removeEventListener(type, fn, options) {
    this.listening.set(type, (this.listening.get(type) || 0) - 1);
    super.removeEventListener(type, fn, options);
  }
  fire(type) {
    this.dispatchEvent(new Event(type));
  }
  listeners() {
    return Array.from(this.listening).filter(([, n]) => n > 0).map(([type, n]) => type + "=" + n).sort();
  }
}

const page = new FakeTarget();
const doc = new FakeTarget();
doc.visibilityState = "visible";
globalThis.window = page;
globalThis.document = doc;

const { PresenceClient, DEFAULTS } = require(path.join(
  __dirname, "..", "..", "src", "django_presence", "static", "django_presence", "presence.js"
));

const realNow = Date.now;
let clock = 1_800_000_000_000;

function useClock() {
  clock = 1_800_000_000_000;
  Date.now = () => clock;
}

function restoreClock() {
  Date.now = realNow;
}

function fakeSocketClass() {
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url;
      this.sent = [];
      FakeSocket.instances.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close() {}
    open() {
      this.onopen && this.onopen({});
    }
    drop(code = 1006) {
      this.onclose && this.onclose({ code, reason: "" });
    }
    activity() {
      return this.sent.filter((frame) => frame.type === "activity");
    }
  }
  FakeSocket.instances = [];
  return FakeSocket;
}

async function waitFor(condition, what) {
  const deadline = realNow() + 3000;
  while (!condition()) {
    if (realNow() > deadline) {
      throw new Error("Timed out waiting for " + what);
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

async function openClient(options = {}) {
  const FakeSocket = fakeSocketClass();
  const client = new PresenceClient({
    url: "ws://127.0.0.1:1/ws/user/",
    token: "tok",
    WebSocket: FakeSocket,
    pingInterval: 0,
    backoffInitial: 1,
    backoffMax: 1,
    ...options,
  });
  client.connect();
  await waitFor(() => FakeSocket.instances.length === 1, "a socket");
  const socket = FakeSocket.instances[0];
  socket.open();
  return { client, socket, FakeSocket };
}

test("on a page trackActivity is on by default; listeners live from connect() to close()", async () => {
  assert.equal(DEFAULTS.trackActivity, true);
  assert.equal(DEFAULTS.activityInterval, 30000);
  const client = new PresenceClient({ url: "ws://127.0.0.1:1/ws/user/", WebSocket: fakeSocketClass() });
  assert.deepEqual(page.listeners(), [], "a client that never connected listens to nothing");
  client.connect();
  assert.deepEqual(page.listeners(), ["focus=1", "keydown=1", "pointerdown=1", "scroll=1", "wheel=1"]);
  assert.deepEqual(doc.listeners(), ["visibilitychange=1"]);
  // Passive (scrolling never waits for the client), and captured: element scrolls count.
  for (const type of ["wheel", "scroll", "pointerdown"]) {
    assert.deepEqual(page.options.get(type), { capture: true, passive: true });
  }
  client.connect(); // Again: not twice.
  assert.deepEqual(page.listeners(), ["focus=1", "keydown=1", "pointerdown=1", "scroll=1", "wheel=1"]);
  client.close();
  assert.deepEqual(page.listeners(), []);
  assert.deepEqual(doc.listeners(), []);
});

test("trackActivity: false listens to nothing and sends no activity", async () => {
  useClock();
  try {
    const { client, socket } = await openClient({ trackActivity: false });
    assert.deepEqual(page.listeners(), []);
    clock += 60000;
    page.fire("pointerdown");
    assert.deepEqual(socket.activity(), []);
    client.close();
  } finally {
    restoreClock();
  }
});

test("activity frames: at most one per activityInterval, at once after a quiet period", async () => {
  useClock();
  try {
    const { client, socket } = await openClient();
    // Connecting counts as activity on the server: nothing for the first interval.
    page.fire("pointerdown");
    clock += 29999;
    page.fire("keydown");
    assert.deepEqual(socket.activity(), []);
    // The interval is over: the next activity goes at once, as an empty activity frame.
    clock += 1;
    page.fire("scroll");
    assert.deepEqual(socket.activity(), [{ type: "activity", data: {} }]);
    // A busy user: every kind of event, many times, within one interval: no more frames.
    for (let i = 0; i < 50; i++) {
      clock += 500;
      page.fire(["pointerdown", "keydown", "wheel", "scroll", "focus"][i % 5]);
    }
    assert.equal(socket.activity().length, 1);
    clock += 5000; // 30 s since the frame: the next event sends.
    page.fire("wheel");
    assert.equal(socket.activity().length, 2);
    // Quiet for five minutes, then one key: at once.
    clock += 300000;
    page.fire("keydown");
    assert.equal(socket.activity().length, 3);
    assert.ok(socket.activity().every((frame) => frame.id === undefined), "no reply asked for");
    client.close();
  } finally {
    restoreClock();
  }
});

test("activityInterval sets the throttle", async () => {
  useClock();
  try {
    const { client, socket } = await openClient({ activityInterval: 1000 });
    clock += 1000;
    page.fire("focus");
    clock += 999;
    page.fire("focus");
    clock += 1;
    page.fire("focus");
    assert.equal(socket.activity().length, 2);
    client.close();
  } finally {
    restoreClock();
  }
});

test("nothing is sent while the page is hidden; showing it again is activity", async () => {
  useClock();
  try {
    const { client, socket } = await openClient();
    clock += 60000;
    doc.visibilityState = "hidden";
    doc.fire("visibilitychange");
    page.fire("keydown");
    page.fire("scroll");
    page.fire("focus");
    assert.deepEqual(socket.activity(), [], "a hidden page sends no activity");
    clock += 60000;
    doc.visibilityState = "visible";
    doc.fire("visibilitychange");
    assert.equal(socket.activity().length, 1, "the page shown again: activity at once");
    client.close();
  } finally {
    doc.visibilityState = "visible";
    restoreClock();
  }
});

test("no activity while disconnected, none queued; a new connection counts as activity", async () => {
  useClock();
  try {
    const { client, socket, FakeSocket } = await openClient();
    socket.drop();
    clock += 60000;
    page.fire("pointerdown");
    await waitFor(() => FakeSocket.instances.length === 2, "a reconnection");
    const second = FakeSocket.instances[1];
    second.open();
    assert.deepEqual(socket.activity(), []);
    assert.deepEqual(second.activity(), [], "activity of the disconnected time is not queued");
    page.fire("pointerdown");
    assert.deepEqual(second.activity(), [], "the connection itself was activity");
    clock += 30000;
    page.fire("pointerdown");
    assert.equal(second.activity().length, 1);
    client.close();
    clock += 60000;
    page.fire("pointerdown");
    assert.equal(second.activity().length, 1, "nothing after close()");
  } finally {
    restoreClock();
  }
});
