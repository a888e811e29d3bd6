/*!
 * ES module entry of the django-user-presence browser client, with named exports:
 *
 *   import { PresenceClient } from "/static/django_presence/presence.mjs";
 *
 * It loads presence.js (a plain script that sets globalThis.DjangoPresence) and re-exports
 * its API, so both entries share one implementation.
 */
import "./presence.js";

const api = globalThis.DjangoPresence;

export const { PresenceClient, backoffDelay } = api;
export default api;
