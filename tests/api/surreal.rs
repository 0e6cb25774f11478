//! The real SurrealDB server for tests of several nodes: the `surreal`
//! binary built from the `surrealdb-server` crate (`tools/surreal`), on a
//! loopback port with persistent storage, stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use livehub::Config;

use crate::helpers::{HANG_GUARD, TestApp, test_config};

/// Root credentials of test servers.
const ROOT: &str = "root";

/// Where the server binary is: `LIVEHUB_TEST_SURREAL`, or where the
/// README's build command puts it.
pub(crate) fn binary() -> PathBuf {
    let path = std::env::var_os("LIVEHUB_TEST_SURREAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/surreal/debug/surreal"
            ))
        });
    assert!(
        path.exists(),
        "the SurrealDB server is not built at {}: run \
         `cargo build --manifest-path tools/surreal/Cargo.toml --target-dir target/surreal` \
         (or set LIVEHUB_TEST_SURREAL to a `surreal` binary)",
        path.display()
    );
    path
}

/// A free loopback port (bound, then released for a server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `surreal start` with its data in a directory of its own.
pub struct SurrealServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Drop for SurrealServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server would not die of SIGKILL until resumed.
            signal(&child, "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `name` (`KILL`, `STOP`, `CONT`) to a process.
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

impl SurrealServer {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> SurrealServer {
        let mut server = SurrealServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        server.launch().await;
        server
    }

    /// `ws://` address for nodes.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let data = format!("surrealkv://{}", self.dir.path().join("data").display());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(binary())
            .args(["start", "--bind", &format!("127.0.0.1:{}", self.port)])
            .args([
                "--user",
                ROOT,
                "--pass",
                ROOT,
                "--log",
                "warn",
                "--no-banner",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the surreal server starts");
        self.child = Some(child);
        let health = format!("http://127.0.0.1:{}/health", self.port);
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            if let Ok(response) = reqwest::get(&health).await
                && response.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the surreal server exited ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the surreal server never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server with SIGKILL (no chance to flush or say goodbye).
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the server runs");
        signal(&child, "KILL");
        child.wait().unwrap();
    }

    /// Starts the server again on its data and port, after [`Self::kill`].
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.launch().await;
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        signal(self.child.as_ref().unwrap(), "STOP");
    }

    pub fn resume(&self) {
        signal(self.child.as_ref().unwrap(), "CONT");
    }

    /// A node's configuration for database `db` of this server. The settle
    /// window is the default for `ws://` unless a test sets its own.
    pub fn node_config(&self, db: &str) -> Config {
        let mut config = test_config();
        config.db = self.url();
        config.db_user = Some(ROOT.into());
        config.db_pass = Some(livehub::config::Secret::from(ROOT.to_owned()));
        config.db_name = db.into();
        config
    }

    /// The same as [`Self::node_config`], as flags for the binary.
    pub fn node_args(&self, db: &str) -> Vec<String> {
        [
            "--db",
            &self.url(),
            "--db-user",
            ROOT,
            "--db-pass",
            ROOT,
            "--db-name",
            db,
        ]
        .map(String::from)
        .to_vec()
    }

    /// A SurrealDB client of database `db`, signed in as root: an outside
    /// writer, going straight to the server rather than through livehub.
    pub async fn outside_client(
        &self,
        db: &str,
    ) -> surrealdb::Surreal<surrealdb::engine::any::Any> {
        let client = surrealdb::engine::any::connect(self.url()).await.unwrap();
        client
            .signin(surrealdb::opt::auth::Root {
                username: ROOT.into(),
                password: ROOT.into(),
            })
            .await
            .unwrap();
        client.use_ns("livehub").use_db(db).await.unwrap();
        client
    }

    /// `count` nodes in this process sharing database `db`.
    pub async fn nodes(&self, db: &str, count: usize) -> Vec<TestApp> {
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            nodes.push(TestApp::spawn_with(self.node_config(db)).await);
        }
        nodes
    }
}
