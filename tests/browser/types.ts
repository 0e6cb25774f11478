// Uses every option and call of the client package's types, as an app
// that installed it would (`tsc --strict`; tests/api/local_first.rs runs it).
import { connect, type ChangeEvent, type Hub, type LiveQueryState } from 'livehub-client';
import { createHooks } from 'livehub-client/react';
import { createComposables } from 'livehub-client/vue';

interface Post {
  id: string;
  title: string;
  n: number;
}

const hub: Hub = connect({
  url: 'http://127.0.0.1:8080',
  auth: async () => ({ ticket: 't', token: 'x.y.z' }),
  retry: { initial: 100, max: 1000 },
  onEvent: (type: string, data: unknown) => console.log(type, data),
  persist: true,
  user: 'ann',
  maxAge: 3_600_000,
  shared: true,
  onWriteError: (error, write) => console.log(error.status, error.code, write.kind, write.key),
});
const posts = hub.liveQuery<Post>('posts', {
  query: 'n > 1',
  fields: 'title,n',
  limit: 10,
  sort: '-n',
  diff: false,
  match: (post: Post) => post.n > 1,
  persist: false,
  initial: { records: [{ id: 'a', title: 'A', n: 2 }], position: '01a2513a16e5ffffffffffff' },
});
const state: LiveQueryState<Post> = posts.getSnapshot();
const titles: string[] = state.records.map((post) => post.title);
const pending: string[] = state.pending;
const stop: () => void = posts.subscribe((next) => console.log(next.status, next.error?.message));
const events = hub.events<Post>('posts', { query: 'n = 1' }, (event: ChangeEvent<Post>, type: string) => {
  console.log(type, event.data?.title, event.left);
});
const room = hub.channel<{ text: string }>('room.1', (message) => console.log(message.text));
const online = hub.presence();
const writer = hub.collection<Post>('posts');
const created: Promise<Post> = writer.create({ title: 'new', n: 1 });
const updated: Promise<Post> = writer.update('a', { n: 3, title: null });
const removed: Promise<null> = writer.delete('a');
const status = hub.status.getSnapshot();
const why: string | undefined = status.error?.message;
const shared: boolean | undefined = status.shared;
const users: string[] = online.getSnapshot().users.map((user) => user.user_id);
const cleared: Promise<void> = hub.clearPersisted();
const { useLiveQuery, usePresence } = createHooks({});
const hooked: LiveQueryState<Post> = useLiveQuery<Post>(hub, 'posts', { query: 'n > 1' });
const present = usePresence(hub).users;
const composables = createComposables({});
const vueState: LiveQueryState<Post> = composables.useLiveQuery<Post>(hub, 'posts').value;
room.publish({ text: 'hi' });
events.close();
stop();
posts.close();
hub.close();
export { titles, pending, created, updated, removed, why, shared, users, cleared, hooked, present, vueState };
