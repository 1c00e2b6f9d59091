//! The operator's command line: generate-config, register-user, create-registration-token,
//! backup (and restoring from it), export-user (and the admin API's export).

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

/// Uploads `text` as a text file (`query`: e.g. a file name); its `mxc://` URI.
async fn upload_text(srv: &TestServer, token: &str, query: &str, text: &'static str) -> String {
    let answer = srv
        .http
        .post(srv.url(&format!("/_matrix/media/v3/upload{query}")))
        .bearer_auth(token)
        .header("Content-Type", "text/plain")
        .body(text)
        .send()
        .await
        .expect("upload");
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().await.expect("json");
    body["content_uri"].as_str().expect("uri").to_owned()
}

/// `matrixon backup` while the server runs and writes: the copy is consistent; after the
/// database is wiped and the copy put in its place, every message sent before the backup is
/// there (and none sent after), and uploads download. PostgreSQL is refused, naming pg_dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_running_then_restore() {
    let srv = TestServer::start(&Backend::Sqlite).await;
    let alice = srv.register("alice", "pw").await;
    let token = alice["access_token"].as_str().expect("token").to_owned();
    let (status, room) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&token),
            &serde_json::json!({"preset": "private_chat"}),
        )
        .await;
    assert_eq!(status, 200, "{room}");
    let room = room["room_id"].as_str().expect("room").to_owned();
    let send = |txn: String| {
        let (srv, token, room) = (&srv, &token, &room);
        async move {
            let (status, body) = srv
                .put_json(
                    &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
                    Some(token),
                    &serde_json::json!({"msgtype": "m.text", "body": txn}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    for i in 0..20 {
        send(format!("before {i}")).await;
    }
    let uri = upload_text(&srv, &token, "", "kept in the backup").await;

    // A database file that is not there is not created and backed up empty.
    let dir = tempfile::tempdir().expect("dir");
    let nowhere = dir.path().join("none").join("matrixon.db");
    let refused = run(
        &[
            "backup",
            "--out",
            dir.path().join("x.db").to_str().expect("utf8"),
        ],
        vec![(
            "MATRIXON_DATABASE_URL".to_owned(),
            format!("sqlite:{}", nowhere.display()),
        )],
    )
    .await;
    assert!(
        refused
            .expect_err("no database")
            .to_string()
            .contains("no database at")
    );
    assert!(!nowhere.exists());

    // Backed up while senders keep writing.
    let out = dir.path().join("backup.db");
    let out_arg = out.to_str().expect("utf8").to_owned();
    let env = vec![("MATRIXON_DATABASE_URL".to_owned(), srv.db.url.clone())];
    let writing = async {
        for i in 0..10 {
            send(format!("during {i}")).await;
        }
    };
    let args = ["backup", "--out", out_arg.as_str()];
    let (printed, ()) = tokio::join!(run(&args, env.clone()), writing);
    assert!(printed.expect("backup").contains("Backed up"));
    send("after the backup".to_owned()).await;
    // A second backup to the same file is refused rather than overwriting it.
    let again = run(&["backup", "--out", &out_arg], env).await;
    assert!(
        again
            .expect_err("exists")
            .to_string()
            .contains("exists already")
    );

    // Wipe the database, put the backup in its place, start again.
    let media = srv
        .server
        .as_ref()
        .expect("running")
        .services
        .config
        .media
        .directory
        .clone();
    let db = srv.stop().await;
    let path = db.url.trim_start_matches("sqlite:").to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    std::fs::copy(&out, &path).expect("restore");
    let mut config = test_config(&db.url);
    config.media.directory = media;
    let srv = TestServer::start_on(db, config).await;
    let (status, page) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"),
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let bodies: Vec<&str> = page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    for i in 0..20 {
        assert!(
            bodies.contains(&format!("before {i}").as_str()),
            "{bodies:?}"
        );
    }
    assert!(!bodies.contains(&"after the backup"), "{bodies:?}");
    let path = uri.trim_start_matches("mxc://");
    let got = srv
        .http
        .get(srv.url(&format!("/_matrix/client/v1/media/download/{path}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("download");
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.expect("text"), "kept in the backup");
    srv.finish().await;

    if let Some(postgres) = Backend::postgres("backup_while_running_then_restore") {
        let db = Database::create(&postgres).await;
        let env = vec![("MATRIXON_DATABASE_URL".to_owned(), db.url.clone())];
        let refused = run(&["backup", "--out", &out_arg], env).await;
        assert!(
            refused
                .expect_err("postgres")
                .to_string()
                .contains("pg_dump")
        );
        db.drop_database().await;
    }
}

/// `matrixon export-user` and the admin API's export: a user's profile, account data,
/// devices, memberships, the events they sent (not others') and their uploads with the bytes,
/// one JSON object per line; only for administrators, only local users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_data_is_exported() {
    use serde_json::json;
    let srv = TestServer::start(&Backend::Sqlite).await;
    let alice = srv.register("alice", "pw").await;
    let alice_t = alice["access_token"].as_str().expect("token").to_owned();
    let alice_id = alice["user_id"].as_str().expect("id").to_owned();
    let bob = srv.register("bob", "pw").await;
    let bob_t = bob["access_token"].as_str().expect("token").to_owned();
    let (_, room) = srv
        .post_json(
            "/_matrix/client/v3/createRoom",
            Some(&alice_t),
            &json!({"preset": "public_chat"}),
        )
        .await;
    let room = room["room_id"].as_str().expect("room").to_owned();
    assert_eq!(
        srv.post_json(
            &format!("/_matrix/client/v3/join/{room}"),
            Some(&bob_t),
            &json!({})
        )
        .await
        .0,
        200
    );
    for (token, txn, body) in [
        (&alice_t, "a1", "alice says hi"),
        (&bob_t, "b1", "bob says hi"),
    ] {
        let (status, _) = srv
            .put_json(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
                Some(token),
                &json!({"msgtype": "m.text", "body": body}),
            )
            .await;
        assert_eq!(status, 200);
    }
    srv.put_json(
        &format!("/_matrix/client/v3/profile/{alice_id}/displayname"),
        Some(&alice_t),
        &json!({"displayname": "Alice A."}),
    )
    .await;
    srv.put_json(
        &format!("/_matrix/client/v3/user/{alice_id}/account_data/org.example.settings"),
        Some(&alice_t),
        &json!({"theme": "dark"}),
    )
    .await;
    let mxc = upload_text(&srv, &alice_t, "?filename=note.txt", "alice's file").await;
    upload_text(&srv, &bob_t, "", "bob's file").await;
    let of_count = |lines: &[serde_json::Value], kind: &str| {
        lines.iter().filter(|l| l["type"] == kind).count()
    };

    let check = |text: &str| {
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        let of = |kind: &'static str| lines.iter().filter(move |l| l["type"] == kind);
        assert_eq!(lines[0]["type"], "io.matrixon.export", "{text}");
        let end = lines.last().expect("lines");
        assert_eq!(end["type"], "end", "a complete export ends so");
        assert_eq!(end["lines"], lines.len());
        assert_eq!(
            of_count(&lines, "media"),
            1,
            "alice's upload only, not bob's"
        );
        assert_eq!(lines[0]["user_id"], alice_id.as_str());
        assert_eq!(
            of("profile").next().expect("profile")["displayname"],
            "Alice A."
        );
        assert!(
            of("account_data")
                .any(|l| l["event_type"] == "org.example.settings"
                    && l["content"]["theme"] == "dark")
        );
        assert!(of("device").count() >= 1);
        assert!(
            of("membership").any(|l| l["room_id"] == room.as_str() && l["membership"] == "join")
        );
        let bodies: Vec<&str> = of("event")
            .filter_map(|l| l["event"]["content"]["body"].as_str())
            .collect();
        assert_eq!(bodies, vec!["alice says hi"], "her messages, not bob's");
        assert!(of("event").all(|l| l["event"]["sender"] == alice_id.as_str()));
        let media = of("media").next().expect("media");
        assert_eq!(media["mxc"], mxc.as_str());
        assert_eq!(media["filename"], "note.txt");
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD
            .decode(media["data_base64"].as_str().expect("data"))
            .expect("base64");
        assert_eq!(data, b"alice's file");
    };

    // The command line.
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("alice.jsonl");
    let out_arg = out.to_str().expect("utf8").to_owned();
    let mut env = vec![("MATRIXON_DATABASE_URL".to_owned(), srv.db.url.clone())];
    let media_dir = srv
        .server
        .as_ref()
        .expect("running")
        .services
        .config
        .media
        .directory
        .clone();
    env.push(("MATRIXON_MEDIA_DIRECTORY".to_owned(), media_dir));
    let printed = run(&["export-user", &alice_id, "--out", &out_arg], env.clone())
        .await
        .expect("export");
    assert!(printed.contains("Exported"), "{printed}");
    check(&std::fs::read_to_string(&out).expect("export file"));
    let again = run(&["export-user", &alice_id, "--out", &out_arg], env.clone()).await;
    assert!(again.is_err(), "an existing file is not overwritten");
    let missing = dir.path().join("nobody.jsonl");
    let nobody = run(
        &[
            "export-user",
            "@nobody:localhost",
            "--out",
            missing.to_str().expect("utf8"),
        ],
        env,
    )
    .await;
    assert!(
        nobody
            .expect_err("no such user")
            .to_string()
            .contains("No user")
    );
    assert!(!missing.exists(), "no file is left for a failed export");

    // The admin API.
    let admin = crate::gate::admin_token(&srv).await;
    let path = format!("/_matrix/client/unstable/io.matrixon/admin/users/{alice_id}/export");
    let answer = srv
        .http
        .get(srv.url(&path))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("export");
    assert_eq!(answer.status(), 200);
    check(&answer.text().await.expect("body"));
    crate::harness::assert_error(&srv.get(&path, Some(&bob_t)).await, 403, "M_FORBIDDEN");
    crate::harness::assert_error(
        &srv.get(
            "/_matrix/client/unstable/io.matrixon/admin/users/@nobody:localhost/export",
            Some(&admin),
        )
        .await,
        404,
        "M_NOT_FOUND",
    );
    srv.finish().await;
}
