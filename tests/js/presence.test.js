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
  assert.equal(first.url, "ws://127.0.0.1:1/ws/user/");
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
  assert.deepEqual(client.getStatus(1), { user_id: 1, is_online: true, last_seen: null });
  assert.equal(client.getStatus(2).last_seen, "2026-11-28T08:00:05+00:00");
  assert.equal(client.getStatus(2).is_online, false);
  assert.equal(client.getStatus(3).last_seen, null);
  client.close();
});
