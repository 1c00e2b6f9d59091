//! The operator's command line: generate-config, register-user, create-registration-token.

use clap::Parser;
use matrixon::cli::{Cli, Outcome, execute};

use crate::harness::{Backend, Database, TestServer, both_backends, test_config};

both_backends!(register_user_and_tokens_from_the_command_line);

async fn run(args: &[&str], env: Vec<(String, String)>) -> anyhow::Result<String> {
    let cli = Cli::try_parse_from(std::iter::once("matrixon").chain(args.iter().copied()))?;
    match execute(cli, env).await? {
        Outcome::Print(text) => Ok(text),
        Outcome::Serve(_) => anyhow::bail!("unexpected serve"),
    }
}

async fn register_user_and_tokens_from_the_command_line(backend: Backend) {
    let db = Database::create(&backend).await;
    let env = vec![("MATRIXON_DATABASE_URL".to_owned(), db.url.clone())];
    let created = run(
        &[
            "register-user",
            "tina",
            "--password",
            "tina password",
            "--admin",
        ],
        env.clone(),
    )
    .await
    .expect("created");
    assert_eq!(created.trim(), "@tina:localhost");
    let again = run(&["register-user", "tina", "--password", "x"], env.clone())
        .await
        .expect_err("taken");
    assert!(again.to_string().contains("taken"), "{again}");
    let bad = run(&["register-user", "Tina!", "--password", "x"], env.clone())
        .await
        .expect_err("invalid");
    assert!(bad.to_string().contains("User names"), "{bad}");
    let token = run(&["create-registration-token", "--uses", "2"], env.clone())
        .await
        .expect("token");
    let token = token.trim().to_owned();
    assert_eq!(token.len(), 16);
    let dup = run(
        &["create-registration-token", "--token", &token],
        env.clone(),
    )
    .await
    .expect_err("duplicate");
    assert!(dup.to_string().contains("already exists"), "{dup}");

    // The server sees what the command line created.
    let mut config = test_config(&db.url);
    config.registration.tokens_required = true;
    let srv = TestServer::start_on(db, config).await;
    srv.login("tina", "tina password").await;
    let valid = srv
        .get(
            &format!(
                "/_matrix/client/v1/register/m.login.registration_token/validity?token={token}"
            ),
            None,
        )
        .await;
    assert_eq!(valid.1["valid"], true);
    srv.finish().await;
}

#[tokio::test]
async fn generate_config_prints_every_key_and_bad_config_is_named() {
    let template = run(&["generate-config"], Vec::new())
        .await
        .expect("template");
    for key in [
        "server_name",
        "listen",
        "[database]",
        "url",
        "[registration]",
        "open",
        "shared_secret",
        "tokens_required",
        "[metrics]",
        "[rate_limits]",
    ] {
        assert!(template.contains(key), "{key} missing");
    }
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[registration]\nopen = \"yes\"\n").expect("write");
    let err = run(
        &[
            "--config",
            path.to_str().expect("utf8"),
            "register-user",
            "x",
            "--password",
            "y",
        ],
        Vec::new(),
    )
    .await
    .expect_err("bad config");
    assert!(err.to_string().contains("open"), "{err}");
    let err = run(
        &["run"],
        vec![("MATRIXON_LISTEN".to_owned(), "not an address".to_owned())],
    )
    .await
    .expect_err("bad env");
    assert!(err.to_string().contains("listen"), "{err}");
}

/// The README's two commands are the ones that work: `cargo run` picks the server (two
/// binaries in the workspace made it stop with "could not determine which binary to run"),
/// and `.ci/run` runs exactly the README's test command. What `cargo run` would pick is read
/// from `cargo metadata` (running cargo's build from inside its own test run would wait on
/// its lock): the default members must hold exactly one binary, the server.
#[test]
fn the_readmes_commands_are_what_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    assert!(
        readme.contains("```sh\ncargo run --release\n```"),
        "the server command"
    );
    assert!(
        readme.contains("```sh\nscripts/test.sh\n```"),
        "the test command"
    );
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "exec scripts/test.sh"),
        ".ci/run runs the README's test command"
    );
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata");
    let defaults = metadata["workspace_default_members"]
        .as_array()
        .expect("default members");
    let binaries: Vec<&str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| defaults.contains(&p["id"]))
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.contains(&"bin".into()))
        })
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        binaries,
        ["matrixon"],
        "`cargo run` runs the server and only it"
    );
}
