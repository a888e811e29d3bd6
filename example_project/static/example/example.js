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
  // A demo reconnects within 8 s at most; the library's default cap is 30 s.
  var client = new DjangoPresence.PresenceClient({ url: "/ws/user/", getToken: fetchToken, backoffMax: 8000 });
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

  function showPresence(node, entry) {
    if (!node) return;
    node.dataset.online = entry.is_online ? "true" : "false";
    var status = node.querySelector(".status");
    if (status) status.textContent = entry.is_online ? "online" : "offline";
    var seen = node.querySelector(".last-seen");
    if (seen) {
      if (entry.is_online) seen.textContent = "now";
      else if (entry.last_seen) { seen.dataset.lastSeen = entry.last_seen; seen.textContent = time(entry.last_seen); }
    }
  }

  var pages = {
    dashboard: function () {
      var rows = Array.prototype.slice.call(document.querySelectorAll("tr.person"));
      client.on("presence", function (entry) {
        showPresence(document.querySelector('tr.person[data-user-id="' + entry.user_id + '"]'), entry);
      });
      client.on("status_changed", function (data) {
        log(activity, nameOf(data.user_id) + (data.is_online ? " came online" : " went offline"), "presence");
      });
      client.subscribe(rows.map(function (row) { return Number(row.dataset.userId); })).catch(function () {});
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
      startButton.addEventListener("click", function () {
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
