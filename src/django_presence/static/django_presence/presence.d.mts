// Type declarations of presence.mjs, the ES module entry: the API of presence.js
// (presence.d.ts) as named exports and as the default export.
import DjangoPresence from "./presence.js";

export type {
  PresenceClientOptions,
  PresenceClientEvents,
  PresenceEntry,
  PresenceDetails,
  PresenceStateName,
  PresenceUpdate,
  ManualStatus,
  SetStatusOptions,
  StatusData,
  StatusChangedData,
  PresenceStateData,
  PresenceError,
  Frame,
  StreamPosition,
  UserId,
} from "./presence.js";

export declare const PresenceClient: typeof DjangoPresence.PresenceClient;
export type PresenceClient = DjangoPresence.PresenceClient;
export declare const backoffDelay: typeof DjangoPresence.backoffDelay;
export default DjangoPresence;
