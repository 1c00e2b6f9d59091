//! Decentralised identifiers that stand for Ethereum accounts: did:pkh (an account), did:ethr
//! (ERC-1056: its current owner is read from the registry on chain) and did:key (a
//! secp256k1 key is an address; an ed25519 key controls none) and did:web (the document is
//! fetched over HTTPS under the same SSRF rules as CCIP-Read gateways, and its CAIP-10
//! `blockchainAccountId` verification methods name the accounts).

use alloy::{
    primitives::{Address, Bytes},
    sol,
    sol_types::SolCall,
};

use crate::{
    ens::Gateway,
    rpc::{ChainError, Chains},
};

/// The ERC-1056 registry's address (the same on mainnet and the networks it is deployed to).
pub const ETHR_REGISTRY: Address =
    alloy::primitives::address!("dCa7EF03e98e0DC2B855bE647C39ABe984fcF21B");

sol! {
    /// The ERC-1056 reads and events used here.
    interface IEthereumDIDRegistry {
        function identityOwner(address identity) external view returns (address);
        function changed(address identity) external view returns (uint256);
        function validDelegate(address identity, bytes32 delegateType, address delegate)
            external view returns (bool);
        event DIDOwnerChanged(address indexed identity, address owner, uint256 previousChange);
        event DIDDelegateChanged(
            address indexed identity,
            bytes32 delegateType,
            address delegate,
            uint256 validTo,
            uint256 previousChange
        );
        event DIDAttributeChanged(
            address indexed identity,
            bytes32 name,
            bytes value,
            uint256 validTo,
            uint256 previousChange
        );
    }
}

/// Most delegates of one did:ethr identity confirmed on chain.
const MAX_ETHR_DELEGATES: usize = 50;

/// Most changes of one did:ethr identity followed back through the registry's event chain.
const MAX_ETHR_CHANGES: usize = 100;

/// The JSON-LD contexts of the documents built here.
const CONTEXTS: [&str; 2] = [
    "https://www.w3.org/ns/did/v1",
    "https://w3id.org/security/suites/secp256k1recovery-2020/v2",
];

/// Why a DID's controller could not be found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DidError {
    /// A did:ethr network could not be asked.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// A did:web document could not be fetched (refused address, TLS, HTTP error, not JSON).
    #[error("did:web: {0}")]
    Fetch(String),
}

/// A DID this server understands, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Did {
    /// `did:pkh:eip155:<chain>:<address>`.
    Pkh {
        /// EIP-155 chain id.
        chain: u64,
        /// The account.
        address: Address,
    },
    /// `did:ethr:[<network>:]<address>`: the identity, whose owner lives in the registry.
    Ethr {
        /// EIP-155 chain id of the network (mainnet when none is named).
        chain: u64,
        /// The identity address.
        identity: Address,
    },
    /// `did:key:z…` of a secp256k1 key: the address of that key.
    KeySecp256k1 {
        /// The key's address.
        address: Address,
    },
    /// `did:key:z…` of an ed25519 key: no Ethereum address.
    KeyEd25519 {
        /// The 32-byte public key.
        public_key: [u8; 32],
    },
    /// `did:web:<host>[:<path>…]`: the document at `url`.
    Web {
        /// `https://<host>/.well-known/did.json` or `https://<host>/<path>/did.json`.
        url: String,
    },
}

/// Parses a DID; errors say what is wrong in words.
pub fn parse(did: &str) -> Result<Did, String> {
    if did.len() > 512 {
        return Err("a DID of more than 512 characters".to_owned());
    }
    let address = |text: &str| crate::gate::parse_address(text);
    if let Some(rest) = did.strip_prefix("did:pkh:") {
        let (caip2, account) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("`{did}`: did:pkh:eip155:<chain>:<address>"))?;
        let chain = crate::rpc::parse_caip2(caip2)?;
        return Ok(Did::Pkh {
            chain,
            address: address(account)?,
        });
    }
    if let Some(rest) = did.strip_prefix("did:ethr:") {
        let (network, id) = match rest.rsplit_once(':') {
            Some((network, id)) => (Some(network), id),
            None => (None, rest),
        };
        let chain = match network {
            None | Some("mainnet") => 1,
            Some("sepolia") => 11_155_111,
            Some(hex) if hex.starts_with("0x") => u64::from_str_radix(&hex[2..], 16)
                .map_err(|_| format!("`{did}`: the network {hex} is not a chain id"))?,
            Some(other) => return Err(format!("`{did}`: unknown did:ethr network `{other}`")),
        };
        let identity = if id.len() == 68 {
            // A compressed public key: the identity is its address.
            let bytes = alloy::primitives::hex::decode(id)
                .map_err(|_| format!("`{did}`: the key is not hex"))?;
            secp256k1_address(&bytes)?
        } else {
            address(id)?
        };
        return Ok(Did::Ethr { chain, identity });
    }
    if let Some(key) = did.strip_prefix("did:key:") {
        let encoded = key
            .strip_prefix('z')
            .ok_or_else(|| format!("`{did}`: did:key values are base58btc (start with z)"))?;
        let bytes = bs58::decode(encoded)
            .into_vec()
            .map_err(|_| format!("`{did}`: not base58btc"))?;
        return match bytes.as_slice() {
            [0xe7, 0x01, key @ ..] if key.len() == 33 => Ok(Did::KeySecp256k1 {
                address: secp256k1_address(key)?,
            }),
            [0xed, 0x01, key @ ..] if key.len() == 32 => {
                let mut public_key = [0u8; 32];
                public_key.copy_from_slice(key);
                Ok(Did::KeyEd25519 { public_key })
            }
            _ => Err(format!(
                "`{did}`: only secp256k1 and ed25519 did:key values are understood"
            )),
        };
    }
    if let Some(rest) = did.strip_prefix("did:web:") {
        let mut parts = rest.split(':');
        let host = parts
            .next()
            .unwrap_or_default()
            .replace("%3A", ":")
            .replace("%3a", ":");
        let path: Vec<&str> = parts.collect();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%')
                })
        };
        let host_ok = host.split_once(':').map_or(valid(&host), |(h, port)| {
            valid(h) && port.parse::<u16>().is_ok()
        });
        if !host_ok || !path.iter().all(|p| valid(p) && *p != "." && *p != "..") {
            return Err(format!("`{did}` is not a valid did:web"));
        }
        let url = if path.is_empty() {
            format!("https://{host}/.well-known/did.json")
        } else {
            format!("https://{host}/{}/did.json", path.join("/"))
        };
        return Ok(Did::Web { url });
    }
    Err(format!(
        "`{did}`: only did:pkh, did:ethr, did:key and did:web are resolved here"
    ))
}

/// The Ethereum accounts a DID document names: CAIP-10 `blockchainAccountId`s of eip155
/// chains (and the older `0x…@eip155:<chain>` form) in its verification methods.
pub fn document_accounts(document: &serde_json::Value) -> Vec<Address> {
    let mut out = Vec::new();
    for method in document["verificationMethod"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(account) = method["blockchainAccountId"].as_str() else {
            continue;
        };
        let address = match account.rsplit_once(':') {
            Some((chain, address)) if chain.starts_with("eip155:") => Some(address),
            _ => account
                .split_once('@')
                .filter(|(_, chain)| chain.starts_with("eip155:"))
                .map(|(address, _)| address),
        };
        if let Some(address) = address.and_then(|a| crate::gate::parse_address(a).ok())
            && !out.contains(&address)
        {
            out.push(address);
        }
    }
    out
}

/// The address of a compressed secp256k1 public key.
fn secp256k1_address(compressed: &[u8]) -> Result<Address, String> {
    let key = secp256k1::PublicKey::from_slice(compressed)
        .map_err(|_| "not a secp256k1 public key".to_owned())?;
    let uncompressed = key.serialize_uncompressed();
    Ok(Address::from_raw_public_key(&uncompressed[1..]))
}

/// A verification method naming an Ethereum account.
fn account_method(did: &str, fragment: &str, chain: u64, address: Address) -> serde_json::Value {
    serde_json::json!({
        "id": format!("{did}#{fragment}"),
        "type": "EcdsaSecp256k1RecoveryMethod2020",
        "controller": did,
        "blockchainAccountId": format!("eip155:{chain}:{address:#x}"),
    })
}

/// A delegate type as ERC-1056 stores it: the name, right-padded to 32 bytes.
fn delegate_type(name: &str) -> alloy::primitives::B256 {
    let mut bytes = [0u8; 32];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    alloy::primitives::B256::from(bytes)
}

impl Did {
    /// The DID document: built for did:pkh and did:key, read from the registry on chain for
    /// did:ethr (its owner and valid `veriKey` / `sigAuth` delegates), fetched for did:web.
    pub async fn document(
        &self,
        did: &str,
        chains: &Chains,
        fetch: &Gateway,
    ) -> Result<serde_json::Value, DidError> {
        let (methods, authentication) = match self {
            Self::Web { url } => return fetch.get_json(url).await.map_err(DidError::Fetch),
            Self::Pkh { chain, address } => {
                let method = account_method(did, "blockchainAccountId", *chain, *address);
                let id = method["id"].clone();
                (vec![method], vec![id])
            }
            Self::KeySecp256k1 { .. } | Self::KeyEd25519 { .. } => {
                let multibase = did.strip_prefix("did:key:").unwrap_or_default();
                let id = format!("{did}#{multibase}");
                let method = serde_json::json!({
                    "id": id, "type": "Multikey", "controller": did,
                    "publicKeyMultibase": multibase,
                });
                (vec![method], vec![serde_json::Value::from(id)])
            }
            Self::Ethr { chain, identity } => {
                self.ethr_methods(did, chains, *chain, *identity).await?
            }
        };
        Ok(serde_json::json!({
            "@context": CONTEXTS,
            "id": did,
            "verificationMethod": methods,
            "authentication": authentication,
            "assertionMethod": methods.iter().map(|m| m["id"].clone()).collect::<Vec<_>>(),
        }))
    }

    /// A did:ethr identity's methods (owner first, then valid delegates) and those that may
    /// authenticate (the owner and `sigAuth` delegates). Delegates are found by following
    /// the registry's change events back from `changed(identity)`, and each is confirmed with
    /// `validDelegate` (expired and revoked ones drop out).
    async fn ethr_methods(
        &self,
        did: &str,
        chains: &Chains,
        chain_id: u64,
        identity: Address,
    ) -> Result<(Vec<serde_json::Value>, Vec<serde_json::Value>), DidError> {
        use alloy::sol_types::SolEvent;
        let chain = chains.get(chain_id)?;
        let decode_failed =
            |what: &str| DidError::Chain(ChainError::Refused(format!("undecodable {what}")));
        let owner = self
            .controller(chains, &Gateway::default())
            .await?
            .unwrap_or(identity);
        let changed = chain
            .call(
                Some(ETHR_REGISTRY),
                IEthereumDIDRegistry::changedCall { identity }
                    .abi_encode()
                    .into(),
                None,
            )
            .await?;
        let mut block = IEthereumDIDRegistry::changedCall::abi_decode_returns(&changed)
            .map_err(|_| decode_failed("changed answer"))?;
        let subject = identity.into_word();
        // Attribute changes are not read into the document, but they are links in the chain.
        let events = [
            IEthereumDIDRegistry::DIDOwnerChanged::SIGNATURE_HASH,
            IEthereumDIDRegistry::DIDDelegateChanged::SIGNATURE_HASH,
            IEthereumDIDRegistry::DIDAttributeChanged::SIGNATURE_HASH,
        ];
        let (sig_auth, veri_key) = (delegate_type("sigAuth"), delegate_type("veriKey"));
        // (type, delegate) newest first; later duplicates are older and ignored.
        let mut candidates: Vec<(alloy::primitives::B256, Address)> = Vec::new();
        let mut steps = 0;
        while !block.is_zero() && steps < MAX_ETHR_CHANGES {
            steps += 1;
            let at = u64::try_from(block).map_err(|_| decode_failed("block number"))?;
            let logs = chain
                .subject_logs(ETHR_REGISTRY, &events, subject, (at, at))
                .await?;
            let mut previous = alloy::primitives::U256::ZERO;
            for log in logs.iter().rev() {
                let data = &log.inner.data;
                let link = if let Ok(changed) =
                    IEthereumDIDRegistry::DIDDelegateChanged::decode_log_data(data)
                {
                    let kind = changed.delegateType;
                    if (kind == sig_auth || kind == veri_key)
                        && candidates.len() < MAX_ETHR_DELEGATES
                        && !candidates.contains(&(kind, changed.delegate))
                    {
                        candidates.push((kind, changed.delegate));
                    }
                    Some(changed.previousChange)
                } else if let Ok(changed) =
                    IEthereumDIDRegistry::DIDOwnerChanged::decode_log_data(data)
                {
                    Some(changed.previousChange)
                } else {
                    IEthereumDIDRegistry::DIDAttributeChanged::decode_log_data(data)
                        .ok()
                        .map(|changed| changed.previousChange)
                };
                if let Some(link) = link.filter(|l| *l < block) {
                    previous = previous.max(link);
                }
            }
            block = previous;
        }
        let controller = account_method(did, "controller", chain_id, owner);
        let mut authentication = vec![controller["id"].clone()];
        let mut methods = vec![controller];
        for (kind, delegate) in candidates {
            let valid = chain
                .call(
                    Some(ETHR_REGISTRY),
                    IEthereumDIDRegistry::validDelegateCall {
                        identity,
                        delegateType: kind,
                        delegate,
                    }
                    .abi_encode()
                    .into(),
                    None,
                )
                .await?;
            let valid = IEthereumDIDRegistry::validDelegateCall::abi_decode_returns(&valid)
                .map_err(|_| decode_failed("validDelegate answer"))?;
            if !valid {
                continue;
            }
            let method = account_method(
                did,
                &format!("delegate-{}", methods.len()),
                chain_id,
                delegate,
            );
            if kind == sig_auth {
                authentication.push(method["id"].clone());
            }
            methods.push(method);
        }
        Ok((methods, authentication))
    }

    /// The Ethereum address the DID controls now, if any: did:ethr asks the registry on its
    /// chain, did:web fetches its document through `fetch` (its first eip155 account).
    pub async fn controller(
        &self,
        chains: &Chains,
        fetch: &Gateway,
    ) -> Result<Option<Address>, DidError> {
        match self {
            Self::Web { url } => {
                let document = fetch.get_json(url).await.map_err(DidError::Fetch)?;
                Ok(document_accounts(&document).first().copied())
            }
            Self::Pkh { address, .. } | Self::KeySecp256k1 { address } => Ok(Some(*address)),
            Self::KeyEd25519 { .. } => Ok(None),
            Self::Ethr { chain, identity } => {
                let call = IEthereumDIDRegistry::identityOwnerCall {
                    identity: *identity,
                };
                let data: Bytes = call.abi_encode().into();
                let answer = chains
                    .get(*chain)?
                    .call(Some(ETHR_REGISTRY), data, None)
                    .await?;
                IEthereumDIDRegistry::identityOwnerCall::abi_decode_returns(&answer)
                    .map(Some)
                    .map_err(|_| {
                        DidError::Chain(ChainError::Refused(
                            "undecodable identityOwner answer".to_owned(),
                        ))
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dids_parse_to_what_they_control() {
        let address: Address = "0xb9c5714089478a327f09197987f16f9e5d936e8a"
            .parse()
            .expect("address");
        assert_eq!(
            parse("did:pkh:eip155:1:0xb9c5714089478a327f09197987f16f9e5d936e8a"),
            Ok(Did::Pkh { chain: 1, address })
        );
        assert_eq!(
            parse("did:ethr:0xb9c5714089478a327f09197987f16f9e5d936e8a"),
            Ok(Did::Ethr {
                chain: 1,
                identity: address
            })
        );
        assert_eq!(
            parse("did:ethr:0x7a69:0xb9c5714089478a327f09197987f16f9e5d936e8a"),
            Ok(Did::Ethr {
                chain: 31337,
                identity: address
            })
        );
        // The did:key test vector of the W3C did:key spec (secp256k1) and its address.
        let secp = parse("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme");
        assert!(matches!(secp, Ok(Did::KeySecp256k1 { .. })), "{secp:?}");
        let ed = parse("did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp");
        assert!(matches!(ed, Ok(Did::KeyEd25519 { .. })), "{ed:?}");
        assert_eq!(
            parse("did:web:example.org"),
            Ok(Did::Web {
                url: "https://example.org/.well-known/did.json".to_owned()
            })
        );
        assert_eq!(
            parse("did:web:localhost%3A8443:users:alice"),
            Ok(Did::Web {
                url: "https://localhost:8443/users/alice/did.json".to_owned()
            })
        );
        let document = serde_json::json!({"verificationMethod": [
            {"blockchainAccountId": "eip155:1:0xb9c5714089478a327f09197987f16f9e5d936e8a"},
            {"blockchainAccountId": "0xb9c5714089478a327f09197987f16f9e5d936e8a@eip155:1"},
            {"blockchainAccountId": "solana:abc:xyz"},
            {"publicKeyHex": "00"}
        ]});
        assert_eq!(document_accounts(&document), vec![address]);
        for bad in [
            "did:pkh:eip155:1:0x12",
            "did:pkh:solana:1:abc",
            "did:ethr:goerli:0xb9c5714089478a327f09197987f16f9e5d936e8a",
            "did:key:abc",
            "did:key:z1111",
            "did:web:ex ample.org",
            "did:web:example.org:..:etc",
            "did:nope",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
