//! Signing in to Matrixon from Rust: alloy signs the SIWE message, plain HTTP logs in.

use alloy::signers::{Signer, local::PrivateKeySigner};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Signs in to the homeserver at `server` (e.g. `https://matrix.example.org`) with `signer`;
/// returns the login response (`user_id`, `access_token`, `device_id`, ...).
pub async fn sign_in(server: &str, signer: &PrivateKeySigner) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let api = format!("{server}/_matrix/client");
    let p: Value = http
        .get(format!("{api}/unstable/io.matrixon/siwe/nonce"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let field = |name: &str| p[name].as_str().unwrap_or_default().to_owned();
    let chain_id = p["chain_ids"][0]
        .as_str()
        .and_then(|caip2| caip2.strip_prefix("eip155:"))
        .ok_or_else(|| anyhow::anyhow!("the server names no chain"))?
        .to_owned();
    let message = format!(
        "{domain} wants you to sign in with your Ethereum account:\n{address}\n\n{statement}\n\n\
         URI: {uri}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\nIssued At: {now}",
        domain = field("domain"),
        address = signer.address().to_checksum(None),
        statement = field("statement"),
        uri = field("uri"),
        nonce = field("nonce"),
        now = OffsetDateTime::now_utc().format(&Rfc3339)?,
    );
    let signature = signer.sign_message(message.as_bytes()).await?;
    let response = http
        .post(format!("{api}/v3/login"))
        .json(&json!({
            "type": "io.matrixon.login.siwe",
            "message": message,
            "signature": alloy::hex::encode_prefixed(signature.as_bytes()),
            "initial_device_display_name": "My Rust app",
        }))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "login refused: {body}");
    Ok(body)
}
