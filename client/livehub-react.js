// livehub-react.js: React hooks over livehub.js, served at /livehub-react.js.
// They take React from the host app, so the page keeps one copy of it:
//
//   import * as React from 'react';
//   import { connect } from '/livehub.js';
//   import { createHooks } from '/livehub-react.js';
//   const hub = connect({ auth: getToken });
//   const { useLiveQuery, usePresence } = createHooks(React);
//   function Posts() {
//     const { records } = useLiveQuery(hub, 'posts', { query: 'status = "published"' });
//     return records.map((post) => <li key={post.id}>{post.title}</li>);
//   }

export function createHooks(React) {
  const { useCallback, useEffect, useState, useSyncExternalStore } = React;

  /** Subscribes while mounted; renders each new state of the store. */
  function useStore(open, key) {
    const [store, setStore] = useState(null);
    useEffect(() => {
      const opened = open();
      setStore(opened);
      return () => opened.close();
      // `key` says when the subscription must be made anew.
      // eslint-disable-next-line react-hooks/exhaustive-deps
    }, [key]);
    const subscribe = useCallback(
      (listener) => (store ? store.subscribe(listener) : () => {}),
      [store],
    );
    const snapshot = useCallback(() => (store ? store.getSnapshot() : null), [store]);
    return useSyncExternalStore(subscribe, snapshot, snapshot);
  }

  /** `{records, status, error}` of a live query; `records` is [] until loaded. */
  function useLiveQuery(hub, collection, options = {}) {
    const key = JSON.stringify([collection, options]);
    const state = useStore(() => hub.liveQuery(collection, options), key);
    return state || { records: [], status: 'loading', error: null, pending: [] };
  }

  /** `{users, status}`: who is online. */
  function usePresence(hub) {
    const state = useStore(() => hub.presence(), 'presence');
    return state || { users: [], status: 'loading' };
  }

  return { useLiveQuery, usePresence };
}
