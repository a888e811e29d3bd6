/* The example pages' script: one presence.js client per page, and each page's wiring. */
(function () {
  "use strict";
  var body = document.body;
  if (!body.dataset.userId) {
    return;
  }
  var me = Number(body.dataset.userId);
  var names = JSON.parse(document.getElementById("people-names").textContent || "{}");

  function nameOf(id) {
    return names[String(id)] || "user " + id;
  }
  function time(iso) {
    var date = iso ? new Date(iso) : new Date();
    return isNaN(date) ? "" : date.toLocaleTimeString([], { hour12: false });
  }
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }
  function log(list, text, kind) {
    if (!list) return;
    var item = el("li", kind || "");
    item.appendChild(el("span", "when", time()));
    item.appendChild(document.createTextNode(text));
    list.insertBefore(item, list.firstChild);
  }
  function toast(text) {
    var box = el("div", "toast", text);
    document.getElementById("toasts").appendChild(box);
    setTimeout(function () { box.remove(); }, 6000);
  }
  function fetchToken() {
    return fetch(body.dataset.tokenUrl, { credentials: "same-origin", cache: "no-store" }).then(function (response) {
      if (!response.ok) throw new Error("No token: HTTP " + response.status + " (logged out?)");
      return response.json();
    }).then(function (data) { return data.token; });
  }

  // -- the ws/user/ connection, on every page -------------------------------------------
  // A demo reconnects within 8 s at most; the library's default cap is 30 s. The device
  // goes on the URL, so watchers never see this connection without it; activity (input,
  // focus, a visible page) is reported at most every activityInterval ms, which the
  // server derives from its IDLE_AFTER (users/context_processors.py).
  var client = new DjangoPresence.PresenceClient({
    url: "/ws/user/",
    getToken: fetchToken,
    backoffMax: 8000,
    device: "web",
    activityInterval: Number(body.dataset.activityInterval) || 30000,
  });
  window.presenceClient = client;
  var indicator = document.getElementById("connection");
  client.on("open", function () {
    indicator.dataset.state = "open";
    indicator.textContent = "connected";
  });
  client.on("close", function (info) {
    indicator.dataset.state = "closed";
    indicator.textContent = info.reconnecting ? "reconnecting in " + (info.delay / 1000).toFixed(1) + " s" : "disconnected";
  });
  client.on("reconnecting", function () { indicator.dataset.state = "connecting"; });
  // Messages sent while the page was away are replayed on reconnect, once and in order.
  // When some are lost for good (the server lost its history), say so instead of
  // showing a list with a silent gap.
  var notice = document.getElementById("delivery-notice");
  client.on("discontinuity", function () {
    if (!notice) return;
    notice.textContent =
      "Some messages were lost while this page was disconnected: the lists below may be incomplete.";
    notice.hidden = false;
  });

  var activity =
    document.getElementById("activity") ||
    document.getElementById("notification-log") ||
    document.getElementById("dm-log");
  client.on("notification", function (data) {
    toast(data.title + ": " + data.message);
    log(activity, "Notification · " + data.title + ": " + data.message, "notification");
  });
  client.on("system_broadcast", function (data) {
    toast("System: " + data.message);
    log(activity, "System broadcast: " + data.message, "broadcast");
  });
  client.on("direct_message", function (data) {
    if (body.dataset.page !== "messages") toast(nameOf(data.from_user_id) + ": " + data.message);
    log(document.getElementById("dm-log") || activity, "From " + nameOf(data.from_user_id) + ": " + data.message, "dm");
  });

  // A user's state: offline, online, away (no input for IDLE_AFTER) or busy.
  function stateOf(entry) {
    return entry.state || (entry.is_online ? "online" : "offline");
  }
  // The devices, activities and status text: empty unless the policy shows them to us.
  function detailsOf(entry) {
    var parts = [];
    if (entry.devices && entry.devices.length) parts.push(entry.devices.join(", "));
    if (entry.activities && entry.activities.length) parts.push(entry.activities.join(", "));
    if (entry.statusText) parts.push("\u201c" + entry.statusText + "\u201d");
    return parts.join(" · ");
  }
  function showPresence(node, entry) {
    if (!node) return;
    node.dataset.online = entry.is_online ? "true" : "false";
    node.dataset.state = stateOf(entry);
    var status = node.querySelector(".status");
    if (status) status.textContent = stateOf(entry);
    var details = node.querySelector(".details");
    if (details) details.textContent = detailsOf(entry);
    var seen = node.querySelector(".last-seen");
    if (seen) {
      if (entry.is_online) seen.textContent = "now";
      else if (entry.last_seen) { seen.dataset.lastSeen = entry.last_seen; seen.textContent = time(entry.last_seen); }
    }
  }

  //: What the waiting room says of the doctor (consultations/views.py has the same table).
  var DOCTOR_LABELS = {
    in_call: "Doctor in a consultation",
    online: "Doctor available",
    away: "Doctor away",
    busy: "Doctor busy",
    offline: "Doctor offline",
  };

  // What others see of this user (their own row's state: away after IDLE_AFTER, offline
  // while invisible), beside the status they chose.
  function showOwnState(state) {
    var node = document.getElementById("my-state");
    if (!node) return;
    node.dataset.state = state;
    node.textContent = " · others see you " + state;
  }

  // The dashboard's "Your availability" card: the manual status, set with setStatus()
  // and shown from the status frames (this tab's reply, or a change made elsewhere).
  function availability() {
    var card = document.getElementById("availability");
    if (!card) return;
    var mine = document.getElementById("my-status");
    var details = document.getElementById("my-status-details");
    var form = document.getElementById("status-form");
    var expiry = null;
    var labels = { available: "available", busy: "busy", invisible: "invisible (others see you offline)" };
    function show(status, text, expiresAt) {
      clearTimeout(expiry);
      mine.dataset.status = status;
      mine.textContent = labels[status] || status;
      var parts = [];
      if (text) parts.push("\u201c" + text + "\u201d");
      if (expiresAt) parts.push("until " + time(expiresAt.toISOString()));
      details.textContent = parts.length ? " · " + parts.join(" · ") : "";
      if (expiresAt) {
        // The server turns the status back to available then; so does this line.
        expiry = setTimeout(function () { show("available", "", null); }, Math.max(0, expiresAt - Date.now()));
      }
    }
    client.on("status", function (data) {
      var expiresAt = data.expires_in ? new Date(Date.now() + data.expires_in * 1000) : null;
      show(data.status, data.text, expiresAt);
      if (data.state) showOwnState(data.status === "invisible" ? "offline" : data.state);
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var minutes = Number(document.getElementById("status-minutes").value);
      var options = { text: document.getElementById("status-text").value };
      if (minutes > 0) options.expiresIn = minutes * 60000;
      client.setStatus(document.getElementById("status-choice").value, options).catch(function (error) {
        toast("Status not set (" + error.code + "): " + error.message);
      });
    });
    document.getElementById("status-choice").value = card.dataset.status;
    var initialExpiry = card.dataset.expiresAt ? new Date(card.dataset.expiresAt) : null;
    show(card.dataset.status, card.dataset.text, initialExpiry);
  }

  var pages = {
    dashboard: function () {
      var rows = Array.prototype.slice.call(document.querySelectorAll("tr.person"));
      client.on("presence", function (entry) {
        showPresence(document.querySelector('tr.person[data-user-id="' + entry.user_id + '"]'), entry);
        if (Number(entry.user_id) === me) showOwnState(stateOf(entry));
      });
      // The log says what changed: online and offline as before, and the state between.
      var states = {};
      client.on("presence_state", function (data) {
        Object.keys(data.states || {}).forEach(function (id) { states[id] = data.states[id].state; });
      });
      client.on("status_changed", function (data) {
        var id = String(data.user_id);
        var before = states[id] || "offline";
        var now = stateOf(data);
        states[id] = now;
        if (now === before) return; // a change of details only
        var text = before === "offline" ? " came online" : now === "offline" ? " went offline" : " is " + now;
        log(activity, nameOf(data.user_id) + text, "presence");
      });
      client.subscribe(rows.map(function (row) { return Number(row.dataset.userId); })).catch(function () {});
      availability();
    },

    waiting: function () {
      // The patient's waiting room: one line about the doctor, from their status_changed.
      var section = document.getElementById("waiting-room");
      var doctorId = Number(section.dataset.doctorId);
      var line = document.getElementById("doctor-availability");
      var statusText = document.getElementById("doctor-status-text");
      client.on("presence", function (entry) {
        if (Number(entry.user_id) !== doctorId) return;
        var state = stateOf(entry);
        // The policy lets a patient see their doctor's activities (consultations/presence.py).
        var key = state !== "offline" && (entry.activities || []).indexOf("in_call") >= 0 ? "in_call" : state;
        line.dataset.availability = key;
        line.querySelector(".label").textContent = DOCTOR_LABELS[key] || "Doctor " + state;
        statusText.textContent = entry.statusText || "";
        statusText.hidden = !entry.statusText;
      });
      client.subscribe([doctorId]).catch(function () {});
      // What the doctor (and staff) see of this connection: the patient is waiting.
      client.setPresence({ activity: "waiting_room" }).catch(function () {});
    },

    messages: function () {
      var form = document.getElementById("dm-form");
      var text = document.getElementById("dm-text");
      var target = document.getElementById("dm-target");
      var list = document.getElementById("dm-log");
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var message = text.value;
        var to = Number(target.value);
        text.value = "";
        client.sendDirectMessage(to, message).then(
          function () { log(list, "To " + nameOf(to) + ": " + message, "sent"); },
          function (error) { log(list, "Not sent to " + nameOf(to) + " (" + error.code + "): " + message, "error"); }
        );
      });
    },

    notifications: function () {},

    groups: function () {
      var container = document.getElementById("groups");
      var template = document.getElementById("group-template");
      var boxes = {};
      function box(group) {
        if (boxes[group]) return boxes[group];
        var node = template.content.firstElementChild.cloneNode(true);
        node.dataset.group = group;
        node.querySelector(".group-name").textContent = group;
        node.querySelector(".leave").addEventListener("click", function () {
          client.leaveGroup(group).catch(function () {});
          node.remove();
          delete boxes[group];
        });
        node.querySelector(".group-form").addEventListener("submit", function (event) {
          event.preventDefault();
          var input = node.querySelector(".group-text");
          var message = input.value;
          input.value = "";
          client.sendGroupMessage(group, message).catch(function (error) {
            log(node.querySelector(".group-log"), "Not sent (" + error.code + "): " + message, "error");
          });
        });
        container.appendChild(node);
        boxes[group] = node;
        return node;
      }
      client.on("group_members", function (info) {
        var node = boxes[info.group];
        if (!node) return;
        node.querySelector(".members").textContent = info.members
          ? info.members.map(nameOf).sort().join(", ") || "nobody"
          : "(too many to list)";
        node.querySelector(".group-count").textContent = info.count != null ? info.count + " online" : "";
      });
      client.on("group_message", function (data) {
        var node = boxes[data.group];
        if (!node) return;
        var who = data.from_user_id == null ? "server" : nameOf(data.from_user_id);
        log(node.querySelector(".group-log"), who + ": " + data.message, "group");
      });
      document.getElementById("join-form").addEventListener("submit", function (event) {
        event.preventDefault();
        var input = document.getElementById("group-name");
        var group = input.value.trim();
        input.value = "";
        box(group);
        client.joinGroup(group).catch(function (error) {
          log(box(group).querySelector(".group-log"), "Could not join (" + error.code + "): " + error.message, "error");
        });
      });
    },

    room: function () {
      var section = document.getElementById("room");
      var consultationId = section.dataset.consultationId;
      var peerId = Number(section.dataset.peerId);
      var list = document.getElementById("signal-log");
      var startButton = document.getElementById("start-call");
      var roomState = document.getElementById("room-state");
      var signalling = document.getElementById("signalling-state");
      var inRoom = document.getElementById("peer-in-room");
      client.on("presence", function (entry) {
        if (Number(entry.user_id) === peerId) showPresence(document.getElementById("peer-presence"), entry);
      });
      client.subscribe([peerId]).catch(function () {});

      // The signalling socket: the same client class, pointed at the project's consumer.
      var room = new DjangoPresence.PresenceClient({
        url: "/ws/consultation/" + consultationId + "/",
        getToken: fetchToken,
        backoffMax: 8000,
        pingInterval: 0,
        // Activity goes to ws/user/ (the page's client); this consumer knows no such frame.
        trackActivity: false,
      });
      window.roomClient = room;
      var peerHere = false;
      function refresh() {
        inRoom.textContent = peerHere ? "yes" : "no";
        startButton.disabled = !(room.state === "open" && peerHere);
      }
      room.on("open", function () { roomState.textContent = "open"; refresh(); });
      room.on("close", function () { roomState.textContent = "closed"; peerHere = false; refresh(); });
      ["peer_joined", "peer_present"].forEach(function (type) {
        room.on(type, function () { peerHere = true; refresh(); });
      });
      room.on("peer_left", function () { peerHere = false; refresh(); });
      room.on("error", function (data) { log(list, "Error " + data.code + ": " + data.message, "error"); });

      var pc = null;
      var remoteSet = false;
      var queuedCandidates = [];
      var hasWebRTC = typeof RTCPeerConnection === "function";
      function newPeerConnection() {
        if (!hasWebRTC) return null;
        var connection = new RTCPeerConnection({ iceServers: [] });
        connection.onicecandidate = function (event) {
          if (event.candidate) room.send("ice_candidate", { candidate: event.candidate.toJSON() });
        };
        connection.ondatachannel = function (event) { watchChannel(event.channel); };
        return connection;
      }
      function watchChannel(channel) {
        channel.onopen = function () { log(list, "Data channel open: the peers are connected", "signal"); };
      }
      function remoteDescription(description) {
        return pc.setRemoteDescription(description).then(function () {
          remoteSet = true;
          queuedCandidates.splice(0).forEach(function (candidate) { pc.addIceCandidate(candidate).catch(function () {}); });
        });
      }
      // In a consultation: this page's ws/user/ connection says so (set_presence), which
      // the patient's waiting room shows, and which keeps the doctor from turning away.
      var inCallToggle = document.getElementById("in-call-toggle");
      function setInCall(inCall) {
        if (inCallToggle) {
          inCallToggle.dataset.inCall = inCall ? "true" : "false";
          inCallToggle.textContent = inCall ? "End the consultation" : "Mark me in a consultation";
        }
        return client.setPresence({ activity: inCall ? "in_call" : null }).catch(function (error) {
          log(list, "Could not set the activity (" + error.code + ")", "error");
        });
      }
      if (inCallToggle) {
        inCallToggle.addEventListener("click", function () {
          setInCall(inCallToggle.dataset.inCall !== "true");
        });
      }
      startButton.addEventListener("click", function () {
        setInCall(true);
        startButton.disabled = true;
        signalling.textContent = "offer sent";
        pc = newPeerConnection();
        if (!pc) {
          room.send("offer", { sdp: "v=0 stand-in offer from " + nameOf(me) });
          room.send("ice_candidate", { candidate: { candidate: "stand-in candidate" } });
          log(list, "Sent an offer", "signal");
          return;
        }
        watchChannel(pc.createDataChannel("consultation"));
        pc.createOffer().then(function (offer) {
          return pc.setLocalDescription(offer).then(function () {
            room.send("offer", { sdp: offer.sdp });
            log(list, "Sent an offer", "signal");
          });
        }).catch(function (error) { log(list, "Could not create an offer: " + error, "error"); });
      });
      room.on("offer", function (data) {
        setInCall(true);
        log(list, "Received an offer from " + nameOf(data.from_user_id), "signal");
        signalling.textContent = "offer received";
        pc = newPeerConnection();
        if (!pc) {
          room.send("answer", { sdp: "v=0 stand-in answer from " + nameOf(me) });
          log(list, "Sent an answer", "signal");
          signalling.textContent = "complete";
          return;
        }
        remoteDescription({ type: "offer", sdp: data.sdp })
          .then(function () { return pc.createAnswer(); })
          .then(function (answer) {
            return pc.setLocalDescription(answer).then(function () {
              room.send("answer", { sdp: answer.sdp });
              log(list, "Sent an answer", "signal");
              signalling.textContent = "complete";
            });
          })
          .catch(function (error) {
            // A stand-in SDP from a browser without WebRTC: answer in kind.
            room.send("answer", { sdp: "v=0 stand-in answer from " + nameOf(me) });
            log(list, "Answered without WebRTC (" + error.name + ")", "signal");
            signalling.textContent = "complete";
          });
      });
      room.on("answer", function (data) {
        log(list, "Received an answer from " + nameOf(data.from_user_id), "signal");
        var done = function () { signalling.textContent = "complete"; };
        if (pc) remoteDescription({ type: "answer", sdp: data.sdp }).then(done, done);
        else done();
      });
      room.on("ice_candidate", function (data) {
        if (!pc || !data.candidate || !data.candidate.sdpMid && data.candidate.sdpMLineIndex == null) return;
        if (remoteSet) pc.addIceCandidate(data.candidate).catch(function () {});
        else queuedCandidates.push(data.candidate);
      });
      room.connect();
    },
  };

  var page = pages[body.dataset.page];
  if (page) page();
  client.connect();
})();
