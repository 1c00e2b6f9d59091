//! Benchmark: EOA Sign-In with Ethereum verifications per second on one core
//! (parse + field checks + signature recovery). `cargo bench -p matrixon-chain --bench siwe`

use std::time::{Duration, Instant};

use k256::ecdsa::SigningKey;
use matrixon_chain::siwe::{Expectations, NoChain, verify};
use time::OffsetDateTime;

fn main() {
    let key = SigningKey::from_slice(&[7u8; 32]).expect("key");
    let point = key.verifying_key().to_encoded_point(false);
    let address = alloy_primitives::Address::from_slice(
        &alloy_primitives::keccak256(&point.as_bytes()[1..])[12..],
    );
    let text = format!(
        "matrix.example.org wants you to sign in with your Ethereum account:\n{}\n\nSign in to Matrixon\n\nURI: https://matrix.example.org/login\nVersion: 1\nChain ID: 1\nNonce: abcdef123456\nIssued At: 2026-11-25T12:00:00Z\nExpiration Time: 2100-01-01T00:00:00Z",
        address.to_checksum(None)
    );
    let hash = alloy_primitives::eip191_hash_message(&text);
    let (sig, recid) = key.sign_prehash_recoverable(hash.as_slice()).expect("sign");
    let mut signature = sig.to_bytes().to_vec();
    signature.push(27 + recid.to_byte());
    let expect = Expectations {
        domain: "matrix.example.org",
        scheme: Some("https"),
        uri_origin: Some("https://matrix.example.org"),
        chain_ids: &[1],
        nonce: Some("abcdef123456"),
        now: OffsetDateTime::now_utc(),
        clock_skew: Duration::from_secs(60),
        reject_future_issued_at: true,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Warm up, then measure for three seconds on this one thread.
        for _ in 0..1_000 {
            verify(&text, &signature, &expect, &NoChain)
                .await
                .expect("valid");
        }
        let started = Instant::now();
        let mut count = 0u64;
        while started.elapsed() < Duration::from_secs(3) {
            for _ in 0..100 {
                verify(&text, &signature, &expect, &NoChain)
                    .await
                    .expect("valid");
            }
            count += 100;
        }
        let per_second = count as f64 / started.elapsed().as_secs_f64();
        println!("EOA SIWE verifications (parse + checks + recover), one core: {per_second:.0}/s");
        // The floor: signature recovery alone, for reading the figure above.
        let started = Instant::now();
        let mut count = 0u64;
        while started.elapsed() < Duration::from_secs(2) {
            for _ in 0..100 {
                matrixon_chain::siwe::recover_eoa(&text, &signature).expect("recovers");
            }
            count += 100;
        }
        let per_second = count as f64 / started.elapsed().as_secs_f64();
        println!("of which signature recovery alone (libsecp256k1), one core: {per_second:.0}/s");
    });
}
