//! The reference implementation's conformance vectors, plus cases of our own.

use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, keccak256};
use serde_json::{Map, Value};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::*;

fn vectors(name: &str) -> Map<String, Value> {
    let text = match name {
        "parsing_positive" => include_str!("../../tests/vectors/siwe/parsing_positive.json"),
        "parsing_negative" => include_str!("../../tests/vectors/siwe/parsing_negative.json"),
        "parsing_negative_objects" => {
            include_str!("../../tests/vectors/siwe/parsing_negative_objects.json")
        }
        "verification_positive" => {
            include_str!("../../tests/vectors/siwe/verification_positive.json")
        }
        "verification_negative" => {
            include_str!("../../tests/vectors/siwe/verification_negative.json")
        }
        other => panic!("no vector file {other}"),
    };
    serde_json::from_str(text).expect("vector JSON")
}

fn normalized(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// The field a negative vector's name says is at fault.
fn named_field(name: &str) -> &str {
    if let Some(rest) = name
        .strip_prefix("missing ")
        .or_else(|| name.strip_prefix("out of order "))
    {
        return rest;
    }
    match name {
        "domain not RFC4501 authority" => "domain",
        "address not EIP-55" => "address",
        "statement has line break" => "statement",
        "uri is non-RFC 3986" => "uri",
        "version not 1" => "version",
        "not a valid chainId" => "chain",
        "nonce with less then 8 chars" => "nonce",
        "non-ISO 8601 issuedAt" => "issued",
        "non-ISO 8601 expirationTime" => "expiration",
        "non-ISO 8601 notBefore" => "notbefore",
        "resources not separated by line break"
        | "first resource not-RFC 3986"
        | "second resource is not-RFC3986" => "resource",
        other => panic!("unmapped vector {other}"),
    }
}

#[test]
fn positive_parsing_vectors_parse_to_their_fields_and_back() {
    let cases = vectors("parsing_positive");
    assert_eq!(cases.len(), 19);
    for (name, case) in cases {
        let text = case["message"].as_str().expect("message");
        let message: Message = text.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
        let fields: Fields = serde_json::from_value(case["fields"].clone()).expect("fields");
        let from_fields = Message::try_from(fields).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(message, from_fields, "{name}");
        assert_eq!(message.to_string(), text, "{name}: re-serialization");
    }
}

#[test]
fn negative_parsing_vectors_fail_for_the_named_field() {
    let cases = vectors("parsing_negative");
    assert_eq!(cases.len(), 29);
    for (name, text) in cases {
        let err = text
            .as_str()
            .expect("text")
            .parse::<Message>()
            .expect_err(&name);
        let field = named_field(&name);
        assert!(
            normalized(err.field).contains(&normalized(field)),
            "{name}: failed for {err}"
        );
    }
}

#[test]
fn negative_field_vectors_fail_for_the_named_field() {
    let cases = vectors("parsing_negative_objects");
    assert_eq!(cases.len(), 18);
    for (name, object) in cases {
        let reason = match serde_json::from_value::<Fields>(object) {
            Err(e) => e.to_string(),
            Ok(fields) => Message::try_from(fields).expect_err(&name).field.to_owned(),
        };
        assert!(
            normalized(&reason).contains(&normalized(named_field(&name))),
            "{name}: failed for {reason}"
        );
    }
}

fn expectations_for<'a>(case: &'a Value, message: &'a Message) -> Expectations<'a> {
    let now = case["time"]
        .as_str()
        .map_or_else(OffsetDateTime::now_utc, |t| {
            OffsetDateTime::parse(t, &Rfc3339).expect("time")
        });
    Expectations {
        domain: case["domainBinding"].as_str().unwrap_or(&message.domain),
        scheme: None,
        uri_origin: None,
        chain_ids: &[],
        nonce: Some(case["matchNonce"].as_str().unwrap_or(&message.nonce)),
        now,
        clock_skew: Duration::ZERO,
        // The reference implementation accepts messages issued after `time`; its vectors do.
        reject_future_issued_at: false,
    }
}

fn signature_of(case: &Value) -> Vec<u8> {
    let hex = case["signature"].as_str().expect("signature");
    alloy_primitives::hex::decode(hex).unwrap_or_else(|_| hex.as_bytes().to_vec())
}

#[tokio::test]
async fn positive_verification_vectors_verify() {
    let cases = vectors("verification_positive");
    assert_eq!(cases.len(), 4);
    for (name, case) in cases {
        let fields: Fields = serde_json::from_value(case.clone()).expect("fields");
        let message = Message::try_from(fields).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = message.to_string();
        let expect = expectations_for(&case, &message);
        let (_, signer) = verify(&text, &signature_of(&case), &expect, &NoChain)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(signer, Signer::Eoa, "{name}");
    }
}

#[tokio::test]
async fn negative_verification_vectors_fail_for_the_named_reason() {
    let cases = vectors("verification_negative");
    assert_eq!(cases.len(), 10);
    for (name, case) in cases {
        let outcome: Result<(), String> = async {
            let fields: Fields = serde_json::from_value(case.clone()).map_err(|e| e.to_string())?;
            let message = Message::try_from(fields).map_err(|e| format!("parse:{}", e.field))?;
            let text = message.to_string();
            let expect = expectations_for(&case, &message);
            match verify(&text, &signature_of(&case), &expect, &NoChain).await {
                Ok(_) => Ok(()),
                Err(SiweError::Verify(e)) => Err(format!("{e:?}")),
                Err(SiweError::Parse(e)) => Err(format!("parse:{}", e.field)),
            }
        }
        .await;
        let reason = outcome.expect_err(&name);
        let expected = match name.as_str() {
            "expired message" | "custom time" => "Expired",
            "domain binding" => "DomainMismatch",
            "custom nonce" => "NonceMismatch",
            "malformed signature" => "MalformedSignature",
            "wrong signature" => "InvalidSignature",
            "not yet valid" => "NotYetValid",
            "invalid issuedAt" => "parse:issued-at",
            "invalid notBefore" => "parse:not-before",
            "invalid expirationTime" => "parse:expiration-time",
            other => panic!("unmapped vector {other}"),
        };
        assert!(
            reason.starts_with(expected),
            "{name}: failed for {reason}, expected {expected}"
        );
    }
}

// --- Cases of our own: an EOA signing with a known key. ---

/// secp256k1 key 0x…01 (generator point): a well-known test account.
const TEST_KEY: [u8; 32] = {
    let mut k = [0u8; 32];
    k[31] = 1;
    k
};

fn sign(text: &str) -> Vec<u8> {
    use k256::ecdsa::SigningKey;
    let key = SigningKey::from_slice(&TEST_KEY).expect("key");
    let hash = alloy_primitives::eip191_hash_message(text);
    let (sig, recid) = key.sign_prehash_recoverable(hash.as_slice()).expect("sign");
    let mut out = sig.to_bytes().to_vec();
    out.push(27 + recid.to_byte());
    out
}

fn test_address() -> Address {
    let key = k256::ecdsa::SigningKey::from_slice(&TEST_KEY).expect("key");
    let point = key.verifying_key().to_encoded_point(false);
    Address::from_slice(&keccak256(&point.as_bytes()[1..])[12..])
}

fn message_text(extra: &str) -> String {
    format!(
        "https://matrix.example.org wants you to sign in with your Ethereum account:\n{}\n\nSign in to Matrixon\n\nURI: https://matrix.example.org/login\nVersion: 1\nChain ID: 1\nNonce: abcdef123456\nIssued At: 2026-11-25T12:00:00Z{extra}",
        test_address().to_checksum(None)
    )
}

fn server_expectations(now: &str) -> Expectations<'static> {
    Expectations {
        domain: "matrix.example.org",
        scheme: Some("https"),
        uri_origin: Some("https://matrix.example.org"),
        chain_ids: &[1, 10],
        nonce: Some("abcdef123456"),
        now: OffsetDateTime::parse(now, &Rfc3339).expect("now"),
        clock_skew: Duration::from_secs(60),
        reject_future_issued_at: true,
    }
}

#[tokio::test]
async fn server_side_checks() {
    let text =
        message_text("\nExpiration Time: 2026-11-25T12:10:00Z\nNot Before: 2026-11-25T11:59:00Z");
    let sig = sign(&text);
    let ok = server_expectations("2026-11-25T12:01:00Z");
    assert_eq!(
        verify(&text, &sig, &ok, &NoChain).await.expect("valid").1,
        Signer::Eoa
    );

    let fails = |expect: Expectations<'static>, text: String, sig: Vec<u8>| async move {
        match verify(&text, &sig, &expect, &NoChain).await {
            Err(SiweError::Verify(e)) => e,
            other => panic!("expected a verification error, got {other:?}"),
        }
    };
    // Expired, with skew: 12:10 + 60 s.
    assert_eq!(
        fails(
            server_expectations("2026-11-25T12:11:00Z"),
            text.clone(),
            sig.clone()
        )
        .await,
        VerifyError::Expired
    );
    assert!(
        verify(
            &text,
            &sig,
            &server_expectations("2026-11-25T12:10:59Z"),
            &NoChain
        )
        .await
        .is_ok()
    );
    // Not yet valid: 11:59 - 60 s.
    assert_eq!(
        fails(
            server_expectations("2026-11-25T11:57:59Z"),
            text.clone(),
            sig.clone()
        )
        .await,
        VerifyError::NotYetValid
    );
    // Issued far in the future.
    let plain = message_text("");
    let plain_sig = sign(&plain);
    assert_eq!(
        fails(
            server_expectations("2026-11-25T11:00:00Z"),
            plain.clone(),
            plain_sig.clone()
        )
        .await,
        VerifyError::IssuedInFuture
    );
    // Wrong chain, domain, scheme, URI, nonce.
    let mut e = server_expectations("2026-11-25T12:01:00Z");
    e.chain_ids = &[10];
    assert_eq!(
        fails(e, plain.clone(), plain_sig.clone()).await,
        VerifyError::ChainNotAllowed(1)
    );
    let mut e = server_expectations("2026-11-25T12:01:00Z");
    e.domain = "evil.example";
    assert!(matches!(
        fails(e, plain.clone(), plain_sig.clone()).await,
        VerifyError::DomainMismatch(_)
    ));
    let mut e = server_expectations("2026-11-25T12:01:00Z");
    e.scheme = Some("http");
    assert!(matches!(
        fails(e, plain.clone(), plain_sig.clone()).await,
        VerifyError::SchemeMismatch(_)
    ));
    let mut e = server_expectations("2026-11-25T12:01:00Z");
    e.uri_origin = Some("https://matrix.example.org.evil.example");
    assert!(matches!(
        fails(e, plain.clone(), plain_sig.clone()).await,
        VerifyError::UriMismatch(_)
    ));
    let mut e = server_expectations("2026-11-25T12:01:00Z");
    e.uri_origin = Some("https://matrix.example");
    assert!(matches!(
        fails(e, plain.clone(), plain_sig.clone()).await,
        VerifyError::UriMismatch(_)
    ));
    let mut e = server_expectations("2026-11-25T12:01:00Z");
    e.nonce = Some("zzzzzzzzzzzz");
    assert_eq!(
        fails(e, plain.clone(), plain_sig.clone()).await,
        VerifyError::NonceMismatch
    );
    // Tampered message: the signature no longer matches.
    let tampered = plain.replace("Sign in to Matrixon", "Sign in to Matrixon!");
    assert_eq!(
        fails(
            server_expectations("2026-11-25T12:01:00Z"),
            tampered,
            plain_sig.clone()
        )
        .await,
        VerifyError::InvalidSignature
    );
    // High-s twin of a valid signature is refused.
    let mut high = plain_sig.clone();
    let n = alloy_primitives::U256::from_str_radix(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
        16,
    )
    .expect("n");
    let s = alloy_primitives::U256::from_be_slice(&high[32..64]);
    high[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
    high[64] = if high[64] == 27 { 28 } else { 27 };
    assert_eq!(
        fails(
            server_expectations("2026-11-25T12:01:00Z"),
            plain.clone(),
            high
        )
        .await,
        VerifyError::HighS
    );
    // Recovery byte 0/1 works like 27/28.
    let mut low_v = plain_sig.clone();
    low_v[64] -= 27;
    assert!(
        verify(
            &plain,
            &low_v,
            &server_expectations("2026-11-25T12:01:00Z"),
            &NoChain
        )
        .await
        .is_ok()
    );
    // A contract check that cannot reach the chain is "unavailable", not "invalid".
    let mut wrapped = vec![0u8; 64];
    wrapped.extend_from_slice(&ERC6492_MAGIC);
    assert!(matches!(
        fails(
            server_expectations("2026-11-25T12:01:00Z"),
            plain.clone(),
            wrapped
        )
        .await,
        VerifyError::Unavailable(_)
    ));
}

struct DownChain;

impl ContractSignatures for DownChain {
    async fn has_code(&self, _: u64, _: Address) -> Result<bool, Unavailable> {
        Err(Unavailable("connection refused".to_owned()))
    }
    async fn erc1271_valid(
        &self,
        _: u64,
        _: Address,
        _: B256,
        _: Bytes,
    ) -> Result<bool, Unavailable> {
        Err(Unavailable("connection refused".to_owned()))
    }
    async fn erc6492_valid(
        &self,
        _: u64,
        _: Address,
        _: B256,
        _: Bytes,
    ) -> Result<bool, Unavailable> {
        Err(Unavailable("connection refused".to_owned()))
    }
}

#[tokio::test]
async fn eoa_needs_no_chain_but_a_foreign_signature_does() {
    let text = message_text("");
    let expect = server_expectations("2026-11-25T12:01:00Z");
    // A plain account's own signature verifies even with the chain down.
    assert_eq!(
        verify(&text, &sign(&text), &expect, &DownChain)
            .await
            .expect("valid")
            .1,
        Signer::Eoa
    );
    // Someone else's signature needs the chain (the address might be a contract): unavailable.
    let other = sign("another text");
    assert!(matches!(
        verify(&text, &other, &expect, &DownChain).await,
        Err(SiweError::Verify(VerifyError::Unavailable(_)))
    ));
}

#[test]
fn oversize_fields_are_refused() {
    let long_statement =
        message_text("").replace("Sign in to Matrixon", &"x".repeat(limits::STATEMENT + 1));
    assert_eq!(
        long_statement.parse::<Message>().expect_err("long").field,
        "statement"
    );
    let many = format!(
        "{}\nResources:{}",
        message_text(""),
        "\n- https://a.example".repeat(limits::RESOURCES + 1)
    );
    assert_eq!(
        many.parse::<Message>().expect_err("many").field,
        "resources"
    );
    let huge = "x".repeat(limits::MESSAGE + 1);
    assert_eq!(huge.parse::<Message>().expect_err("huge").field, "message");
    let long_nonce = message_text("").replace("abcdef123456", &"a".repeat(limits::NONCE + 1));
    assert_eq!(
        long_nonce.parse::<Message>().expect_err("nonce").field,
        "nonce"
    );
    let crlf = message_text("").replace('\n', "\r\n");
    assert_eq!(crlf.parse::<Message>().expect_err("crlf").field, "message");
}

proptest::proptest! {
    // MATRIXON_FUZZ_CASES raises the case count for long fuzzing runs (docs/BENCHMARKS.md).
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("MATRIXON_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(3_000)
    ))]

    /// The parser never panics, whatever it is fed.
    #[test]
    fn parser_never_panics(text in "\\PC*") {
        let _ = text.parse::<Message>();
    }

    /// Mutations of a valid message never panic, and whatever parses re-serializes to itself.
    #[test]
    fn mutated_messages_round_trip(cut in 0usize..400, insert in "[\\x00-\\x7f]{0,8}") {
        let base = message_text("\nExpiration Time: 2026-11-25T12:10:00Z\nRequest ID: r-1\nResources:\n- https://a.example/x");
        let cut = cut.min(base.len());
        let text = format!("{}{}{}", &base[..cut], insert, &base[cut..]);
        if let Ok(message) = text.parse::<Message>() {
            proptest::prop_assert_eq!(message.to_string(), text);
        }
    }
}
