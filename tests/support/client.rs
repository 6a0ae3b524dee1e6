//! Running a real client (mvn, npm) as a child process, the way the real-client tests do.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

/// A finished command's output and how long it took.
pub(crate) struct Ran {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) took: Duration,
}

impl Ran {
    /// Stdout then stderr, as a terminal would show them.
    pub(crate) fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` under `timeout`; panics (with its command line, status, stdout and stderr) if it
/// cannot start, fails or times out (then it is killed, by its own id). `redact` is applied to
/// the command line and the output before anything is shown or returned.
pub(crate) async fn run(
    what: &str,
    cmd: &mut Command,
    timeout: Duration,
    redact: impl Fn(&str) -> String,
) -> Ran {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let line = redact(&format!("{:?}", cmd.as_std()));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run {line}: {e}"));
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let out = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b).await;
        b
    });
    let err = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b).await;
        b
    });
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => Some(s.unwrap_or_else(|e| panic!("{what}: waiting for {line}: {e}"))),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    let took = started.elapsed();
    // A grandchild (a forked JVM, an npm lifecycle script) may hold the pipes open: collect
    // what there is, briefly.
    let collect = async |t: tokio::task::JoinHandle<Vec<u8>>| match tokio::time::timeout(
        Duration::from_secs(5),
        t,
    )
    .await
    {
        Ok(Ok(b)) => redact(&String::from_utf8_lossy(&b)),
        _ => "(not collected)".to_owned(),
    };
    let (stdout, stderr) = (collect(out).await, collect(err).await);
    let show = || format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    match status {
        None => panic!("{what}: timed out after {timeout:?}: {line}\n{}", show()),
        Some(s) if !s.success() => panic!("{what}: {s}: {line}\n{}", show()),
        Some(_) => {}
    }
    eprintln!("TIMING {what}: {took:.2?}");
    Ran {
        stdout,
        stderr,
        took,
    }
}
