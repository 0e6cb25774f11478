//! Configuration: every setting is a flag with an environment twin.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use clap::builder::{BoolishValueParser, NonEmptyStringValueParser};

use crate::engine::store::{Backlog, Database};
use crate::engine::{Settings, StreamSettings};
use crate::proxies::TrustedProxies;

/// Real-time streams of SurrealDB changes over plain HTTP (Server-Sent Events).
#[derive(Parser, Clone, Debug)]
#[command(name = "livehub", version, about, long_about = None)]
pub struct Config {
    /// What to do instead of serving (with none, livehub serves).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on: `127.0.0.1:8000` (this machine only),
    /// `0.0.0.0:8000` (every interface), `[::1]:8000`; `localhost:8000` and a
    /// bare port, `8000`, mean 127.0.0.1.
    #[arg(long, env = "LIVEHUB_ADDR", default_value = "127.0.0.1:8000", value_parser = listen_address)]
    pub addr: SocketAddr,

    /// Database: `mem://` (in memory), `surrealkv://<dir>` (persistent, embedded)
    /// or `ws://host:port` (a SurrealDB server shared by several nodes).
    #[arg(long, env = "LIVEHUB_DB", default_value = "mem://", value_parser = database_url)]
    pub db: String,

    /// Root user for a SurrealDB server (`ws://`).
    #[arg(long, env = "LIVEHUB_DB_USER")]
    pub db_user: Option<String>,

    /// Password of `--db-user`.
    #[arg(long, env = "LIVEHUB_DB_PASS", hide_env_values = true)]
    pub db_pass: Option<Secret>,

    /// SurrealDB namespace.
    #[arg(long, env = "LIVEHUB_DB_NS", default_value = "livehub")]
    pub(crate) db_ns: String,

    /// SurrealDB database.
    #[arg(long, env = "LIVEHUB_DB_NAME", default_value = "livehub")]
    pub db_name: String,

    /// The longest a shared cache (nginx, a CDN) may keep a change page
    /// anonymous callers read. It bounds how long a tightened read rule or
    /// a deleted collection can go on being served from such caches (a
    /// page is never cached longer than its cursor stays within
    /// `--retention` either). `0s` keeps anonymous pages out of shared
    /// caches.
    #[arg(long, env = "LIVEHUB_SHARED_CACHE_MAX_AGE", default_value = "60s", value_parser = duration)]
    pub shared_cache_max_age: Duration,

    /// Interval between heartbeat comments on idle streams (keeps proxies from
    /// closing them).
    #[arg(long, env = "LIVEHUB_HEARTBEAT", default_value = "15s", value_parser = positive_duration)]
    pub heartbeat: Duration,

    /// Reconnect delay suggested to clients in the SSE `retry:` field.
    #[arg(long, env = "LIVEHUB_RETRY", default_value = "2s", value_parser = duration)]
    pub(crate) retry: Duration,

    /// How long changes stay replayable; older `Last-Event-ID`s get a `reset`
    /// event. Applies to collections created from now on.
    #[arg(long, env = "LIVEHUB_RETENTION", default_value = "24h", value_parser = positive_duration)]
    pub retention: Duration,

    /// How often the feed polls the changefeed for changes made by other
    /// writers (writes through this node wake it at once).
    #[arg(long, env = "LIVEHUB_POLL_INTERVAL", default_value = "20ms", value_parser = positive_duration)]
    pub(crate) poll_interval: Duration,

    /// How long the feed waits before delivering a change it did not write
    /// itself, so that a commit that became visible late (with a lower
    /// versionstamp) is not skipped. Default: 0 for an embedded database,
    /// 250ms for a server (`ws://`), whose other clients livehub cannot see.
    #[arg(long, env = "LIVEHUB_SETTLE", value_parser = settle_duration)]
    pub settle: Option<Duration>,

    /// With a server (`ws://`) and a `--settle` under 100ms: how often this
    /// node tells the others how far its writes are committed, so that they
    /// deliver its writes without the settle window. Each time is a small
    /// write to the database.
    #[arg(long, env = "LIVEHUB_SHARE_INTERVAL", default_value = "10ms", value_parser = positive_duration)]
    pub(crate) share_interval: Duration,

    /// Events queued per stream before a slow client is disconnected (it then
    /// resumes from its last event id, losing nothing).
    #[arg(long, env = "LIVEHUB_STREAM_BUFFER", default_value_t = 4096)]
    pub stream_buffer: usize,

    /// Bytes of events queued per stream before a slow client is
    /// disconnected (as with `--stream-buffer`; this bounds the memory a
    /// stalled client holds when records are large).
    #[arg(long, env = "LIVEHUB_STREAM_BUFFER_BYTES", default_value_t = 8 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub stream_buffer_bytes: u64,

    /// How long a connection may accept no bytes while the server has some
    /// to send; then it is closed (a client that stopped reading: its
    /// stream resumes from its last event id when it reconnects).
    #[arg(long, env = "LIVEHUB_WRITE_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub write_timeout: Duration,

    /// Streams that may read their replay from the database at the same
    /// time; others wait their turn (live events keep queueing meanwhile).
    #[arg(long, env = "LIVEHUB_MAX_REPLAYS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) max_replays: u32,

    /// Most records one stream's snapshot may hold (`snapshot=true`); a
    /// request for more gets a 400 asking it to narrow its filter or take
    /// the first N (`snapshot_limit`). Snapshots are read in pages, so this
    /// bounds time, not memory.
    #[arg(long, env = "LIVEHUB_MAX_SNAPSHOT", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_snapshot: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "LIVEHUB_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long open streams get to finish on shutdown before the process exits.
    #[arg(long, env = "LIVEHUB_SHUTDOWN_GRACE", default_value = "2s", value_parser = duration)]
    pub(crate) shutdown_grace: Duration,

    #[command(flatten)]
    pub auth: AuthSettings,

    /// Name of the cookie that may carry the token.
    #[arg(long, env = "LIVEHUB_AUTH_COOKIE", default_value = "livehub_token")]
    pub auth_cookie: String,

    /// Most records in one batch (`POST .../records` with a JSON array).
    #[arg(long, env = "LIVEHUB_MAX_BATCH", default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub(crate) max_batch: usize,

    /// Most changes (record writes, channel messages) accepted and not yet
    /// streamed before writers get 503 with `Retry-After`.
    #[arg(long, env = "LIVEHUB_MAX_BACKLOG", default_value_t = 20_000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_backlog: usize,

    /// Most bytes of such changes accepted and not yet streamed.
    #[arg(long, env = "LIVEHUB_MAX_BACKLOG_BYTES", default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_backlog_bytes: u64,

    /// How long an `Idempotency-Key` and its answer are kept.
    #[arg(long, env = "LIVEHUB_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = duration)]
    pub(crate) idempotency_window: Duration,

    /// Most open streams in all (0: no limit).
    #[arg(long, env = "LIVEHUB_MAX_STREAMS", default_value_t = 50_000)]
    pub max_streams: usize,

    /// Most open streams per user (0: no limit).
    #[arg(long, env = "LIVEHUB_MAX_STREAMS_PER_USER", default_value_t = 64)]
    pub max_streams_per_user: usize,

    /// Most open streams per client IP address (0: no limit). Behind a proxy
    /// every client has the proxy's address: raise it or set 0.
    #[arg(long, env = "LIVEHUB_MAX_STREAMS_PER_IP", default_value_t = 1024)]
    pub max_streams_per_ip: usize,

    /// How long a user stays present after its last stream closes (so a page
    /// reload does not flap `user.left`/`user.joined`).
    #[arg(long, env = "LIVEHUB_PRESENCE_GRACE", default_value = "5s", value_parser = duration)]
    pub presence_grace: Duration,

    /// How long a node's presence entries outlive it if it dies without
    /// saying so (it refreshes them a few times within this).
    #[arg(long, env = "LIVEHUB_PRESENCE_TTL", default_value = "30s", value_parser = positive_duration)]
    pub presence_ttl: Duration,

    /// Who may see presence (`GET /api/v1/presence`, `user.*` events): a
    /// rule in the filter language over `{user_id, user_name, connections,
    /// last_seen}`, `true` for everyone, `null` for admins only.
    #[arg(long, env = "LIVEHUB_PRESENCE_RULE", default_value = crate::rules::DEFAULT_READ_RULE)]
    pub(crate) presence_rule: String,

    /// Let anonymous streams announce themselves with `?user_id=` and
    /// `?user_name=` (otherwise only admins may set them).
    #[arg(long, env = "LIVEHUB_ANONYMOUS_PRESENCE", value_parser = BoolishValueParser::new())]
    pub(crate) anonymous_presence: bool,

    /// Who may read and publish to channels, by pattern (an exact name, or a
    /// prefix ending in `*`; the longest match wins), as JSON:
    /// `{"room.*": {"read": "true", "publish": "$auth.sub != null"}}`.
    /// Unmatched channels: any signed-in user. `user:{id}` is readable by
    /// that user and admins only.
    #[arg(long, env = "LIVEHUB_CHANNEL_RULES", default_value = "{}")]
    pub channel_rules: String,

    /// Largest channel message, in bytes of JSON (also bounded by
    /// `--max-body-bytes`).
    #[arg(long, env = "LIVEHUB_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Channel messages each user (or, for anonymous publishers, each IP
    /// address) may publish per second on this node, with bursts of as many
    /// (0: no limit).
    #[arg(long, env = "LIVEHUB_PUBLISH_RATE", default_value_t = 20)]
    pub publish_rate: u32,

    /// Proxies whose `X-Forwarded-For` is believed: addresses or networks,
    /// comma-separated (`10.0.0.0/8,127.0.0.1`). Behind them, per-address
    /// stream limits, anonymous publish rates and request logs see the
    /// client's address. Default: none (the header is ignored; anyone can
    /// send one).
    #[arg(long, env = "LIVEHUB_TRUSTED_PROXIES", default_value = "", value_parser = TrustedProxies::parse)]
    pub trusted_proxies: TrustedProxies,

    /// How logs are written: `text`, for people, or `json`, one object per
    /// line, for log shippers.
    #[arg(long, env = "LIVEHUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// One log line per request at `info` (method, path, query with
    /// credentials blanked, status, duration, client); `--access-log false`
    /// turns it off.
    #[arg(long, env = "LIVEHUB_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub access_log: bool,

    /// Origins allowed to call the API from a browser (CORS), comma-separated,
    /// or `*` for any. Default: none (same-origin only).
    #[arg(long, env = "LIVEHUB_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Let browsers send cookies to the API from the allowed origins (not
    /// with `*`).
    #[arg(long, env = "LIVEHUB_CORS_CREDENTIALS", value_parser = BoolishValueParser::new())]
    pub cors_credentials: bool,
}

/// What livehub does besides serving.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum Command {
    /// Print a token signed with `--jwt-secret`, which a server started with
    /// the same secret (and `--jwt-issuer`, `--jwt-audience`) accepts:
    /// `TOKEN=$(livehub token --sub ann)`.
    Token(TokenArgs),
}

/// Whom `livehub token` signs a token for.
#[derive(clap::Args, Clone, Debug)]
pub struct TokenArgs {
    /// The user's id (the `sub` claim).
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    pub sub: String,
    /// The user's display name (the `name` claim), shown in presence.
    #[arg(long)]
    pub name: Option<String>,
    /// The `role` claim: `admin` may do anything.
    #[arg(long)]
    pub role: Option<String>,
    /// How long the token is valid (`exp` is this long after `iat`).
    #[arg(long, default_value = "1h", value_parser = positive_duration)]
    pub ttl: Duration,
}

impl Config {
    /// A configuration with every default, for tests and embedding.
    pub fn defaults() -> Self {
        Config::parse_from(["livehub"])
    }

    /// Where this run keeps its data, as a sentence for the person who
    /// started it.
    pub fn data_location(&self) -> String {
        match self.db.split_once("://") {
            Some(("mem", _)) => "data is in memory and is gone when livehub stops \
                 (use --db surrealkv://<dir> to keep it)"
                .to_owned(),
            Some(("surrealkv", dir)) => {
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.into());
                format!("data is kept in the directory {}", dir.display())
            }
            _ => format!(
                "data is on the SurrealDB server {}, namespace {}, database {}",
                without_credentials(&self.db),
                self.db_ns,
                self.db_name
            ),
        }
    }

    /// Whether the database lives inside this process (so every writer is one
    /// the feed can see).
    pub(crate) fn embedded_db(&self) -> bool {
        !(self.db.starts_with("ws://") || self.db.starts_with("wss://"))
    }

    /// The settle window in effect (see `--settle`).
    pub(crate) fn settle_window(&self) -> Duration {
        self.settle.unwrap_or(if self.embedded_db() {
            Duration::ZERO
        } else {
            Duration::from_millis(250)
        })
    }

    /// What the engine is set up with, from these flags.
    pub fn engine_settings(&self) -> Settings {
        Settings {
            database: Database {
                url: self.db.clone(),
                root: self
                    .db_user
                    .clone()
                    .zip(self.db_pass.as_ref().map(|pass| pass.expose().to_owned())),
                namespace: self.db_ns.clone(),
                name: self.db_name.clone(),
                retention: self.retention,
                max_backlog: Backlog {
                    events: self.max_backlog,
                    bytes: usize::try_from(self.max_backlog_bytes).unwrap_or(usize::MAX),
                },
            },
            streams: StreamSettings {
                heartbeat: self.heartbeat,
                retry: self.retry,
                buffer_events: self.stream_buffer,
                buffer_bytes: usize::try_from(self.stream_buffer_bytes).unwrap_or(usize::MAX),
                max_snapshot: self.max_snapshot,
                settle: self.settle_window(),
            },
            poll_interval: self.poll_interval,
            share_interval: self.share_interval,
            max_replays: self.max_replays as usize,
            max_streams: self.max_streams,
            max_streams_per_user: self.max_streams_per_user,
            max_streams_per_ip: self.max_streams_per_ip,
            presence_grace: self.presence_grace,
            presence_ttl: self.presence_ttl,
            presence_rule: self.presence_rule.clone(),
            channel_rules: self.channel_rules.clone(),
            publish_rate: self.publish_rate,
        }
    }
}

/// Longest duration a setting takes: timers are set as "now + duration",
/// which a duration of centuries would overflow.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A duration of at most a year.
fn duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration > MAX_DURATION => Err("must be at most a year".into()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(error.to_string()),
    }
}

/// A listening address. Besides what `SocketAddr` reads (`127.0.0.1:8000`,
/// `0.0.0.0:8000`, `[::1]:8000`), `localhost:PORT` and a bare `PORT` mean
/// 127.0.0.1, this machine only. `:PORT` is refused rather than guessed:
/// some programs read it as every interface, others as loopback.
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let loopback = |port: &str| {
        port.parse::<u16>()
            .ok()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
    };
    if let Some(address) = text.strip_prefix("localhost:").and_then(loopback) {
        return Ok(address);
    }
    if let Some(address) = loopback(text) {
        return Ok(address);
    }
    match text.strip_prefix(':').and_then(loopback) {
        Some(address) => Err(format!(
            "say which interface: 0.0.0.0:{port} (all of them) or 127.0.0.1:{port} \
             (this machine only)",
            port = address.port()
        )),
        None => Err(
            "expected an address and port such as 127.0.0.1:8000 or 0.0.0.0:8000 \
                     (localhost:8000 and a port alone, 8000, mean 127.0.0.1)"
                .into(),
        ),
    }
}

/// The kinds of database `--db` opens, for its error messages.
const DATABASE_FORMS: &str = "mem:// (in memory), surrealkv://./data (a directory, persistent) \
                              or ws://host:port (a SurrealDB server)";

/// A database URL whose scheme is one livehub opens: checked here so that
/// a path or a typo stops the start before anything opens.
fn database_url(text: &str) -> Result<String, String> {
    match text.split_once("://") {
        Some(("mem", _)) => Ok(text.to_owned()),
        Some(("surrealkv" | "ws" | "wss", "")) => Err(format!(
            "{text} needs a {} after it; --db takes {DATABASE_FORMS}",
            if text.starts_with("surrealkv") {
                "directory"
            } else {
                "host:port"
            }
        )),
        Some(("surrealkv" | "ws" | "wss", _)) => Ok(text.to_owned()),
        Some((scheme, _)) => Err(format!(
            "livehub does not open `{scheme}://` databases; --db takes {DATABASE_FORMS}"
        )),
        None if text.is_empty() => Err(format!("--db takes a URL: {DATABASE_FORMS}")),
        None => Err(format!(
            "--db takes a URL: {DATABASE_FORMS}; for the directory {text}, surrealkv://{text}"
        )),
    }
}

/// A URL without any `user:password@` (for messages and logs).
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.find('/').map_or(rest, |end| &rest[..end]);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A duration that must be more than zero (a zero heartbeat or poll
/// interval would spin) and at most a year.
fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        duration if duration.is_zero() => Err("must be more than zero".into()),
        duration => Ok(duration),
    }
}

/// A settle window: at most an hour (anything longer would only delay every
/// event).
fn settle_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if duration > Duration::from_secs(3600) {
        return Err("must be at most 1h".into());
    }
    Ok(duration)
}

/// What verification needs to know (the `--jwt-*` flags). They are global:
/// `livehub token` takes them too, after its name.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthSettings {
    /// Secret for HS256/384/512 tokens (32 bytes or more). With neither this
    /// nor `--jwt-public-key`, a random secret is made at start and an admin
    /// token for it is printed.
    #[arg(
        long,
        global = true,
        env = "LIVEHUB_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<Secret>,
    /// Public key for RS256/ES256 tokens: PEM text or a path to a PEM file.
    #[arg(long, global = true, env = "LIVEHUB_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<String>,
    /// HS256, HS384, HS512, RS256 or ES256. Default: HS256 with a secret,
    /// RS256 with a public key. Tokens signed otherwise are refused.
    #[arg(long, global = true, env = "LIVEHUB_JWT_ALGORITHM")]
    pub jwt_algorithm: Option<String>,
    /// Required `iss` claim, if set.
    #[arg(long, global = true, env = "LIVEHUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, if set.
    #[arg(long, global = true, env = "LIVEHUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Accept tokens without an `exp` claim (they never expire). Off by
    /// default: a token without `exp` is refused.
    #[arg(long, env = "LIVEHUB_JWT_ALLOW_NO_EXP", value_parser = BoolishValueParser::new())]
    pub jwt_allow_no_exp: bool,
}

/// A secret setting: its value never appears in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let config = Config::defaults();
        assert_eq!(config.addr.to_string(), "127.0.0.1:8000");
        assert_eq!(config.db, "mem://");
        assert_eq!(config.heartbeat, Duration::from_secs(15));
        assert_eq!(config.settle_window(), Duration::ZERO);
    }

    #[test]
    fn remote_databases_settle_by_default() {
        let config = Config::parse_from(["livehub", "--db", "ws://127.0.0.1:8001"]);
        assert!(!config.embedded_db());
        assert_eq!(config.settle_window(), Duration::from_millis(250));
    }

    #[test]
    fn zero_intervals_are_refused() {
        for flag in [
            "--heartbeat",
            "--poll-interval",
            "--retention",
            "--presence-ttl",
        ] {
            assert!(
                Config::try_parse_from(["livehub", flag, "0s"]).is_err(),
                "{flag}"
            );
        }
        // Nor can any duration overflow a timer.
        for flag in [
            "--heartbeat",
            "--retry",
            "--presence-grace",
            "--shutdown-grace",
        ] {
            let error = Config::try_parse_from(["livehub", flag, "500years"]).unwrap_err();
            assert!(
                error.to_string().contains("at most a year"),
                "{flag}: {error}"
            );
            assert!(
                Config::try_parse_from(["livehub", flag, "1h"]).is_ok(),
                "{flag}"
            );
        }
    }

    /// The message clap gives for `args`.
    fn refusal(args: &[&str]) -> String {
        let args = std::iter::once("livehub").chain(args.iter().copied());
        Config::try_parse_from(args).unwrap_err().to_string()
    }

    #[test]
    fn addresses_take_localhost_and_bare_ports_and_explain_the_rest() {
        for (given, meant) in [
            ("127.0.0.1:8000", "127.0.0.1:8000"),
            ("0.0.0.0:9000", "0.0.0.0:9000"),
            ("[::1]:8000", "[::1]:8000"),
            ("localhost:8000", "127.0.0.1:8000"),
            ("8000", "127.0.0.1:8000"),
            ("0", "127.0.0.1:0"),
        ] {
            let config = Config::parse_from(["livehub", "--addr", given]);
            assert_eq!(config.addr.to_string(), meant, "{given}");
        }
        let error = refusal(&["--addr", ":9000"]);
        assert!(
            error.contains("0.0.0.0:9000 (all of them) or 127.0.0.1:9000 (this machine only)"),
            "{error}"
        );
        for given in [
            "localhost",
            "example.com:8000",
            "127.0.0.1:99999",
            "",
            "eight",
        ] {
            let error = refusal(&["--addr", given]);
            assert!(
                error.contains(
                    "expected an address and port such as 127.0.0.1:8000 or 0.0.0.0:8000"
                ),
                "{given}: {error}"
            );
        }
    }

    #[test]
    fn databases_are_urls_of_the_kinds_livehub_opens() {
        for given in [
            "mem://",
            "surrealkv://./data",
            "surrealkv:///var/lib/livehub",
            "ws://db:8001",
            "wss://db",
        ] {
            assert_eq!(Config::parse_from(["livehub", "--db", given]).db, given);
        }
        let forms = "mem:// (in memory), surrealkv://./data (a directory, persistent) or ws://host:port (a SurrealDB server)";
        let error = refusal(&["--db", "./data"]);
        assert!(
            error.contains(&format!(
                "--db takes a URL: {forms}; for the directory ./data, surrealkv://./data"
            )),
            "{error}"
        );
        let error = refusal(&["--db", "foo://x"]);
        assert!(
            error.contains(&format!(
                "livehub does not open `foo://` databases; --db takes {forms}"
            )),
            "{error}"
        );
        let error = refusal(&["--db", "surrealkv://"]);
        assert!(
            error.contains("surrealkv:// needs a directory after it"),
            "{error}"
        );
    }

    #[test]
    fn the_start_says_where_data_lives() {
        let at = |db: &str| Config::parse_from(["livehub", "--db", db]).data_location();
        assert_eq!(
            at("mem://"),
            "data is in memory and is gone when livehub stops (use --db surrealkv://<dir> to keep it)"
        );
        assert_eq!(
            at("surrealkv:///srv/data"),
            "data is kept in the directory /srv/data"
        );
        let relative = at("surrealkv://data");
        assert!(
            relative.starts_with("data is kept in the directory /") && relative.ends_with("/data"),
            "{relative}"
        );
        assert_eq!(
            at("ws://root:hunter2@db:8001/rpc"),
            "data is on the SurrealDB server ws://db:8001/rpc, namespace livehub, database livehub"
        );
    }

    #[test]
    fn bare_boolean_flags_still_turn_their_setting_on() {
        let config = Config::parse_from([
            "livehub",
            "--anonymous-presence",
            "--cors-credentials",
            "--jwt-allow-no-exp",
        ]);
        assert!(
            config.anonymous_presence && config.cors_credentials && config.auth.jwt_allow_no_exp
        );
        let config = Config::defaults();
        assert!(
            !config.anonymous_presence && !config.cors_credentials && !config.auth.jwt_allow_no_exp
        );
    }

    #[test]
    fn the_token_command_takes_a_user_and_the_jwt_flags_after_its_name() {
        let config = Config::parse_from([
            "livehub",
            "token",
            "--sub",
            "ann",
            "--jwt-secret",
            "s",
            "--jwt-issuer",
            "me",
        ]);
        let Some(Command::Token(token)) = &config.command else {
            panic!("{config:?}");
        };
        assert_eq!(
            (
                token.sub.as_str(),
                token.name.as_deref(),
                token.role.as_deref()
            ),
            ("ann", None, None)
        );
        assert_eq!(token.ttl, Duration::from_secs(3600));
        assert_eq!(config.auth.jwt_secret.as_ref().unwrap().expose(), "s");
        assert_eq!(config.auth.jwt_issuer.as_deref(), Some("me"));
        let config = Config::parse_from([
            "livehub",
            "--jwt-secret",
            "s",
            "token",
            "--sub",
            "bob",
            "--name",
            "Bob",
            "--role",
            "admin",
            "--ttl",
            "10m",
        ]);
        let Some(Command::Token(token)) = &config.command else {
            panic!("{config:?}");
        };
        assert_eq!(
            (token.name.as_deref(), token.role.as_deref()),
            (Some("Bob"), Some("admin"))
        );
        assert_eq!(token.ttl, Duration::from_secs(600));
        assert_eq!(config.auth.jwt_secret.as_ref().unwrap().expose(), "s");
        assert!(
            Config::defaults().command.is_none(),
            "serving is the default"
        );
        assert!(refusal(&["token"]).contains("--sub <SUB>"));
        assert!(refusal(&["token", "--sub", ""]).contains("--sub"));
        assert!(refusal(&["token", "--sub", "ann", "--ttl", "0s"]).contains("more than zero"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let config = Config::parse_from(["livehub", "--db-pass", "hunter2"]);
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(config.db_pass.unwrap().expose(), "hunter2");
    }
}
