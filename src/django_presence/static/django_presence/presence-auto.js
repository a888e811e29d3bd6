/*!
 * django-user-presence: live dots on server-rendered pages (presence-auto.js).
 *
 * Loaded by {% presence_script %} after presence.js, with its options as data attributes
 * of its own <script> tag: data-url (the ws/user/ route), data-token-url (optional: a URL
 * answering JSON {token} or {access}; without it the session cookie authenticates),
 * data-storage (optional: "session"), data-device (optional: the kind of device, sent as
 * ?device=). It starts one PresenceClient
 * (DjangoPresence.client), subscribes to the user of every [data-presence-user] element
 * and keeps their data-online, data-state, data-last-seen and title up to date.
 * DjangoPresence.bindPresence(root) does the same for elements added later.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var api = typeof window !== "undefined" ? window.DjangoPresence : null;
  if (!api || !api.PresenceClient || !script) {
    return;
  }
  var SELECTOR = "[data-presence-user]";
  var data = script.dataset;
  var options = { url: data.url || "/ws/user/" };
  if (data.tokenUrl) {
    options.getToken = function () {
      return fetch(data.tokenUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("GET " + data.tokenUrl + " answered " + response.status);
          }
          return response.json();
        })
        .then(function (body) {
          return body.token || body.access;
        });
    };
  }
  if (data.storage) {
    options.storage = data.storage;
  }
  if (data.device) {
    options.device = data.device;
  }
  var client = new api.PresenceClient(options);
  api.client = client;

  function render(element, entry) {
    var online = entry.is_online ? "true" : "false";
    element.setAttribute("data-online", online);
    // online, away, busy or offline (docs/presence-states.md): presence.css colours it.
    element.setAttribute("data-state", entry.state || (entry.is_online ? "online" : "offline"));
    if (entry.last_seen) {
      element.setAttribute("data-last-seen", entry.last_seen);
    }
    var title = element.getAttribute(online === "true" ? "data-title-online" : "data-title-offline");
    if (title) {
      element.setAttribute("title", title);
      element.setAttribute("aria-label", title);
    }
  }

  client.on("presence", function (entry) {
    var id = String(entry.user_id);
    document.querySelectorAll(SELECTOR).forEach(function (element) {
      if (element.getAttribute("data-presence-user") === id) {
        render(element, entry);
      }
    });
  });

  /** Subscribe to the users of root's dots (default: the document); resolves when done. */
  api.bindPresence = function (root) {
    var ids = [];
    (root || document).querySelectorAll(SELECTOR).forEach(function (element) {
      var id = element.getAttribute("data-presence-user");
      var known = client.getStatus(id);
      if (known) {
        render(element, known);
      }
      if (id && ids.indexOf(id) === -1) {
        ids.push(id);
      }
    });
    if (!ids.length) {
      return Promise.resolve();
    }
    var numeric = ids.map(function (id) {
      return /^[0-9]+$/.test(id) && Number.isSafeInteger(Number(id)) ? Number(id) : id;
    });
    return client.subscribe(numeric).catch(function (error) {
      // The policy may forbid watching some of them (DefaultPolicy: only yourself).
      console.warn("django-user-presence: could not watch users " + ids.join(", ") + ":", error.message);
    });
  };

  client.connect();
  api.bindPresence(document);
})();
