// livehub.js: the browser client of livehub, served at /livehub.js.
//
// One EventSource per hub carries every subscription of the page: live
// queries (a collection's matching records, kept exact from a snapshot and
// every change; a second live query of a collection is a view of it on the
// same stream), change events, channels and presence. Subscriptions made
// while the stream is open are added to it (POST .../subscriptions); when
// the stream breaks, the hub reconnects with backoff and jitter, asks for
// fresh credentials, resumes from the last event id, and on `reset` takes
// a fresh snapshot.
//
// Local-first, when asked: `persist` keeps live queries (and writes not yet
// answered) in IndexedDB, so a reload shows them at once and asks only for
// what changed; `shared` lets the tabs of an origin share one stream;
// `initial` starts a live query from a list read on the server; and
// `hub.collection(name)` writes optimistically, with idempotent retries.
// Types: /livehub.d.ts. No dependencies.

const EVENT_TYPES = [
  'connected', 'reset', 'record.created', 'record.updated', 'record.deleted',
  'record.snapshot', 'snapshot.done', 'collection.created', 'collection.updated',
  'collection.deleted', 'channel.message', 'user.joined', 'user.left',
  'system.announcement', 'forced_logout', 'token.expired', 'node.leaving',
  'subscription.added', 'subscription.removed', 'subscription.refused',
];

/** Opens a hub: nothing connects until the first subscription. */
export function connect(options = {}) {
  return new Hub(options);
}

/** A value and who wants to hear when it changes (for useSyncExternalStore). */
class Store {
  constructor(value) {
    this.value = value;
    this.listeners = new Set();
  }
  subscribe = (listener) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };
  getSnapshot = () => this.value;
  set(patch) {
    this.value = { ...this.value, ...patch };
    for (const listener of [...this.listeners]) listener(this.value);
  }
}

/** Reads a dotted field path of a record. */
function field(record, path) {
  return path.split('.').reduce((value, key) => (value == null ? undefined : value[key]), record);
}

/**
 * A comparator for a sort such as `title` or `-title`, the same order as the
 * server's (its record lists and first-N snapshots, SurrealDB's ORDER BY):
 * by the field's value (see `compareValues`), ties broken by `id` in the
 * same direction. So `-title` is exactly `title` reversed, and `id` alone
 * never ties.
 */
function comparator(sort) {
  const direction = sort.startsWith('-') ? -1 : 1;
  const path = sort.replace(/^[-+]/, '');
  return (a, b) => direction * (compareValues(field(a, path), field(b, path)) || compareValues(a.id, b.id));
}

/**
 * `fields` with the field of `sort` added if it is not among them: the hub
 * sorts its records by that field, which a projection without it would
 * drop (and the first N would show in another order than the server's).
 */
function withSortField(fields, sort) {
  const path = (sort || 'id').replace(/^[-+]/, '');
  const listed = fields.split(',').map((name) => name.trim());
  const kept = path === 'id' || listed.some((name) => name === path || path.startsWith(`${name}.`));
  return kept ? fields : `${fields},${path}`;
}

/**
 * Where a value's type sorts, as in SurrealDB: a missing field first, then
 * null, booleans, numbers, strings, arrays, objects.
 */
function typeRank(value) {
  if (value === undefined) return 0;
  if (value === null) return 1;
  if (typeof value === 'boolean') return 2;
  if (typeof value === 'number') return 3;
  if (typeof value === 'string') return 4;
  return Array.isArray(value) ? 5 : 6;
}

/**
 * Compares two JSON values as SurrealDB orders them: by type (`typeRank`),
 * then false before true, numbers by value, strings by code point (UTF-8
 * byte order, not JavaScript's UTF-16 `<`), arrays element by element (a
 * prefix first), objects by their entries in key order.
 */
function compareValues(x, y) {
  const rank = typeRank(x);
  if (rank !== typeRank(y)) return rank < typeRank(y) ? -1 : 1;
  if (rank === 2 || rank === 3) return x === y ? 0 : x < y ? -1 : 1;
  if (rank === 4) return compareStrings(x, y);
  if (rank === 5) return compareLists(x, y, compareValues);
  if (rank === 6) {
    const entries = (object) => Object.entries(object).sort(([k], [l]) => compareStrings(k, l));
    return compareLists(entries(x), entries(y), ([k, v], [l, w]) => compareStrings(k, l) || compareValues(v, w));
  }
  return 0;
}

/** Element by element, then the shorter first. */
function compareLists(xs, ys, compare) {
  const length = Math.min(xs.length, ys.length);
  for (let i = 0; i < length; i += 1) {
    const order = compare(xs[i], ys[i]);
    if (order) return order;
  }
  return xs.length === ys.length ? 0 : xs.length < ys.length ? -1 : 1;
}

/** Strings by code point. */
function compareStrings(x, y) {
  if (x === y) return 0;
  const length = Math.min(x.length, y.length);
  for (let i = 0; i < length; i += 1) {
    let a = x.charCodeAt(i);
    let b = y.charCodeAt(i);
    if (a === b) continue;
    if (a >= 0xd800 && b >= 0xd800) {
      // UTF-16 puts surrogates (the halves of code points above U+FFFF)
      // below U+E000-U+FFFF; by code point they are above.
      a = a >= 0xe000 ? a - 0x800 : a + 0x2000;
      b = b >= 0xe000 ? b - 0x800 : b + 0x2000;
    }
    return a < b ? -1 : 1;
  }
  return x.length < y.length ? -1 : 1;
}

/**
 * The records of a collection that match a filter, kept exact. Its state,
 * `{records, status, error, pending}`, is replaced (never mutated) on each
 * change: the server's records with the hub's pending writes laid over them.
 */
class LiveQuery extends Store {
  constructor(hub, collection, options) {
    super({ records: [], status: 'loading', error: null, pending: [] });
    this.hub = hub;
    this.collection = collection;
    this.options = options;
    // The server's records, as its events say.
    this.byId = new Map();
    this.staged = null;
    this.order = comparator(options.sort || (options.limit ? '-id' : 'id'));
  }
  /** Stops keeping the result. */
  close() {
    this.hub.release(this);
  }
  /** The subscription's body, as the server reads it. */
  body() {
    const { query, fields, limit, sort } = this.options;
    const body = { collection: this.collection, snapshot: true };
    if (this.view) body.view = this.view;
    if (query) body.query = query;
    if (fields) body.fields = withSortField(fields, sort);
    if (this.diffs()) body.diff = true;
    if (limit) {
      body.snapshot_limit = limit;
      body.snapshot_sort = sort || '-id';
    }
    return body;
  }
  /** Updates come as merge patches (not with `limit`: the first N hold too few records to patch). */
  diffs() {
    return Boolean(this.options.diff && !this.options.limit);
  }
  /** Whether a record written here belongs in this query before the server says (`match`, or no filter). */
  accepts(record) {
    const { match, query } = this.options;
    return match ? Boolean(match(record)) : !query;
  }
  /** Takes records held from before (`initial`, or stored): shown at once, kept live from their position. */
  hold(records) {
    this.byId = new Map(records.map((record) => [record.id, record]));
    this.synced = true;
    this.publish('live');
  }
  beginSnapshot() {
    this.staged = new Map();
  }
  snapshotRecord(data) {
    if (this.staged) this.staged.set(data.id, data);
  }
  endSnapshot() {
    if (!this.staged) return;
    this.byId = this.staged;
    this.staged = null;
    this.publish('live');
  }
  /** Applies one change event; true if the first N must be read again. */
  apply(type, event) {
    const id = event.record_id;
    let refill = false;
    if (type === 'collection.deleted') {
      this.byId = new Map();
    } else if (type === 'record.deleted' || event.left) {
      refill = this.byId.delete(id) && Boolean(this.options.limit);
    } else if (event.patch) {
      const held = this.byId.get(id);
      if (held) this.byId.set(id, mergePatch(held, event.patch));
    } else if (type === 'record.created' || type === 'record.updated') {
      this.byId.set(id, event.data);
    } else {
      return;
    }
    this.publish(this.value.status);
    return refill;
  }
  publish(status, error = null) {
    let records = [...this.byId.values()].sort(this.order);
    const { limit } = this.options;
    if (limit && records.length > limit) {
      // Only the first N are the result; the rest are dropped.
      for (const record of records.slice(limit)) this.byId.delete(record.id);
      records = records.slice(0, limit);
    }
    const pending = this.hub.writes.overlay(this, records);
    if (pending.length) {
      records.sort(this.order);
      if (limit) records = records.slice(0, limit);
    }
    this.set({ records, status, error, pending });
    this.hub.persistLater(this);
  }
}

/** Who is online: `{users, status, error}`, users sorted by id. */
class Presence extends Store {
  constructor(hub) {
    super({ users: [], status: 'loading', error: null });
    this.hub = hub;
    this.byId = new Map();
    this.buffered = null;
  }
  close() {
    this.hub.release(this);
  }
  apply(type, data) {
    if (this.buffered) {
      this.buffered.push([type, data]);
      return;
    }
    if (type === 'user.joined') this.byId.set(data.user_id, data);
    if (type === 'user.left') this.byId.delete(data.user_id);
    this.publish('live');
  }
  publish(status, error = null) {
    const users = [...this.byId.values()].sort((a, b) => (a.user_id < b.user_id ? -1 : 1));
    this.set({ users, status, error });
  }
}

/** A subscription of change events (or channel messages) to callbacks. */
class Listener {
  constructor(hub, kind, name, options) {
    Object.assign(this, { hub, kind, name, options, callbacks: new Set() });
  }
  /** A handle for one callback: the last one closed removes the subscription. */
  handle(callback) {
    this.callbacks.add(callback);
    const hub = this.hub;
    return {
      close: () => this.callbacks.delete(callback) && hub.release(this),
      publish: (message) => hub.request('POST', `/api/v1/channels/${encodeURIComponent(this.name)}/messages`, message),
    };
  }
  call(...args) {
    for (const callback of [...this.callbacks]) callback(...args);
  }
  body() {
    if (this.kind === 'channel') return { channel: this.name };
    const body = { collection: this.name };
    if (this.view) body.view = this.view;
    if (this.options.query) body.query = this.options.query;
    if (this.options.fields) body.fields = this.options.fields;
    return body;
  }
}

/** What makes two live queries the same subscription. */
function signature(collection, options) {
  const { query, fields, limit, sort, diff } = options || {};
  return JSON.stringify([collection, query, fields, limit, sort, diff]);
}

export class Hub {
  constructor(options) {
    this.options = options;
    this.url = (options.url || '').replace(/\/$/, '');
    this.auth = options.auth;
    this.EventSource = options.EventSource || globalThis.EventSource;
    this.fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this.retry = { initial: 500, max: 30000, ...(options.retry || {}) };
    this.onEvent = options.onEvent || null;
    // Subscriptions by id (`collection:posts`, `collection:posts.q1`,
    // `channel:x`, `presence`): one stream carries them all. A second live
    // query of a collection, with other options, is a view of it.
    this.topics = new Map();
    this.views = 0;
    this.source = null;
    this.connection = null;
    this.lastEventId = null;
    this.attempt = 0;
    this.timer = null;
    this.closed = false;
    this.status = new Store({ state: 'idle', connection: null, error: null });
    this.writes = new Writes(this);
    this.storage = globalThis.indexedDB && options.persist ? new Storage(this) : null;
    this.tabs = options.shared && globalThis.BroadcastChannel && globalThis.navigator?.locks ? new Tabs(this) : null;
    if (this.storage) this.writes.restore();
  }

  /** A live query of `collection`: options `query`, `fields`, `limit`, `sort`, `diff`, `match`, `persist`, `initial`. */
  liveQuery(collection, options = {}) {
    const sig = signature(collection, options);
    for (const existing of this.topics.values()) {
      if (existing instanceof LiveQuery && existing.signature === sig) {
        existing.users += 1;
        return existing;
      }
    }
    const query = new LiveQuery(this, collection, options);
    query.signature = sig;
    const { initial } = options;
    if (initial && !this.connection && !this.source) {
      // A list read on the server: shown as it is, streamed from its position.
      query.hold(initial.records);
      if (this.lastEventId === null || initial.position < this.lastEventId) this.lastEventId = initial.position;
    }
    return this.add(this.collectionId(collection), query);
  }

  /** Every change event of `collection` (options `query`, `fields`) to `callback`. */
  events(collection, options, callback) {
    options = options || {};
    const sig = signature(collection, options);
    for (const existing of this.topics.values()) {
      if (existing instanceof Listener && existing.signature === sig) {
        existing.users += 1;
        return existing.handle(callback);
      }
    }
    const listener = new Listener(this, 'collection', collection, options);
    listener.signature = sig;
    return this.add(this.collectionId(collection), listener).handle(callback);
  }

  /** The messages of a channel to `callback`; `.publish(message)` sends one. */
  channel(name, callback) {
    const id = `channel:${name}`;
    const existing = this.topics.get(id);
    if (existing) {
      existing.users += 1;
      return existing.handle(callback);
    }
    return this.add(id, new Listener(this, 'channel', name, {})).handle(callback);
  }

  /** Who is online, kept up to date. */
  presence() {
    const existing = this.topics.get('presence');
    if (existing) {
      existing.users += 1;
      return existing;
    }
    return this.add('presence', new Presence(this));
  }

  /** Writes to `collection`, shown at once in the live queries they affect (see `Writes`). */
  collection(name) {
    const path = `/api/v1/collections/${encodeURIComponent(name)}/records`;
    const one = (id) => `${path}/${encodeURIComponent(id)}`;
    const write = (kind, id, data, method, target) =>
      this.writes.add({ kind, collection: name, id, data, method, path: target });
    return {
      create: (record) => {
        const id = record.id == null ? newId() : String(record.id);
        return write('create', id, { ...record, id }, 'POST', path);
      },
      update: (id, patch) => write('update', id, patch, 'PATCH', one(id)),
      delete: (id) => write('delete', id, undefined, 'DELETE', one(id)),
    };
  }

  /** Forgets what this hub stored for its user (records and queued writes): call it on sign-out. */
  clearPersisted() {
    return this.storage ? this.storage.clear() : Promise.resolve();
  }

  /** Closes the stream and every subscription. */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
    if (this.tabs) this.tabs.close();
    this.status.set({ state: 'closed' });
  }

  /** The id of a new subscription of `collection`: its own, or a view beside it. */
  collectionId(collection) {
    const own = `collection:${collection}`;
    if (!this.topics.has(own)) return own;
    this.views += 1;
    return `${own}.q${this.views}`;
  }

  add(id, subscription) {
    subscription.topic = id;
    subscription.view = id.startsWith('collection:') && id.includes('.') ? id.slice(id.indexOf('.') + 1) : null;
    subscription.users = 1;
    subscription.synced = subscription.synced || false;
    this.topics.set(id, subscription);
    if (this.tabs && !this.tabs.leader) this.tabs.follow(subscription);
    // While the stream opens, it is added once `connected` comes.
    else if (!this.source && !this.opening) this.open();
    else if (this.connection) this.send(subscription);
    return subscription;
  }

  /** Drops one user of a subscription; the last one removes it. */
  release(subscription) {
    if (this.topics.get(subscription.topic) !== subscription) return;
    subscription.users -= 1;
    if (subscription.users > 0) return;
    this.topics.delete(subscription.topic);
    if (this.tabs && !this.tabs.leader) {
      this.tabs.unfollow(subscription);
    } else if (this.topics.size === 0) {
      // Nothing left to carry: the stream closes until a new subscription.
      if (this.source) this.source.close();
      this.source = null;
      this.connection = null;
      this.lastEventId = null;
      this.status.set({ state: 'idle', connection: null, error: null });
    } else if (this.connection) {
      const connection = this.connection;
      this.request('DELETE', `${this.subscriptionsPath(connection)}/${encodeURIComponent(subscription.topic)}`)
        .catch(() => this.reconnect());
    }
  }

  subscriptionsPath(connection) {
    return `/api/v1/realtime/connections/${connection.id}/subscriptions`;
  }

  /** Adds a subscription to the open stream. */
  send(subscription) {
    const connection = this.connection;
    if (subscription instanceof Presence) subscription.buffered = [];
    const body = subscription instanceof Presence ? { presence: true } : subscription.body();
    this.request('POST', this.subscriptionsPath(connection), body, connection).then(
      () => this.joined(subscription),
      (error) => {
        // A 404 while the stream is open is the subscription's (no such
        // collection); once it has ended, the stream's.
        const streamGone = error.status === 404 && this.connection !== connection;
        if (error.status === 409 || streamGone) {
          // Already carried after a reconnect, or the stream is gone.
          this.reconnect(error);
        } else {
          this.topics.delete(subscription.topic);
          if (subscription.set) subscription.set({ status: 'error', error });
        }
      },
    );
  }

  /** A subscription is on the stream: presence reads the list now. */
  joined(subscription) {
    // A live query is synced by its snapshot, which may come before this.
    if (subscription instanceof Listener) subscription.synced = true;
    if (subscription instanceof Presence) this.loadPresence(subscription);
  }

  /** Reads who is online, then applies the joins and leaves that came meanwhile; retried until it is read. */
  async loadPresence(presence) {
    presence.buffered = presence.buffered || [];
    const connection = this.connection;
    try {
      const list = await this.request('GET', '/api/v1/presence');
      presence.byId = new Map(list.users.map((user) => [user.user_id, user]));
    } catch (error) {
      // The events stay buffered until the list is read.
      presence.set({ status: 'error', error });
      presence.retry = (presence.retry || 0) + 1;
      setTimeout(() => {
        if (this.connection === connection && this.topics.get('presence') === presence) this.loadPresence(presence);
      }, Math.min(this.retry.max, this.retry.initial * 2 ** presence.retry));
      return;
    }
    presence.retry = 0;
    const buffered = presence.buffered;
    presence.buffered = null;
    for (const [type, data] of buffered) presence.apply(type, data);
    presence.publish('live');
    presence.synced = true;
  }

  async credentials() {
    if (typeof this.auth === 'function') {
      const given = await this.auth();
      return typeof given === 'string' ? { token: given } : given || {};
    }
    return typeof this.auth === 'string' ? { token: this.auth } : {};
  }

  /** A JSON request with the hub's token (and the stream's secret, or other headers). */
  async request(method, path, body, connection = this.connection, extra = {}) {
    const { token } = await this.credentials();
    const headers = { ...extra };
    if (token) headers.authorization = `Bearer ${token}`;
    if (connection && connection.secret) headers['x-connection-secret'] = connection.secret;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await this.fetch(this.url + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (_) {
      // Not JSON (a proxy's page): the status says enough.
    }
    if (!response.ok) {
      const error = new Error((json && json.error && json.error.message) || response.statusText);
      error.status = response.status;
      error.code = json && json.error && json.error.code;
      throw error;
    }
    return json;
  }

  /** The stream's URL: what can resume goes in it; the rest is added. */
  async streamUrl() {
    const resuming = this.lastEventId !== null;
    const carried = [...this.topics.values()].filter((subscription) => {
      if (subscription instanceof Presence) return resuming && subscription.synced;
      if (resuming) return subscription.synced;
      return !(subscription instanceof LiveQuery && subscription.options.limit);
    });
    const params = new URLSearchParams();
    const collections = [];
    const channels = [];
    for (const subscription of carried) {
      if (subscription instanceof Presence) params.set('presence', 'true');
      else if (subscription.kind === 'channel') channels.push(subscription.name);
      else {
        const key = subscription.topic.slice('collection:'.length);
        collections.push(key);
        if (subscription.options.query) params.set(`filter.${key}`, subscription.options.query);
        const { fields } = subscription.body();
        if (fields) params.set(`fields.${key}`, fields);
        if (subscription.diffs && subscription.diffs()) params.set(`diff.${key}`, 'true');
      }
    }
    if (collections.length === 0 && channels.length === 0) {
      // A stream carries at least one topic: the first to be added.
      return { url: null, carried: [] };
    }
    if (collections.length) params.set('collections', collections.join(','));
    if (channels.length) params.set('channels', channels.join(','));
    if (resuming) params.set('last_event_id', this.lastEventId);
    else if (collections.length) params.set('snapshot', 'true');
    return this.withCredentials(params, carried);
  }

  async open() {
    // Opening now supersedes a reconnect that was waiting for its backoff.
    clearTimeout(this.timer);
    if (this.closed || this.topics.size === 0 || (this.tabs && !this.tabs.leader)) return;
    this.status.set({ state: this.attempt ? 'reconnecting' : 'connecting' });
    this.opening = true;
    let plan;
    try {
      // What this user's persisted live queries held, and from where.
      if (this.storage && !this.restored && this.lastEventId === null) {
        // Once: after a `reset` the stored state is what the server refused.
        this.restored = true;
        await this.storage.restore();
      }
      // After a refusal of several at once, one at a time finds the culprit.
      plan = this.oneAtATime ? { url: null } : await this.streamUrl();
      if (!plan.url) plan = await this.firstTopicUrl();
    } catch (error) {
      this.opening = false;
      this.reconnect(error);
      return;
    }
    this.opening = false;
    if (this.closed || this.topics.size === 0 || this.source) return;
    const source = new this.EventSource(plan.url);
    this.source = source;
    this.carried = new Set(plan.carried);
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (message) => {
        if (this.source !== source) return;
        if (message.lastEventId) this.lastEventId = message.lastEventId;
        this.dispatch(type, message.data ? JSON.parse(message.data) : null);
      });
    }
    source.onerror = () => {
      if (this.source !== source) return;
      if (!this.connection) {
        // Refused before it opened: EventSource hides why, so ask.
        this.diagnose(source, plan);
        return;
      }
      // The browser would retry the same URL (a spent ticket, an old
      // token): this hub retries itself.
      this.reconnect(new Error('the stream broke'));
    };
  }

  /**
   * Why a stream was refused. A refusal that asking again cannot change
   * (400, 403, 404: a bad filter, a rule, no such collection) puts the
   * subscriptions it carried in `error` and drops them from the stream;
   * anything else (401: a spent or expired ticket, 429, 5xx, no network)
   * is retried with fresh credentials after a backoff.
   */
  async diagnose(source, plan) {
    source.close();
    let response = null;
    const controller = new AbortController();
    try {
      // Asked again with fresh credentials: the refused request may have
      // spent its ticket.
      const url = new URL(plan.url, globalThis.location ? globalThis.location.href : undefined);
      url.searchParams.delete('ticket');
      url.searchParams.delete('token');
      const headers = { accept: 'text/event-stream' };
      const { token, ticket } = await this.credentials();
      if (token) headers.authorization = `Bearer ${token}`;
      else if (ticket) url.searchParams.set('ticket', ticket);
      response = await this.fetch(url.href, { headers, signal: controller.signal });
    } catch (_) {
      // No network: retried below.
    }
    if (this.source !== source) {
      controller.abort();
      return;
    }
    const status = response ? response.status : 0;
    if (![400, 403, 404].includes(status)) {
      controller.abort();
      this.source = null;
      this.reconnect(new Error(status ? `the stream was refused with ${status}` : 'the server is unreachable'));
      return;
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      // Not JSON.
    }
    const error = (body && body.error) || { message: `refused with ${status}` };
    this.source = null;
    if (plan.carried.length > 1) {
      this.oneAtATime = true;
      this.open();
      return;
    }
    for (const subscription of plan.carried) {
      this.topics.delete(subscription.topic);
      if (subscription.set) subscription.set({ status: 'error', error });
    }
    this.open();
  }

  /** With nothing resumable, the URL of one subscription on its own. */
  async firstTopicUrl() {
    const first = [...this.topics.values()].find((subscription) => !(subscription instanceof Presence));
    if (!first) {
      // Presence alone: carried by the stream of every collection, filtered to nothing.
      const params = new URLSearchParams({ presence: 'true', query: 'false' });
      return this.withCredentials(params, []);
    }
    const body = first.body();
    const params = new URLSearchParams();
    if (body.channel) params.set('channels', body.channel);
    else {
      const key = first.topic.slice('collection:'.length);
      params.set('collections', key);
      if (body.query) params.set(`filter.${key}`, body.query);
      if (body.fields) params.set(`fields.${key}`, body.fields);
      if (body.diff) params.set(`diff.${key}`, 'true');
      if (body.snapshot) params.set('snapshot', 'true');
      if (body.snapshot_limit) {
        params.set('snapshot_limit', String(body.snapshot_limit));
        params.set('snapshot_sort', body.snapshot_sort);
      }
    }
    return this.withCredentials(params, [first]);
  }

  async withCredentials(params, carried) {
    const { token, ticket } = await this.credentials();
    if (ticket) params.set('ticket', ticket);
    else if (token) params.set('token', token);
    return { url: `${this.url}/api/v1/realtime?${params}`, carried };
  }

  /** Closes the stream and opens it again after a backoff with jitter; `error` says why. */
  reconnect(error = null) {
    if (this.closed) return;
    if (this.source) this.source.close();
    this.source = null;
    this.connection = null;
    clearTimeout(this.timer);
    const ceiling = Math.min(this.retry.max, this.retry.initial * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.status.set({ state: 'reconnecting', connection: null, error });
    this.timer = setTimeout(() => this.open(), delay);
  }

  /** The subscription a record event is for: its view, or the collection's own. */
  routed(data) {
    return this.topics.get(data.subscription || `collection:${data.collection}`);
  }

  dispatch(type, data) {
    if (this.onEvent) this.onEvent(type, data);
    switch (type) {
      case 'connected':
        return this.connected(data);
      case 'reset':
        // The changes since the last id are gone: start afresh.
        this.lastEventId = null;
        for (const subscription of this.topics.values()) subscription.synced = false;
        this.attempt = 0;
        return this.reconnectNow();
      case 'forced_logout':
        if (this.storage) this.storage.clear();
        return this.reconnectNow();
      case 'token.expired':
        return this.reconnectNow();
      case 'node.leaving':
        // Its node is shutting down: back (to another node, behind a
        // balancer) after the delay it gave, which spreads its streams.
        if (this.source) this.source.close();
        this.source = null;
        this.connection = null;
        clearTimeout(this.timer);
        this.attempt = 0;
        this.status.set({ state: 'reconnecting', connection: null, error: null });
        this.timer = setTimeout(() => this.open(), Number(data && data.reconnect_in_ms) || 0);
        return;
      case 'record.snapshot': {
        const query = this.routed(data);
        if (query instanceof LiveQuery) query.snapshotRecord(data.data);
        return;
      }
      case 'snapshot.done':
        for (const subscription of this.topics.values()) {
          if (subscription instanceof LiveQuery && subscription.staged) {
            subscription.endSnapshot();
            subscription.synced = true;
          }
        }
        return;
      case 'subscription.added': {
        const subscription = this.topics.get(data.id);
        if (subscription instanceof LiveQuery && data.snapshot) subscription.beginSnapshot();
        return;
      }
      case 'subscription.refused': {
        const subscription = this.topics.get(data.id);
        if (subscription && subscription.set) subscription.set({ status: 'error', error: data.error });
        return;
      }
      case 'channel.message': {
        const channel = this.topics.get(`channel:${data.channel}`);
        if (channel) channel.call(data.data, data);
        return;
      }
      case 'user.joined':
      case 'user.left': {
        const presence = this.topics.get('presence');
        if (presence) presence.apply(type, data.data);
        return;
      }
      default:
        if (data && data.collection) {
          // A record's event is for one subscription; a collection's, for all of its.
          const targets = data.record_id
            ? [this.routed(data)]
            : [...this.topics.values()].filter((s) => (s.collection || s.name) === data.collection && s.kind !== 'channel');
          for (const subscription of targets) {
            if (subscription instanceof LiveQuery) {
              if (subscription.apply(type, data)) this.refill(subscription);
            } else if (subscription) {
              subscription.call(data, type);
            }
          }
          if (data.record_id) this.writes.seen(data.collection, data.record_id, type, data.data);
        }
    }
  }

  reconnectNow() {
    if (this.source) this.source.close();
    this.source = null;
    this.connection = null;
    clearTimeout(this.timer);
    this.open();
  }

  connected(data) {
    this.attempt = 0;
    this.oneAtATime = false;
    this.connection = { id: data.connection_id, secret: data.connection_secret };
    this.status.set({ state: 'open', connection: data.connection_id, error: null });
    const carried = this.carried;
    for (const subscription of carried) {
      if (subscription instanceof LiveQuery && data.snapshot) subscription.beginSnapshot();
      if (subscription instanceof Presence) this.loadPresence(subscription);
      if (subscription instanceof Listener) subscription.synced = true;
    }
    if (!data.snapshot) {
      for (const subscription of carried) {
        if (subscription instanceof LiveQuery && subscription.synced) subscription.publish('live');
      }
    }
    for (const subscription of this.topics.values()) {
      if (!carried.has(subscription)) {
        // Not carried by the stream's URL: added now, with its own snapshot.
        subscription.synced = false;
        this.send(subscription);
      }
    }
    this.writes.wake();
  }

  /** A first-N query lost a member: read its first N again. */
  refill(query) {
    const connection = this.connection;
    if (!connection || query.refilling) return;
    query.refilling = true;
    query.synced = false;
    const path = `${this.subscriptionsPath(connection)}/${encodeURIComponent(query.topic)}`;
    this.request('DELETE', path)
      .then(() => this.request('POST', this.subscriptionsPath(connection), query.body()))
      .catch((error) => this.reconnect(error))
      .finally(() => {
        query.refilling = false;
      });
  }

  /** Stores a persisted live query's records, soon (see `Storage`). */
  persistLater(query) {
    if (this.storage && (query.options.persist ?? this.options.persist)) this.storage.later(query);
  }
}

/**
 * Writes made with `hub.collection(name)`: each is applied at once to every
 * live query it affects (listed in its `pending`), then sent, one at a time
 * in the order made, with an `Idempotency-Key`. A write whose answer is lost
 * (no network, a 5xx, a 429) is sent again with the same key, so the server
 * applies it once; one the server refuses is rolled back, its promise
 * rejects and `onWriteError` hears of it. An answered write stays laid over
 * the server's records until the stream brings its change (or a few seconds
 * pass), so nothing flickers back. With `persist`, writes not yet answered
 * are stored and sent after a reload.
 */
class Writes {
  constructor(hub) {
    this.hub = hub;
    this.queue = [];
    this.sending = false;
    this.failures = 0;
    this.waiting = null;
    globalThis.addEventListener?.('online', () => this.wake());
  }

  add(write) {
    write.key = write.key || newId();
    const done = new Promise((resolve, reject) => Object.assign(write, { resolve, reject }));
    this.queue.push(write);
    this.changed(write.collection);
    this.drain();
    return done;
  }

  /** Re-sends the writes a reload left unanswered (`persist`). */
  async restore() {
    for (const write of await this.hub.storage.writes()) {
      if (!this.queue.some((held) => held.key === write.key)) this.add(write).catch(() => {});
    }
  }

  /** Ends a backoff early: the network or the stream is back. */
  wake() {
    if (this.waiting) this.waiting();
  }

  async drain() {
    if (this.sending) return;
    this.sending = true;
    try {
      for (;;) {
        // Its own binding: the timer below must settle this write, not the next.
        const write = this.queue.find((held) => !held.answered);
        if (!write) break;
        try {
          const answer = await this.hub.request(write.method, write.path, write.kind === 'delete' ? undefined : write.data, null, {
            'idempotency-key': write.key,
          });
          this.failures = 0;
          write.answered = true;
          write.answer = answer;
          write.resolve(answer);
          // Kept over the server's records until the stream brings the change.
          if (this.arrived(write)) this.settle(write);
          else {
            write.timer = setTimeout(() => this.settle(write), 5000);
            this.changed(write.collection);
          }
        } catch (error) {
          // 409 on a retry: the first attempt may still be running.
          const lost = !error.status || error.status >= 500 || error.status === 429
            || (error.status === 409 && write.sent && (write.conflicts = (write.conflicts || 0) + 1) < 5);
          write.sent = true;
          if (lost) {
            await this.backoff();
          } else {
            this.settle(write);
            write.reject(error);
            if (this.hub.options.onWriteError) this.hub.options.onWriteError(error, write);
          }
        }
      }
    } finally {
      this.sending = false;
    }
  }

  backoff() {
    this.failures += 1;
    const ceiling = Math.min(this.hub.retry.max, this.hub.retry.initial * 2 ** this.failures);
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ceiling / 2 + Math.random() * (ceiling / 2));
      this.waiting = () => {
        clearTimeout(timer);
        this.waiting = null;
        resolve();
      };
    });
  }

  /** The stream brought a change of a record: an answered write of it whose change this is ends. */
  seen(collection, id, type, data) {
    for (const write of this.queue) {
      if (!write.answered || write.collection !== collection || write.id !== id) continue;
      const arrived = write.kind === 'delete' ? type === 'record.deleted' : type !== 'record.deleted' && same(data, write.answer);
      if (arrived) this.settle(write);
    }
  }

  /** Ends the answered writes of `collection` whose change the live queries now show. */
  recheck(collection) {
    for (const write of [...this.queue]) {
      if (write.answered && write.collection === collection && this.arrived(write)) this.settle(write);
    }
  }

  /** Whether the stream brought an answered write's change before its answer came. */
  arrived(write) {
    const queries = [...this.hub.topics.values()].filter((query) => query instanceof LiveQuery && query.collection === write.collection);
    if (write.kind === 'delete') return queries.every((query) => !query.byId.has(write.id));
    return queries.some((query) => same(query.byId.get(write.id), write.answer));
  }

  /** Removes a write: answered and seen, or refused (rolled back). */
  settle(write) {
    clearTimeout(write.timer);
    const at = this.queue.indexOf(write);
    if (at < 0) return;
    this.queue.splice(at, 1);
    this.changed(write.collection);
  }

  changed(collection) {
    this.save();
    for (const subscription of this.hub.topics.values()) {
      if (subscription instanceof LiveQuery && subscription.collection === collection) {
        subscription.publish(subscription.value.status, subscription.value.error);
      }
    }
  }

  save() {
    if (this.hub.storage && this.hub.options.persist) this.hub.storage.saveWrites(this.queue.filter((write) => !write.answered));
  }

  /** Lays the pending writes of `query`'s collection over `records` (in place); the ids they touch. */
  overlay(query, records) {
    const pending = [];
    for (const write of this.queue) {
      if (write.collection !== query.collection) continue;
      const at = records.findIndex((record) => record.id === write.id);
      if (write.kind === 'delete') {
        if (at >= 0) records.splice(at, 1);
        else continue;
      } else {
        const merged = write.answer || (at >= 0 ? mergePatch(records[at], write.data) : write.data);
        // Without `match`, a filtered query keeps what it holds and takes nothing new.
        const fits = query.options.match || at < 0 ? query.accepts(merged) : true;
        if (at >= 0 && fits) records[at] = merged;
        else if (at >= 0) records.splice(at, 1);
        else if (fits && write.kind === 'create') records.push(merged);
        else continue;
      }
      pending.push(write.id);
    }
    return pending;
  }
}

/** A new record id: a lower-case ULID, as the server makes them (so ids sort by creation). */
function newId() {
  const digits = '0123456789abcdefghjkmnpqrstvwxyz';
  let time = Date.now();
  let id = '';
  for (let i = 0; i < 10; i += 1) {
    id = digits[time % 32] + id;
    time = Math.floor(time / 32);
  }
  for (const byte of globalThis.crypto.getRandomValues(new Uint8Array(16))) id += digits[byte % 32];
  return id;
}

/**
 * Persisted live queries (`persist: true`), in IndexedDB: each query's
 * records with the stream position they are exact at, per user (the token's
 * `sub`, or the hub's `user` option) and server. A reload shows them at once
 * and resumes the stream from the earliest position among them, so the
 * server sends only what changed (a `reset` brings a fresh snapshot);
 * replaying changes a query already holds is harmless. State older than
 * `maxAge` (default 24 h, the server's default retention) is not used.
 */
class Storage {
  constructor(hub) {
    this.hub = hub;
    this.timers = new Map();
    this.database = null;
  }

  db() {
    this.database = this.database || new Promise((resolve, reject) => {
      const request = indexedDB.open('livehub', 1);
      request.onupgradeneeded = () => {
        request.result.createObjectStore('queries');
        request.result.createObjectStore('writes');
      };
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    return this.database;
  }

  async run(store, mode, act) {
    const db = await this.db();
    return new Promise((resolve, reject) => {
      const transaction = db.transaction(store, mode);
      const request = act(transaction.objectStore(store));
      transaction.oncomplete = () => resolve(request && request.result);
      transaction.onerror = () => reject(transaction.error);
    });
  }

  /** Whose and which server's state this is. */
  async owner() {
    let user = this.hub.options.user;
    if (!user) {
      const { token } = await this.hub.credentials();
      try {
        const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
        user = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, '='))).sub;
      } catch (_) {
        // Not a JWT.
      }
    }
    return `${user || 'anonymous'} ${this.hub.url || globalThis.location?.origin}`;
  }

  /** Gives the persisted live queries that are not live yet their stored records and position. */
  async restore() {
    const owner = await this.owner();
    const maxAge = this.hub.options.maxAge ?? 86400000;
    let earliest = null;
    for (const query of this.hub.topics.values()) {
      if (!(query instanceof LiveQuery) || query.synced || !(query.options.persist ?? this.hub.options.persist)) continue;
      let stored = null;
      try {
        stored = await this.run('queries', 'readonly', (store) => store.get(`${owner} ${query.signature}`));
      } catch (_) {
        // No storage (a private window): a snapshot it is.
      }
      if (!stored || Date.now() - stored.saved > maxAge || query.synced) continue;
      query.hold(stored.records);
      if (earliest === null || stored.position < earliest) earliest = stored.position;
    }
    if (earliest !== null && this.hub.lastEventId === null) this.hub.lastEventId = earliest;
  }

  /** Stores `query` a moment after its last change, if it is exact then. */
  later(query) {
    if (this.cleared || this.timers.has(query)) return;
    this.timers.set(query, setTimeout(() => {
      this.timers.delete(query);
      const position = this.hub.lastEventId;
      // Mid-snapshot, or reading its first N again: not exact now.
      if (this.cleared || !query.synced || query.staged || query.refilling || position === null || query.value.status !== 'live') return;
      const records = [...query.byId.values()];
      this.owner().then((owner) => this.run('queries', 'readwrite', (store) =>
        store.put({ records, position, saved: Date.now() }, `${owner} ${query.signature}`))).catch(() => {});
    }, 200));
  }

  async writes() {
    const owner = await this.owner();
    try {
      return (await this.run('writes', 'readonly', (store) => store.get(owner))) || [];
    } catch (_) {
      return [];
    }
  }

  saveWrites(writes) {
    if (this.cleared) return;
    const kept = writes.map(({ key, kind, collection, id, data, method, path }) => ({ key, kind, collection, id, data, method, path }));
    this.owner().then((owner) => this.run('writes', 'readwrite', (store) => store.put(kept, owner))).catch(() => {});
  }

  /** Deletes everything stored for the current user of this server; this hub stores nothing more (its user signed out). */
  async clear() {
    this.cleared = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    const owner = await this.owner();
    const range = IDBKeyRange.bound(`${owner} `, `${owner} \uffff`);
    await this.run('queries', 'readwrite', (store) => store.delete(range));
    await this.run('writes', 'readwrite', (store) => store.delete(owner));
  }
}

/**
 * Tabs of one origin sharing one stream (`shared: true`). The tab holding
 * the Web Lock `livehub <server>` leads: its hub runs the stream. The others
 * send it their subscriptions over a BroadcastChannel and mirror the states
 * (and events) it sends back; each keeps its own pending writes. A tab holds
 * a lock of its own for its life, so the leader learns when it closes and
 * drops its subscriptions. When the leader closes, the next tab waiting for
 * the lock leads, opens the stream, and the others send their
 * subscriptions again.
 */
class Tabs {
  constructor(hub) {
    this.hub = hub;
    this.id = newId();
    this.leader = false;
    this.next = 0;
    this.mine = new Map(); // ref -> this tab's subscription, while following
    this.theirs = new Map(); // `tab ref` -> the leader's subscription for another tab
    this.name = `livehub ${hub.url || globalThis.location?.origin}`;
    this.channel = new BroadcastChannel(this.name);
    this.channel.onmessage = (message) => this.receive(message.data);
    // This tab's own lock, held before it says a word: a leader that asks
    // for it is granted it only once the tab is gone.
    this.alive = new Promise((held) => navigator.locks.request(`${this.name} tab ${this.id}`, () => {
      held();
      return new Promise(() => {});
    }));
    navigator.locks.request(this.name, () => new Promise((resolve) => {
      this.abdicate = resolve;
      this.lead();
    }));
  }

  post(message) {
    this.alive.then(() => this.channel.postMessage(message));
  }

  /** A subscription made in this tab while another leads. */
  follow(subscription) {
    if (subscription.ref === undefined) subscription.ref = (this.next += 1);
    this.mine.set(subscription.ref, subscription);
    const kind = subscription instanceof LiveQuery ? 'live' : subscription instanceof Presence ? 'presence' : subscription.kind;
    const { match, initial, ...options } = subscription.options || {};
    this.post({ op: 'add', tab: this.id, ref: subscription.ref, kind, name: subscription.collection || subscription.name, options });
  }

  unfollow(subscription) {
    this.mine.delete(subscription.ref);
    this.post({ op: 'remove', tab: this.id, ref: subscription.ref });
  }

  lead() {
    this.leader = true;
    const hub = this.hub;
    for (const subscription of hub.topics.values()) subscription.synced = false;
    this.mine.clear();
    hub.status.subscribe((status) => this.post({ op: 'status', status }));
    hub.open();
    this.post({ op: 'leader' });
  }

  receive(message) {
    const hub = this.hub;
    if (message.op === 'leader' && !this.leader) {
      for (const subscription of this.mine.values()) this.follow(subscription);
    } else if (message.op === 'status' && !this.leader) {
      hub.status.set({ ...message.status, shared: true });
    } else if (message.tab === this.id && !this.leader) {
      const subscription = this.mine.get(message.ref);
      if (!subscription) return;
      if (message.op === 'state' && subscription instanceof LiveQuery) {
        subscription.byId = new Map(message.state.records.map((record) => [record.id, record]));
        subscription.publish(message.state.status, message.state.error);
        // The leader's stream may have brought this tab's own writes.
        hub.writes.recheck(subscription.collection);
      } else if (message.op === 'state') {
        subscription.set(message.state);
      } else if (message.op === 'event') {
        subscription.call(...message.args);
      }
    } else if (this.leader && message.op === 'add') {
      this.serve(message);
    } else if (this.leader && message.op === 'remove') {
      this.drop(`${message.tab} ${message.ref}`);
    }
  }

  /** As leader: subscribes on behalf of another tab, and sends it what comes. */
  serve({ tab, ref, kind, name, options }) {
    const key = `${tab} ${ref}`;
    if (this.theirs.has(key)) return;
    if (![...this.theirs.keys()].some((other) => other.startsWith(`${tab} `))) {
      this.post({ op: 'status', status: this.hub.status.getSnapshot() });
      // Granted once that tab is gone: its subscriptions go with it.
      navigator.locks.request(`${this.name} tab ${tab}`, () => {
        for (const other of [...this.theirs.keys()]) if (other.startsWith(`${tab} `)) this.drop(other);
      });
    }
    const hub = this.hub;
    const send = (op, body) => this.post({ op, tab, ref, ...body });
    let entry;
    if (kind === 'live' || kind === 'presence') {
      const store = kind === 'live' ? hub.liveQuery(name, options) : hub.presence();
      // A live query's records as the server has them: each tab lays its own writes over them.
      const state = (value) => (kind === 'live' ? { ...value, records: [...store.byId.values()], pending: [] } : value);
      const stop = store.subscribe((value) => send('state', { state: state(value) }));
      send('state', { state: state(store.getSnapshot()) });
      entry = { close: () => { stop(); store.close(); } };
    } else {
      const call = (...args) => send('event', { args });
      entry = kind === 'channel' ? hub.channel(name, call) : hub.events(name, options, call);
    }
    this.theirs.set(key, entry);
  }

  drop(key) {
    const entry = this.theirs.get(key);
    this.theirs.delete(key);
    if (entry) entry.close();
  }

  /** The hub closed: the leader drops this tab's subscriptions, another tab may lead. */
  close() {
    for (const subscription of [...this.mine.values()]) this.unfollow(subscription);
    this.alive.then(() => this.channel.close());
    if (this.abdicate) this.abdicate();
  }
}

/** Applies an RFC 7396 merge patch. */
function mergePatch(target, patch) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}
