// livehub.js: the browser client of livehub, served at /livehub.js.
//
// One EventSource per hub carries every subscription of the page: live
// queries (a collection's matching records, kept exact from a snapshot and
// every change), change events, channels and presence. Subscriptions made
// while the stream is open are added to it (POST .../subscriptions); when
// the stream breaks, the hub reconnects with backoff and jitter, asks for
// fresh credentials, resumes from the last event id, and on `reset` takes
// a fresh snapshot. Types: /livehub.d.ts. No dependencies.

const EVENT_TYPES = [
  'connected', 'reset', 'record.created', 'record.updated', 'record.deleted',
  'record.snapshot', 'snapshot.done', 'collection.created', 'collection.updated',
  'collection.deleted', 'channel.message', 'user.joined', 'user.left',
  'system.announcement', 'forced_logout', 'token.expired',
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
 * `{records, status, error}`, is replaced (never mutated) on each change.
 */
class LiveQuery extends Store {
  constructor(hub, collection, options) {
    super({ records: [], status: 'loading', error: null });
    this.hub = hub;
    this.collection = collection;
    this.options = options;
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
    if (this.options.limit && records.length > this.options.limit) {
      // Only the first N are the result; the rest are dropped.
      for (const record of records.slice(this.options.limit)) this.byId.delete(record.id);
      records = records.slice(0, this.options.limit);
    }
    this.set({ records, status, error });
  }
}

/** Who is online: `{users, status}`, users sorted by id. */
class Presence extends Store {
  constructor(hub) {
    super({ users: [], status: 'loading' });
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
  publish(status) {
    const users = [...this.byId.values()].sort((a, b) => (a.user_id < b.user_id ? -1 : 1));
    this.set({ users, status });
  }
}

/** A subscription of change events (or channel messages) to a callback. */
class Listener {
  constructor(hub, kind, name, options, callback) {
    Object.assign(this, { hub, kind, name, options, callback });
  }
  close() {
    this.hub.release(this);
  }
  /** Publishes a message to this channel. */
  publish(message) {
    return this.hub.request('POST', `/api/v1/channels/${encodeURIComponent(this.name)}/messages`, message);
  }
  body() {
    if (this.kind === 'channel') return { channel: this.name };
    const body = { collection: this.name };
    if (this.options.query) body.query = this.options.query;
    if (this.options.fields) body.fields = this.options.fields;
    return body;
  }
}

export class Hub {
  constructor(options) {
    this.url = (options.url || '').replace(/\/$/, '');
    this.auth = options.auth;
    this.EventSource = options.EventSource || globalThis.EventSource;
    this.fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this.retry = { initial: 500, max: 30000, ...(options.retry || {}) };
    this.onEvent = options.onEvent || null;
    // Subscriptions by topic id (`collection:posts`, `channel:x`, `presence`);
    // each topic is carried once per stream. A second live query of a
    // collection, with other options, goes on an extra hub of its own.
    this.topics = new Map();
    this.extra = null;
    this.source = null;
    this.connection = null;
    this.lastEventId = null;
    this.attempt = 0;
    this.timer = null;
    this.closed = false;
    this.status = new Store({ state: 'idle', connection: null });
  }

  /** A live query of `collection`: options `query`, `fields`, `limit`, `sort`. */
  liveQuery(collection, options = {}) {
    const id = `collection:${collection}`;
    const existing = this.topics.get(id);
    if (existing && !(existing instanceof LiveQuery && same(existing.options, options))) {
      return this.extraHub().liveQuery(collection, options);
    }
    if (existing) {
      existing.users += 1;
      return existing;
    }
    return this.add(id, new LiveQuery(this, collection, options));
  }

  /** Every change event of `collection` (options `query`, `fields`) to `callback`. */
  events(collection, options, callback) {
    const id = `collection:${collection}`;
    if (this.topics.has(id)) return this.extraHub().events(collection, options, callback);
    return this.add(id, new Listener(this, 'collection', collection, options || {}, callback));
  }

  /** The messages of a channel to `callback`; `.publish(message)` sends one. */
  channel(name, callback) {
    const id = `channel:${name}`;
    if (this.topics.has(id)) return this.extraHub().channel(name, callback);
    return this.add(id, new Listener(this, 'channel', name, {}, callback));
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

  /** Closes the stream and every subscription. */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
    if (this.extra) this.extra.close();
    this.status.set({ state: 'closed' });
  }

  extraHub() {
    if (!this.extra) {
      this.extra = new Hub({
        url: this.url, auth: this.auth, EventSource: this.EventSource,
        fetch: this.fetch, retry: this.retry, onEvent: this.onEvent,
      });
    }
    return this.extra;
  }

  add(id, subscription) {
    subscription.topic = id;
    subscription.users = 1;
    subscription.synced = false;
    this.topics.set(id, subscription);
    // While the stream opens, it is added once `connected` comes.
    if (!this.source && !this.opening) this.open();
    else if (this.connection) this.send(subscription);
    return subscription;
  }

  /** Drops one user of a subscription; the last one removes it. */
  release(subscription) {
    if (this.topics.get(subscription.topic) !== subscription) return;
    subscription.users -= 1;
    if (subscription.users > 0) return;
    this.topics.delete(subscription.topic);
    if (this.topics.size === 0) {
      // Nothing left to carry: the stream closes until a new subscription.
      if (this.source) this.source.close();
      this.source = null;
      this.connection = null;
      this.lastEventId = null;
      this.status.set({ state: 'idle', connection: null });
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
        if (error.status === 409 || error.status === 404) {
          // Already carried after a reconnect, or the stream is gone.
          this.reconnect();
        } else if (subscription.set) {
          subscription.set({ status: 'error', error });
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

  async loadPresence(presence) {
    presence.buffered = presence.buffered || [];
    try {
      const list = await this.request('GET', '/api/v1/presence');
      presence.byId = new Map(list.users.map((user) => [user.user_id, user]));
    } catch (error) {
      presence.set({ status: 'error', error });
    }
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

  /** A JSON request with the hub's token (and the stream's secret). */
  async request(method, path, body, connection = this.connection) {
    const { token } = await this.credentials();
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (connection && connection.secret) headers['x-connection-secret'] = connection.secret;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await this.fetch(this.url + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    const json = text ? JSON.parse(text) : null;
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
        const name = subscription.collection || subscription.name;
        collections.push(name);
        if (subscription.options.query) params.set(`filter.${name}`, subscription.options.query);
        if (subscription.options.fields) params.set(`fields.${name}`, subscription.options.fields);
        if (subscription.diffs && subscription.diffs()) params.set(`diff.${name}`, 'true');
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
    const { token, ticket } = await this.credentials();
    if (ticket) params.set('ticket', ticket);
    else if (token) params.set('token', token);
    return { url: `${this.url}/api/v1/realtime?${params}`, carried };
  }

  async open() {
    // Opening now supersedes a reconnect that was waiting for its backoff.
    clearTimeout(this.timer);
    if (this.closed || this.topics.size === 0) return;
    this.status.set({ state: this.attempt ? 'reconnecting' : 'connecting' });
    this.opening = true;
    let plan;
    try {
      // After a refusal of several at once, one at a time finds the culprit.
      plan = this.oneAtATime ? { url: null } : await this.streamUrl();
      if (!plan.url) plan = await this.firstTopicUrl();
    } catch (error) {
      this.opening = false;
      this.reconnect(error);
      return;
    }
    this.opening = false;
    if (this.closed || this.topics.size === 0) return;
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
      this.reconnect(new Error('the stream was refused'));
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
      params.set('collections', body.collection);
      if (body.query) params.set('query', body.query);
      if (body.fields) params.set('fields', body.fields);
      if (body.diff) params.set('diff', 'true');
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

  /** Closes the stream and opens it again after a backoff with jitter. */
  reconnect() {
    if (this.closed) return;
    if (this.source) this.source.close();
    this.source = null;
    this.connection = null;
    clearTimeout(this.timer);
    const ceiling = Math.min(this.retry.max, this.retry.initial * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.status.set({ state: 'reconnecting', connection: null });
    this.timer = setTimeout(() => this.open(), delay);
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
      case 'token.expired':
      case 'forced_logout':
        return this.reconnectNow();
      case 'record.snapshot': {
        const query = this.topics.get(`collection:${data.collection}`);
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
        if (channel) channel.callback(data.data, data);
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
          const subscription = this.topics.get(`collection:${data.collection}`);
          if (subscription instanceof LiveQuery) {
            if (subscription.apply(type, data)) this.refill(subscription);
          } else if (subscription) {
            subscription.callback(data, type);
          }
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
    this.status.set({ state: 'open', connection: data.connection_id });
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
      if (!carried.has(subscription)) this.send(subscription);
    }
  }

  /** A first-N query lost a member: read its first N again. */
  refill(query) {
    const connection = this.connection;
    if (!connection || query.refilling) return;
    query.refilling = true;
    const path = `${this.subscriptionsPath(connection)}/${encodeURIComponent(query.topic)}`;
    this.request('DELETE', path)
      .then(() => this.request('POST', this.subscriptionsPath(connection), query.body()))
      .catch(() => this.reconnect())
      .finally(() => {
        query.refilling = false;
      });
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
