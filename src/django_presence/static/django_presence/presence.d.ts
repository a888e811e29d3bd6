// Type declarations of presence.js, the django-user-presence browser client.
//
// presence.js is a UMD-style script: loaded by a <script> tag it sets the global
// `DjangoPresence`; required from CommonJS it is `module.exports`. Both are this namespace.
// presence.mjs (presence.d.mts) re-exports it as an ES module. The wire protocol behind
// these types is docs/protocol.md; the client's behaviour is docs/javascript.md.

export = DjangoPresence;
export as namespace DjangoPresence;

declare namespace DjangoPresence {
  /** A user id as the server sends it (a number for integer keys, else a string). */
  type UserId = number | string;

  /** The position of a stream: the epoch and the offset of the last message processed. */
  interface StreamPosition {
    epoch: string;
    offset: number;
  }

  /** Where stream positions are kept: an object with the Web Storage methods. */
  interface PositionStorage {
    getItem(key: string): string | null;
    setItem(key: string, value: string): void;
    removeItem(key: string): void;
  }

  /** The WebSocket constructor the client uses (the browser's, or one from `ws` in Node). */
  interface WebSocketLike {
    readonly readyState?: number;
    onopen: ((event: unknown) => void) | null;
    onmessage: ((event: { data: unknown }) => void) | null;
    onclose: ((event: { code: number; reason: string }) => void) | null;
    onerror: ((event: unknown) => void) | null;
    send(data: string): void;
    close(code?: number, reason?: string): void;
  }
  type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

  /** The options of {@link PresenceClient}; every one is optional. */
  interface PresenceClientOptions {
    /** The ws/user/ route: absolute (`wss://host/ws/user/`) or relative to the page. Default `"/ws/user/"`. */
    url?: string;
    /** A token sent as the `access_token` subprotocol; null: none (session cookie). */
    token?: string | null;
    /** Called before each connection for a fresh token (wins over `token`). */
    getToken?: (() => string | null | undefined | Promise<string | null | undefined>) | null;
    /** First reconnection delay ceiling, ms. Default 500. */
    backoffInitial?: number;
    /** Largest reconnection delay ceiling, ms. Default 30000. */
    backoffMax?: number;
    /** Growth of the ceiling per attempt. Default 2. */
    backoffFactor?: number;
    /** A connection open this long (ms) resets the backoff. Default 5000. */
    stableAfter?: number;
    /** Send a ping this often (ms); 0 turns heartbeats off. Default 25000. */
    pingInterval?: number;
    /** Reconnect when nothing arrived for this long (ms) after a ping. Default 10000. */
    pingTimeout?: number;
    /** How long request() waits for its reply, ms. Default 10000. */
    requestTimeout?: number;
    /** Reconnect after a close (not after 4011 or close()). Default true. */
    autoReconnect?: boolean;
    /** The WebSocket implementation; null: the global `WebSocket`. */
    WebSocket?: WebSocketConstructor | null;
    /** The random source of the backoff's jitter, in [0, 1). Default Math.random. */
    random?: () => number;
    /** Called with what an event listener threw. Default: reportError, or console.error. */
    onListenerError?: ((error: unknown) => void) | null;
    /** Acknowledge each processed message of the "user" stream. Default true. */
    autoAck?: boolean;
    /** At most one ack frame per this many ms. Default 1000. */
    ackInterval?: number;
    /** Where stream positions are kept: null (memory), "session" (sessionStorage), or a storage object. Default null. */
    storage?: null | "session" | PositionStorage;
    /**
     * Send `activity` frames on the page's input, focus and visibility events (never while
     * the page is hidden). Default true where `window` and `document` exist, else false.
     */
    trackActivity?: boolean;
    /** At most one `activity` frame per this many ms. Default 30000. */
    activityInterval?: number;
    /** The kind of device ("web", "mobile", ...), sent as `?device=` on every connection. Default null. */
    device?: string | null;
  }

  /** The options with every default filled in (`client.options`, `DEFAULTS`). */
  type ResolvedOptions = Required<Omit<PresenceClientOptions, "storage">> & {
    storage: null | "session" | PositionStorage;
  };

  /** A frame as the server sends it (docs/protocol.md). */
  interface Frame<D = Record<string, unknown>> {
    type: string;
    data: D;
    id?: string | number;
    /** Stored messages only: their stream, offset and epoch. */
    stream?: string;
    offset?: number;
    epoch?: string;
  }

  /** What watchers see of a user: offline, online, away or busy. */
  type PresenceStateName = "offline" | "online" | "away" | "busy";

  /** A user's manual status, set with {@link PresenceClient.setStatus}. */
  type ManualStatus = "available" | "busy" | "invisible";

  /**
   * What the client shows of a user's presence. Devices, activities and the status text are
   * empty when the server does not share them with this user (the policy's details).
   */
  interface PresenceDetails {
    state: PresenceStateName;
    /** The distinct devices of the user's connections ("web", "mobile", ...), sorted. */
    devices: string[];
    /** The distinct activities of the user's connections ("in_call", ...), sorted. */
    activities: string[];
    /** The text of the user's manual status ("" for none). */
    statusText: string;
  }

  /** What the client knows of a watched user. */
  interface PresenceEntry extends PresenceDetails {
    user_id: UserId;
    is_online: boolean;
    /** ISO 8601 time the user last went offline, or null. */
    last_seen: string | null;
  }

  /** The fields of {@link PresenceClient.setPresence}: left out keeps a field, null clears it. */
  interface PresenceUpdate {
    /** The kind of device, at most 32 characters. */
    device?: string | null;
    /** What the user is doing on this connection ("in_call", "viewing:/x", ...), at most 64 characters. */
    activity?: string | null;
    /** Any JSON object of at most 10 keys and 1 KiB, shown to watchers allowed to see details. */
    data?: Record<string, unknown> | null;
  }

  interface SetStatusOptions {
    /** A text shown with the status (at most 100 characters by default). */
    text?: string | null;
    /** After this many ms the status is "available" again (sent in whole seconds). */
    expiresIn?: number | null;
  }

  /** The `status` frame: the reply to set_status, also sent to the user's other connections. */
  interface StatusData {
    status: ManualStatus;
    text: string;
    /** Seconds until the status expires, or null. */
    expires_in: number | null;
    /** The state the user sees of themselves, when the server sends it. */
    state?: PresenceStateName;
    [extra: string]: unknown;
  }

  interface CloseEvent {
    code: number;
    reason: string;
    reconnecting: boolean;
    /** Milliseconds until the next attempt, or null when not reconnecting. */
    delay: number | null;
  }

  interface ReconnectingEvent {
    attempt: number;
    delay: number;
  }

  interface OpenEvent {
    attempt: number;
  }

  interface PresenceStateData {
    users: Record<string, boolean | { is_online: boolean; last_seen?: string | null; seq?: number }>;
    last_seen?: Record<string, string | null>;
    seqs?: Record<string, number>;
    /** Each user's presence (filled in from `users` when the server sends none). */
    states: Record<string, PresenceDetails & { status_text?: string }>;
  }

  interface StatusChangedData extends PresenceDetails {
    user_id: UserId;
    is_online: boolean;
    last_seen?: string | null;
    seq?: number;
    /** As the server sent it (`statusText` is the same, "" when absent). */
    status_text?: string;
  }

  interface NotificationData {
    title?: string;
    message?: unknown;
    [extra: string]: unknown;
  }

  interface DirectMessageData {
    from_user_id: UserId;
    message: unknown;
    sent_at?: string;
    [extra: string]: unknown;
  }

  interface SystemBroadcastData {
    message: unknown;
    level?: string;
    [extra: string]: unknown;
  }

  interface GroupMessageData {
    group: string;
    from_user_id?: UserId;
    message: unknown;
    [extra: string]: unknown;
  }

  /** One stream's entry of a recovery frame (or of group_joined's `stream`). */
  interface StreamRecovery {
    epoch: string;
    offset: number;
    since?: number;
    recovered: boolean;
    replayed?: number;
  }

  interface RecoveryData {
    streams: Record<string, StreamRecovery>;
  }

  interface GroupJoinedData {
    group: string;
    count?: number;
    members_online?: UserId[];
    count_only?: boolean;
    stream?: StreamRecovery;
  }

  interface GroupLeftData {
    group: string;
  }

  interface GroupMembersEvent {
    group: string;
    /** The online members as the client knows them, or null (a count-only group). */
    members: UserId[] | null;
    count: number | null;
  }

  interface ErrorData {
    code: string;
    message?: string;
  }

  interface RecoveredEvent {
    stream: string;
    /** How many missed messages of the stream follow. */
    replayed: number;
    epoch: string;
  }

  interface DiscontinuityEvent {
    stream: string;
    epoch: string;
    offset: number | null;
  }

  /** Each event the client emits and its payload. Other frame types are emitted by name. */
  interface PresenceClientEvents {
    open: OpenEvent;
    close: CloseEvent;
    reconnecting: ReconnectingEvent;
    connect_error: unknown;
    message: Frame;
    presence: PresenceEntry;
    presence_state: PresenceStateData;
    status_changed: StatusChangedData;
    status: StatusData;
    notification: NotificationData;
    direct_message: DirectMessageData;
    system_broadcast: SystemBroadcastData;
    group_message: GroupMessageData;
    group_joined: GroupJoinedData;
    group_left: GroupLeftData;
    group_members: GroupMembersEvent;
    error: ErrorData;
    recovery: RecoveryData;
    recovered: RecoveredEvent;
    discontinuity: DiscontinuityEvent;
    pong: Record<string, unknown>;
    ack: Record<string, unknown>;
  }

  /** A rejected request: `code` is the server's error code, or "timeout" / "closed". */
  interface PresenceError extends Error {
    name: "PresenceError";
    code: string;
    frame: Frame<ErrorData> | null;
  }

  /** What the client knows of a joined group. */
  interface GroupInfo {
    members: Map<string, UserId> | null;
    count: number | null;
  }

  /** A connection to ws/user/ that stays up: reconnects, re-subscribes, recovers. */
  class PresenceClient {
    constructor(options?: PresenceClientOptions);

    readonly options: ResolvedOptions;
    /** The current socket, or null between connections. */
    socket: WebSocketLike | null;
    state: "closed" | "connecting" | "open";
    /** Reconnection attempts since the last stable connection. */
    attempt: number;
    /** Watched users by id (as a string). */
    presence: Map<string, PresenceEntry>;
    /** Ids (as strings) watched, kept across reconnects. */
    subscriptions: Set<string>;
    /** Joined groups, kept across reconnects. */
    groups: Map<string, GroupInfo>;

    /** Listen to an event; returns a function that removes the listener. */
    on<E extends keyof PresenceClientEvents>(event: E, fn: (payload: PresenceClientEvents[E]) => void): () => void;
    on(event: string, fn: (payload: any) => void): () => void;
    off<E extends keyof PresenceClientEvents>(event: E, fn: (payload: PresenceClientEvents[E]) => void): void;
    off(event: string, fn: (payload: any) => void): void;
    emit<E extends keyof PresenceClientEvents>(event: E, payload: PresenceClientEvents[E]): void;
    emit(event: string, payload?: unknown): void;

    /** Open the connection and keep it open until close(). */
    connect(): this;
    /** Close for good: no reconnection; pending requests are rejected with "closed". */
    close(code?: number, reason?: string): void;

    /** Send a frame without waiting for a reply (queued while disconnected). */
    send(type: string, data?: Record<string, unknown>): void;
    /** Send a frame with an id; resolves with the reply, rejects with a PresenceError. */
    request(type: string, data?: Record<string, unknown>, options?: { timeout?: number }): Promise<Frame>;

    /** Watch these users; resolves with the presence_state reply (or null if none was needed). */
    subscribe(userIds: UserId[]): Promise<Frame<PresenceStateData> | null>;
    /** Stop watching these users. */
    unsubscribe(userIds: UserId[]): Promise<Frame>;
    /** Whether the user is online as far as the client knows; undefined: not known yet. */
    isOnline(userId: UserId): boolean | undefined;
    /** The user's known status, or undefined. */
    getStatus(userId: UserId): PresenceEntry | undefined;

    /**
     * Set this connection's device, activity and data (set_presence); remembered and sent
     * again after every reconnect. Resolves with the server's reply.
     */
    setPresence(presence: PresenceUpdate): Promise<Frame>;
    /** Set the user's manual status (set_status); resolves with the `status` reply. */
    setStatus(status: ManualStatus, options?: SetStatusOptions): Promise<Frame<StatusData>>;

    sendDirectMessage(targetUserId: UserId, message: unknown): Promise<Frame>;
    /** A system broadcast: staff only (others get "forbidden"). */
    broadcast(message: unknown): Promise<Frame>;
    /** Join a group (joined again after every reconnect); resolves with group_joined. */
    joinGroup(group: string): Promise<Frame<GroupJoinedData>>;
    leaveGroup(group: string): Promise<Frame<GroupLeftData>>;
    sendGroupMessage(group: string, message: unknown): Promise<Frame>;
    /** The online members of a joined group as the client knows them, or null. */
    groupMembers(group: string): UserId[] | null;

    /** A copy of the positions: stream name -> position of the last message processed. */
    positions(): Record<string, StreamPosition>;
    /** Forget every position (in memory and storage), e.g. on logout. */
    resetPositions(): void;
    /**
     * Acknowledge the "user" stream up to `offset` (default: the last processed) in
     * `epoch` (default: the current one). False when there is nothing to acknowledge.
     */
    ack(offset?: number, epoch?: string): boolean;
  }

  /** Delay (ms) before reconnection attempt `attempt` (1 for the first): full jitter. */
  function backoffDelay(
    attempt: number,
    options?: Pick<PresenceClientOptions, "backoffInitial" | "backoffMax" | "backoffFactor"> | null,
    random?: () => number
  ): number;
  /** A relative WebSocket path resolved against the page's location (ws: or wss:). */
  function resolveUrl(url: string): string;

  /** The subprotocol that carries the token: "access_token". */
  const TOKEN_SUBPROTOCOL: "access_token";
  /** The close code of an expired token: 4001. */
  const CLOSE_TOKEN_EXPIRED: 4001;
  /** The defaults of every option. */
  const DEFAULTS: ResolvedOptions;
  const version: string;

  /** Set by presence-auto.js ({% presence_script %}): the page's client. */
  let client: PresenceClient | undefined;
  /** Set by presence-auto.js: subscribe to the users of root's [data-presence-user] dots. */
  let bindPresence: ((root?: { querySelectorAll(selector: string): ArrayLike<unknown> }) => Promise<void>) | undefined;
}
