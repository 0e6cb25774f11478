//! The real binary: configuration from flags, readiness, and graceful
//! shutdown on SIGTERM with open streams.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{HANG_GUARD, SseClient};

/// A free loopback port (bound, then released for the binary to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary on a free port with `args` and `env`, its output to
/// `output` (or nowhere), and waits until it answers.
pub(crate) async fn start_binary(
    args: &[&str],
    env: &[(&str, &str)],
    output: Option<&std::fs::File>,
) -> (std::process::Child, String) {
    let port = free_port();
    let sink = |file: Option<&std::fs::File>| match file {
        Some(file) => Stdio::from(file.try_clone().unwrap()),
        None => Stdio::null(),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_livehub"))
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(args)
        .envs(env.iter().copied())
        .stdout(sink(output))
        .stderr(sink(output))
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    // Ready when /healthz answers (the binary binds, then opens its database).
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if let Ok(response) = reqwest::get(format!("{base}/healthz")).await
            && response.status() == 200
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the binary never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, base)
}

/// Sends SIGTERM and waits for a clean exit.
pub(crate) async fn stop_binary(mut child: std::process::Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_the_process() {
    let (child, base) = start_binary(&["--heartbeat", "1h"], &[("RUST_LOG", "warn")], None).await;
    let client = reqwest::Client::new();

    let response = client
        .get(format!("{base}/api/v1/realtime"))
        .send()
        .await
        .unwrap();
    let mut stream = SseClient::new(response);
    let connected = stream.connected().await;

    let stopping = tokio::spawn(stop_binary(child));
    // The last message says why, and when to come back: soon (the node's
    // `retry:` is 2 s), at a random moment within a second.
    let leaving = stream.next().await.expect("a last message");
    assert_eq!(leaving.event, "node.leaving", "{leaving:?}");
    assert_eq!(
        leaving.id, connected.id,
        "no id: the client's last event id stays"
    );
    let data: serde_json::Value = serde_json::from_str(&leaving.data).unwrap();
    let delay = leaving.retry.expect("a retry: field");
    assert!(delay <= Duration::from_secs(1), "{delay:?}");
    assert_eq!(
        data["reconnect_in_ms"],
        serde_json::json!(delay.as_millis() as u64)
    );
    assert!(stream.next().await.is_none(), "the stream ends cleanly");
    stopping.await.unwrap();
}

#[tokio::test]
async fn tokens_and_tickets_in_urls_stay_out_of_the_logs() {
    const SECRET: &str = "a secret for the log test, 32+ bytes";
    let log = tempfile::NamedTempFile::new().unwrap();
    let (child, base) = start_binary(
        &[],
        &[("RUST_LOG", "debug"), ("LIVEHUB_JWT_SECRET", SECRET)],
        Some(log.as_file()),
    )
    .await;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "ann", "exp": crate::helpers::now_secs() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let mut stream = SseClient::new(
        client
            .get(format!("{base}/api/v1/realtime?token={token}"))
            .send()
            .await
            .unwrap(),
    );
    stream.connected().await;
    let refused = client
        .get(format!("{base}/api/v1/collections?token={token}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let ticket: serde_json::Value = client
        .post(format!("{base}/api/v1/realtime/tickets"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let mut by_ticket = SseClient::new(
        client
            .get(format!("{base}/api/v1/realtime?ticket={ticket}"))
            .send()
            .await
            .unwrap(),
    );
    by_ticket.connected().await;
    drop((stream, by_ticket));
    stop_binary(child).await;

    let output = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        output.contains("token=[redacted]") && output.contains("ticket=[redacted]"),
        "the requests were logged, with their credentials blanked:\n{output}"
    );
    let signature = token.rsplit('.').next().unwrap();
    assert!(!output.contains(signature), "a token reached the log");
    assert!(!output.contains(&ticket), "a ticket reached the log");
}

#[test]
fn help_documents_every_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_livehub"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--addr",
        "--db",
        "--db-user",
        "--db-pass",
        "--db-ns",
        "--db-name",
        "--heartbeat",
        "--retry",
        "--retention",
        "--poll-interval",
        "--settle",
        "--stream-buffer",
        "--max-replays",
        "--max-body-bytes",
        "--shutdown-grace",
        "--jwt-secret",
        "--jwt-public-key",
        "--jwt-algorithm",
        "--jwt-issuer",
        "--jwt-audience",
        "--auth-cookie",
        "--max-streams",
        "--max-streams-per-user",
        "--max-streams-per-ip",
        "--presence-grace",
        "--presence-ttl",
        "--presence-rule",
        "--anonymous-presence",
        "--channel-rules",
        "--cors-origins",
        "--cors-credentials",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&format!("`{flag}`")),
            "{flag} missing from the README's table"
        );
    }
    assert!(help.contains("LIVEHUB_DB"));
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let (child, base) = start_binary(
        &["--log-format", "json"],
        &[("RUST_LOG", "debug,surrealdb=warn")],
        Some(log.as_file()),
    )
    .await;
    reqwest::get(format!("{base}/api/v1/collections"))
        .await
        .unwrap();
    stop_binary(child).await;
    let text = std::fs::read_to_string(log.path()).unwrap();
    // Standard output also holds the development token's banner.
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("each log line is JSON"))
        .collect();
    let listening = lines
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("livehub listening"))
        })
        .expect("the start is logged as JSON");
    assert_eq!(listening["level"], "INFO");
    // A request's log line carries its span, with the client's address.
    let request = lines
        .iter()
        .find(|line| line["span"]["path"] == "/api/v1/collections")
        .expect("a request is logged with its span");
    assert_eq!(request["span"]["client"], "127.0.0.1");
}

/// The binary listens with the largest backlog the kernel allows, not the
/// 128 of a plain bind: in a reconnect storm a full accept queue drops
/// handshakes, and each dropped client waits a second or more to retry.
#[tokio::test]
async fn the_binary_listens_with_the_kernels_largest_backlog() {
    let (child, base) = start_binary(&[], &[], None).await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    // For a listening socket, `ss` shows the backlog as its Send-Q.
    let listing = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let backlog: u32 = listing
        .split_whitespace()
        .nth(2)
        .and_then(|column| column.parse().ok())
        .unwrap_or_else(|| panic!("no backlog in `ss` output: {listing:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(backlog, somaxconn.min(65_535), "{listing}");
    stop_binary(child).await;
}

/// A secret for the tests of `livehub token` (32 bytes or more).
const TOKEN_SECRET: &str = "a secret for livehub token, 32+ bytes";

/// Runs `livehub args...` to its end with `env` and no `LIVEHUB_JWT_*` but
/// those: (exit code, standard output, standard error).
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_livehub"));
    for name in [
        "LIVEHUB_JWT_SECRET",
        "LIVEHUB_JWT_PUBLIC_KEY",
        "LIVEHUB_JWT_ALGORITHM",
        "LIVEHUB_JWT_ISSUER",
        "LIVEHUB_JWT_AUDIENCE",
    ] {
        command.env_remove(name);
    }
    let output = command
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// `livehub token args...` with `env`: the token it printed.
fn cli_token(args: &[&str], env: &[(&str, &str)]) -> String {
    let args: Vec<&str> = ["token"].iter().chain(args).copied().collect();
    let (code, stdout, stderr) = run_binary(&args, env);
    assert_eq!(code, Some(0), "{args:?}: {stderr}");
    // Nothing but the token and a newline: `TOKEN=$(livehub token ...)`.
    let token = stdout.strip_suffix('\n').expect("a line");
    assert_eq!(token.split('.').count(), 3, "{stdout:?}");
    assert!(!token.contains(char::is_whitespace), "{stdout:?}");
    token.to_owned()
}

/// An admin's stream with presence, to see who joins.
async fn presence_observer(base: &str, admin: &str) -> SseClient {
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/realtime"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = SseClient::with_presence(response);
    stream.connected().await;
    stream
}

/// The next `user.joined` of anyone but `except`: its data.
async fn next_joined(stream: &mut SseClient, except: &str) -> serde_json::Value {
    loop {
        let (kind, body) = stream.json_event().await;
        if kind == "user.joined" && body["data"]["user_id"] != except {
            return body["data"].clone();
        }
    }
}

/// The status of `GET base path` with `token`.
async fn status_of(base: &str, path: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_token_from_livehub_token_is_accepted_by_a_server_with_its_settings() {
    let env = [
        ("LIVEHUB_JWT_SECRET", TOKEN_SECRET),
        ("LIVEHUB_JWT_ALGORITHM", "HS384"),
        ("LIVEHUB_JWT_ISSUER", "https://auth.example"),
    ];
    let (child, base) = start_binary(&["--jwt-audience", "livehub"], &env, None).await;
    // The `--jwt-*` flags are taken after `token` too.
    let with_audience = ["--jwt-audience", "livehub"];
    let admin = cli_token(
        &[&["--sub", "ops", "--role", "admin"][..], &with_audience].concat(),
        &env,
    );
    let ann = cli_token(
        &[
            &["--sub", "ann", "--name", "Ann", "--ttl", "10m"][..],
            &with_audience,
        ]
        .concat(),
        &env,
    );

    // An admin-only route.
    assert_eq!(status_of(&base, "/api/v1/stats", &admin).await, 200);
    assert_eq!(status_of(&base, "/api/v1/stats", &ann).await, 403);
    // Ann is present under her id and name.
    let mut watch = presence_observer(&base, &admin).await;
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/realtime"))
        .bearer_auth(&ann)
        .send()
        .await
        .unwrap();
    let mut stream = SseClient::new(response);
    stream.connected().await;
    let joined = next_joined(&mut watch, "ops").await;
    assert_eq!(
        (&joined["user_id"], &joined["user_name"]),
        (&"ann".into(), &"Ann".into())
    );
    assert_eq!(status_of(&base, "/api/v1/presence", &ann).await, 200);
    // It lives as long as asked, from now.
    use base64::Engine;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(ann.split('.').nth(1).unwrap())
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        600
    );
    assert!(
        claims["iat"]
            .as_u64()
            .unwrap()
            .abs_diff(crate::helpers::now_secs())
            <= 5
    );
    assert_eq!(
        (&claims["iss"], &claims["aud"]),
        (&"https://auth.example".into(), &"livehub".into())
    );
    // Signed without the server's audience, the token is refused.
    let elsewhere = cli_token(&["--sub", "ann"], &env);
    assert_eq!(status_of(&base, "/api/v1/presence", &elsewhere).await, 401);
    drop((stream, watch));
    stop_binary(child).await;
}

#[test]
fn livehub_token_refuses_to_sign_without_a_secret() {
    let (code, stdout, stderr) = run_binary(&["token", "--sub", "ann"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stdout, "", "nothing a script would take for a token");
    for said in [
        "livehub token signs with the secret the server verifies with: set --jwt-secret or LIVEHUB_JWT_SECRET.",
        "a random secret that exists only inside that process",
        "    export LIVEHUB_JWT_SECRET=$(openssl rand -hex 32)\n",
    ] {
        assert!(stderr.contains(said), "{said:?} not in {stderr}");
    }

    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rs256-public.pem"
    );
    let (code, stdout, stderr) =
        run_binary(&["token", "--sub", "ann", "--jwt-public-key", key], &[]);
    assert_eq!((code, stdout.as_str()), (Some(2), ""), "{stderr}");
    assert_eq!(
        stderr,
        "error: livehub token signs with the secret the server verifies with: set --jwt-secret \
         or LIVEHUB_JWT_SECRET (a public key cannot sign)\n"
    );

    let (code, _, stderr) = run_binary(
        &["token", "--sub", "ann"],
        &[("LIVEHUB_JWT_SECRET", "short")],
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "error: --jwt-secret must be at least 32 bytes long\n"
    );
}

#[tokio::test]
async fn the_banner_prints_tokens_to_paste_into_a_shell() {
    let output = tempfile::NamedTempFile::new().unwrap();
    let (child, base) = start_binary(&[], &[("RUST_LOG", "info")], Some(output.as_file())).await;
    // Printed before the server answers.
    let printed = std::fs::read_to_string(output.path()).unwrap();
    assert!(
        printed.contains(
            "data is in memory and is gone when livehub stops (use --db surrealkv://<dir> to keep it)"
        ),
        "{printed}"
    );
    assert!(
        printed.contains("Try: curl -H \"Authorization: Bearer $TOKEN\" "),
        "{printed}"
    );
    assert!(
        printed.contains(
            "\n    export LIVEHUB_JWT_SECRET=$(openssl rand -hex 32)\n    \
             livehub token --sub bob --name Bob --ttl 1h\n"
        ),
        "{printed}"
    );
    let exports: Vec<&str> = printed
        .lines()
        .filter(|line| line.starts_with("    export ") && line.contains("TOKEN="))
        .collect();
    assert_eq!(exports.len(), 2, "{printed}");
    // Pasted into a shell, they set the variables.
    let script = format!(
        "{}\nprintf '%s\\n' \"$TOKEN\" \"$ANN_TOKEN\"",
        exports.join("\n")
    );
    let shell = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(shell.status.success(), "{script}");
    let shell = String::from_utf8(shell.stdout).unwrap();
    let [admin, ann] = shell.lines().collect::<Vec<_>>()[..] else {
        panic!("{shell}");
    };

    assert_eq!(status_of(&base, "/api/v1/stats", admin).await, 200);
    assert_eq!(status_of(&base, "/api/v1/stats", ann).await, 403);
    let mut watch = presence_observer(&base, admin).await;
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/realtime"))
        .bearer_auth(ann)
        .send()
        .await
        .unwrap();
    let mut stream = SseClient::new(response);
    stream.connected().await;
    let joined = next_joined(&mut watch, "admin").await;
    assert_eq!(
        (&joined["user_id"], &joined["user_name"]),
        (&"ann".into(), &"Ann".into())
    );
    drop((stream, watch));
    stop_binary(child).await;
}

#[tokio::test]
async fn boolean_settings_take_1_yes_and_on_from_the_environment() {
    let env = [
        ("LIVEHUB_JWT_SECRET", TOKEN_SECRET),
        ("LIVEHUB_ANONYMOUS_PRESENCE", "1"),
        ("LIVEHUB_JWT_ALLOW_NO_EXP", "yes"),
        ("LIVEHUB_CORS_CREDENTIALS", "off"),
    ];
    let (child, base) = start_binary(&[], &env, None).await;
    // `LIVEHUB_JWT_ALLOW_NO_EXP=yes`: a token without `exp` is accepted.
    let admin = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "ops", "role": "admin"}),
        &jsonwebtoken::EncodingKey::from_secret(TOKEN_SECRET.as_bytes()),
    )
    .unwrap();
    let mut watch = presence_observer(&base, &admin).await;
    // `LIVEHUB_ANONYMOUS_PRESENCE=1`: an anonymous stream says who it is.
    let response = reqwest::get(format!(
        "{base}/api/v1/realtime?user_id=kiosk&user_name=Lobby"
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut kiosk = SseClient::new(response);
    kiosk.connected().await;
    let joined = next_joined(&mut watch, "ops").await;
    assert_eq!(
        (&joined["user_id"], &joined["user_name"]),
        (&"kiosk".into(), &"Lobby".into())
    );
    drop((kiosk, watch));
    stop_binary(child).await;

    // A word that is no boolean is refused before anything starts.
    let (code, _, stderr) = run_binary(
        &["token", "--sub", "ann"],
        &[("LIVEHUB_ANONYMOUS_PRESENCE", "maybe")],
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("invalid value 'maybe' for '--anonymous-presence'"),
        "{stderr}"
    );
}

#[test]
fn settings_the_binary_refuses_say_what_it_takes() {
    // Parsed, and refused, before anything starts: the binary exits at once.
    let (code, _, stderr) = run_binary(&[], &[("LIVEHUB_ADDR", ":9000")]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(
            "say which interface: 0.0.0.0:9000 (all of them) or 127.0.0.1:9000 (this machine only)"
        ),
        "{stderr}"
    );
    let (code, _, stderr) = run_binary(&["--db", "./data"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(
            "--db takes a URL: mem:// (in memory), surrealkv://./data (a directory, persistent) \
             or ws://host:port (a SurrealDB server); for the directory ./data, surrealkv://./data"
        ),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_is_named_with_the_setting_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (code, _, stderr) = run_binary(
        &["--addr", &format!("127.0.0.1:{port}")],
        &[("RUST_LOG", "warn")],
    );
    assert_ne!(code, Some(0));
    let said = format!(
        "cannot listen on 127.0.0.1:{port} (--addr / LIVEHUB_ADDR): address already in use; \
         is another livehub running? pick another port with --addr 127.0.0.1:{}",
        port + 1
    );
    assert!(stderr.contains(&said), "{stderr}");
}
