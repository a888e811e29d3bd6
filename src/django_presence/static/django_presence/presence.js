/*!
 * django-user-presence browser client (presence.js). No build step, no dependencies.
 *
 * Classic script:   <script src="{% static 'django_presence/presence.js' %}"></script>
 *                   then window.DjangoPresence.PresenceClient
 * ES module:        import "/static/django_presence/presence.js";
 *                   const { PresenceClient } = globalThis.DjangoPresence;
 * CommonJS (Node):  const { PresenceClient } = require(".../presence.js");
 *
 * The file is a plain script that works in all three: it assigns globalThis.DjangoPresence
 * (and module.exports where CommonJS exists) and has no `export` statement, so a classic
 * <script> tag can load it too.
 *
 *   const client = new DjangoPresence.PresenceClient({
 *     url: "/ws/user/",
 *     getToken: () => fetch("/token/").then((r) => r.json()).then((d) => d.token),
 *   });
 *   client.on("presence", ({ user_id, is_online, last_seen }) => { ... });
 *   client.on("direct_message", (data) => { ... });
 *   client.connect();
 *   client.subscribe([2, 3]);
 *   await client.sendDirectMessage(2, "hello");
 *
 * The wire protocol is documented in docs/protocol.md.
 */
(function (root, factory) {
  "use strict";
  var api = factory();
  if (typeof module === "object" && module && module.exports) {
    module.exports = api;
  }
  if (root) {
    root.DjangoPresence = api;
  }
})(typeof globalThis !== "undefined" ? globalThis : typeof self !== "undefined" ? self : this, function () {
  "use strict";

  /** The subprotocol that carries the token (django_presence.consumers.TOKEN_SUBPROTOCOL). */
  var TOKEN_SUBPROTOCOL = "access_token";
  /** Close code the server sends when the connection's token expired. */
  var CLOSE_TOKEN_EXPIRED = 4001;
  // The account was deactivated or deleted: a new handshake would be refused.
  var CLOSE_REVOKED = 4011;

  var DEFAULTS = {
    url: "/ws/user/",
    token: null,
    getToken: null,
    // Reconnection: exponential backoff with full jitter (AWS architecture blog, 2015).
    backoffInitial: 500,
    backoffMax: 30000,
    backoffFactor: 2,
    // A connection that stayed open this long resets the backoff.
    stableAfter: 5000,
    // Heartbeat: ping this often; reconnect when nothing arrived for pingTimeout after it.
    pingInterval: 25000,
    pingTimeout: 10000,
    requestTimeout: 10000,
    autoReconnect: true,
    WebSocket: null,
    random: Math.random,
    // Called with the exception of an event listener that threw (default: reportError).
    onListenerError: null,
  };

  /**
   * Delay in milliseconds before reconnection attempt number `attempt` (1 for the first).
   * Full jitter: uniformly random in [0, min(max, initial * factor^(attempt-1))).
   */
  function backoffDelay(attempt, options, random) {
    var initial = options && options.backoffInitial != null ? options.backoffInitial : DEFAULTS.backoffInitial;
    var max = options && options.backoffMax != null ? options.backoffMax : DEFAULTS.backoffMax;
    var factor = options && options.backoffFactor != null ? options.backoffFactor : DEFAULTS.backoffFactor;
    var rand = random || Math.random;
    var n = Math.max(1, attempt | 0);
    var ceiling = Math.min(max, initial * Math.pow(factor, n - 1));
    return Math.floor(rand() * ceiling);
  }

  /** Resolve a relative WebSocket path against the page's location (ws: or wss:). */
  function resolveUrl(url) {
    if (/^wss?:\/\//i.test(url)) {
      return url;
    }
    if (typeof location === "undefined") {
      throw new Error("A relative url needs a page location; pass ws://host/path instead, got " + url);
    }
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var path = url.charAt(0) === "/" ? url : "/" + url;
    return scheme + "//" + location.host + path;
  }

  function reportListenerError(error) {
    if (typeof reportError === "function") {
      reportError(error); // The browser's console and window.onerror, without throwing.
    } else if (typeof console !== "undefined") {
      console.error(error);
    }
  }

  function settle(promise, waiters) {
    promise.then(
      function (value) {
        waiters.forEach(function (w) {
          w.resolve(value);
        });
      },
      function (error) {
        waiters.forEach(function (w) {
          w.reject(error);
        });
      }
    );
  }

  function key(userId) {
    return String(userId);
  }

  /** An error carrying the server's (or the client's) error code. */
  function PresenceError(code, message, frame) {
    var error = new Error(message || code);
    error.name = "PresenceError";
    error.code = code;
    error.frame = frame || null;
    return error;
  }

  /**
   * A connection to the ws/user/ endpoint that stays up: see the file header.
   *
   * Events (client.on(name, fn), returns a function that removes the listener):
   *   open, close {code, reason, reconnecting, delay}, reconnecting {attempt, delay},
   *   message (every frame), presence {user_id, is_online, last_seen} (local map changed),
   *   presence_state, status_changed, notification, direct_message, system_broadcast,
   *   group_message, group_joined, group_left, error (error frames without a request id),
   *   and any other frame type by its name.
   */
  function PresenceClient(options) {
    this.options = {};
    var name;
    for (name in DEFAULTS) {
      this.options[name] = DEFAULTS[name];
    }
    for (name in options || {}) {
      this.options[name] = options[name];
    }
    this.socket = null;
    this.state = "closed"; // closed | connecting | open
    this.attempt = 0;
    this.presence = new Map(); // user id (string) -> {user_id, is_online, last_seen}
    this.subscriptions = new Set(); // user ids (string) to watch, kept across reconnects
    this.groups = new Map(); // group name -> {members: Map|null, count}
    this._ids = new Map(); // user id (string) -> the id as the server sent or was given
    this._seq = new Map(); // user id (string) -> last applied seq
    this._pendingSnapshot = new Map(); // user id (string) -> buffered status_changed frames
    this._listeners = new Map();
    this._requests = new Map(); // id -> {resolve, reject, timer}
    this._outbox = []; // frames written while not connected
    this._nextId = 1;
    this._stopped = true;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._openedAt = 0;
    this._generation = 0;
    // Promises of subscribe() / joinGroup() calls made while not connected: they are
    // answered by the (re-)subscription that every new connection sends.
    this._subscribeWaiters = [];
    this._joinWaiters = new Map(); // group -> [{resolve, reject}]
  }

  PresenceClient.prototype.on = function (event, fn) {
    if (typeof fn !== "function") {
      throw new TypeError("on(" + event + ", fn) expects a function, got " + typeof fn);
    }
    if (!this._listeners.has(event)) {
      this._listeners.set(event, new Set());
    }
    this._listeners.get(event).add(fn);
    var self = this;
    return function () {
      self.off(event, fn);
    };
  };

  PresenceClient.prototype.off = function (event, fn) {
    var set = this._listeners.get(event);
    if (set) {
      set.delete(fn);
    }
  };

  PresenceClient.prototype.emit = function (event, payload) {
    var set = this._listeners.get(event);
    if (!set) {
      return;
    }
    var onError = this.options.onListenerError || reportListenerError;
    Array.from(set).forEach(function (fn) {
      try {
        fn(payload);
      } catch (e) {
        // A faulty listener must not break the client or the other listeners.
        onError(e);
      }
    });
  };

  /** Open the connection (and keep it open until close()). */
  PresenceClient.prototype.connect = function () {
    this._stopped = false;
    if (this.state === "closed" && this._reconnectTimer === null) {
      this._open();
    }
    return this;
  };

  /** Close the connection for good: no reconnection, pending requests are rejected. */
  PresenceClient.prototype.close = function (code, reason) {
    this._stopped = true;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._stopHeartbeat();
    this._rejectAll("closed", "The client was closed");
    this._outbox = [];
    var closedError = PresenceError("closed", "The client was closed");
    this._subscribeWaiters.forEach(function (w) {
      w.reject(closedError);
    });
    this._subscribeWaiters = [];
    this._joinWaiters.forEach(function (list) {
      list.forEach(function (w) {
        w.reject(closedError);
      });
    });
    this._joinWaiters = new Map();
    if (this.socket) {
      var socket = this.socket;
      this._detach();
      try {
        socket.close(code || 1000, reason || "");
      } catch (e) {
        // Already closing.
      }
      this.state = "closed";
      this.emit("close", { code: code || 1000, reason: reason || "", reconnecting: false, delay: null });
    }
    this.state = "closed";
  };

  PresenceClient.prototype._token = function () {
    var options = this.options;
    if (typeof options.getToken === "function") {
      return Promise.resolve().then(function () {
        return options.getToken();
      });
    }
    return Promise.resolve(options.token);
  };

  PresenceClient.prototype._open = function () {
    var self = this;
    var generation = ++this._generation;
    this.state = "connecting";
    this._token().then(
      function (token) {
        if (self._stopped || generation !== self._generation) {
          return;
        }
        var Ctor = self.options.WebSocket || (typeof WebSocket !== "undefined" ? WebSocket : null);
        if (!Ctor) {
          throw new Error("No WebSocket implementation: pass options.WebSocket");
        }
        var protocols = token ? [TOKEN_SUBPROTOCOL, String(token)] : [];
        var socket = new Ctor(resolveUrl(self.options.url), protocols);
        self.socket = socket;
        socket.onopen = function () {
          if (self.socket === socket) {
            self._onOpen();
          }
        };
        socket.onmessage = function (event) {
          if (self.socket === socket) {
            self._onMessage(event.data);
          }
        };
        socket.onclose = function (event) {
          if (self.socket === socket) {
            self._onClose(event.code, event.reason);
          }
        };
        socket.onerror = function () {
          // onclose follows; nothing else to do.
        };
      }
    ).catch(function (error) {
      if (generation !== self._generation) {
        return;
      }
      // No token (a logged-out page) or no socket: retry like a failed connection.
      self.emit("connect_error", error);
      self.socket = null;
      self._onClose(1006, String((error && error.message) || error));
    });
  };

  PresenceClient.prototype._detach = function () {
    if (this.socket) {
      this.socket.onopen = this.socket.onmessage = this.socket.onclose = this.socket.onerror = null;
    }
    this.socket = null;
  };

  PresenceClient.prototype._onOpen = function () {
    this.state = "open";
    this._openedAt = Date.now();
    this._startHeartbeat();
    // Everything the page asked for survives a reconnect: the server forgot it all.
    var self = this;
    var waiters = this._subscribeWaiters;
    this._subscribeWaiters = [];
    if (this.subscriptions.size) {
      settle(this._requestSubscribe(Array.from(this.subscriptions)), waiters);
    } else {
      settle(Promise.resolve(null), waiters);
    }
    var joinWaiters = this._joinWaiters;
    this._joinWaiters = new Map();
    this.groups.forEach(function (_, group) {
      var joined = self.request("join_group", { group: group });
      joined.catch(function () {
        // The server refused the group (it may have become forbidden): forget it.
        self.groups.delete(group);
      });
      settle(joined, joinWaiters.get(group) || []);
    });
    var outbox = this._outbox;
    this._outbox = [];
    outbox.forEach(function (text) {
      self.socket.send(text);
    });
    this.emit("open", { attempt: this.attempt });
  };

  PresenceClient.prototype._onClose = function (code, reason) {
    var wasOpen = this.state === "open";
    this._detach();
    this.state = "closed";
    this._stopHeartbeat();
    if (wasOpen && Date.now() - this._openedAt >= this.options.stableAfter) {
      this.attempt = 0;
    }
    // What the map says is no longer known to be current; the re-subscription refreshes it.
    this._pendingSnapshot.clear();
    var reconnecting =
      !this._stopped && this.options.autoReconnect !== false && code !== CLOSE_REVOKED;
    var delay = null;
    if (reconnecting) {
      this.attempt += 1;
      delay =
        code === CLOSE_TOKEN_EXPIRED && this.attempt === 1
          ? 0 // A fresh token fixes it: no reason to wait.
          : backoffDelay(this.attempt, this.options, this.options.random);
    }
    this.emit("close", { code: code, reason: reason || "", reconnecting: reconnecting, delay: delay });
    if (reconnecting) {
      this._scheduleReconnect(delay);
    } else {
      this._rejectAll("closed", "The connection closed");
    }
  };

  PresenceClient.prototype._scheduleReconnect = function (delay) {
    var self = this;
    this.emit("reconnecting", { attempt: this.attempt, delay: delay });
    this._reconnectTimer = setTimeout(function () {
      self._reconnectTimer = null;
      if (!self._stopped) {
        self._open();
      }
    }, delay);
  };

  PresenceClient.prototype._startHeartbeat = function () {
    var self = this;
    this._stopHeartbeat();
    if (!(this.options.pingInterval > 0)) {
      return;
    }
    this._pingTimer = setInterval(function () {
      if (self.state !== "open") {
        return;
      }
      self._sendFrame({ type: "ping", data: {} });
      if (self._pongTimer === null) {
        self._pongTimer = setTimeout(function () {
          self._pongTimer = null;
          // Half-open socket: nothing came back. Drop it and reconnect.
          self._dropSocket(4000, "heartbeat timeout");
        }, self.options.pingTimeout);
      }
    }, this.options.pingInterval);
  };

  PresenceClient.prototype._stopHeartbeat = function () {
    clearInterval(this._pingTimer);
    clearTimeout(this._pongTimer);
    this._pingTimer = null;
    this._pongTimer = null;
  };

  /** Abandon the current socket (without waiting for its close handshake) and reconnect. */
  PresenceClient.prototype._dropSocket = function (code, reason) {
    var socket = this.socket;
    if (!socket) {
      return;
    }
    this._detach();
    try {
      socket.close(code, reason);
    } catch (e) {
      // Already closing.
    }
    this._onClose(code, reason);
  };

  PresenceClient.prototype._sendFrame = function (frame) {
    var text = JSON.stringify(frame);
    if (this.state === "open" && this.socket) {
      this.socket.send(text);
    } else {
      this._outbox.push(text);
    }
  };

  /** Send a frame without waiting for a reply (queued while disconnected). */
  PresenceClient.prototype.send = function (type, data) {
    this._sendFrame({ type: type, data: data || {} });
  };

  /**
   * Send a frame with an id; resolve with the reply carrying the same id, reject with a
   * PresenceError (code from the server's error frame, or "timeout" / "closed").
   */
  PresenceClient.prototype.request = function (type, data, options) {
    var self = this;
    var id = "r" + this._nextId++;
    var timeout = options && options.timeout != null ? options.timeout : this.options.requestTimeout;
    return new Promise(function (resolve, reject) {
      var timer = setTimeout(function () {
        self._requests.delete(id);
        reject(PresenceError("timeout", "No reply to " + type + " within " + timeout + " ms"));
      }, timeout);
      self._requests.set(id, { resolve: resolve, reject: reject, timer: timer, type: type });
      self._sendFrame({ type: type, id: id, data: data || {} });
    });
  };

  PresenceClient.prototype._rejectAll = function (code, message) {
    var requests = this._requests;
    this._requests = new Map();
    requests.forEach(function (pending) {
      clearTimeout(pending.timer);
      pending.reject(PresenceError(code, message));
    });
  };

  PresenceClient.prototype._onMessage = function (text) {
    // Anything from the server proves the connection is alive.
    clearTimeout(this._pongTimer);
    this._pongTimer = null;
    var frame;
    try {
      frame = JSON.parse(text);
    } catch (e) {
      return;
    }
    if (!frame || typeof frame !== "object" || typeof frame.type !== "string") {
      return;
    }
    var data = frame.data && typeof frame.data === "object" ? frame.data : {};
    switch (frame.type) {
      case "presence_state":
        this._applySnapshot(data);
        break;
      case "status_changed":
        this._onStatusChanged(data);
        break;
      case "group_joined":
        this._onGroupJoined(data);
        break;
      default:
        this._onGroupUpdate(frame.type, data);
    }
    this.emit("message", frame);
    var pending = frame.id != null ? this._requests.get(String(frame.id)) : null;
    if (pending) {
      this._requests.delete(String(frame.id));
      clearTimeout(pending.timer);
      if (frame.type === "error") {
        pending.reject(PresenceError(data.code || "error", data.message, frame));
      } else {
        pending.resolve(frame);
      }
      if (frame.type === "error") {
        return;
      }
    }
    this.emit(frame.type, data);
  };

  // -- presence ------------------------------------------------------------------------

  /** Watch these users' status; resolves with the presence_state reply. */
  PresenceClient.prototype.subscribe = function (userIds) {
    var self = this;
    var ids = this._validIds(userIds, "subscribe");
    ids.forEach(function (id) {
      self._ids.set(key(id), id);
      self.subscriptions.add(key(id));
    });
    if (this.state !== "open") {
      // The connection's opening subscription includes these users.
      return new Promise(function (resolve, reject) {
        self._subscribeWaiters.push({ resolve: resolve, reject: reject });
      });
    }
    return this._requestSubscribe(ids.map(key));
  };

  PresenceClient.prototype._requestSubscribe = function (keys) {
    var self = this;
    keys.forEach(function (k) {
      // Updates that arrive before the snapshot are held until it comes.
      if (!self._pendingSnapshot.has(k)) {
        self._pendingSnapshot.set(k, []);
      }
    });
    var ids = keys.map(function (k) {
      return self._ids.has(k) ? self._ids.get(k) : k;
    });
    return this.request("subscribe_presence", { user_ids: ids }).catch(function (error) {
      // No snapshot is coming: release what was held so that nothing is lost.
      keys.forEach(function (k) {
        self._flushPending(k);
      });
      throw error;
    });
  };

  /** Stop watching these users. */
  PresenceClient.prototype.unsubscribe = function (userIds) {
    var self = this;
    var ids = this._validIds(userIds, "unsubscribe");
    ids.forEach(function (id) {
      var k = key(id);
      self.subscriptions.delete(k);
      self._pendingSnapshot.delete(k);
      self.presence.delete(k);
      self._seq.delete(k);
    });
    return this.request("unsubscribe_presence", { user_ids: ids });
  };

  PresenceClient.prototype._validIds = function (userIds, what) {
    if (!Array.isArray(userIds)) {
      throw new TypeError(what + "() expects an array of user ids, got " + typeof userIds);
    }
    return userIds.filter(function (id) {
      return id !== null && id !== undefined && id !== "";
    });
  };

  /** Whether the user is online as far as the client knows (undefined: not known yet). */
  PresenceClient.prototype.isOnline = function (userId) {
    var entry = this.presence.get(key(userId));
    return entry ? entry.is_online : undefined;
  };

  /** The user's known status {user_id, is_online, last_seen}, or undefined. */
  PresenceClient.prototype.getStatus = function (userId) {
    return this.presence.get(key(userId));
  };

  PresenceClient.prototype._applySnapshot = function (data) {
    var users = data.users && typeof data.users === "object" ? data.users : {};
    var seqs = data.seqs && typeof data.seqs === "object" ? data.seqs : {};
    var lastSeen = data.last_seen && typeof data.last_seen === "object" ? data.last_seen : {};
    var self = this;
    Object.keys(users).forEach(function (k) {
      var value = users[k];
      var online = typeof value === "object" && value !== null ? !!value.is_online : !!value;
      var seen = typeof value === "object" && value !== null ? value.last_seen : lastSeen[k];
      var seq = typeof value === "object" && value !== null ? value.seq : seqs[k];
      if (seq != null) {
        var known = self._seq.get(k);
        if (known != null && seq < known) {
          return; // Older than an update already applied.
        }
        self._seq.set(k, seq);
      }
      self._set(k, online, seen === undefined ? null : seen);
    });
    Object.keys(users).forEach(function (k) {
      self._flushPending(k);
    });
  };

  PresenceClient.prototype._flushPending = function (k) {
    var buffered = this._pendingSnapshot.get(k);
    this._pendingSnapshot.delete(k);
    var self = this;
    (buffered || []).forEach(function (data) {
      self._applyStatus(data);
    });
  };

  PresenceClient.prototype._onStatusChanged = function (data) {
    if (data.user_id === undefined || data.user_id === null) {
      return;
    }
    var k = key(data.user_id);
    var buffer = this._pendingSnapshot.get(k);
    if (buffer) {
      buffer.push(data);
      return;
    }
    this._applyStatus(data);
  };

  PresenceClient.prototype._applyStatus = function (data) {
    var k = key(data.user_id);
    if (!this._ids.has(k)) {
      this._ids.set(k, data.user_id);
    }
    if (data.seq != null) {
      var known = this._seq.get(k);
      if (known != null && data.seq <= known) {
        return; // Out of date: a newer state is already applied.
      }
      this._seq.set(k, data.seq);
    }
    this._set(k, !!data.is_online, data.last_seen === undefined ? null : data.last_seen);
  };

  PresenceClient.prototype._set = function (k, online, lastSeen) {
    var previous = this.presence.get(k);
    var userId = this._ids.has(k) ? this._ids.get(k) : k;
    var entry = {
      user_id: userId,
      is_online: online,
      last_seen: lastSeen != null ? lastSeen : previous && !online ? previous.last_seen : lastSeen,
    };
    this.presence.set(k, entry);
    if (!previous || previous.is_online !== entry.is_online || previous.last_seen !== entry.last_seen) {
      this.emit("presence", entry);
    }
  };

  // -- messaging and groups ------------------------------------------------------------

  /** Send a direct message; resolves with the server's reply. */
  PresenceClient.prototype.sendDirectMessage = function (targetUserId, message) {
    return this.request("direct_message", { target_user_id: targetUserId, message: message });
  };

  /** Send a system broadcast (staff only: others get a "forbidden" error). */
  PresenceClient.prototype.broadcast = function (message) {
    return this.request("broadcast", { message: message });
  };

  /** Join a group (re-joined after every reconnect); resolves with group_joined. */
  PresenceClient.prototype.joinGroup = function (group) {
    if (!this.groups.has(group)) {
      this.groups.set(group, { members: null, count: null });
    }
    var self = this;
    if (this.state !== "open") {
      // Joined by the next connection's opening, like every group.
      return new Promise(function (resolve, reject) {
        if (!self._joinWaiters.has(group)) {
          self._joinWaiters.set(group, []);
        }
        self._joinWaiters.get(group).push({ resolve: resolve, reject: reject });
      });
    }
    return this.request("join_group", { group: group }).catch(function (error) {
      self.groups.delete(group);
      throw error;
    });
  };

  /** Leave a group. */
  PresenceClient.prototype.leaveGroup = function (group) {
    this.groups.delete(group);
    return this.request("leave_group", { group: group });
  };

  /** Send a message to a group this client joined. */
  PresenceClient.prototype.sendGroupMessage = function (group, message) {
    return this.request("group_message", { group: group, message: message });
  };

  /** The online members of a joined group as the client knows them (array), or null. */
  PresenceClient.prototype.groupMembers = function (group) {
    var info = this.groups.get(group);
    return info && info.members ? Array.from(info.members.values()) : null;
  };

  PresenceClient.prototype._onGroupJoined = function (data) {
    var info = this.groups.get(data.group);
    if (!info) {
      return;
    }
    var members = data.members_online;
    if (data.count_only) {
      info.members = null;
    } else if (Array.isArray(members)) {
      info.members = new Map();
      members.forEach(function (id) {
        info.members.set(key(id), id);
      });
      info.count = members.length;
    } else if (members && typeof members === "object") {
      info.members = new Map();
      Object.keys(members).forEach(function (k) {
        if (members[k]) {
          info.members.set(k, k);
        }
      });
      info.count = info.members.size;
    }
    if (typeof data.count === "number") {
      info.count = data.count;
    }
    this.emit("group_members", { group: data.group, members: this.groupMembers(data.group), count: info.count });
  };

  // Member updates of a joined group: group_presence {group, user_id, joined, count}, or a
  // whole new list group_presence {group, count, members_online | count_only}.
  PresenceClient.prototype._onGroupUpdate = function (type, data) {
    if (data.group == null || !this.groups.has(data.group)) {
      return;
    }
    if (type === "group_presence" && data.user_id == null) {
      // A fresh member list (or a count only, for a large group) replaces what was known.
      this._onGroupJoined(data);
      return;
    }
    var joined;
    if (type === "group_member_joined") {
      joined = true;
    } else if (type === "group_member_left") {
      joined = false;
    } else if (type === "group_presence" || type === "group_presence_diff") {
      joined = data.joined !== undefined ? !!data.joined : !!data.is_online;
    } else {
      return;
    }
    var info = this.groups.get(data.group);
    if (typeof data.count === "number") {
      info.count = data.count;
    }
    if (data.user_id != null) {
      if (!info.members) {
        info.members = new Map();
      }
      if (joined) {
        info.members.set(key(data.user_id), data.user_id);
      } else {
        info.members.delete(key(data.user_id));
      }
      if (typeof data.count !== "number") {
        info.count = info.members.size;
      }
    }
    this.emit("group_members", { group: data.group, members: this.groupMembers(data.group), count: info.count });
  };

  return {
    PresenceClient: PresenceClient,
    backoffDelay: backoffDelay,
    resolveUrl: resolveUrl,
    TOKEN_SUBPROTOCOL: TOKEN_SUBPROTOCOL,
    CLOSE_TOKEN_EXPIRED: CLOSE_TOKEN_EXPIRED,
    DEFAULTS: DEFAULTS,
    version: "0.1.0",
  };
});
