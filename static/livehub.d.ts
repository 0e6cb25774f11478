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
}

export type Status = 'loading' | 'live' | 'error';

export interface LiveQueryState<T> {
  /** The matching records, in the order of `sort`. */
  records: T[];
  status: Status;
  error: { code?: string; message: string } | null;
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
  close(): void;
}

export declare function connect(options?: HubOptions): Hub;
