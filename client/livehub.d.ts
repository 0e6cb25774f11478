// Types of livehub.js (served at /livehub.d.ts).

/** What `auth` gives: a token (for the stream and requests), a single-use ticket for the stream, or both. */
export type Credentials = string | { token?: string; ticket?: string };

export interface HubOptions {
  /** The server's origin; '' (the default) is the page's own. */
  url?: string;
  /** A token, or a function asked on every (re)connect and request, so expiring tokens and single-use tickets work. */
  auth?: Credentials | (() => Credentials | Promise<Credentials>);
  /** An EventSource implementation (default: the global one), e.g. in Node. */
  EventSource?: { new (url: string): EventSource };
  /** A fetch implementation (default: the global one). */
  fetch?: typeof fetch;
  /** Reconnect backoff in milliseconds: doubles from `initial` up to `max`, with jitter. */
  retry?: { initial?: number; max?: number };
  /** Every stream message, for logging. */
  onEvent?: (type: string, data: unknown) => void;
  /**
   * Keep live queries (those not saying `persist: false`) and writes not yet answered in IndexedDB:
   * a reload shows them at once and takes only the changes since. Stored per user (`user`, or the
   * token's `sub`) and server; `clearPersisted()` forgets them (call it on sign-out).
   */
  persist?: boolean;
  /** Whose stored state this is, when the token is not a JWT with `sub` (e.g. tickets only). */
  user?: string;
  /** Stored state older than this many milliseconds is not used (default 24 h, the server's default retention). */
  maxAge?: number;
  /**
   * Share one stream between the tabs of this origin: one tab leads and runs the stream (a Web Lock),
   * the others receive their live queries, events and presence from it (a BroadcastChannel); when the
   * leader closes, another tab takes over. Without Web Locks or BroadcastChannel, each tab has its own.
   */
  shared?: boolean;
  /** A write the server refused (it was rolled back), or that was stored and could not be sent. */
  onWriteError?: (error: HubError, write: Write) => void;
}

/** What a refusal says: the HTTP status and the server's error code. */
export interface HubError extends Error {
  status?: number;
  code?: string;
}

/** One write of `hub.collection(name)`. */
export interface Write {
  kind: 'create' | 'update' | 'delete';
  collection: string;
  id: string;
  data?: Record<string, unknown>;
  /** Its Idempotency-Key: every attempt sends the same. */
  key: string;
}

/** A change event, as the stream's `data:` carries it. */
export interface ChangeEvent<T = Record<string, unknown>> {
  id: string | null;
  type: string;
  collection: string | null;
  record_id: string | null;
  data?: T;
  left?: boolean;
  timestamp: string;
}

export interface LiveQueryOptions {
  /** A filter in livehub's filter language. */
  query?: string;
  /** Only these fields (and `id`, and the field of `sort`, which the hub sorts by), comma-separated. */
  fields?: string;
  /** Only the first N records by `sort`. */
  limit?: number;
  /**
   * A sort such as `title`, or `-title` for descending (default `id`, or `-id` with `limit`).
   * The server's order: ties are broken by `id` in the same direction, and values of
   * different types sort missing, null, booleans, numbers, strings (by code point), arrays,
   * objects.
   */
  sort?: string;
  /** Updates arrive as merge patches to the record held (less to send); not with `limit`. */
  diff?: boolean;
  /**
   * Whether a record belongs in this query, for optimistic writes: with it, a create or update made with
   * `hub.collection()` shows (or leaves) at once. Without it, a filtered query shows a new record when the
   * server's event comes; one with no `query` shows every create at once.
   */
  match?: (record: any) => boolean;
  /** Keep this query in IndexedDB (default: the hub's `persist`). */
  persist?: boolean;
  /**
   * Records read on the server (`GET /api/v1/collections/{name}/records` gives `items` and `position`):
   * shown at once, and streamed from `position` without a second snapshot (when the hub's stream is not
   * open yet; otherwise the query takes its own snapshot).
   */
  initial?: { records: Record<string, unknown>[]; position: string };
}

export type Status = 'loading' | 'live' | 'error';

export interface LiveQueryState<T> {
  /** The matching records, in the order of `sort`. */
  records: T[];
  status: Status;
  error: { code?: string; message: string } | null;
  /** Ids of records with writes of this page not yet confirmed by the stream (shown as written). */
  pending: string[];
}

/** A store in the shape of React's useSyncExternalStore. */
export interface Store<S> {
  subscribe(listener: (state: S) => void): () => void;
  getSnapshot(): S;
}

export interface LiveQuery<T> extends Store<LiveQueryState<T>> {
  readonly collection: string;
  close(): void;
}

export interface PresentUser {
  user_id: string;
  user_name: string | null;
  connections?: number;
  last_seen?: string;
}

export interface PresenceState {
  users: PresentUser[];
  status: Status;
  /** Why the list could not be read (it is read again). */
  error?: { code?: string; message: string } | null;
}

export interface Presence extends Store<PresenceState> {
  close(): void;
}

export interface Subscription {
  close(): void;
}

export interface Channel<M = unknown> extends Subscription {
  /** Publishes a message to the channel. */
  publish(message: M): Promise<unknown>;
}

export interface ConnectionStatus {
  state: 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';
  connection: string | null;
  /** Why the stream is reconnecting (`null` once open). */
  error?: HubError | null;
  /** Set in a tab whose stream another tab runs (`shared`). */
  shared?: boolean;
}

/** Writes to one collection, applied at once to the live queries they affect; each resolves with the server's answer. */
export interface CollectionWriter<T = Record<string, unknown>> {
  /** Creates a record (its `id`, or a new ULID the page makes). */
  create(record: Partial<T> & Record<string, unknown>): Promise<T>;
  /** Merges `patch` into the record (JSON merge patch: `null` removes a field). */
  update(id: string, patch: Record<string, unknown>): Promise<T>;
  delete(id: string): Promise<null>;
}

export declare class Hub {
  /** The stream's state. */
  readonly status: Store<ConnectionStatus>;
  liveQuery<T = Record<string, unknown>>(collection: string, options?: LiveQueryOptions): LiveQuery<T>;
  events<T = Record<string, unknown>>(
    collection: string,
    options: { query?: string; fields?: string } | null,
    callback: (event: ChangeEvent<T>, type: string) => void,
  ): Subscription;
  channel<M = unknown>(name: string, callback: (message: M, event: unknown) => void): Channel<M>;
  presence(): Presence;
  /**
   * Writes to `name`: shown at once (in `pending`), sent in order with an Idempotency-Key, sent again with
   * the same key when an answer is lost or the network is down, rolled back when the server refuses.
   */
  collection<T = Record<string, unknown>>(name: string): CollectionWriter<T>;
  /** Forgets what this hub stored for its user (records and writes not yet sent). */
  clearPersisted(): Promise<void>;
  close(): void;
}

export declare function connect(options?: HubOptions): Hub;
