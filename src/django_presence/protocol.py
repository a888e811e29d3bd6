"""The package's vocabulary on the wire and on the channel layer, defined once.

Everything a client or another process can see by name or number lives here: the
``ws/user/`` frame types in both directions, the error codes of ``error`` frames, the
WebSocket close codes, the token subprotocol, and the types of the channel-layer events
the package sends between processes. ``docs/protocol.md`` documents each, and a test
checks that its tables list exactly these.

Client code (JavaScript, a native app) relies on these strings and numbers: changing one
is a breaking change of the protocol.
"""

from __future__ import annotations

# -- authentication ------------------------------------------------------------------------

#: The subprotocol a browser offers, followed by the token, to authenticate without
#: putting the token in the URL: ``new WebSocket(url, ["access_token", token])``.
TOKEN_SUBPROTOCOL = "access_token"

# -- close codes ---------------------------------------------------------------------------

#: The connection's token expired while the socket was open.
CLOSE_TOKEN_EXPIRED = 4001
#: Refused: no authenticated user, or a bad token. Sent before the socket is accepted, so
#: a browser sees HTTP 403 (and code 1006) instead.
CLOSE_UNAUTHENTICATED = 4003
#: The connection kept sending after being rate limited.
CLOSE_FLOODING = 4008
#: Refused: the user already holds ``MAX_CONNECTIONS_PER_USER`` open connections, or the
#: server ``MAX_CONNECTIONS_PER_PROCESS``. Sent right after the accept, so that a browser
#: sees the code.
CLOSE_TOO_MANY_CONNECTIONS = 4009
#: Closed by ``user_online_service.disconnect_user()`` (logout, password change, admin).
CLOSE_DISCONNECTED = 4010
#: The user's account was deactivated or deleted (``DISCONNECT_ON_DEACTIVATE``).
CLOSE_REVOKED = 4011

#: Every close code the package sends, with its meaning.
CLOSE_CODES: dict[int, str] = {
    CLOSE_TOKEN_EXPIRED: "token expired",
    CLOSE_UNAUTHENTICATED: "unauthenticated",
    CLOSE_FLOODING: "flooding",
    CLOSE_TOO_MANY_CONNECTIONS: "too many connections",
    CLOSE_DISCONNECTED: "disconnected by the server",
    CLOSE_REVOKED: "account deactivated or deleted",
}

# -- error codes of ``error`` frames ---------------------------------------------------------

INVALID_JSON = "invalid_json"
INVALID_PAYLOAD = "invalid_payload"
UNKNOWN_TYPE = "unknown_type"
FORBIDDEN = "forbidden"
RATE_LIMITED = "rate_limited"
TOO_LARGE = "too_large"
NOT_FOUND = "not_found"
SERVER_ERROR = "server_error"

#: Every error code, in the order ``docs/protocol.md`` lists them.
ERROR_CODES: tuple[str, ...] = (
    INVALID_JSON,
    INVALID_PAYLOAD,
    UNKNOWN_TYPE,
    FORBIDDEN,
    RATE_LIMITED,
    TOO_LARGE,
    NOT_FOUND,
    SERVER_ERROR,
)

# -- frame types -----------------------------------------------------------------------------

#: Requests a client sends; ``UserConsumer.request_<type>`` handles each.
REQUEST_TYPES: tuple[str, ...] = (
    "ping",
    "direct_message",
    "broadcast",
    "join_group",
    "leave_group",
    "group_message",
    "subscribe_presence",
    "unsubscribe_presence",
    "activity",
    "set_presence",
    "set_status",
    "ack",
)

PONG = "pong"
ACK = "ack"
ERROR = "error"
NOTIFICATION = "notification"
DIRECT_MESSAGE = "direct_message"
SYSTEM_BROADCAST = "system_broadcast"
GROUP_MESSAGE = "group_message"
STATUS_CHANGED = "status_changed"
PRESENCE_STATE = "presence_state"
GROUP_JOINED = "group_joined"
GROUP_LEFT = "group_left"
GROUP_PRESENCE = "group_presence"
RECOVERY = "recovery"
STATUS = "status"

#: Frames the server sends: replies to requests, and what it sends on its own.
SERVER_FRAME_TYPES: tuple[str, ...] = (
    PONG,
    ACK,
    ERROR,
    NOTIFICATION,
    DIRECT_MESSAGE,
    SYSTEM_BROADCAST,
    GROUP_MESSAGE,
    STATUS_CHANGED,
    PRESENCE_STATE,
    GROUP_JOINED,
    GROUP_LEFT,
    GROUP_PRESENCE,
    RECOVERY,
    STATUS,
)

# -- streams -----------------------------------------------------------------------------------
#
# Stored messages belong to a stream and carry its name, their offset and the stream's
# epoch as top-level fields of their frame (docs/delivery.md).

#: The wire name of the connection's own user's stream (notifications, direct messages).
STREAM_USER = "user"
#: The wire name of the system broadcasts' stream.
STREAM_BROADCAST = "broadcast"
#: Prefix of a client group's stream's wire name: ``group:<name>``.
STREAM_GROUP_PREFIX = "group:"
#: The URL query parameter a reconnecting client names its positions with:
#: ``since=<stream>:<epoch>:<offset>``, once per stream.
SINCE_PARAM = "since"
#: The URL query parameter (``recover=1``) of a client that holds no position yet but
#: wants the ``recovery`` frame (the streams' epochs and offsets) on connect.
RECOVER_PARAM = "recover"
#: The URL query parameter naming a connection's device: ``?device=mobile`` (any tracked
#: consumer; see docs/presence-states.md).
DEVICE_PARAM = "device"

# -- channel-layer events ----------------------------------------------------------------------
#
# Handled by ``presence_<name>`` methods of the consumers (Channels maps ``presence.x`` to
# ``presence_x``). The ``presence.`` namespace keeps them apart from a project's own.

#: A notification for a user (``user_messaging_service.send_notification_to_user``).
EVENT_NOTIFICATION = "presence.notification"
#: A direct message for a user.
EVENT_DIRECT_MESSAGE = "presence.direct_message"
#: A system broadcast to every ``ws/user/`` connection.
EVENT_BROADCAST = "presence.broadcast"
#: A message to a client group.
EVENT_GROUP_MESSAGE = "presence.group_message"
#: A watched user's presence changed: online, offline, or their state (docs/presence-states.md).
EVENT_STATUS = "presence.status"
#: A user joined or left a client group.
EVENT_GROUP_MEMBER = "presence.group_member"
#: Close this connection's socket (``disconnect_user``), sent to one channel.
EVENT_DISCONNECT = "presence.disconnect"
#: The user's own status changed (``set_status``): told to each of their connections.
EVENT_OWN_STATUS = "presence.own_status"

#: Every channel-layer event type the package sends.
EVENT_TYPES: tuple[str, ...] = (
    EVENT_NOTIFICATION,
    EVENT_DIRECT_MESSAGE,
    EVENT_BROADCAST,
    EVENT_GROUP_MESSAGE,
    EVENT_STATUS,
    EVENT_GROUP_MEMBER,
    EVENT_DISCONNECT,
    EVENT_OWN_STATUS,
)
