/*!
 * django-user-presence browser client (presence.js). No build step, no dependencies.
 *
 * Classic script:   <script src="{% static 'django_presence/presence.js' %}"></script>
 *                   then window.DjangoPresence.PresenceClient
 * ES module:        import "/static/django_presence/presence.js";
 *                   const { PresenceClient } = globalThis.DjangoPresence;
 * CommonJS (Node):  const { PresenceClient } = require("django-user-presence"); // npm
 *
 * The file is a plain script that works in all three: it assigns globalThis.DjangoPresence
 * (and module.exports where CommonJS exists) and has no `export` statement, so a classic
 * <script> tag can load it too.
 *
 *   const client = new DjangoPresence.PresenceClient({
 *     url: "/ws/user/",
 *     getToken: () => fetch("/token/").then((r) => r.json()).then((d) => d.token),
 *     storage: "session", // stream positions survive a reload (default: memory only)
 *   });
 *   client.on("presence", ({ user_id, is_online, last_seen }) => { ... });
 *   client.on("direct_message", (data) => { ... }); // once each, replayed after a reconnect
 *   client.on("discontinuity", ({ stream }) => { ... }); // messages lost: refetch
 *   client.connect();
 *   client.subscribe([2, 3]);
 *   await client.sendDirectMessage(2, "hello");
 *
 * Availability: the client sends "activity" on the page's input (trackActivity, at most
 * once per activityInterval), so that the server can tell online from away; the presence
 * event carries state (offline/online/away/busy), devices, activities and statusText.
 *
 *   new DjangoPresence.PresenceClient({ url: "/ws/user/", device: "web" }); // ?device=web
 *   client.setPresence({ activity: "in_call" }); // this connection's, kept across reconnects
 *   client.setStatus("busy", { text: "In surgery", expiresIn: 60 * 60 * 1000 }); // ms
 *
 * Stored messages carry stream, offset and epoch: the client keeps its position in each
 * stream, asks for what it missed on every reconnect (since=<stream>:<epoch>:<offset> in
 * the URL, since in join_group), drops duplicates, and acknowledges shown "user"
 * messages (autoAck, ackInterval; or client.ack()). client.resetPositions() on logout.
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
  /** Whether there is a page (a browser): activity tracking is on by default there. */
  var HAS_PAGE = typeof window !== "undefined" && typeof document !== "undefined";

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
    // Recoverable delivery: acknowledge each shown message of the "user" stream, at most
    // one ack frame per ackInterval ms (autoAck: false leaves it to client.ack()).
    autoAck: true,
    ackInterval: 1000,
    // Where stream positions are kept: null (memory: survive reconnects, not a reload),
    // "session" (sessionStorage), or any {getItem, setItem, removeItem}.
    storage: null,
    // Availability: tell the server that the user is active (input, focus, the page shown
    // again) with an activity frame, at most one per activityInterval ms.
    trackActivity: HAS_PAGE,
    activityInterval: 30000,
    // The kind of device the client runs on ("web", "mobile", ...), sent as ?device=.
    device: null,
  };

  /** The page events that count as activity (listened to on window, captured, passive). */
  var ACTIVITY_EVENTS = ["pointerdown", "keydown", "wheel", "scroll", "focus"];
  /** The fields of set_presence. */
  var PRESENCE_FIELDS = ["device", "activity", "data"];

  /** Streams whose position travels in the URL (groups send theirs with join_group). */
  var URL_STREAMS = ["user", "broadcast"];
  var STORAGE_PREFIX = "django_presence:";

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

  /** The path of a WebSocket url (absolute or relative), without query or fragment. */
  function urlPath(url) {
    var path = String(url).replace(/^[a-z][a-z0-9+.-]*:\/\/[^\/?#]*/i, "").replace(/[?#].*$/, "");
    return path.charAt(0) === "/" ? path : "/" + path;
  }

  /** The url with these query parameters ([name, value] pairs) added to its query. */
  function withQuery(url, params) {
    if (!params.length) {
      return url;
    }
    var hash = url.indexOf("#");
    var fragment = hash >= 0 ? url.slice(hash) : "";
    var base = hash >= 0 ? url.slice(0, hash) : url;
    var query = params
      .map(function (pair) {
        return encodeURIComponent(pair[0]) + "=" + pair[1];
      })
      .join("&");
    var separator = base.indexOf("?") < 0 ? "?" : /[?&]$/.test(base) ? "" : "&";
    return base + separator + query + fragment;
  }

  function isOffset(value) {
    return typeof value === "number" && isFinite(value) && value >= 0 && Math.floor(value) === value;
  }

  function validPosition(value) {
    return !!value && typeof value === "object" && typeof value.epoch === "string" && value.epoch !== "" && isOffset(value.offset);
  }

  /** The storage object of the `storage` option, or null (memory only). */
  function resolveStorage(option) {
    if (option === null || option === undefined || option === false) {
      return null;
    }
    if (option === "session") {
      try {
        // Reading window.sessionStorage itself throws where storage is disabled.
        return typeof sessionStorage !== "undefined" && sessionStorage ? sessionStorage : null;
      } catch (e) {
        return null;
      }
    }
    if (
      typeof option === "object" &&
      typeof option.getItem === "function" &&
      typeof option.setItem === "function" &&
      typeof option.removeItem === "function"
    ) {
      return option;
    }
    throw new TypeError(
      'options.storage must be null, "session" or an object with getItem/setItem/removeItem, got ' + String(option)
    );
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

  function isPlainObject(value) {
    return !!value && typeof value === "object" && !Array.isArray(value);
  }

  /** Whether the page is hidden (a background tab, a minimised window). */
  function pageHidden() {
    return typeof document !== "undefined" && !!document && document.visibilityState === "hidden";
  }

  /** An object that has addEventListener and removeEventListener, or null. */
  function eventTarget(candidate) {
    return candidate &&
      typeof candidate.addEventListener === "function" &&
      typeof candidate.removeEventListener === "function"
      ? candidate
      : null;
  }

  function stringList(value) {
    return Array.isArray(value)
      ? value.filter(function (item) {
          return typeof item === "string";
        })
      : [];
  }

  /**
   * What the client shows of a user's presence, from a status_changed frame or an entry
   * of presence_state's states: {state, devices, activities, statusText}. Devices,
   * activities and the status text are empty when the server does not share them; the
   * state follows is_online when the server sends none.
   */
  function presenceDetails(data, online) {
    return {
      state: typeof data.state === "string" && data.state !== "" ? data.state : online ? "online" : "offline",
      devices: stringList(data.devices),
      activities: stringList(data.activities),
      statusText: typeof data.status_text === "string" ? data.status_text : "",
    };
  }

  function withDetails(data, online) {
    var copy = {};
    var name;
    for (name in data) {
      copy[name] = data[name];
    }
    var details = presenceDetails(data, online);
    for (name in details) {
      copy[name] = details[name];
    }
    return copy;
  }

  /** Whether a user is online in a presence_state frame's users map. */
  function snapshotOnline(value) {
    return typeof value === "object" && value !== null ? !!value.is_online : !!value;
  }

  /** presence_state's data with a states entry ({state, devices, ...}) for every user. */
  function snapshotWithDetails(data) {
    var users = isPlainObject(data.users) ? data.users : {};
    var states = isPlainObject(data.states) ? data.states : {};
    var copy = {};
    var name;
    for (name in data) {
      copy[name] = data[name];
    }
    copy.states = {};
    Object.keys(states).forEach(function (k) {
      if (isPlainObject(states[k])) {
        copy.states[k] = withDetails(states[k], snapshotOnline(users[k]));
      }
    });
    Object.keys(users).forEach(function (k) {
      if (!copy.states[k]) {
        copy.states[k] = presenceDetails({}, snapshotOnline(users[k]));
      }
    });
    return copy;
  }

  /** Whether a request failed because the server refused what it carried. */
  function refused(error) {
    return !!(error && error.frame) && error.code !== "server_error" && error.code !== "rate_limited";
  }

  function sameList(a, b) {
    return a.length === b.length && a.join("\u0000") === b.join("\u0000");
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
   *   message (every frame), presence {user_id, is_online, last_seen, state, devices,
   *   activities, statusText} (local map changed), presence_state, status_changed (both
   *   with state, devices, activities, statusText), status (the user's own manual status
   *   was set), notification, direct_message, system_broadcast,
   *   group_message, group_joined, group_left, error (error frames without a request id),
   *   recovery, recovered {stream, replayed, epoch} (missed messages of a stream are being
   *   replayed after a reconnect or group re-join), discontinuity {stream, epoch, offset}
   *   (messages of the stream were lost: refetch what the page shows from it),
   *   and any other frame type by its name.
   *
   * Stored messages (frames with stream, offset, epoch) are emitted once: a replayed copy
   * of a frame already processed is dropped. positions() / resetPositions() read and
   * forget where the client stands in each stream; ack() acknowledges "user" messages.
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
    // Recoverable delivery: stream name -> {epoch, offset} of the last message processed.
    this._storage = resolveStorage(this.options.storage);
    this._storageKey = STORAGE_PREFIX + urlPath(this.options.url);
    this._positions = this._loadPositions();
    this._ackPending = null; // {epoch, offset} of the "user" stream, to acknowledge
    this._acked = null; // {epoch, offset} last acknowledged
    this._ackSentAt = 0;
    this._ackTimer = null;
    // Availability: the page listeners (while connected), when the last activity frame
    // (or connection: connecting counts as activity) went, and this connection's
    // set_presence fields, sent again by every new connection.
    this._activityListeners = null;
    this._activitySentAt = 0;
    this._presenceData = null;
    this._presenceWaiters = [];
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
    this._listenActivity();
    if (this.state === "closed" && this._reconnectTimer === null) {
      this._open();
    }
    return this;
  };

  /** Close the connection for good: no reconnection, pending requests are rejected. */
  PresenceClient.prototype.close = function (code, reason) {
    // What was shown is acknowledged before the socket goes (a page leaving, a logout).
    if (this._ackTimer !== null) {
      clearTimeout(this._ackTimer);
      this._ackTimer = null;
      this._flushAck();
    }
    this._ackPending = null;
    this._stopped = true;
    this._unlistenActivity();
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
    this._presenceWaiters.forEach(function (w) {
      w.reject(closedError);
    });
    this._presenceWaiters = [];
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
        var socket = new Ctor(self._socketUrl(), protocols);
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

  /**
   * The url to open: options.url with a since=<stream>:<epoch>:<offset> per known stream,
   * or recover=1 when none is known (so that a first connection, too, learns from the
   * recovery frame where each stream stands), and device=<kind> with the device option.
   */
  PresenceClient.prototype._socketUrl = function () {
    var self = this;
    var params = [];
    URL_STREAMS.forEach(function (stream) {
      var position = self._positions.get(stream);
      if (position) {
        params.push([
          "since",
          [stream, position.epoch, String(position.offset)].map(encodeURIComponent).join(":"),
        ]);
      }
    });
    if (!params.length) {
      params.push(["recover", "1"]);
    }
    var device = this.options.device;
    if (typeof device === "string" && device !== "") {
      params.push(["device", encodeURIComponent(device)]);
    }
    return withQuery(resolveUrl(this.options.url), params);
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
    this._activitySentAt = this._openedAt; // The server counts connecting as activity.
    this._startHeartbeat();
    // Everything the page asked for survives a reconnect: the server forgot it all.
    var self = this;
    var presenceWaiters = this._presenceWaiters;
    this._presenceWaiters = [];
    if (this._presenceData) {
      var remembered = this._presenceData;
      var resent = this.request("set_presence", this._copyPresence());
      resent.catch(function (error) {
        // Refused (a value the server does not take): not sent again by later connections.
        if (refused(error) && self._presenceData === remembered) {
          self._presenceData = null;
        }
      });
      settle(resent, presenceWaiters);
    }
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
      var joined = self.request("join_group", self._joinData(group));
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
    // An ack waiting from the last connection goes one ackInterval from now, after the
    // recovery frame said whether its epoch is still the stream's.
    this._ackSentAt = Date.now();
    if (this._ackPending) {
      this._scheduleAck();
    }
    this.emit("open", { attempt: this.attempt });
  };

  PresenceClient.prototype._onClose = function (code, reason) {
    var wasOpen = this.state === "open";
    clearTimeout(this._ackTimer); // Rescheduled by the next connection's opening.
    this._ackTimer = null;
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
    var stored = typeof frame.stream === "string" && typeof frame.epoch === "string" && isOffset(frame.offset);
    if (stored) {
      var position = this._positions.get(frame.stream);
      if (position && position.epoch === frame.epoch && frame.offset <= position.offset) {
        return; // A duplicate: processed on this or an earlier connection.
      }
      this._setPosition(frame.stream, frame.epoch, frame.offset);
    }
    if (frame.type === "status_changed") {
      data = frame.data = withDetails(data, !!data.is_online);
    } else if (frame.type === "presence_state") {
      data = frame.data = snapshotWithDetails(data);
    }
    switch (frame.type) {
      case "presence_state":
        this._applySnapshot(data);
        break;
      case "status_changed":
        this._onStatusChanged(data);
        break;
      case "group_joined":
        this._onGroupJoined(data);
        if (data.group != null && data.stream && typeof data.stream === "object") {
          this._onStreamRecovery("group:" + data.group, data.stream);
        }
        break;
      case "recovery":
        this._onRecovery(data);
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
    if (stored && frame.stream === "user" && this.options.autoAck !== false) {
      this._wantAck(frame.epoch, frame.offset);
    }
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
    var states = isPlainObject(data.states) ? data.states : {};
    var self = this;
    Object.keys(users).forEach(function (k) {
      var value = users[k];
      var online = snapshotOnline(value);
      var seen = typeof value === "object" && value !== null ? value.last_seen : lastSeen[k];
      var seq = typeof value === "object" && value !== null ? value.seq : seqs[k];
      if (seq != null) {
        var known = self._seq.get(k);
        if (known != null && seq < known) {
          return; // Older than an update already applied.
        }
        self._seq.set(k, seq);
      }
      var details = isPlainObject(states[k]) ? presenceDetails(states[k], online) : presenceDetails({}, online);
      self._set(k, online, seen === undefined ? null : seen, details);
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
    var online = !!data.is_online;
    this._set(k, online, data.last_seen === undefined ? null : data.last_seen, presenceDetails(data, online));
  };

  PresenceClient.prototype._set = function (k, online, lastSeen, details) {
    var previous = this.presence.get(k);
    var userId = this._ids.has(k) ? this._ids.get(k) : k;
    var entry = {
      user_id: userId,
      is_online: online,
      last_seen: lastSeen != null ? lastSeen : previous && !online ? previous.last_seen : lastSeen,
      state: details.state,
      devices: details.devices,
      activities: details.activities,
      statusText: details.statusText,
    };
    this.presence.set(k, entry);
    if (
      !previous ||
      previous.is_online !== entry.is_online ||
      previous.last_seen !== entry.last_seen ||
      previous.state !== entry.state ||
      previous.statusText !== entry.statusText ||
      !sameList(previous.devices, entry.devices) ||
      !sameList(previous.activities, entry.activities)
    ) {
      this.emit("presence", entry);
    }
  };

  // -- availability: activity, this connection's presence, the manual status ----------

  /**
   * Set this connection's device, activity and data (set_presence): a field left out
   * keeps its value, null clears it. The fields are remembered and sent again by every
   * new connection, so they survive reconnects. Resolves with the server's reply; while
   * disconnected, with the reply to the next connection's opening set_presence.
   */
  PresenceClient.prototype.setPresence = function (presence) {
    if (!isPlainObject(presence)) {
      throw new TypeError("setPresence() expects an object {device, activity, data}, got " + typeof presence);
    }
    var update = {};
    PRESENCE_FIELDS.forEach(function (name) {
      var value = presence[name];
      if (value === undefined) {
        return;
      }
      var valid = value === null || (name === "data" ? isPlainObject(value) : typeof value === "string");
      if (!valid) {
        throw new TypeError(
          "setPresence(): " + name + " must be " + (name === "data" ? "an object" : "a string") + " or null"
        );
      }
      update[name] = value;
    });
    var previous = this._presenceData;
    var merged = this._copyPresence() || {};
    Object.keys(update).forEach(function (name) {
      merged[name] = update[name];
    });
    this._presenceData = merged;
    var self = this;
    if (this.state !== "open") {
      // Sent by the next connection's opening, with every field set so far.
      return new Promise(function (resolve, reject) {
        self._presenceWaiters.push({ resolve: resolve, reject: reject });
      });
    }
    return this.request("set_presence", update).catch(function (error) {
      // Refused by the server: what it holds (and what to send again) is what was before.
      if (refused(error) && self._presenceData === merged) {
        self._presenceData = previous;
      }
      throw error;
    });
  };

  PresenceClient.prototype._copyPresence = function () {
    var data = this._presenceData;
    if (!data) {
      return null;
    }
    var copy = {};
    Object.keys(data).forEach(function (name) {
      copy[name] = data[name];
    });
    return copy;
  };

  /**
   * Set the user's manual status (set_status): "available", "busy" or "invisible", with
   * an optional text and an expiry in ms (sent as expires_in, whole seconds). For the
   * user, on every connection; the server keeps it. Resolves with the status reply.
   */
  PresenceClient.prototype.setStatus = function (status, options) {
    if (typeof status !== "string" || status === "") {
      throw new TypeError("setStatus() expects a status string, got " + typeof status);
    }
    var data = { status: status };
    var text = options ? options.text : undefined;
    if (text !== undefined && text !== null) {
      if (typeof text !== "string") {
        throw new TypeError("setStatus(): text must be a string, got " + typeof text);
      }
      data.text = text;
    }
    var expiresIn = options ? options.expiresIn : undefined;
    if (expiresIn !== undefined && expiresIn !== null) {
      if (typeof expiresIn !== "number" || !isFinite(expiresIn) || expiresIn <= 0) {
        throw new RangeError("setStatus(): expiresIn must be a positive number of ms, got " + String(expiresIn));
      }
      data.expires_in = Math.ceil(expiresIn / 1000);
    }
    return this.request("set_status", data);
  };

  /** Listen to the page's input, focus and visibility (trackActivity), until close(). */
  PresenceClient.prototype._listenActivity = function () {
    if (this._activityListeners || !this.options.trackActivity) {
      return;
    }
    var win = typeof window !== "undefined" ? eventTarget(window) : null;
    var doc = typeof document !== "undefined" ? eventTarget(document) : null;
    var target = win || doc;
    if (!target) {
      return; // Not a page (Node, a worker): nothing to listen to.
    }
    var self = this;
    var listeners = {
      target: target,
      document: doc,
      options: { capture: true, passive: true },
      onActivity: function () {
        self._onActivity();
      },
      onVisibility: function () {
        if (!pageHidden()) {
          self._onActivity(); // The page is shown again.
        }
      },
    };
    ACTIVITY_EVENTS.forEach(function (name) {
      target.addEventListener(name, listeners.onActivity, listeners.options);
    });
    if (doc) {
      doc.addEventListener("visibilitychange", listeners.onVisibility);
    }
    this._activityListeners = listeners;
  };

  PresenceClient.prototype._unlistenActivity = function () {
    var listeners = this._activityListeners;
    if (!listeners) {
      return;
    }
    this._activityListeners = null;
    ACTIVITY_EVENTS.forEach(function (name) {
      listeners.target.removeEventListener(name, listeners.onActivity, listeners.options);
    });
    if (listeners.document) {
      listeners.document.removeEventListener("visibilitychange", listeners.onVisibility);
    }
  };

  /**
   * The user did something: an activity frame, unless one went (or the connection
   * opened) less than activityInterval ms ago, the page is hidden or the client is not
   * connected. The first activity after a longer quiet period goes at once.
   */
  PresenceClient.prototype._onActivity = function () {
    if (this.state !== "open" || !this.socket || pageHidden()) {
      return;
    }
    var now = Date.now();
    var interval = this.options.activityInterval > 0 ? this.options.activityInterval : 0;
    if (now >= this._activitySentAt && now - this._activitySentAt < interval) {
      return;
    }
    this._activitySentAt = now;
    this._sendFrame({ type: "activity", data: {} });
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
    return this.request("join_group", this._joinData(group)).catch(function (error) {
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

  // -- recoverable delivery: stream positions, recovery, acks -------------------------

  /** join_group's data: with since when the client has a position in the group's stream. */
  PresenceClient.prototype._joinData = function (group) {
    var position = this._positions.get("group:" + group);
    var data = { group: group };
    if (position) {
      data.since = { epoch: position.epoch, offset: position.offset };
    }
    return data;
  };

  /** A copy of the positions: {stream: {epoch, offset}} (offset: last message processed). */
  PresenceClient.prototype.positions = function () {
    var copy = {};
    this._positions.forEach(function (position, stream) {
      copy[stream] = { epoch: position.epoch, offset: position.offset };
    });
    return copy;
  };

  /** Forget every position (in memory and in storage), e.g. on logout. */
  PresenceClient.prototype.resetPositions = function () {
    this._positions = new Map();
    this._ackPending = null;
    this._acked = null;
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    if (this._storage) {
      try {
        this._storage.removeItem(this._storageKey);
      } catch (e) {
        // Storage failing never breaks the client.
      }
    }
  };

  PresenceClient.prototype._loadPositions = function () {
    var positions = new Map();
    if (!this._storage) {
      return positions;
    }
    try {
      var saved = JSON.parse(this._storage.getItem(this._storageKey));
      if (saved && typeof saved === "object" && !Array.isArray(saved)) {
        Object.keys(saved).forEach(function (stream) {
          if (validPosition(saved[stream])) {
            positions.set(stream, { epoch: saved[stream].epoch, offset: saved[stream].offset });
          }
        });
      }
    } catch (e) {
      // Disabled storage or garbage in the key: start from nothing, in memory.
    }
    return positions;
  };

  PresenceClient.prototype._setPosition = function (stream, epoch, offset) {
    this._positions.set(stream, { epoch: epoch, offset: offset });
    if (this._storage) {
      try {
        this._storage.setItem(this._storageKey, JSON.stringify(this.positions()));
      } catch (e) {
        // Quota exceeded, storage disabled: the positions in memory still work.
      }
    }
  };

  PresenceClient.prototype._onRecovery = function (data) {
    var streams = data.streams && typeof data.streams === "object" ? data.streams : {};
    var self = this;
    Object.keys(streams).forEach(function (stream) {
      if (streams[stream] && typeof streams[stream] === "object") {
        self._onStreamRecovery(stream, streams[stream]);
      }
    });
  };

  /**
   * One stream's entry of a recovery frame (or a group_joined's stream): where the
   * replayed frames that follow start, and whether anything was lost.
   */
  PresenceClient.prototype._onStreamRecovery = function (stream, info) {
    if (typeof info.epoch !== "string" || info.epoch === "") {
      return;
    }
    var position = this._positions.get(stream);
    var replayed = isOffset(info.replayed) ? info.replayed : 0;
    // A new epoch, or a gap the server could not fill (trimmed history): the replayed
    // frames that follow start after `since`.
    if (!position || position.epoch !== info.epoch || info.recovered === false) {
      var since = isOffset(info.since)
        ? info.since
        : isOffset(info.offset)
        ? Math.max(0, info.offset - replayed)
        : 0;
      this._setPosition(stream, info.epoch, since);
    }
    if (info.recovered === false) {
      this.emit("discontinuity", {
        stream: stream,
        epoch: info.epoch,
        offset: isOffset(info.offset) ? info.offset : null,
      });
    } else if (info.recovered === true && position) {
      this.emit("recovered", { stream: stream, replayed: replayed, epoch: info.epoch });
    }
  };

  /**
   * Acknowledge the "user" stream's messages up to `offset` (default: the last one
   * processed), in `epoch` (default: the current one). Returns false when there is
   * nothing to acknowledge: no position, an old epoch, an offset not yet processed.
   * At most one ack frame goes per ackInterval ms, carrying the highest offset.
   */
  PresenceClient.prototype.ack = function (offset, epoch) {
    var position = this._positions.get("user");
    if (!position) {
      return false;
    }
    if (epoch != null && epoch !== position.epoch) {
      return false; // An old epoch's offset says nothing about the current one.
    }
    var target = offset == null ? position.offset : offset;
    if (!isOffset(target) || target < 1 || target > position.offset) {
      return false;
    }
    this._wantAck(position.epoch, target);
    return true;
  };

  PresenceClient.prototype._wantAck = function (epoch, offset) {
    var pending = this._ackPending;
    if (pending && pending.epoch === epoch && pending.offset >= offset) {
      return;
    }
    this._ackPending = { epoch: epoch, offset: offset };
    this._scheduleAck();
  };

  PresenceClient.prototype._scheduleAck = function () {
    if (this._ackTimer !== null || this.state !== "open") {
      return; // Already due, or sent by the next connection's opening.
    }
    var self = this;
    var interval = this.options.ackInterval > 0 ? this.options.ackInterval : 0;
    var wait = this._ackSentAt + interval - Date.now();
    if (wait <= 0) {
      this._flushAck();
      return;
    }
    this._ackTimer = setTimeout(function () {
      self._ackTimer = null;
      self._flushAck();
    }, wait);
  };

  PresenceClient.prototype._flushAck = function () {
    var pending = this._ackPending;
    if (!pending) {
      return;
    }
    var position = this._positions.get("user");
    var acked = this._acked;
    if (
      !position ||
      position.epoch !== pending.epoch || // Never acknowledge an old epoch's offset.
      (acked && acked.epoch === pending.epoch && pending.offset <= acked.offset)
    ) {
      this._ackPending = null;
      return;
    }
    if (this.state !== "open" || !this.socket) {
      return; // Kept for the next connection.
    }
    this._ackPending = null;
    this._acked = pending;
    this._ackSentAt = Date.now();
    this._sendFrame({ type: "ack", data: { stream: "user", epoch: pending.epoch, offset: pending.offset } });
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
