// Tests of presence.js in Node's test runner (node --test tests/js/).
//
// The browser's WebSocket is replaced by FakeSocket, which records what the client sends
// and lets each test open, feed and drop the connection. Timers are real and short;
// conditions are awaited with a deadline rather than assumed after a sleep.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");

const DjangoPresence = require(path.join(
  __dirname, "..", "..", "src", "django_presence", "static", "django_presence", "presence.js"
));
const { PresenceClient, backoffDelay } = DjangoPresence;

function fakeSocketClass() {
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.sent = [];
      this.closed = null;
      FakeSocket.instances.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code, reason) {
      this.closed = { code, reason };
    }
    // Test controls: what the server would do.
    open() {
      this.onopen && this.onopen({});
    }
    receive(frame) {
      this.onmessage && this.onmessage({ data: JSON.stringify(frame) });
    }
    drop(code = 1006) {
      this.onclose && this.onclose({ code, reason: "" });
    }
    sentOfType(type) {
      return this.sent.filter((frame) => frame.type === type);
    }
  }
  FakeSocket.instances = [];
  return FakeSocket;
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

function newClient(FakeSocket, options = {}) {
  return new PresenceClient({
    url: "ws://127.0.0.1:1/ws/user/",
    token: "tok",
    WebSocket: FakeSocket,
    pingInterval: 0,
    ...options,
  });
}

async function connected(client, FakeSocket) {
  const before = FakeSocket.instances.length;
  client.connect();
  await waitFor(() => FakeSocket.instances.length > before, "a socket");
  const socket = FakeSocket.instances[FakeSocket.instances.length - 1];
  socket.open();
  return socket;
}

test("backoff grows exponentially up to the cap", () => {
  const options = { backoffInitial: 100, backoffMax: 5000, backoffFactor: 2 };
  const almostOne = () => 0.999999;
  const ceilings = [];
  for (let attempt = 1; attempt <= 12; attempt++) {
    ceilings.push(backoffDelay(attempt, options, almostOne));
  }
  assert.deepEqual(ceilings.slice(0, 6), [99, 199, 399, 799, 1599, 3199]);
  // Capped from the seventh attempt on (100 * 2^6 = 6400 > 5000).
  for (const delay of ceilings.slice(6)) {
    assert.equal(delay, 4999);
  }
  assert.equal(backoffDelay(30, options, () => 0), 0);
});

test("backoff has full jitter: delays spread over [0, ceiling)", () => {
  const options = { backoffInitial: 500, backoffMax: 30000 };
  const delays = [];
  for (let i = 0; i < 2000; i++) {
    delays.push(backoffDelay(20, options));
  }
  for (const delay of delays) {
    assert.ok(delay >= 0 && delay < 30000, "delay out of bounds: " + delay);
  }
  // Uniform over [0, 30000): 2000 samples fill every tenth of the range.
  const tenths = new Set(delays.map((delay) => Math.floor(delay / 3000)));
  assert.equal(tenths.size, 10);
  assert.ok(new Set(delays).size > 1000, "delays should not repeat");
});

test("the token travels as a subprotocol, never in the URL, fresh before each connect", async () => {
  const FakeSocket = fakeSocketClass();
  let issued = 0;
  const client = newClient(FakeSocket, {
    token: null,
    getToken: async () => "token-" + ++issued,
    backoffInitial: 1,
    backoffMax: 2,
  });
  const first = await connected(client, FakeSocket);
  assert.deepEqual(first.protocols, ["access_token", "token-1"]);
  assert.equal(first.url, "ws://127.0.0.1:1/ws/user/?recover=1", "no token in the URL");
  first.drop(4001);
  await waitFor(() => FakeSocket.instances.length === 2, "a reconnection");
  assert.deepEqual(FakeSocket.instances[1].protocols, ["access_token", "token-2"]);
  assert.ok(!FakeSocket.instances[1].url.includes("token"));
  client.close();
});

test("reconnects with the backoff delays, reset once a connection proved stable", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, {
    backoffInitial: 8,
    backoffMax: 40,
    random: () => 0.5,
    stableAfter: 50,
  });
  const delays = [];
  client.on("close", (info) => delays.push(info.delay));
  const socket = await connected(client, FakeSocket);
  socket.drop();
  // The server is down: every attempt fails before opening.
  for (let n = 2; n <= 5; n++) {
    await waitFor(() => FakeSocket.instances.length === n, "attempt " + n);
    FakeSocket.instances[n - 1].drop();
  }
  assert.deepEqual(delays, [4, 8, 16, 20, 20]);
  await waitFor(() => FakeSocket.instances.length === 6, "attempt 6");
  FakeSocket.instances[5].open();
  await new Promise((resolve) => setTimeout(resolve, 80));
  FakeSocket.instances[5].drop();
  assert.equal(delays[delays.length - 1], 4, "a stable connection resets the backoff");
  client.close();
  assert.equal(client.state, "closed");
});

test("close() stops reconnecting", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { backoffInitial: 5, backoffMax: 5 });
  const socket = await connected(client, FakeSocket);
  client.close();
  assert.deepEqual(socket.closed, { code: 1000, reason: "" });
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.equal(FakeSocket.instances.length, 1);
});

test("a socket closed for a deactivated account (4011) is not reopened", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { backoffInitial: 1, backoffMax: 1 });
  const closes = [];
  client.on("close", (info) => closes.push(info));
  const socket = await connected(client, FakeSocket);
  socket.drop(4011);
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.equal(FakeSocket.instances.length, 1);
  assert.equal(closes[0].code, 4011);
  assert.equal(closes[0].reconnecting, false);
  assert.equal(client.state, "closed");
});

test("status updates that arrive before the snapshot are buffered, then applied after it", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket);
  const socket = await connected(client, FakeSocket);
  const seen = [];
  client.on("presence", (entry) => seen.push([entry.user_id, entry.is_online]));
  const subscribed = client.subscribe([1, 2]);
  const [request] = socket.sentOfType("subscribe_presence");
  assert.deepEqual(request.data, { user_ids: [1, 2] });
  // User 1 goes offline while the snapshot (still saying online) is on its way.
  socket.receive({ type: "status_changed", data: { user_id: 1, is_online: false, last_seen: "2026-11-28T07:00:00Z" } });
  assert.equal(client.isOnline(1), undefined, "not applied before the snapshot");
  socket.receive({ type: "presence_state", id: request.id, data: { users: { 1: true, 2: true } } });
  await subscribed;
  assert.equal(client.isOnline(1), false);
  assert.equal(client.getStatus(1).last_seen, "2026-11-28T07:00:00Z");
  assert.equal(client.isOnline(2), true);
  assert.deepEqual(seen, [[1, true], [2, true], [1, false]]);
  // After the snapshot, updates apply at once.
  socket.receive({ type: "status_changed", data: { user_id: 2, is_online: false, last_seen: null } });
  assert.equal(client.isOnline(2), false);
  client.close();
});

test("updates with an older seq than the one applied are dropped", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket);
  const socket = await connected(client, FakeSocket);
  const subscribed = client.subscribe([7]);
  const [request] = socket.sentOfType("subscribe_presence");
  socket.receive({ type: "presence_state", id: request.id, data: { users: { 7: false } } });
  await subscribed;
  socket.receive({ type: "status_changed", data: { user_id: 7, is_online: true, seq: 10 } });
  socket.receive({ type: "status_changed", data: { user_id: 7, is_online: false, seq: 9 } });
  assert.equal(client.isOnline(7), true);
  socket.receive({ type: "status_changed", data: { user_id: 7, is_online: false, seq: 11 } });
  assert.equal(client.isOnline(7), false);
  client.close();
});

test("after a reconnect it subscribes again and re-joins its groups", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { backoffInitial: 1, backoffMax: 2 });
  const first = await connected(client, FakeSocket);
  client.subscribe([3, 4]).catch(() => {});
  client.joinGroup("cardiology").catch(() => {});
  client.unsubscribe([4]).catch(() => {});
  first.drop();
  await waitFor(() => FakeSocket.instances.length === 2, "a reconnection");
  const second = FakeSocket.instances[1];
  assert.equal(second.sent.length, 0, "nothing is sent before the socket opens");
  second.open();
  assert.deepEqual(second.sentOfType("subscribe_presence").map((f) => f.data), [{ user_ids: [3] }]);
  assert.deepEqual(second.sentOfType("join_group").map((f) => f.data), [{ group: "cardiology" }]);
  // Updates racing with the new snapshot are buffered again.
  second.receive({ type: "status_changed", data: { user_id: 3, is_online: true } });
  assert.equal(client.isOnline(3), undefined);
  const [request] = second.sentOfType("subscribe_presence");
  second.receive({ type: "presence_state", id: request.id, data: { users: { 3: false } } });
  assert.equal(client.isOnline(3), true);
  client.close();
});

test("subscribe() and joinGroup() before the socket opens are answered by its opening requests", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket);
  client.connect();
  const subscribed = client.subscribe([5]);
  const joined = client.joinGroup("ward");
  await waitFor(() => FakeSocket.instances.length === 1, "a socket");
  const socket = FakeSocket.instances[0];
  socket.open();
  assert.equal(socket.sentOfType("subscribe_presence").length, 1, "subscribed once");
  assert.equal(socket.sentOfType("join_group").length, 1, "joined once");
  const [sub] = socket.sentOfType("subscribe_presence");
  const [join] = socket.sentOfType("join_group");
  socket.receive({ type: "presence_state", id: sub.id, data: { users: { 5: true } } });
  socket.receive({ type: "group_joined", id: join.id, data: { group: "ward", members_online: [5, 6] } });
  assert.equal((await subscribed).type, "presence_state");
  assert.equal((await joined).type, "group_joined");
  assert.deepEqual(client.groupMembers("ward"), [5, 6]);
  client.close();
});

test("requests resolve with the reply carrying their id, reject on error or timeout", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { requestTimeout: 30 });
  const socket = await connected(client, FakeSocket);
  const answered = client.request("ping");
  const refused = client.broadcast("hello");
  const unanswered = client.sendDirectMessage(2, "anyone?");
  const [ping, broadcast] = socket.sent;
  assert.ok(ping.id && broadcast.id && ping.id !== broadcast.id);
  socket.receive({ type: "pong", id: ping.id, data: {} });
  socket.receive({ type: "error", id: broadcast.id, data: { code: "forbidden", message: "Staff only" } });
  assert.equal((await answered).type, "pong");
  await assert.rejects(refused, { code: "forbidden", message: "Staff only" });
  await assert.rejects(unanswered, { code: "timeout" });
  // A late reply to a timed-out request is harmless.
  socket.receive({ type: "direct_message_sent", id: socket.sent[2].id, data: {} });
  client.close();
});

test("requests made while disconnected are sent once connected", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket);
  const pending = client.sendDirectMessage(9, "queued");
  const socket = await connected(client, FakeSocket);
  const [frame] = socket.sentOfType("direct_message");
  assert.deepEqual(frame.data, { target_user_id: 9, message: "queued" });
  socket.receive({ type: "direct_message_sent", id: frame.id, data: {} });
  await pending;
  client.close();
});

test("a silent connection is dropped after the ping timeout and replaced", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { pingInterval: 15, pingTimeout: 15, backoffInitial: 1, backoffMax: 1 });
  const socket = await connected(client, FakeSocket);
  await waitFor(() => socket.sentOfType("ping").length >= 1, "a ping");
  await waitFor(() => FakeSocket.instances.length === 2, "a new socket after the timeout");
  assert.equal(socket.closed.code, 4000);
  client.close();
});

test("a connection that answers pings is kept", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { pingInterval: 10, pingTimeout: 30 });
  const socket = await connected(client, FakeSocket);
  const stop = setInterval(() => {
    socket.sentOfType("ping").forEach(() => socket.receive({ type: "pong", data: {} }));
  }, 2);
  await waitFor(() => socket.sentOfType("ping").length >= 8, "eight pings");
  clearInterval(stop);
  assert.equal(FakeSocket.instances.length, 1);
  assert.equal(socket.closed, null);
  client.close();
});

test("events reach every listener by frame type; a throwing listener harms no other", async () => {
  const FakeSocket = fakeSocketClass();
  const errors = [];
  const client = newClient(FakeSocket, { onListenerError: (error) => errors.push(error.message) });
  const socket = await connected(client, FakeSocket);
  const got = [];
  client.on("notification", () => {
    throw new Error("listener bug");
  });
  const off = client.on("notification", (data) => got.push(data.title));
  client.on("direct_message", (data) => got.push(data.from_user_id));
  socket.receive({ type: "notification", data: { title: "Hi", message: "m" } });
  socket.receive({ type: "direct_message", data: { from_user_id: 2, message: "m", sent_at: "t" } });
  off();
  socket.receive({ type: "notification", data: { title: "Again", message: "m" } });
  socket.receive({ type: "not json" });
  socket.onmessage({ data: "{not json" });
  assert.deepEqual(got, ["Hi", 2]);
  assert.deepEqual(errors, ["listener bug", "listener bug"]);
  client.close();
});

test("group member lists follow group_joined, then group_presence diffs and new lists", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket);
  const socket = await connected(client, FakeSocket);
  const updates = [];
  client.on("group_members", (info) => updates.push([info.members, info.count]));
  const joined = client.joinGroup("ward");
  const [join] = socket.sentOfType("join_group");
  socket.receive({ type: "group_joined", id: join.id, data: { group: "ward", count: 1, members_online: [1] } });
  await joined;
  socket.receive({ type: "group_presence", data: { group: "ward", user_id: 2, joined: true, count: 2 } });
  assert.deepEqual(client.groupMembers("ward"), [1, 2]);
  socket.receive({ type: "group_presence", data: { group: "ward", user_id: 1, joined: false, count: 1 } });
  assert.deepEqual(client.groupMembers("ward"), [2]);
  // A group grown too large reports a count only; a fresh list replaces it later.
  socket.receive({ type: "group_presence", data: { group: "ward", count: 500, count_only: true } });
  assert.equal(client.groupMembers("ward"), null);
  socket.receive({ type: "group_presence", data: { group: "ward", count: 2, members_online: [2, 3] } });
  assert.deepEqual(client.groupMembers("ward"), [2, 3]);
  // Frames about groups this client is not in are ignored.
  socket.receive({ type: "group_presence", data: { group: "other", user_id: 9, joined: true, count: 1 } });
  assert.equal(client.groupMembers("other"), null);
  assert.deepEqual(updates.map((u) => u[1]), [1, 2, 1, 500, 2]);
  client.close();
});

test("the snapshot's last_seen fills in each offline user's status", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket);
  const socket = await connected(client, FakeSocket);
  const subscribed = client.subscribe([1, 2, 3]);
  const [request] = socket.sentOfType("subscribe_presence");
  socket.receive({
    type: "presence_state",
    id: request.id,
    data: {
      users: { 1: true, 2: false, 3: false },
      last_seen: { 1: null, 2: "2026-11-28T08:00:05+00:00", 3: null },
    },
  });
  await subscribed;
  // A server without availability (no states map): the state follows is_online.
  assert.deepEqual(client.getStatus(1), {
    user_id: 1,
    is_online: true,
    last_seen: null,
    state: "online",
    devices: [],
    activities: [],
    statusText: "",
  });
  assert.equal(client.getStatus(2).state, "offline");
  assert.equal(client.getStatus(2).last_seen, "2026-11-28T08:00:05+00:00");
  assert.equal(client.getStatus(2).is_online, false);
  assert.equal(client.getStatus(3).last_seen, null);
  client.close();
});

// -- recoverable delivery: streams, offsets, epochs -------------------------------------

function stored(type, stream, epoch, offset, data = {}, extra = {}) {
  return { type, data, stream, epoch, offset, ...extra };
}

function note(epoch, offset, extra = {}) {
  return stored("notification", "user", epoch, offset, { title: "n" + offset, message: "m" }, extra);
}

function fakeStorage(initial = {}) {
  const items = new Map(Object.entries(initial));
  return {
    items,
    getItem: (k) => (items.has(k) ? items.get(k) : null),
    setItem: (k, v) => items.set(k, String(v)),
    removeItem: (k) => items.delete(k),
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test("a stored frame already processed in the same epoch is dropped; others are emitted", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { autoAck: false });
  const socket = await connected(client, FakeSocket);
  const titles = [];
  const frames = [];
  client.on("notification", (data) => titles.push(data.title));
  client.on("message", (frame) => frames.push(frame.type));
  socket.receive(note("e1", 1));
  socket.receive(note("e1", 2));
  socket.receive(note("e1", 2));
  socket.receive(note("e1", 1));
  // Frames without an offset (ephemeral) are never deduplicated.
  socket.receive({ type: "notification", data: { title: "ephemeral", message: "m" } });
  socket.receive({ type: "notification", data: { title: "ephemeral", message: "m" } });
  // A new epoch starts over at 1.
  socket.receive(note("e2", 1));
  assert.deepEqual(titles, ["n1", "n2", "ephemeral", "ephemeral", "n1"]);
  assert.equal(frames.length, 5, "a duplicate is not even a message event");
  socket.receive(stored("system_broadcast", "broadcast", "b1", 7, { message: "all" }));
  assert.deepEqual(client.positions(), { user: { epoch: "e2", offset: 1 }, broadcast: { epoch: "b1", offset: 7 } });
  // positions() is a copy.
  client.positions().user.offset = 99;
  assert.equal(client.positions().user.offset, 1);
  client.close();
});

test("a reconnect asks for what it missed with since=<stream>:<epoch>:<offset>, keeping the query", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, {
    url: "ws://127.0.0.1:1/ws/user/?v=2",
    backoffInitial: 1,
    backoffMax: 2,
    autoAck: false,
  });
  const first = await connected(client, FakeSocket);
  assert.equal(first.url, "ws://127.0.0.1:1/ws/user/?v=2&recover=1", "no since without positions");
  first.receive(note("9f3a2c1b", 12));
  first.receive(stored("system_broadcast", "broadcast", "77aa00bc", 3, { message: "x" }));
  first.receive(stored("group_message", "group:ward", "g1", 5, { group: "ward", message: "x" }));
  first.drop();
  await waitFor(() => FakeSocket.instances.length === 2, "a reconnection");
  assert.equal(
    FakeSocket.instances[1].url,
    "ws://127.0.0.1:1/ws/user/?v=2&since=user:9f3a2c1b:12&since=broadcast:77aa00bc:3",
    "groups send their position with join_group, not in the URL"
  );
  client.close();
  // Without a query in the url, the since parameters start one.
  const Other = fakeSocketClass();
  const plain = newClient(Other, { storage: fakeStorage({ "django_presence:/ws/user/": '{"user":{"epoch":"e","offset":0}}' }) });
  const socket = await connected(plain, Other);
  assert.equal(socket.url, "ws://127.0.0.1:1/ws/user/?since=user:e:0");
  plain.close();
});

test("the recovery frame sets positions and emits recovered or discontinuity", async () => {
  const FakeSocket = fakeSocketClass();
  const storage = fakeStorage({
    "django_presence:/ws/user/": JSON.stringify({
      user: { epoch: "9f3a2c1b", offset: 12 },
      broadcast: { epoch: "77aa00bc", offset: 3 },
    }),
  });
  const client = newClient(FakeSocket, { storage, autoAck: false });
  const events = [];
  client.on("recovered", (info) => events.push(["recovered", info]));
  client.on("discontinuity", (info) => events.push(["discontinuity", info]));
  const socket = await connected(client, FakeSocket);
  assert.equal(socket.url, "ws://127.0.0.1:1/ws/user/?since=user:9f3a2c1b:12&since=broadcast:77aa00bc:3");
  socket.receive({
    type: "recovery",
    data: {
      streams: {
        user: { epoch: "9f3a2c1b", offset: 15, since: 12, recovered: true, replayed: 3 },
        // The broadcast history was lost: a new epoch, what is left is replayed from 0.
        broadcast: { epoch: "c0ffee00", offset: 2, since: 0, recovered: false, replayed: 2 },
      },
    },
  });
  assert.deepEqual(events, [
    ["recovered", { stream: "user", replayed: 3, epoch: "9f3a2c1b" }],
    ["discontinuity", { stream: "broadcast", epoch: "c0ffee00", offset: 2 }],
  ]);
  assert.deepEqual(client.positions(), {
    user: { epoch: "9f3a2c1b", offset: 12 },
    broadcast: { epoch: "c0ffee00", offset: 0 },
  });
  const got = [];
  client.on("notification", (data) => got.push(data.title));
  client.on("system_broadcast", (data) => got.push(data.message));
  for (let offset = 13; offset <= 15; offset++) {
    socket.receive(note("9f3a2c1b", offset, { replayed: true }));
  }
  socket.receive(stored("system_broadcast", "broadcast", "c0ffee00", 1, { message: "b1" }, { replayed: true }));
  socket.receive(stored("system_broadcast", "broadcast", "c0ffee00", 2, { message: "b2" }, { replayed: true }));
  assert.deepEqual(got, ["n13", "n14", "n15", "b1", "b2"]);
  assert.deepEqual(client.positions(), {
    user: { epoch: "9f3a2c1b", offset: 15 },
    broadcast: { epoch: "c0ffee00", offset: 2 },
  });
  client.close();
});

test("a first connection's recovery frame sets positions without a recovered event", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { autoAck: false });
  const events = [];
  client.on("recovered", (info) => events.push(info));
  client.on("discontinuity", (info) => events.push(info));
  const socket = await connected(client, FakeSocket);
  socket.receive({
    type: "recovery",
    data: { streams: { user: { epoch: "e1", offset: 40, since: 40, recovered: true, replayed: 0 } } },
  });
  assert.deepEqual(events, []);
  assert.deepEqual(client.positions(), { user: { epoch: "e1", offset: 40 } });
  // An old message of that epoch arriving late is not shown.
  const got = [];
  client.on("notification", (data) => got.push(data.title));
  socket.receive(note("e1", 40));
  socket.receive(note("e1", 41));
  assert.deepEqual(got, ["n41"]);
  client.close();
});

test("replayed frames are emitted in order exactly once across a reconnect with an overlapping replay", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { backoffInitial: 1, backoffMax: 2, autoAck: false });
  const got = [];
  client.on("notification", (data) => got.push(data.title));
  const first = await connected(client, FakeSocket);
  first.receive({ type: "recovery", data: { streams: { user: { epoch: "e1", offset: 0, since: 0, recovered: true, replayed: 0 } } } });
  for (let offset = 1; offset <= 3; offset++) {
    first.receive(note("e1", offset));
  }
  first.drop();
  await waitFor(() => FakeSocket.instances.length === 2, "a reconnection");
  const second = FakeSocket.instances[1];
  assert.ok(second.url.endsWith("?since=user:e1:3"));
  second.open();
  // The server replays from further back than asked (2..5), then 5 comes live again.
  second.receive({ type: "recovery", data: { streams: { user: { epoch: "e1", offset: 5, since: 1, recovered: true, replayed: 4 } } } });
  for (let offset = 2; offset <= 5; offset++) {
    second.receive(note("e1", offset, { replayed: true }));
  }
  second.receive(note("e1", 5));
  second.receive(note("e1", 6));
  assert.deepEqual(got, ["n1", "n2", "n3", "n4", "n5", "n6"]);
  assert.deepEqual(client.positions(), { user: { epoch: "e1", offset: 6 } });
  client.close();
});

test("a later recovery frame with recovered:false emits discontinuity and moves to the new epoch", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { autoAck: false });
  const lost = [];
  client.on("discontinuity", (info) => lost.push(info));
  const got = [];
  client.on("notification", (data) => got.push(data.title));
  const socket = await connected(client, FakeSocket);
  socket.receive(note("e1", 7));
  // Redis restarted empty: the server says so in the middle of the connection.
  socket.receive({ type: "recovery", data: { streams: { user: { epoch: "e2", offset: 0, since: 0, recovered: false, replayed: 0 } } } });
  assert.deepEqual(lost, [{ stream: "user", epoch: "e2", offset: 0 }]);
  assert.deepEqual(client.positions(), { user: { epoch: "e2", offset: 0 } });
  socket.receive(note("e2", 1));
  socket.receive(note("e2", 1));
  assert.deepEqual(got, ["n7", "n1"]);
  client.close();
});

test("re-joining a group sends since; group_joined's stream replays like a recovery entry", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { backoffInitial: 1, backoffMax: 2, autoAck: false });
  const events = [];
  client.on("recovered", (info) => events.push(info));
  const got = [];
  client.on("group_message", (data) => got.push(data.message));
  const first = await connected(client, FakeSocket);
  const joined = client.joinGroup("ward");
  const [join] = first.sentOfType("join_group");
  assert.deepEqual(join.data, { group: "ward" }, "no since without a position");
  first.receive({
    type: "group_joined",
    id: join.id,
    data: { group: "ward", members_online: [1], stream: { epoch: "g1", offset: 4, since: 4, recovered: true, replayed: 0 } },
  });
  await joined;
  assert.deepEqual(events, [], "nothing was recovered on a first join");
  first.receive(stored("group_message", "group:ward", "g1", 5, { group: "ward", message: "m5" }));
  first.receive(stored("group_message", "group:ward", "g1", 6, { group: "ward", message: "m6" }));
  first.drop();
  await waitFor(() => FakeSocket.instances.length === 2, "a reconnection");
  const second = FakeSocket.instances[1];
  assert.ok(!second.url.includes("group"));
  second.open();
  const [rejoin] = second.sentOfType("join_group");
  assert.deepEqual(rejoin.data, { group: "ward", since: { epoch: "g1", offset: 6 } });
  second.receive({
    type: "group_joined",
    id: rejoin.id,
    data: { group: "ward", members_online: [1], stream: { epoch: "g1", offset: 8, since: 5, recovered: true, replayed: 3 } },
  });
  for (let offset = 6; offset <= 8; offset++) {
    second.receive(stored("group_message", "group:ward", "g1", offset, { group: "ward", message: "m" + offset }, { replayed: true }));
  }
  assert.deepEqual(events, [{ stream: "group:ward", replayed: 3, epoch: "g1" }]);
  assert.deepEqual(got, ["m5", "m6", "m7", "m8"]);
  // joinGroup() itself sends since when a position is known (leave, then join again).
  client.leaveGroup("ward").catch(() => {});
  client.joinGroup("ward").catch(() => {});
  assert.deepEqual(second.sentOfType("join_group").pop().data, { group: "ward", since: { epoch: "g1", offset: 8 } });
  client.close();
});

test("autoAck acknowledges user messages, at most one ack frame per ackInterval with the highest offset", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { ackInterval: 50 });
  const socket = await connected(client, FakeSocket);
  const acks = () => socket.sentOfType("ack").map((frame) => frame.data);
  for (let offset = 1; offset <= 4; offset++) {
    socket.receive(note("e1", offset));
  }
  socket.receive(stored("system_broadcast", "broadcast", "b1", 9, { message: "not acked" }));
  socket.receive({ type: "notification", data: { title: "ephemeral, not acked", message: "m" } });
  assert.deepEqual(acks(), [], "the first ack waits an interval after the socket opened");
  await waitFor(() => acks().length === 1, "an ack");
  assert.deepEqual(acks(), [{ stream: "user", epoch: "e1", offset: 4 }]);
  assert.equal(socket.sentOfType("ack")[0].id, undefined, "fire and forget");
  await sleep(70);
  // A message well after the last ack is acknowledged at once.
  socket.receive(note("e1", 5));
  assert.deepEqual(acks().pop(), { stream: "user", epoch: "e1", offset: 5 });
  socket.receive(note("e1", 6));
  socket.receive(note("e1", 7));
  assert.equal(acks().length, 2, "coalesced until the interval passed");
  await waitFor(() => acks().length === 3, "a coalesced ack");
  assert.deepEqual(acks().pop(), { stream: "user", epoch: "e1", offset: 7 });
  await sleep(70);
  assert.equal(acks().length, 3);
  client.close();
});

test("autoAck never acknowledges an offset of an epoch the stream left", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { ackInterval: 30, backoffInitial: 1, backoffMax: 2 });
  const first = await connected(client, FakeSocket);
  const acksOf = (socket) => socket.sentOfType("ack").map((frame) => frame.data);
  first.receive(note("e1", 1));
  await waitFor(() => acksOf(first).length === 1, "an ack");
  // Within the interval: held back; then the epoch changes before it is sent.
  first.receive(note("e1", 2));
  first.receive({ type: "recovery", data: { streams: { user: { epoch: "e2", offset: 0, since: 0, recovered: false, replayed: 0 } } } });
  await sleep(60);
  assert.deepEqual(acksOf(first), [{ stream: "user", epoch: "e1", offset: 1 }]);
  // Across a reconnect: the held ack waits for the recovery frame, which says e2 is gone.
  first.receive(note("e2", 1));
  first.receive(note("e2", 2));
  first.drop();
  await waitFor(() => FakeSocket.instances.length === 2, "a reconnection");
  const second = FakeSocket.instances[1];
  second.open();
  second.receive({ type: "recovery", data: { streams: { user: { epoch: "e3", offset: 0, since: 0, recovered: false, replayed: 0 } } } });
  await sleep(60);
  assert.deepEqual(acksOf(second), []);
  assert.equal(client.ack(2, "e2"), false, "an offset of an old epoch");
  second.receive(note("e3", 1));
  await waitFor(() => acksOf(second).length === 1, "an ack in the new epoch");
  assert.deepEqual(acksOf(second), [{ stream: "user", epoch: "e3", offset: 1 }]);
  client.close();
});

test("with autoAck:false the page acknowledges with ack(offset) or ack()", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { autoAck: false, ackInterval: 30 });
  assert.equal(client.ack(), false, "nothing to acknowledge yet");
  const socket = await connected(client, FakeSocket);
  const acks = () => socket.sentOfType("ack").map((frame) => frame.data);
  let last = null;
  client.on("message", (frame) => {
    last = frame;
  });
  for (let offset = 1; offset <= 3; offset++) {
    socket.receive(note("e1", offset));
  }
  await sleep(50);
  assert.deepEqual(acks(), [], "nothing acknowledged by itself");
  assert.equal(client.ack(9), false, "an offset not processed yet");
  assert.equal(client.ack(0), false);
  assert.equal(client.ack(2, last.epoch), true);
  assert.deepEqual(acks(), [{ stream: "user", epoch: "e1", offset: 2 }]);
  assert.equal(client.ack(), true);
  await waitFor(() => acks().length === 2, "the latest acknowledged");
  assert.deepEqual(acks()[1], { stream: "user", epoch: "e1", offset: 3 });
  client.ack(1);
  await sleep(50);
  assert.equal(acks().length, 2, "no ack below one already sent");
  client.close();
});

test("positions in storage survive a reload: a new client with the same storage recovers", async () => {
  const storage = fakeStorage();
  const FakeSocket = fakeSocketClass();
  const before = newClient(FakeSocket, { storage, autoAck: false });
  const socket = await connected(before, FakeSocket);
  socket.receive(note("e1", 1));
  socket.receive(note("e1", 2));
  socket.receive(stored("system_broadcast", "broadcast", "b1", 4, { message: "x" }));
  assert.deepEqual(JSON.parse(storage.getItem("django_presence:/ws/user/")), {
    user: { epoch: "e1", offset: 2 },
    broadcast: { epoch: "b1", offset: 4 },
  });
  before.close(); // The page unloads.

  const after = newClient(FakeSocket, { storage, autoAck: false });
  assert.deepEqual(after.positions(), { user: { epoch: "e1", offset: 2 }, broadcast: { epoch: "b1", offset: 4 } });
  const events = [];
  after.on("recovered", (info) => events.push(info));
  after.on("notification", (data) => events.push(data.title));
  const reloaded = await connected(after, FakeSocket);
  assert.equal(reloaded.url, "ws://127.0.0.1:1/ws/user/?since=user:e1:2&since=broadcast:b1:4");
  reloaded.receive({
    type: "recovery",
    data: {
      streams: {
        user: { epoch: "e1", offset: 3, since: 2, recovered: true, replayed: 1 },
        broadcast: { epoch: "b1", offset: 4, since: 4, recovered: true, replayed: 0 },
      },
    },
  });
  reloaded.receive(note("e1", 3, { replayed: true }));
  assert.deepEqual(events, [
    { stream: "user", replayed: 1, epoch: "e1" },
    { stream: "broadcast", replayed: 0, epoch: "b1" },
    "n3",
  ]);
  // Another endpoint keeps its own positions under its own key.
  const room = newClient(FakeSocket, { storage, url: "ws://127.0.0.1:1/ws/consultation/7/" });
  assert.deepEqual(room.positions(), {});
  // resetPositions() forgets them, in storage too (a logout).
  after.resetPositions();
  assert.deepEqual(after.positions(), {});
  assert.equal(storage.getItem("django_presence:/ws/user/"), null);
  after.close();
});

test('storage "session" uses sessionStorage, and memory where there is none', async () => {
  const FakeSocket = fakeSocketClass();
  const session = fakeStorage();
  globalThis.sessionStorage = session;
  try {
    const client = newClient(FakeSocket, { storage: "session", autoAck: false });
    const socket = await connected(client, FakeSocket);
    socket.receive(note("e1", 5));
    assert.equal(session.getItem("django_presence:/ws/user/"), '{"user":{"epoch":"e1","offset":5}}');
    client.close();
  } finally {
    delete globalThis.sessionStorage;
  }
  const memory = newClient(FakeSocket, { storage: "session", autoAck: false, backoffInitial: 1, backoffMax: 2 });
  const socket = await connected(memory, FakeSocket);
  socket.receive(note("e1", 5));
  socket.drop();
  await waitFor(() => FakeSocket.instances.length === 3, "a reconnection");
  assert.ok(FakeSocket.instances[2].url.endsWith("?since=user:e1:5"));
  memory.close();
  assert.throws(() => newClient(FakeSocket, { storage: "sesion" }), TypeError);
});

test("a broken storage never breaks the client: it falls back to memory", async () => {
  const failing = {
    getItem() {
      throw new Error("SecurityError: storage disabled");
    },
    setItem() {
      throw new Error("QuotaExceededError");
    },
    removeItem() {
      throw new Error("SecurityError: storage disabled");
    },
  };
  const garbage = fakeStorage({ "django_presence:/ws/user/": "{not json" });
  const mixed = fakeStorage({
    "django_presence:/ws/user/": JSON.stringify({
      user: { epoch: 5, offset: "x" },
      broadcast: { epoch: "b1", offset: 2 },
      "group:ward": null,
    }),
  });
  const full = fakeStorage();
  full.setItem = () => {
    throw new Error("QuotaExceededError");
  };
  for (const [storage, expected] of [
    [failing, {}],
    [garbage, {}],
    [fakeStorage({ "django_presence:/ws/user/": "[1, 2]" }), {}],
    [mixed, { broadcast: { epoch: "b1", offset: 2 } }],
    [full, {}],
  ]) {
    const FakeSocket = fakeSocketClass();
    const client = newClient(FakeSocket, { storage, autoAck: false, backoffInitial: 1, backoffMax: 2 });
    assert.deepEqual(client.positions(), expected);
    const got = [];
    client.on("notification", (data) => got.push(data.title));
    const socket = await connected(client, FakeSocket);
    socket.receive(note("e1", 1));
    socket.receive(note("e1", 1));
    assert.deepEqual(got, ["n1"]);
    socket.drop();
    await waitFor(() => FakeSocket.instances.length === 2, "a reconnection");
    assert.ok(FakeSocket.instances[1].url.includes("since=user:e1:1"));
    client.resetPositions();
    assert.deepEqual(client.positions(), {});
    client.close();
  }
});

// -- availability ------------------------------------------------------------------------

test("without a page trackActivity is off and connecting adds no listener", async () => {
  assert.equal(typeof window, "undefined");
  assert.equal(DjangoPresence.DEFAULTS.trackActivity, false);
  assert.equal(DjangoPresence.DEFAULTS.device, null);
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { trackActivity: true }); // No page: nothing to listen to.
  const socket = await connected(client, FakeSocket);
  assert.deepEqual(socket.sentOfType("activity"), []);
  client.close();
});

test("the device option travels as ?device= on every connection, after since or recover", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { device: "mobile/ios app", backoffInitial: 1, backoffMax: 2 });
  const first = await connected(client, FakeSocket);
  assert.equal(first.url, "ws://127.0.0.1:1/ws/user/?recover=1&device=mobile%2Fios%20app");
  first.receive(note("e1", 3));
  first.drop();
  await waitFor(() => FakeSocket.instances.length === 2, "a reconnection");
  assert.equal(FakeSocket.instances[1].url, "ws://127.0.0.1:1/ws/user/?since=user:e1:3&device=mobile%2Fios%20app");
  client.close();
  // No device (the default, or ""): no parameter.
  const Other = fakeSocketClass();
  for (const device of [null, ""]) {
    const plain = newClient(Other, { device });
    const socket = await connected(plain, Other);
    assert.equal(socket.url, "ws://127.0.0.1:1/ws/user/?recover=1");
    plain.close();
  }
});

test("setPresence() sends set_presence with the fields given; null clears, left out keeps", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket);
  const socket = await connected(client, FakeSocket);
  const replied = client.setPresence({ device: "desktop", activity: "in_call", data: { room: 12 } });
  client.setPresence({ activity: null, device: undefined });
  const frames = socket.sentOfType("set_presence");
  assert.deepEqual(frames.map((f) => f.data), [
    { device: "desktop", activity: "in_call", data: { room: 12 } },
    { activity: null },
  ]);
  assert.ok(frames[0].id, "a request: the server's ack resolves it");
  socket.receive({ type: "ack", id: frames[0].id, data: { request: "set_presence" } });
  assert.equal((await replied).type, "ack");
  socket.receive({ type: "ack", id: frames[1].id, data: {} });
  assert.throws(() => client.setPresence("in_call"), TypeError);
  assert.throws(() => client.setPresence({ data: [1, 2] }), TypeError);
  assert.throws(() => client.setPresence({ device: 3 }), TypeError);
  assert.equal(socket.sentOfType("set_presence").length, 2, "nothing sent by a call that threw");
  client.close();
});

test("setPresence() survives reconnects: every new connection sends the fields set so far", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { backoffInitial: 1, backoffMax: 2 });
  const first = await connected(client, FakeSocket);
  assert.deepEqual(first.sentOfType("set_presence"), [], "nothing set, nothing sent");
  client.setPresence({ device: "web", activity: "waiting_room", data: { ward: 3 } }).catch(() => {});
  client.setPresence({ activity: "in_call", data: null }).catch(() => {});
  first.drop();
  await waitFor(() => FakeSocket.instances.length === 2, "a reconnection");
  const second = FakeSocket.instances[1];
  second.open();
  // One frame with every field as it stands, before the re-subscription.
  assert.deepEqual(second.sentOfType("set_presence").map((f) => f.data), [
    { device: "web", activity: "in_call", data: null },
  ]);
  assert.equal(second.sent[0].type, "set_presence");
  // Called while disconnected: remembered, not queued twice, answered by the opening frame.
  second.drop();
  const whileAway = client.setPresence({ activity: "viewing:/ward/3" });
  await waitFor(() => FakeSocket.instances.length === 3, "another reconnection");
  const third = FakeSocket.instances[2];
  third.open();
  const frames = third.sentOfType("set_presence");
  assert.deepEqual(frames.map((f) => f.data), [{ device: "web", activity: "viewing:/ward/3", data: null }]);
  third.receive({ type: "ack", id: frames[0].id, data: { request: "set_presence" } });
  assert.equal((await whileAway).type, "ack");
  client.close();
});

test("setPresence() refused by the server is not sent again after a reconnect", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket, { backoffInitial: 1, backoffMax: 2 });
  const first = await connected(client, FakeSocket);
  client.setPresence({ device: "web" });
  first.receive({ type: "ack", id: first.sentOfType("set_presence")[0].id, data: {} });
  const refused = client.setPresence({ data: { huge: "x".repeat(2000) } });
  const [, bad] = first.sentOfType("set_presence");
  first.receive({ type: "error", id: bad.id, data: { code: "too_large", message: "data over 1024 bytes" } });
  await assert.rejects(refused, (error) => error.code === "too_large");
  first.drop();
  await waitFor(() => FakeSocket.instances.length === 2, "a reconnection");
  const second = FakeSocket.instances[1];
  second.open();
  assert.deepEqual(second.sentOfType("set_presence").map((f) => f.data), [{ device: "web" }]);
  client.close();
});

test("close() rejects a setPresence() waiting for a connection", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket);
  const waiting = client.setPresence({ activity: "in_call" });
  client.close();
  await assert.rejects(waiting, (error) => error.code === "closed");
});

test("setStatus() sends set_status with expires_in in seconds; the status reply is an event too", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket);
  const socket = await connected(client, FakeSocket);
  const statuses = [];
  client.on("status", (data) => statuses.push(data));
  const busy = client.setStatus("busy", { text: "In surgery", expiresIn: 90 * 60 * 1000 });
  client.setStatus("invisible").catch(() => {});
  client.setStatus("busy", { expiresIn: 1500, text: null }).catch(() => {});
  const frames = socket.sentOfType("set_status");
  assert.deepEqual(frames.map((f) => f.data), [
    { status: "busy", text: "In surgery", expires_in: 5400 },
    { status: "invisible" },
    { status: "busy", expires_in: 2 }, // Whole seconds, rounded up.
  ]);
  const reply = { status: "busy", text: "In surgery", expires_in: 5400 };
  socket.receive({ type: "status", id: frames[0].id, data: reply });
  assert.deepEqual((await busy).data, reply);
  // The same frame reaches the user's other connections, without an id.
  socket.receive({ type: "status", data: { status: "available", text: "", expires_in: null } });
  assert.deepEqual(statuses.map((s) => s.status), ["busy", "available"]);
  assert.throws(() => client.setStatus(), TypeError);
  assert.throws(() => client.setStatus("busy", { expiresIn: 0 }), RangeError);
  assert.throws(() => client.setStatus("busy", { expiresIn: "1h" }), RangeError);
  assert.throws(() => client.setStatus("busy", { text: 5 }), TypeError);
  client.close();
});

test("status_changed carries state, devices, activities and statusText; the map follows them", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket);
  const socket = await connected(client, FakeSocket);
  const changes = [];
  const entries = [];
  client.on("status_changed", (data) => changes.push(data));
  client.on("presence", (entry) => entries.push([entry.state, entry.statusText]));
  const subscribed = client.subscribe([4, 5]);
  const [request] = socket.sentOfType("subscribe_presence");
  socket.receive({ type: "presence_state", id: request.id, data: { users: { 4: true, 5: false } } });
  await subscribed;
  socket.receive({
    type: "status_changed",
    data: {
      user_id: 4,
      is_online: true,
      last_seen: null,
      seq: 3,
      state: "busy",
      devices: ["mobile", "web"],
      activities: ["in_call"],
      status_text: "In surgery",
    },
  });
  assert.deepEqual(changes[0], {
    user_id: 4,
    is_online: true,
    last_seen: null,
    seq: 3,
    state: "busy",
    devices: ["mobile", "web"],
    activities: ["in_call"],
    status_text: "In surgery",
    statusText: "In surgery",
  });
  assert.deepEqual(client.getStatus(4), {
    user_id: 4,
    is_online: true,
    last_seen: null,
    state: "busy",
    devices: ["mobile", "web"],
    activities: ["in_call"],
    statusText: "In surgery",
  });
  // A change of state alone (busy -> away, still online) is a presence event too.
  const details = { devices: ["mobile", "web"], activities: ["in_call"], status_text: "In surgery" };
  socket.receive({ type: "status_changed", data: { user_id: 4, is_online: true, seq: 4, state: "away", ...details } });
  assert.equal(client.getStatus(4).state, "away");
  // Details the server does not share are empty.
  socket.receive({ type: "status_changed", data: { user_id: 4, is_online: true, seq: 5, state: "away" } });
  assert.deepEqual(client.getStatus(4).devices, []);
  assert.equal(client.getStatus(4).statusText, "");
  // A server without availability: the state follows is_online, the rest is empty.
  socket.receive({ type: "status_changed", data: { user_id: 5, is_online: true, seq: 2 } });
  assert.deepEqual(changes[3], {
    user_id: 5,
    is_online: true,
    seq: 2,
    state: "online",
    devices: [],
    activities: [],
    statusText: "",
  });
  assert.deepEqual(entries, [
    ["online", ""],
    ["offline", ""],
    ["busy", "In surgery"],
    ["away", "In surgery"],
    ["away", ""],
    ["online", ""],
  ]);
  // A frame with a seq not newer than the last applied changes nothing.
  socket.receive({ type: "status_changed", data: { user_id: 4, is_online: true, seq: 5, state: "online" } });
  assert.equal(client.getStatus(4).state, "away");
  client.close();
});

test("presence_state's states map fills in each user's state, devices, activities, statusText", async () => {
  const FakeSocket = fakeSocketClass();
  const client = newClient(FakeSocket);
  const socket = await connected(client, FakeSocket);
  const snapshots = [];
  client.on("presence_state", (data) => snapshots.push(data));
  const subscribed = client.subscribe([1, 2, 3]);
  const [request] = socket.sentOfType("subscribe_presence");
  socket.receive({
    type: "presence_state",
    id: request.id,
    data: {
      users: { 1: true, 2: true, 3: false },
      last_seen: { 3: "2026-12-06T07:00:00+00:00" },
      states: {
        1: { state: "away", devices: ["web"], activities: [], status_text: "Back at 3" },
        2: { state: "busy" },
      },
    },
  });
  const reply = await subscribed;
  assert.deepEqual(reply.data.states, snapshots[0].states, "the reply and the event agree");
  assert.deepEqual(snapshots[0].states, {
    1: { state: "away", devices: ["web"], activities: [], status_text: "Back at 3", statusText: "Back at 3" },
    2: { state: "busy", devices: [], activities: [], statusText: "" },
    3: { state: "offline", devices: [], activities: [], statusText: "" },
  });
  assert.equal(client.getStatus(1).state, "away");
  assert.equal(client.getStatus(1).statusText, "Back at 3");
  assert.deepEqual(client.getStatus(1).devices, ["web"]);
  assert.equal(client.getStatus(2).state, "busy");
  assert.equal(client.getStatus(3).state, "offline");
  assert.equal(client.getStatus(3).last_seen, "2026-12-06T07:00:00+00:00");
  client.close();
});
