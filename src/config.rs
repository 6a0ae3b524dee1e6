//! Configuration in two phases: `RawConfig` mirrors the TOML file (serde,
//! `deny_unknown_fields`), `Config::from_raw` parses URLs, durations and paths and rejects
//! nonsense. Components receive the sub-struct they need; there is no global.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default configuration, compiled in. `config/pinproxy.toml` documents every knob.
pub const DEFAULT_CONFIG: &str = include_str!("../config/pinproxy.toml");

/// A configuration problem, with the file and the key it is about.
#[derive(Debug)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: `{}`: {}", self.file, self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    oci: RawOci,
    #[serde(default)]
    npm: RawNpm,
    #[serde(default)]
    maven: RawMaven,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaven {
    missing_checksum: Option<String>,
    synthesize_checksums: Option<bool>,
    metadata_ttl: Option<String>,
    snapshot_ttl: Option<String>,
    not_found_ttl: Option<String>,
    max_metadata_size: Option<u64>,
    #[serde(default)]
    upstreams: Vec<RawMavenUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMavenUpstream {
    name: String,
    url: String,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    missing_checksum: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    ca_file: Option<String>,
    connect_timeout: Option<String>,
    idle_timeout: Option<String>,
    total_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNpm {
    upstream: Option<String>,
    token_env: Option<String>,
    ca_file: Option<String>,
    packument_ttl: Option<String>,
    client_max_age: Option<String>,
    max_packument_size: Option<u64>,
    #[serde(default)]
    scopes: Vec<RawNpmScope>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNpmScope {
    scope: String,
    url: String,
    token_env: Option<String>,
    ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    data_dir: Option<String>,
    #[serde(default)]
    client_tokens: Vec<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    shutdown_grace: Option<String>,
    public_url: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    connect_timeout: Option<String>,
    idle_timeout: Option<String>,
    total_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOci {
    default_upstream: Option<String>,
    max_manifest_size: Option<u64>,
    #[serde(default)]
    upstreams: Vec<RawOciUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOciUpstream {
    name: String,
    url: String,
    #[serde(default)]
    docker_hub: bool,
    tag_policy: Option<String>,
    tag_ttl: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
    ca_file: Option<String>,
    connect_timeout: Option<String>,
    idle_timeout: Option<String>,
    total_timeout: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub oci: OciConfig,
    pub npm: NpmConfig,
    pub maven: MavenConfig,
}

/// The Maven group: upstreams tried in order, and how mutable files are kept.
#[derive(Debug, Clone)]
pub struct MavenConfig {
    pub upstreams: Vec<MavenUpstreamConfig>,
    /// Serve computed `.sha1`/`.md5` also for files pinned first-seen.
    pub synthesize_checksums: bool,
    /// `maven-metadata.xml` (group and artifact level) and directory listings.
    pub metadata_ttl: Duration,
    /// SNAPSHOT-version metadata and legacy `-SNAPSHOT.<ext>` files.
    pub snapshot_ttl: Duration,
    /// How long a "no member has it" (every member answered 404) is remembered.
    pub not_found_ttl: Duration,
    pub max_metadata_size: u64,
}

/// What to do with an artifact for which the upstream offers no checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingChecksum {
    /// Refuse it (502): nothing unverified is ever pinned.
    Fail,
    /// Serve and pin it as first seen, with a warning.
    PinFirstSeen,
}

#[derive(Debug, Clone)]
pub struct MavenUpstreamConfig {
    pub name: String,
    /// Repository base URL, always ending in `/`.
    pub url: reqwest::Url,
    /// groupId globs (`*` = any run of characters); empty = every groupId.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub missing_checksum: MissingChecksum,
    pub credentials: Option<Credentials>,
    pub http: HttpConfig,
}

#[derive(Debug, Clone)]
pub struct NpmConfig {
    /// The default registry; `None` means npm routes answer 503 saying how to set one.
    pub upstream: Option<NpmUpstreamConfig>,
    /// `@scope` → its own registry.
    pub scopes: Vec<(String, NpmUpstreamConfig)>,
    /// How long a packument is served without asking the upstream.
    pub packument_ttl: Duration,
    /// `Cache-Control: max-age` sent to clients with packuments.
    pub client_max_age: Duration,
    pub max_packument_size: u64,
}

#[derive(Clone)]
pub struct NpmUpstreamConfig {
    pub name: String,
    /// Registry base URL, always ending in `/`.
    pub url: reqwest::Url,
    pub token: Option<String>,
    pub http: HttpConfig,
}

impl fmt::Debug for NpmUpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NpmUpstreamConfig")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub client_tokens: Vec<String>,
    pub tls: Option<TlsFiles>,
    pub shutdown_grace: Duration,
    /// The base URL clients reach pinproxy at (for URLs written into documents, like npm's
    /// `dist.tarball`). Without it, the request's own Host (and scheme) is used.
    pub public_url: Option<reqwest::Url>,
    /// Peers whose `X-Forwarded-Proto` / `X-Forwarded-Host` are believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Outbound HTTP settings of one upstream.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub total_timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct OciConfig {
    pub default_upstream: String,
    pub max_manifest_size: u64,
    pub upstreams: Vec<OciUpstreamConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagPolicy {
    /// Revalidate with an upstream HEAD once the resolution is older than the TTL.
    Revalidate(Duration),
    /// Never ask upstream again once a tag is resolved.
    Pin,
}

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret, not even in debug output.
        write!(f, "Credentials({}:***)", self.username)
    }
}

#[derive(Debug, Clone)]
pub struct OciUpstreamConfig {
    pub name: String,
    pub url: reqwest::Url,
    pub docker_hub: bool,
    pub tag_policy: TagPolicy,
    pub credentials: Option<Credentials>,
    pub http: HttpConfig,
}

/// Start-up values given on the command line; they win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// `--oci-upstream NAME=URL`, repeatable: replaces the configured list; the first becomes
    /// the default upstream.
    pub oci_upstreams: Vec<(String, String)>,
    /// `--npm-upstream URL`: the default npm registry.
    pub npm_upstream: Option<String>,
    /// `--maven-upstream NAME=URL`, repeatable: replaces the configured group, in order.
    pub maven_upstreams: Vec<(String, String)>,
}

/// Reads one environment variable; injected so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Loads `path` (or the compiled-in default), then applies `overrides`.
    pub fn load(
        path: Option<&Path>,
        overrides: &Overrides,
        env: EnvLookup<'_>,
    ) -> Result<Self, ConfigError> {
        let (file, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    file: p.display().to_string(),
                    key: String::new(),
                    reason: format!("cannot read: {e}"),
                })?;
                (p.display().to_string(), text)
            }
            None => (
                "<built-in config/pinproxy.toml>".to_owned(),
                DEFAULT_CONFIG.to_owned(),
            ),
        };
        Self::parse(&file, &text, overrides, env)
    }

    pub fn parse(
        file: &str,
        text: &str,
        overrides: &Overrides,
        env: EnvLookup<'_>,
    ) -> Result<Self, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            key: String::new(),
            reason: e.to_string().trim_end().to_owned(),
        })?;
        // A file that lists no upstreams keeps the default ones (keys left out take the
        // values of the built-in file).
        if raw.oci.upstreams.is_empty() && text != DEFAULT_CONFIG {
            let default: RawConfig = toml::from_str(DEFAULT_CONFIG).map_err(|e| ConfigError {
                file: "<built-in config>".to_owned(),
                key: String::new(),
                reason: e.to_string(),
            })?;
            raw.oci.upstreams = default.oci.upstreams;
        }
        if raw.maven.upstreams.is_empty() && text != DEFAULT_CONFIG {
            let default: RawConfig = toml::from_str(DEFAULT_CONFIG).map_err(|e| ConfigError {
                file: "<built-in config>".to_owned(),
                key: String::new(),
                reason: e.to_string(),
            })?;
            raw.maven.upstreams = default.maven.upstreams;
        }
        Self::from_raw(file, raw, overrides, env)
    }

    fn from_raw(
        file: &str,
        raw: RawConfig,
        overrides: &Overrides,
        env: EnvLookup<'_>,
    ) -> Result<Self, ConfigError> {
        let err = |key: &str, reason: String| ConfigError {
            file: file.to_owned(),
            key: key.to_owned(),
            reason,
        };

        let listen = match overrides.listen {
            Some(a) => a,
            None => {
                let s = raw.server.listen.as_deref().unwrap_or("0.0.0.0:5080");
                s.parse().map_err(|e| {
                    err(
                        "server.listen",
                        format!("`{s}` is not an address:port ({e})"),
                    )
                })?
            }
        };
        let data_dir = overrides
            .data_dir
            .clone()
            .or_else(|| env("PINPROXY_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| {
                PathBuf::from(raw.server.data_dir.as_deref().unwrap_or("pinproxy-data"))
            });

        let mut client_tokens: Vec<String> = raw.server.client_tokens.clone();
        if let Some(v) = env("PINPROXY_CLIENT_TOKENS") {
            client_tokens.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from),
            );
        }
        for (i, t) in client_tokens.iter().enumerate() {
            if t.len() < 8 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(
                    &format!("server.client_tokens[{i}]"),
                    "a client token must be at least 8 characters without spaces".into(),
                ));
            }
        }
        let tls = match (&raw.server.tls_cert, &raw.server.tls_key) {
            (Some(c), Some(k)) => Some(TlsFiles {
                cert: c.into(),
                key: k.into(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(err(
                    "server.tls_key",
                    "tls_cert is set but tls_key is not".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "server.tls_cert",
                    "tls_key is set but tls_cert is not".into(),
                ));
            }
        };
        let shutdown_grace = duration(raw.server.shutdown_grace.as_deref(), "30s")
            .map_err(|r| err("server.shutdown_grace", r))?;

        let http_defaults = raw.http.clone();
        let base_http = |prefix: &str,
                         u: &RawHttpOverride<'_>|
         -> Result<HttpConfig, ConfigError> {
            let pick = |own: Option<&String>, dflt: &Option<String>, fallback: &str, key: &str| {
                let v = own.or(dflt.as_ref()).map(String::as_str);
                duration(v, fallback).map_err(|r| err(&format!("{prefix}{key}"), r))
            };
            let connect_timeout = pick(
                u.connect,
                &http_defaults.connect_timeout,
                "10s",
                "connect_timeout",
            )?;
            let idle_timeout = pick(u.idle, &http_defaults.idle_timeout, "30s", "idle_timeout")?;
            let total_timeout = pick(u.total, &http_defaults.total_timeout, "1h", "total_timeout")?;
            for (k, d) in [
                ("connect_timeout", connect_timeout),
                ("idle_timeout", idle_timeout),
                ("total_timeout", total_timeout),
            ] {
                if d.is_zero() {
                    return Err(err(
                        &format!("{prefix}{k}"),
                        "must be greater than zero".into(),
                    ));
                }
            }
            let ca_file = u.ca_file.map(PathBuf::from);
            if let Some(p) = &ca_file {
                if !p.is_file() {
                    return Err(err(
                        &format!("{prefix}ca_file"),
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
            Ok(HttpConfig {
                connect_timeout,
                idle_timeout,
                total_timeout,
                ca_file,
            })
        };

        let mut upstreams = Vec::new();
        let mut default_upstream = raw.oci.default_upstream.clone();
        if overrides.oci_upstreams.is_empty() {
            for (i, u) in raw.oci.upstreams.iter().enumerate() {
                let prefix = format!("oci.upstreams[{i}].");
                let key = |k: &str| format!("{prefix}{k}");
                let name = upstream_name(&u.name).map_err(|r| err(&key("name"), r))?;
                let url = upstream_url(&u.url).map_err(|r| err(&key("url"), r))?;
                let tag_policy = tag_policy(u.tag_policy.as_deref(), u.tag_ttl.as_deref())
                    .map_err(|(k, r)| err(&key(k), r))?;
                let credentials = credentials(
                    u.username.as_ref(),
                    u.password.as_ref(),
                    u.password_env.as_ref(),
                    env,
                )
                .map_err(|(k, r)| err(&key(k), r))?;
                let http = base_http(
                    &prefix,
                    &RawHttpOverride {
                        connect: u.connect_timeout.as_ref(),
                        idle: u.idle_timeout.as_ref(),
                        total: u.total_timeout.as_ref(),
                        ca_file: u.ca_file.as_deref(),
                    },
                )?;
                upstreams.push(OciUpstreamConfig {
                    name,
                    url,
                    docker_hub: u.docker_hub,
                    tag_policy,
                    credentials,
                    http,
                });
            }
        } else {
            for (i, (name, url)) in overrides.oci_upstreams.iter().enumerate() {
                let key = format!("--oci-upstream #{}", i + 1);
                let name = upstream_name(name).map_err(|r| err(&key, r))?;
                let url = upstream_url(url).map_err(|r| err(&key, r))?;
                let http = base_http("http.", &RawHttpOverride::default())?;
                upstreams.push(OciUpstreamConfig {
                    docker_hub: name == "docker.io",
                    name,
                    url,
                    tag_policy: TagPolicy::Revalidate(Duration::from_secs(300)),
                    credentials: None,
                    http,
                });
            }
            default_upstream = upstreams.first().map(|u| u.name.clone());
        }
        let mut seen = BTreeSet::new();
        for u in &upstreams {
            if !seen.insert(u.name.clone()) {
                return Err(err(
                    "oci.upstreams",
                    format!("upstream name `{}` is given twice", u.name),
                ));
            }
        }
        let default_upstream = default_upstream.unwrap_or_else(|| {
            if seen.contains("docker.io") || upstreams.is_empty() {
                "docker.io".to_owned()
            } else {
                upstreams[0].name.clone()
            }
        });
        if !upstreams.is_empty() && !seen.contains(&default_upstream) {
            return Err(err(
                "oci.default_upstream",
                format!("`{default_upstream}` is not the name of a configured upstream"),
            ));
        }
        let max_manifest_size = raw.oci.max_manifest_size.unwrap_or(8 << 20);
        if !(1024..=(64 << 20)).contains(&max_manifest_size) {
            return Err(err(
                "oci.max_manifest_size",
                "must be between 1 KiB and 64 MiB".into(),
            ));
        }

        let public_url = match &raw.server.public_url {
            None => None,
            Some(u) => {
                let mut url = upstream_url(u).map_err(|r| err("server.public_url", r))?;
                if !url.path().ends_with('/') {
                    let p = format!("{}/", url.path());
                    url.set_path(&p);
                }
                Some(url)
            }
        };
        let mut trusted_proxies = Vec::new();
        for (i, t) in raw.server.trusted_proxies.iter().enumerate() {
            trusted_proxies.push(t.parse().map_err(|e| {
                err(
                    &format!("server.trusted_proxies[{i}]"),
                    format!("`{t}` is not an IP address ({e})"),
                )
            })?);
        }

        let npm_http = |key: &str, ca: Option<&str>| {
            base_http(
                key,
                &RawHttpOverride {
                    ca_file: ca,
                    ..RawHttpOverride::default()
                },
            )
        };
        let npm_token = |key: &str, var: Option<&String>| -> Result<Option<String>, ConfigError> {
            match var {
                None => Ok(None),
                Some(v) => env(v)
                    .map(Some)
                    .ok_or_else(|| err(key, format!("environment variable {v} is not set"))),
            }
        };
        let npm_upstream_url = overrides
            .npm_upstream
            .clone()
            .map(|u| ("--npm-upstream", u))
            .or_else(|| {
                env("PINPROXY_NPM_UPSTREAM")
                    .filter(|u| !u.trim().is_empty())
                    .map(|u| ("PINPROXY_NPM_UPSTREAM", u))
            })
            .or_else(|| raw.npm.upstream.clone().map(|u| ("npm.upstream", u)));
        let npm_upstream = match npm_upstream_url {
            None => None,
            Some((key, u)) => Some(NpmUpstreamConfig {
                name: "npm".to_owned(),
                url: registry_url(u.trim()).map_err(|r| err(key, r))?,
                token: npm_token("npm.token_env", raw.npm.token_env.as_ref())?,
                http: npm_http("npm.", raw.npm.ca_file.as_deref())?,
            }),
        };
        let mut npm_scopes = Vec::new();
        for (i, sc) in raw.npm.scopes.iter().enumerate() {
            let prefix = format!("npm.scopes[{i}].");
            let scope = sc.scope.trim();
            let valid = scope.len() > 1
                && scope.starts_with('@')
                && scope[1..].bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
                });
            if !valid {
                return Err(err(
                    &format!("{prefix}scope"),
                    format!("`{scope}` is not an npm scope like \"@corp\""),
                ));
            }
            npm_scopes.push((
                scope.to_owned(),
                NpmUpstreamConfig {
                    name: scope.to_owned(),
                    url: registry_url(&sc.url).map_err(|r| err(&format!("{prefix}url"), r))?,
                    token: npm_token(&format!("{prefix}token_env"), sc.token_env.as_ref())?,
                    http: npm_http(&prefix, sc.ca_file.as_deref())?,
                },
            ));
        }
        let npm = NpmConfig {
            upstream: npm_upstream,
            scopes: npm_scopes,
            packument_ttl: duration(raw.npm.packument_ttl.as_deref(), "5m")
                .map_err(|r| err("npm.packument_ttl", r))?,
            client_max_age: duration(raw.npm.client_max_age.as_deref(), "5m")
                .map_err(|r| err("npm.client_max_age", r))?,
            max_packument_size: raw.npm.max_packument_size.unwrap_or(256 << 20),
        };
        if npm.max_packument_size < 1024 {
            return Err(err(
                "npm.max_packument_size",
                "must be at least 1 KiB".into(),
            ));
        }

        let maven = maven_config(&raw.maven, overrides, env, &base_http, &err)?;

        let holds_credentials = upstreams.iter().any(|u| u.credentials.is_some())
            || maven.upstreams.iter().any(|u| u.credentials.is_some())
            || npm
                .upstream
                .iter()
                .chain(npm.scopes.iter().map(|(_, u)| u))
                .any(|u| u.token.is_some());
        if holds_credentials && !listen.ip().is_loopback() && client_tokens.is_empty() {
            return Err(err(
                "server.client_tokens",
                format!(
                    "an upstream credential is configured and {listen} is not a loopback address: \
                     set client tokens (server.client_tokens or PINPROXY_CLIENT_TOKENS) so the \
                     proxy is not an open relay for those credentials"
                ),
            ));
        }

        Ok(Self {
            npm,
            maven,
            server: ServerConfig {
                listen,
                data_dir,
                client_tokens,
                tls,
                shutdown_grace,
                public_url,
                trusted_proxies,
            },
            oci: OciConfig {
                default_upstream,
                max_manifest_size,
                upstreams,
            },
        })
    }
}

#[derive(Default)]
struct RawHttpOverride<'a> {
    connect: Option<&'a String>,
    idle: Option<&'a String>,
    total: Option<&'a String>,
    ca_file: Option<&'a str>,
}

fn duration(v: Option<&str>, default: &str) -> Result<Duration, String> {
    let s = v.unwrap_or(default);
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like \"30s\" or \"5m\" ({e})"))
}

fn upstream_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_' | b':')
        })
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "`{name}` is not a registry name (lowercase letters, digits, `.`, `-`, `_`, `:`)"
        ))
    }
}

fn upstream_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("`{s}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{s}`: only http and https upstreams are supported"
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("`{s}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{s}`: put credentials in username/password_env, not in the URL"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{s}`: an upstream URL takes no query or fragment"));
    }
    Ok(url)
}

/// A registry base URL: http(s), no credentials or query, always ending in `/`.
fn registry_url(s: &str) -> Result<reqwest::Url, String> {
    let mut url = upstream_url(s)?;
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

fn tag_policy(
    policy: Option<&str>,
    ttl: Option<&str>,
) -> Result<TagPolicy, (&'static str, String)> {
    match policy.unwrap_or("revalidate") {
        "revalidate" => {
            let ttl = duration(ttl, "5m").map_err(|r| ("tag_ttl", r))?;
            Ok(TagPolicy::Revalidate(ttl))
        }
        "pin" => {
            if ttl.is_some() {
                return Err(("tag_ttl", "has no meaning with tag_policy = \"pin\"".into()));
            }
            Ok(TagPolicy::Pin)
        }
        other => Err((
            "tag_policy",
            format!("`{other}` is neither \"revalidate\" nor \"pin\""),
        )),
    }
}

fn missing_checksum(v: &str) -> Result<MissingChecksum, String> {
    match v {
        "fail" => Ok(MissingChecksum::Fail),
        "pin-first-seen" => Ok(MissingChecksum::PinFirstSeen),
        other => Err(format!(
            "`{other}` is neither \"fail\" nor \"pin-first-seen\""
        )),
    }
}

/// A groupId glob: letters, digits, `.`, `-`, `_` and `*`.
fn group_glob(g: &str) -> Result<String, String> {
    let ok = !g.is_empty()
        && g.len() <= 255
        && g.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'));
    if ok {
        Ok(g.to_owned())
    } else {
        Err(format!(
            "`{g}` is not a groupId pattern like \"org.example\" or \"com.google.*\""
        ))
    }
}

type BaseHttp<'a> = dyn Fn(&str, &RawHttpOverride<'_>) -> Result<HttpConfig, ConfigError> + 'a;
type ErrFn<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

fn maven_config(
    raw: &RawMaven,
    overrides: &Overrides,
    env: EnvLookup<'_>,
    base_http: &BaseHttp<'_>,
    err: &ErrFn<'_>,
) -> Result<MavenConfig, ConfigError> {
    let default_missing =
        missing_checksum(raw.missing_checksum.as_deref().unwrap_or("pin-first-seen"))
            .map_err(|r| err("maven.missing_checksum", r))?;
    let mut upstreams = Vec::new();
    if overrides.maven_upstreams.is_empty() {
        for (i, u) in raw.upstreams.iter().enumerate() {
            let prefix = format!("maven.upstreams[{i}].");
            let key = |k: &str| format!("{prefix}{k}");
            let name = upstream_name(&u.name).map_err(|r| err(&key("name"), r))?;
            let url = registry_url(&u.url).map_err(|r| err(&key("url"), r))?;
            let include = u
                .include
                .iter()
                .map(|g| group_glob(g))
                .collect::<Result<_, _>>()
                .map_err(|r| err(&key("include"), r))?;
            let exclude = u
                .exclude
                .iter()
                .map(|g| group_glob(g))
                .collect::<Result<_, _>>()
                .map_err(|r| err(&key("exclude"), r))?;
            let missing = match &u.missing_checksum {
                None => default_missing,
                Some(m) => missing_checksum(m).map_err(|r| err(&key("missing_checksum"), r))?,
            };
            let credentials = credentials(
                u.username.as_ref(),
                u.password.as_ref(),
                u.password_env.as_ref(),
                env,
            )
            .map_err(|(k, r)| err(&key(k), r))?;
            let http = base_http(
                &prefix,
                &RawHttpOverride {
                    connect: u.connect_timeout.as_ref(),
                    idle: u.idle_timeout.as_ref(),
                    total: u.total_timeout.as_ref(),
                    ca_file: u.ca_file.as_deref(),
                },
            )?;
            upstreams.push(MavenUpstreamConfig {
                name,
                url,
                include,
                exclude,
                missing_checksum: missing,
                credentials,
                http,
            });
        }
    } else {
        for (i, (name, url)) in overrides.maven_upstreams.iter().enumerate() {
            let key = format!("--maven-upstream #{}", i + 1);
            upstreams.push(MavenUpstreamConfig {
                name: upstream_name(name).map_err(|r| err(&key, r))?,
                url: registry_url(url).map_err(|r| err(&key, r))?,
                include: Vec::new(),
                exclude: Vec::new(),
                missing_checksum: default_missing,
                credentials: None,
                http: base_http("http.", &RawHttpOverride::default())?,
            });
        }
    }
    let mut seen = BTreeSet::new();
    for u in &upstreams {
        if !seen.insert(u.name.clone()) {
            return Err(err(
                "maven.upstreams",
                format!("upstream name `{}` is given twice", u.name),
            ));
        }
    }
    let ttl = |k: &str, v: Option<&String>, d: &str| {
        duration(v.map(String::as_str), d).map_err(|r| err(&format!("maven.{k}"), r))
    };
    let cfg = MavenConfig {
        upstreams,
        synthesize_checksums: raw.synthesize_checksums.unwrap_or(false),
        metadata_ttl: ttl("metadata_ttl", raw.metadata_ttl.as_ref(), "10m")?,
        snapshot_ttl: ttl("snapshot_ttl", raw.snapshot_ttl.as_ref(), "1m")?,
        not_found_ttl: ttl("not_found_ttl", raw.not_found_ttl.as_ref(), "5m")?,
        max_metadata_size: raw.max_metadata_size.unwrap_or(16 << 20),
    };
    if cfg.max_metadata_size < 1024 {
        return Err(err(
            "maven.max_metadata_size",
            "must be at least 1 KiB".into(),
        ));
    }
    Ok(cfg)
}

fn credentials(
    username: Option<&String>,
    password: Option<&String>,
    password_env: Option<&String>,
    env: EnvLookup<'_>,
) -> Result<Option<Credentials>, (&'static str, String)> {
    let password = match (password, password_env) {
        (Some(_), Some(_)) => {
            return Err((
                "password_env",
                "give password or password_env, not both".into(),
            ));
        }
        (Some(p), None) => Some(p.clone()),
        (None, Some(var)) => Some(env(var).ok_or_else(|| {
            (
                "password_env",
                format!("environment variable {var} is not set"),
            )
        })?),
        (None, None) => None,
    };
    match (username, password) {
        (Some(user), Some(password)) => Ok(Some(Credentials {
            username: user.clone(),
            password,
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(("password_env", "username is set but no password".into())),
        (None, Some(_)) => Err(("username", "a password is set but no username".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn default_config_parses_and_documents_every_knob() {
        let c = Config::parse("default", DEFAULT_CONFIG, &Overrides::default(), &no_env).unwrap();
        assert_eq!(c.oci.default_upstream, "docker.io");
        let names: Vec<_> = c.oci.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["docker.io", "ghcr.io", "quay.io"]);
        assert!(c.oci.upstreams[0].docker_hub);
        assert_eq!(
            c.oci.upstreams[0].url.as_str(),
            "https://registry-1.docker.io/"
        );
        // Every key the raw structs know appears in the default file, commented or not.
        for key in [
            "listen",
            "data_dir",
            "client_tokens",
            "tls_cert",
            "tls_key",
            "shutdown_grace",
            "connect_timeout",
            "idle_timeout",
            "total_timeout",
            "default_upstream",
            "max_manifest_size",
            "name",
            "url",
            "docker_hub",
            "tag_policy",
            "tag_ttl",
            "username",
            "password_env",
            "ca_file",
            "public_url",
            "trusted_proxies",
            "upstream",
            "token_env",
            "packument_ttl",
            "client_max_age",
            "max_packument_size",
            "scope",
        ] {
            assert!(
                DEFAULT_CONFIG.contains(&format!("{key} =")),
                "{key} undocumented"
            );
        }
    }

    fn parse_err(text: &str) -> String {
        Config::parse("f.toml", text, &Overrides::default(), &no_env)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_input_names_file_key_and_reason() {
        let e = parse_err("[server]\nlisten = \"nope\"\n");
        assert!(
            e.contains("f.toml") && e.contains("server.listen") && e.contains("nope"),
            "{e}"
        );
        let e = parse_err("[server]\nlistne = \"0.0.0.0:1\"\n");
        assert!(e.contains("unknown field") && e.contains("listne"), "{e}");
        let e = parse_err("[[oci.upstreams]]\nname = \"a\"\nurl = \"ftp://x\"\n");
        assert!(e.contains("oci.upstreams[0].url"), "{e}");
        let e = parse_err(
            "[[oci.upstreams]]\nname = \"a\"\nurl = \"http://x\"\ntag_policy = \"sometimes\"\n",
        );
        assert!(e.contains("tag_policy"), "{e}");
        let e =
            parse_err("[[oci.upstreams]]\nname = \"a\"\nurl = \"http://x\"\ntag_ttl = \"soon\"\n");
        assert!(e.contains("tag_ttl"), "{e}");
        let e = parse_err(
            "[oci]\ndefault_upstream = \"b\"\n[[oci.upstreams]]\nname = \"a\"\nurl = \"http://x\"\n",
        );
        assert!(e.contains("default_upstream"), "{e}");
        let e = parse_err("[http]\nidle_timeout = \"0s\"\n");
        assert!(e.contains("idle_timeout"), "{e}");
    }

    #[test]
    fn credentials_on_a_public_address_need_client_tokens() {
        let text = "[server]\nlisten = \"0.0.0.0:5080\"\n[[oci.upstreams]]\nname = \"a\"\nurl = \"http://x\"\nusername = \"u\"\npassword_env = \"PW\"\n";
        let env = |k: &str| (k == "PW").then(|| "secret".to_owned());
        let e = Config::parse("f", text, &Overrides::default(), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("open relay"), "{e}");
        let loopback = text.replace("0.0.0.0", "127.0.0.1");
        let c = Config::parse("f", &loopback, &Overrides::default(), &env).unwrap();
        assert_eq!(
            c.oci.upstreams[0].credentials.as_ref().unwrap().password,
            "secret"
        );
        assert!(!format!("{:?}", c).contains("secret"));
        let env2 = |k: &str| match k {
            "PW" => Some("secret".to_owned()),
            "PINPROXY_CLIENT_TOKENS" => Some("tok-12345678".to_owned()),
            _ => None,
        };
        Config::parse("f", text, &Overrides::default(), &env2).unwrap();
    }

    #[test]
    fn upstream_flags_replace_the_list_and_the_first_is_default() {
        let o = Overrides {
            oci_upstreams: vec![
                ("local".into(), "http://127.0.0.1:5000".into()),
                ("docker.io".into(), "http://127.0.0.1:5001".into()),
            ],
            ..Overrides::default()
        };
        let c = Config::parse("default", DEFAULT_CONFIG, &o, &no_env).unwrap();
        assert_eq!(c.oci.default_upstream, "local");
        assert_eq!(c.oci.upstreams.len(), 2);
        assert!(c.oci.upstreams[1].docker_hub);
        let bad = Overrides {
            oci_upstreams: vec![("Bad Name".into(), "http://x".into())],
            ..o
        };
        assert!(Config::parse("default", DEFAULT_CONFIG, &bad, &no_env).is_err());
    }
}
