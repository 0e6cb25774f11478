// livehub-vue.js: Vue composables over livehub.js, served at /livehub-vue.js.
// They take Vue from the host app, so the page keeps one copy of it:
//
//   import * as Vue from 'vue';
//   import { connect } from '/livehub.js';
//   import { createComposables } from '/livehub-vue.js';
//   const hub = connect({ auth: getToken });
//   const { useLiveQuery } = createComposables(Vue);
//   // in setup(): const posts = useLiveQuery(hub, 'posts', { query: 'status = "published"' });
//   // in the template: <li v-for="post in posts.records" :key="post.id">{{ post.title }}</li>

export function createComposables(Vue) {
  const { shallowRef, onScopeDispose, getCurrentScope } = Vue;

  /** A ref that holds the store's state for as long as the calling scope lives. */
  function useStore(store) {
    const state = shallowRef(store.getSnapshot());
    const stop = store.subscribe((value) => {
      state.value = value;
    });
    if (getCurrentScope()) {
      onScopeDispose(() => {
        stop();
        store.close();
      });
    }
    return state;
  }

  /** A ref of `{records, status, error}` of a live query. */
  function useLiveQuery(hub, collection, options = {}) {
    return useStore(hub.liveQuery(collection, options));
  }

  /** A ref of `{users, status}`: who is online. */
  function usePresence(hub) {
    return useStore(hub.presence());
  }

  return { useLiveQuery, usePresence };
}
