//! Starts the production service in-process on 127.0.0.1:0 with a private data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pinproxy::config::{Config, Overrides};
use pinproxy::server::{App, Server};

pub(crate) struct Proxy {
    server: Option<Server>,
    pub(crate) data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra: String,
    server_extra: String,
    upstreams: Vec<(String, String)>,
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[allow(dead_code)]
impl Proxy {
    /// A proxy whose OCI upstreams are `(name, url)`; the first is the default.
    pub(crate) async fn start(upstreams: &[(&str, &str)]) -> Self {
        Self::start_with(upstreams, "").await
    }

    /// `extra` is appended to the generated config (e.g. per-upstream knobs go in
    /// `[[oci.upstreams]]` blocks written by the caller, so then pass no `upstreams`).
    pub(crate) async fn start_with(upstreams: &[(&str, &str)], extra: &str) -> Self {
        Self::start_full(upstreams, "", extra).await
    }

    /// `server_extra` lines go into the `[server]` table.
    pub(crate) async fn start_full(
        upstreams: &[(&str, &str)],
        server_extra: &str,
        extra: &str,
    ) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut p = Self {
            server: None,
            data_dir,
            _tmp: Some(tmp),
            extra: extra.to_owned(),
            server_extra: server_extra.to_owned(),
            upstreams: upstreams
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        };
        p.boot().await;
        p
    }

    pub(crate) fn config(&self) -> Config {
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nshutdown_grace = \"5s\"\n{}\n[http]\nidle_timeout = \"3s\"\nconnect_timeout = \"2s\"\n",
            self.data_dir.display(),
            self.server_extra
        );
        text.push_str(&self.extra);
        let overrides = Overrides {
            oci_upstreams: self.upstreams.clone(),
            ..Overrides::default()
        };
        Config::parse("test.toml", &text, &overrides, &no_env).expect("test config")
    }

    async fn boot(&mut self) {
        let app = App::open(self.config()).expect("open app");
        self.server = Some(pinproxy::server::start(app).await.expect("start server"));
    }

    /// Stops (gracefully) and starts again on the same data directory; the port changes.
    pub(crate) async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        self.boot().await;
    }

    pub(crate) async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    pub(crate) fn app(&self) -> &Arc<App> {
        &self.server.as_ref().expect("running").app
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.server.as_ref().expect("running").addr)
    }

    pub(crate) fn host_port(&self) -> String {
        self.server.as_ref().expect("running").addr.to_string()
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}
