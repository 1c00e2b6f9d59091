//! A local Ethereum node (anvil, installed by scripts/test.sh) with the test contracts.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use alloy::primitives::{Address, B256, Bytes};
use serde_json::{Value, json};

/// anvil's first unlocked, funded account.
pub const DEPLOYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// anvil's default chain id.
pub const CHAIN_ID: u64 = 31337;

/// A contract artifact from `contracts/out`.
pub fn artifact(name: &str) -> Value {
    let text = match name {
        "Multicall3" => include_str!("../../contracts/out/Multicall3.json"),
        "SmartAccount" => include_str!("../../contracts/out/SmartAccount.json"),
        "AccountFactory" => include_str!("../../contracts/out/AccountFactory.json"),
        "TestERC20" => include_str!("../../contracts/out/TestERC20.json"),
        "TestERC721" => include_str!("../../contracts/out/TestERC721.json"),
        "TestERC1155" => include_str!("../../contracts/out/TestERC1155.json"),
        "TestAvatarNFT" => include_str!("../../contracts/out/TestAvatarNFT.json"),
        "ENSRegistry" => include_str!("../../contracts/out/ENSRegistry.json"),
        "PublicResolver" => include_str!("../../contracts/out/PublicResolver.json"),
        "DelegateRegistry" => include_str!("../../contracts/out/DelegateRegistry.json"),
        "GateMembers" => include_str!("../../contracts/out/GateMembers.json"),
        "TestLock" => include_str!("../../contracts/out/TestLock.json"),
        "UniversalResolver" => include_str!("../../contracts/out/UniversalResolver.json"),
        "ReverseRegistrar" => include_str!("../../contracts/out/ReverseRegistrar.json"),
        "OffchainResolver" => include_str!("../../contracts/out/OffchainResolver.json"),
        "EthereumDIDRegistry" => include_str!("../../contracts/out/EthereumDIDRegistry.json"),
        other => panic!("no artifact {other}"),
    };
    serde_json::from_str(text).expect("artifact JSON")
}

/// A running anvil, killed on drop.
pub struct Anvil {
    pub url: String,
    child: Child,
    http: reqwest::Client,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Anvil {
    /// Starts a fresh chain with Multicall3 at its canonical address.
    pub async fn start() -> Self {
        Self::start_with_chain_id(CHAIN_ID).await
    }

    /// Starts a fresh chain with the given EIP-155 id, with Multicall3 at its canonical address.
    pub async fn start_with_chain_id(chain_id: u64) -> Self {
        let anvil = Self::start_without_multicall3(chain_id).await;
        let code = artifact("Multicall3")["deployedBytecode"].clone();
        anvil
            .rpc(
                "anvil_setCode",
                json!([matrixon_chain::rpc::MULTICALL3.to_string(), code]),
            )
            .await;
        anvil
    }

    /// Starts a fresh chain as a developer gets one: no Multicall3 anywhere.
    pub async fn start_without_multicall3(chain_id: u64) -> Self {
        let binary = std::env::var("MATRIXON_ANVIL").unwrap_or_else(|_| {
            format!(
                "{}/../tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil",
                env!("CARGO_MANIFEST_DIR")
            )
        });
        // Port 0: anvil picks a free port and prints it, so parallel tests never collide.
        let mut child = Command::new(&binary)
            .args(["--port", "0", "--host", "127.0.0.1", "--chain-id"])
            .arg(chain_id.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start anvil at {binary} ({e}); run scripts/test.sh, which installs it"
                )
            });
        let stdout = child.stdout.take().expect("stdout");
        let port = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let port = lines.by_ref().map_while(Result::ok).find_map(|line| {
                line.strip_prefix("Listening on 127.0.0.1:")
                    .and_then(|p| p.trim().parse::<u16>().ok())
            });
            // Keep draining so anvil never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            port
        })
        .await
        .expect("reader")
        .expect("anvil printed its port");
        let anvil = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            http: reqwest::Client::new(),
        };
        for _ in 0..200 {
            if anvil.try_rpc("eth_chainId", json!([])).await.is_some() {
                return anvil;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("anvil did not start");
    }

    async fn try_rpc(&self, method: &str, params: Value) -> Option<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response = self.http.post(&self.url).json(&body).send().await.ok()?;
        response.json().await.ok()
    }

    /// A JSON-RPC call that must succeed; returns `result`.
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        let answer = self.try_rpc(method, params).await.expect("anvil answers");
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Deploys creation code (with encoded constructor arguments appended) from the deployer.
    pub async fn deploy(&self, code: &[u8]) -> Address {
        let hash = self
            .rpc("eth_sendTransaction", json!([{"from": DEPLOYER, "data": Bytes::copy_from_slice(code).to_string(), "gas": "0x1000000"}]))
            .await;
        let receipt = self.receipt(hash).await;
        receipt["contractAddress"]
            .as_str()
            .expect("contract address")
            .parse()
            .expect("address")
    }

    /// Sends a transaction calling `to` with `data`.
    pub async fn transact(&self, to: Address, data: &[u8]) {
        let tx = json!([{"from": DEPLOYER, "to": to.to_string(), "data": Bytes::copy_from_slice(data).to_string(), "gas": "0x1000000"}]);
        let hash = self.rpc("eth_sendTransaction", tx).await;
        self.receipt(hash).await;
    }

    /// Sends a transaction from any address (impersonated and funded first), as its wallet would.
    pub async fn transact_as(&self, from: Address, to: Address, data: &[u8]) {
        self.rpc("anvil_impersonateAccount", json!([from.to_string()]))
            .await;
        self.rpc(
            "anvil_setBalance",
            json!([from.to_string(), "0x56bc75e2d63100000"]),
        )
        .await;
        let tx = json!([{"from": from.to_string(), "to": to.to_string(), "data": Bytes::copy_from_slice(data).to_string(), "gas": "0x1000000"}]);
        let hash = self.rpc("eth_sendTransaction", tx).await;
        self.receipt(hash).await;
    }

    /// Deploys `name` and moves its runtime code to `at` (a canonical or mainnet address).
    pub async fn place(&self, name: &str, at: Address) {
        let code = artifact(name)["deployedBytecode"].clone();
        self.rpc("anvil_setCode", json!([at.to_string(), code]))
            .await;
    }

    /// Deploys `code` (creation code with constructor arguments) and moves the deployed
    /// runtime code, immutables included, to `at`.
    pub async fn place_deployed(&self, code: &[u8], at: Address) {
        let deployed = self.deploy(code).await;
        let runtime = self
            .rpc("eth_getCode", json!([deployed.to_string(), "latest"]))
            .await;
        self.rpc("anvil_setCode", json!([at.to_string(), runtime]))
            .await;
    }

    /// The ENS registry at its mainnet address, the deployer owning the root, and a public
    /// resolver; returns the resolver.
    pub async fn ens(&self) -> Address {
        use alloy::sol_types::SolValue;
        let registry = matrixon_chain::ens::REGISTRY;
        self.place("ENSRegistry", registry).await;
        // records[0x0].owner: mapping at slot 0, key 0 → keccak256(0 . 0).
        let slot = alloy::primitives::keccak256([0u8; 64]);
        let owner = DEPLOYER.parse::<Address>().expect("address").into_word();
        self.rpc(
            "anvil_setStorageAt",
            json!([registry.to_string(), slot.to_string(), owner.to_string()]),
        )
        .await;
        let mut code = creation_code("PublicResolver");
        code.extend(registry.abi_encode());
        self.deploy(&code).await
    }

    /// Waits for a successful receipt (auto-mining may lag the send under load).
    async fn receipt(&self, hash: Value) -> Value {
        for _ in 0..200 {
            let receipt = self.rpc("eth_getTransactionReceipt", json!([hash])).await;
            if !receipt.is_null() {
                assert_eq!(receipt["status"], "0x1", "{receipt}");
                return receipt;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("transaction {hash} was not mined");
    }
}

alloy::sol! {
    function deploy(address owner, bytes32 salt) external returns (address account);
    function predict(address owner, bytes32 salt) external view returns (address);
}

/// A smart account that does not exist yet but can sign (ERC-6492), via `AccountFactory`.
pub struct Counterfactual {
    pub factory: Address,
    pub owner: Address,
    pub salt: alloy::primitives::B256,
    /// Where the factory will deploy it.
    pub address: Address,
}

impl Counterfactual {
    /// The factory call that deploys the account.
    pub fn deploy_calldata(&self) -> Vec<u8> {
        use alloy::sol_types::SolCall;
        deployCall {
            owner: self.owner,
            salt: self.salt,
        }
        .abi_encode()
    }

    /// An ERC-6492 signature: `abi.encode(factory, deploy call, inner) ++ magic`.
    pub fn wrap(&self, inner: Vec<u8>) -> Vec<u8> {
        use alloy::sol_types::SolValue;
        let mut wrapped = (
            self.factory,
            Bytes::from(self.deploy_calldata()),
            Bytes::from(inner),
        )
            .abi_encode_params();
        wrapped.extend_from_slice(&matrixon_chain::siwe::ERC6492_MAGIC);
        wrapped
    }
}

impl Anvil {
    /// Deploys a factory and predicts the address of `owner`'s account for `salt`.
    pub async fn counterfactual(
        &self,
        owner: Address,
        salt: alloy::primitives::B256,
    ) -> Counterfactual {
        use alloy::sol_types::{SolCall, SolValue};
        let factory = self.deploy(&creation_code("AccountFactory")).await;
        let data = Bytes::from(predictCall { owner, salt }.abi_encode()).to_string();
        let answer = self
            .rpc(
                "eth_call",
                json!([{"to": factory.to_string(), "data": data}, "latest"]),
            )
            .await;
        let raw = alloy::primitives::hex::decode(answer.as_str().expect("hex")).expect("hex");
        let address = Address::abi_decode(&raw).expect("address");
        Counterfactual {
            factory,
            owner,
            salt,
            address,
        }
    }
}

/// The creation code of an artifact.
pub fn creation_code(name: &str) -> Vec<u8> {
    alloy::primitives::hex::decode(artifact(name)["bytecode"].as_str().expect("bytecode"))
        .expect("hex")
}

/// A wallet key: alloy's local signer, signing as a wallet's `personal_sign` does.
pub struct Key(alloy::signers::local::PrivateKeySigner);

impl Key {
    pub fn new(seed: u8) -> Self {
        Self(
            alloy::signers::local::PrivateKeySigner::from_bytes(&B256::repeat_byte(seed))
                .expect("key"),
        )
    }

    pub fn address(&self) -> Address {
        self.0.address()
    }

    /// EIP-191 `personal_sign` of `text`: 65 bytes, v = 27/28.
    pub fn personal_sign(&self, text: &str) -> Vec<u8> {
        self.sign_bytes(text.as_bytes())
    }

    /// EIP-191 `personal_sign` of raw bytes (what a wallet gets as hex from a page).
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        use alloy::signers::SignerSync;
        self.0
            .sign_message_sync(message)
            .expect("sign")
            .as_bytes()
            .to_vec()
    }
}

/// A JSON-RPC proxy in front of anvil that counts methods and can answer 429 first.
pub struct Proxy {
    pub url: String,
    pub methods: Arc<Mutex<Vec<String>>>,
    pub refuse_next: Arc<AtomicUsize>,
    /// Answers JSON-RPC error -32005 ("limit exceeded", HTTP 200) to this many next requests.
    pub limit_next: Arc<AtomicUsize>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Self {
        let methods = Arc::new(Mutex::new(Vec::new()));
        let refuse_next = Arc::new(AtomicUsize::new(0));
        let limit_next = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let (m, r, l, upstream) = (
            methods.clone(),
            refuse_next.clone(),
            limit_next.clone(),
            upstream.to_owned(),
        );
        let client = reqwest::Client::new();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (m, r, l, upstream, client) = (
                m.clone(),
                r.clone(),
                l.clone(),
                upstream.clone(),
                client.clone(),
            );
            async move {
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let names: Vec<String> = match &request {
                    Value::Array(batch) => batch
                        .iter()
                        .map(|r| r["method"].as_str().unwrap_or("?").to_owned())
                        .collect(),
                    single => vec![single["method"].as_str().unwrap_or("?").to_owned()],
                };
                m.lock().expect("lock").extend(names);
                if r.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return (axum::http::StatusCode::TOO_MANY_REQUESTS, Vec::new());
                }
                if l.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let error = json!({"jsonrpc": "2.0", "id": request["id"].clone(),
                        "error": {"code": -32005, "message": "limit exceeded"}});
                    return (
                        axum::http::StatusCode::OK,
                        serde_json::to_vec(&error).expect("json"),
                    );
                }
                let answer = client
                    .post(&upstream)
                    .header("content-type", "application/json")
                    .body(body.to_vec())
                    .send()
                    .await
                    .expect("upstream");
                (
                    axum::http::StatusCode::OK,
                    answer.bytes().await.expect("body").to_vec(),
                )
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            methods,
            refuse_next,
            limit_next,
        }
    }

    pub fn count(&self, method: &str) -> usize {
        self.methods
            .lock()
            .expect("lock")
            .iter()
            .filter(|m| *m == method)
            .count()
    }
}

/// An endpoint that accepts connections and never answers.
pub async fn hung_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}")
}

/// A port nothing listens on (port 1 is privileged and unused here: connection refused).
pub fn closed_endpoint() -> String {
    "http://127.0.0.1:1".to_owned()
}

alloy::sol! {
    /// What tests write to the ENS contracts.
    interface IEnsAdmin {
        function setSubnodeOwner(bytes32 node, bytes32 label, address owner) external returns (bytes32);
        function setSubnodeRecord(bytes32 node, bytes32 label, address owner, address resolver, uint64 ttl) external;
        function setOwner(bytes32 node, address owner) external;
        function setAddr(bytes32 node, address a) external;
        function setAddr(bytes32 node, uint256 coinType, bytes a) external;
        function setName(bytes32 node, string name) external;
        function setText(bytes32 node, string key, string value) external;
    }
}

/// ENS on the test chain: the registry and the Universal Resolver at their mainnet addresses,
/// a public resolver, and the `eth` and `addr.reverse` nodes held by the deployer.
pub struct EnsFixture<'a> {
    pub anvil: &'a Anvil,
    /// The public resolver names get.
    pub resolver: Address,
}

impl<'a> EnsFixture<'a> {
    pub async fn new(anvil: &'a Anvil) -> Self {
        use alloy::sol_types::{SolCall, SolValue};
        use matrixon_chain::ens::{REGISTRY, UNIVERSAL_RESOLVER, namehash};
        let resolver = anvil.ens().await;
        let mut code = creation_code("UniversalResolver");
        code.extend(REGISTRY.abi_encode());
        anvil.place_deployed(&code, UNIVERSAL_RESOLVER).await;
        let me: Address = DEPLOYER.parse().expect("address");
        for (parent, label) in [("", "eth"), ("", "reverse"), ("reverse", "addr")] {
            let call = IEnsAdmin::setSubnodeOwnerCall {
                node: namehash(parent),
                label: alloy::primitives::keccak256(label),
                owner: me,
            };
            anvil.transact(REGISTRY, &call.abi_encode()).await;
        }
        Self { anvil, resolver }
    }

    /// `label.parent` on the public resolver, resolving to `owner` (and `coins`: ENSIP-11
    /// coin type → address), with `texts`, then handed to `owner`.
    pub async fn register(
        &self,
        parent: &str,
        label: &str,
        owner: Address,
        texts: &[(&str, &str)],
        coins: &[(u64, Address)],
    ) {
        use alloy::sol_types::SolCall;
        use matrixon_chain::ens::{REGISTRY, namehash};
        let me: Address = DEPLOYER.parse().expect("address");
        let call = IEnsAdmin::setSubnodeRecordCall {
            node: namehash(parent),
            label: alloy::primitives::keccak256(label),
            owner: me,
            resolver: self.resolver,
            ttl: 0,
        };
        self.anvil.transact(REGISTRY, &call.abi_encode()).await;
        let node = namehash(&format!("{label}.{parent}"));
        let set = IEnsAdmin::setAddr_0Call { node, a: owner };
        self.anvil.transact(self.resolver, &set.abi_encode()).await;
        for (coin, address) in coins {
            let set = IEnsAdmin::setAddr_1Call {
                node,
                coinType: alloy::primitives::U256::from(*coin),
                a: address.to_vec().into(),
            };
            self.anvil.transact(self.resolver, &set.abi_encode()).await;
        }
        for (key, value) in texts {
            let set = IEnsAdmin::setTextCall {
                node,
                key: (*key).to_owned(),
                value: (*value).to_owned(),
            };
            self.anvil.transact(self.resolver, &set.abi_encode()).await;
        }
        if owner != me {
            let call = IEnsAdmin::setOwnerCall { node, owner };
            self.anvil.transact(REGISTRY, &call.abi_encode()).await;
        }
    }

    /// `label.parent` answered by another resolver (an offchain one, say).
    pub async fn delegate(&self, parent: &str, label: &str, resolver: Address) {
        use alloy::sol_types::SolCall;
        use matrixon_chain::ens::{REGISTRY, namehash};
        let call = IEnsAdmin::setSubnodeRecordCall {
            node: namehash(parent),
            label: alloy::primitives::keccak256(label),
            owner: DEPLOYER.parse().expect("address"),
            resolver,
            ttl: 0,
        };
        self.anvil.transact(REGISTRY, &call.abi_encode()).await;
    }

    /// The reverse record of `address` claims `name`, whether or not it resolves back.
    pub async fn primary(&self, address: Address, name: &str) {
        use alloy::sol_types::SolCall;
        use matrixon_chain::ens::{REGISTRY, namehash, reverse_node};
        let hex = alloy::primitives::hex::encode(address.as_slice());
        let call = IEnsAdmin::setSubnodeRecordCall {
            node: namehash("addr.reverse"),
            label: alloy::primitives::keccak256(hex),
            owner: DEPLOYER.parse().expect("address"),
            resolver: self.resolver,
            ttl: 0,
        };
        self.anvil.transact(REGISTRY, &call.abi_encode()).await;
        let set = IEnsAdmin::setNameCall {
            node: reverse_node(address),
            name: name.to_owned(),
        };
        self.anvil.transact(self.resolver, &set.abi_encode()).await;
    }
}
