import type { Hub, LiveQueryOptions, LiveQueryState, PresenceState } from './livehub.js';

export declare function createHooks(React: unknown): {
  useLiveQuery<T = Record<string, unknown>>(hub: Hub, collection: string, options?: LiveQueryOptions): LiveQueryState<T>;
  usePresence(hub: Hub): PresenceState;
};
