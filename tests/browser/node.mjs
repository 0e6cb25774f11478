// The browser library in Node (tests/api/browser.rs runs it): a live query
// of `posts` on the server at argv[2], with the token argv[3], until it
// holds the ids argv[4] (comma-separated); prints them and exits.
import { connect } from 'livehub-client';

const [origin, token, expected] = process.argv.slice(2);
const hub = connect({ url: origin, auth: token, EventSource: globalThis.EventSource });
const posts = hub.liveQuery('posts');
await new Promise((resolve) => {
  posts.subscribe(({ records }) => {
    const ids = records.map((record) => record.id).join(',');
    if (ids === expected) resolve();
  });
});
console.log(JSON.stringify(posts.getSnapshot().records));
hub.close();
process.exit(0);
