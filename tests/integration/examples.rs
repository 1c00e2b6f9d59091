//! The documented dApp examples run as written: the alloy one (Rust) and the viem one
//! (JavaScript, under Node with pinned viem); the docs show the very files.

use serde_json::Value;

use crate::{
    anvil::Anvil,
    harness::{Backend, TestServer},
};

#[path = "../examples/alloy_login.rs"]
mod alloy_login;

const ALLOY_EXAMPLE: &str = include_str!("../examples/alloy_login.rs");
const VIEM_EXAMPLE: &str = include_str!("../../tools/examples/viem-login.mjs");
const DOC: &str = include_str!("../../docs/wallet-login.md");

#[tokio::test]
async fn alloy_example_signs_in() {
    let srv = TestServer::start(&Backend::Sqlite).await;
    let signer = alloy::signers::local::PrivateKeySigner::random();
    let session = alloy_login::sign_in(&srv.base, &signer)
        .await
        .expect("the example signs in");
    assert_eq!(
        session["user_id"],
        format!("@{:#x}:localhost", signer.address())
    );
    let whoami = srv
        .get(
            "/_matrix/client/v3/account/whoami",
            session["access_token"].as_str(),
        )
        .await;
    assert_eq!(whoami.1["user_id"], session["user_id"]);
    srv.finish().await;
}

#[tokio::test]
async fn viem_example_signs_in() {
    let srv = TestServer::start(&Backend::Sqlite).await;
    let anvil = Anvil::start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tools/examples/viem-login-check.mjs"
    );
    let output = tokio::process::Command::new("node")
        .arg(script)
        .arg(&srv.base)
        .arg(&anvil.url)
        .output()
        .await
        .expect("node runs (scripts/test.sh installs viem into tools/node_modules)");
    assert!(
        output.status.success(),
        "the viem example failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let session: Value = serde_json::from_slice(&output.stdout).expect("JSON session");
    let address = session["address"].as_str().expect("address").to_lowercase();
    assert_eq!(session["user_id"], format!("@{address}:localhost"));
    let whoami = srv
        .get(
            "/_matrix/client/v3/account/whoami",
            session["access_token"].as_str(),
        )
        .await;
    assert_eq!(whoami.0, 200, "{:?}", whoami.1);
    srv.finish().await;
}

#[test]
fn the_docs_show_the_tested_examples_verbatim() {
    for (name, example) in [("alloy", ALLOY_EXAMPLE), ("viem", VIEM_EXAMPLE)] {
        assert!(
            DOC.contains(example.trim_end()),
            "docs/wallet-login.md must show the {name} example exactly as tested"
        );
    }
}
