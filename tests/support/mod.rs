pub(crate) mod body_faults;
pub(crate) mod client;
pub(crate) mod fake_maven;
pub(crate) mod fake_npm;
pub(crate) mod fake_oci;
pub(crate) mod http_server;
pub(crate) mod proxy;
pub(crate) mod registry;
pub(crate) mod static_repo;

/// Real-client tests share one local upstream and must not run in parallel with each other.
#[allow(dead_code)]
pub(crate) static REAL_CLIENTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether `tool` is on PATH. A missing tool skips the calling test with a printed reason,
/// except under `CI=true`, where it fails the test.
#[allow(dead_code)]
pub(crate) fn have_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required under CI=true but is not installed (.ci/run installs it)");
        }
        eprintln!("skipping: {tool} is not installed");
    }
    found
}
