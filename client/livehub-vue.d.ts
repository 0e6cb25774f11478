import type { Hub, LiveQueryOptions, LiveQueryState, PresenceState } from './livehub.js';

export declare function createComposables(Vue: unknown): {
  useLiveQuery<T = Record<string, unknown>>(hub: Hub, collection: string, options?: LiveQueryOptions): { value: LiveQueryState<T> };
  usePresence(hub: Hub): { value: PresenceState };
};
