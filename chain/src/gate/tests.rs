use serde_json::{Value, json};

use super::*;

fn parse(value: Value) -> Result<Rule, RuleError> {
    Rule::parse(&value, &|id| id == 1 || id == 31337)
}

fn error(value: Value) -> RuleError {
    match parse(value) {
        Ok(rule) => panic!("accepted {rule:?}"),
        Err(e) => e,
    }
}

const TOKEN: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

#[test]
fn the_documented_shape_parses_and_round_trips() {
    let rule = json!({"any": [
        {"erc20": {"chain": "eip155:1", "contract": TOKEN, "min": "100000000000000000000"}},
        {"erc721": {"chain": "eip155:1", "contract": TOKEN}},
        {"erc721": {"chain": "eip155:1", "contract": TOKEN, "token_ids": ["42"]}},
        {"erc1155": {"chain": "eip155:1", "contract": TOKEN, "token_id": "7", "min": "1"}},
        {"native": {"chain": "eip155:1", "min": "1000000000000000000"}},
        {"call": {"chain": "eip155:1", "contract": TOKEN,
                  "function": "function isMember(address) view returns (bool)",
                  "args": [":address"], "expect": {"op": "eq", "value": true}}},
        {"ens": {"parent": "dao.eth"}},
        {"allowlist": [TOKEN]},
        {"not": {"allowlist": [TOKEN]}},
        {"all": [{"native": {"chain": "eip155:31337", "min": "1"}}]}
    ]});
    let parsed = parse(rule.clone()).expect("valid");
    let mut written = serde_json::to_value(&parsed).expect("serialise");
    // Defaults are written out; everything else is what came in.
    written["any"][6]["ens"]
        .as_object_mut()
        .expect("object")
        .remove("chain");
    assert_eq!(written, rule);
}

#[test]
fn errors_name_the_path() {
    let e =
        error(json!({"any": [{"erc20": {"chain": "eip155:1", "contract": TOKEN, "min": "1e18"}}]}));
    assert_eq!(e.path, "any[0].erc20.min");
    assert!(e.message.contains("decimal"), "{e}");

    let e = error(json!({"all": [{"native": {"chain": "eip155:1", "mni": "1"}}]}));
    assert_eq!(e.path, "all[0].native.mni");
    assert!(e.message.contains("unknown field `mni`"), "{e}");

    let e = error(json!({"any": [{"erc20": {"chain": "eip155:5", "contract": TOKEN}}]}));
    assert_eq!(e.path, "any[0].erc20.chain");
    assert!(e.message.contains("not configured"), "{e}");

    let e = error(
        json!({"erc721": {"chain": "eip155:1", "contract": "0x5fbdb2315678afecb367f032d93f642f64180aA3"}}),
    );
    assert_eq!(e.path, "erc721.contract");
    assert!(e.message.contains("checksum"), "{e}");

    let e = error(json!({"nft": {}}));
    assert!(e.message.contains("unknown variant `nft`"), "{e}");

    let e = error(json!({"any": []}));
    assert_eq!(e.path, "any");
}

#[test]
fn a_leaf_object_holds_exactly_one_kind() {
    let e = error(json!({"allowlist": [TOKEN], "native": {"chain": "eip155:1"}}));
    assert!(!e.message.is_empty());
}

#[test]
fn call_leaves_are_type_checked() {
    let call = |function: &str, args: Value, expect: Value| {
        json!({"call": {"chain": "eip155:1", "contract": TOKEN, "function": function,
                        "args": args, "expect": expect}})
    };
    assert!(
        parse(call(
            "function level(address) view returns (uint8)",
            json!([":address"]),
            json!({"op": "gte", "value": 3})
        ))
        .is_ok()
    );
    assert!(
        parse(call(
            "function score(address,uint256) view returns (int256)",
            json!([":address", "5"]),
            json!({"op": "lt", "value": "-2"})
        ))
        .is_ok()
    );

    let e = error(call(
        "function mint(address) returns (bool)",
        json!([":address"]),
        json!({"op": "eq", "value": true}),
    ));
    assert_eq!(e.path, "call.function");
    assert!(e.message.contains("view"), "{e}");

    let e = error(call(
        "function isMember(address) view returns (bool)",
        json!([]),
        json!({"op": "eq", "value": true}),
    ));
    assert_eq!(e.path, "call.args");

    let e = error(call(
        "function balance(uint256) view returns (uint256)",
        json!([":address"]),
        json!({"op": "gt", "value": 0}),
    ));
    assert_eq!(e.path, "call.args");

    let e = error(call(
        "function isMember(address) view returns (bool)",
        json!([":address"]),
        json!({"op": "gt", "value": true}),
    ));
    assert_eq!(e.path, "call.expect.op");

    let e = error(call(
        "function isMember(address) view returns (bool)",
        json!([":address"]),
        json!({"op": "eq", "value": "maybe"}),
    ));
    assert_eq!(e.path, "call.expect.value");

    let e = error(call(
        "function pair(address) view returns (bool, bool)",
        json!([":address"]),
        json!({"op": "eq", "value": true}),
    ));
    assert_eq!(e.path, "call.function");

    let e = error(call(
        "not a signature",
        json!([]),
        json!({"op": "eq", "value": true}),
    ));
    assert_eq!(e.path, "call.function");

    let e = error(call(
        "function f() view returns (bool)",
        json!([]),
        json!({"op": "like", "value": true}),
    ));
    assert_eq!(e.path, "call.expect.op");
}

#[test]
fn limits_hold() {
    let mut rule = json!({"allowlist": [TOKEN]});
    for _ in 0..MAX_DEPTH {
        rule = json!({"not": rule});
    }
    assert!(error(rule).message.contains("nest"));

    let many: Vec<Value> = (0..=MAX_LEAVES)
        .map(|_| json!({"allowlist": [TOKEN]}))
        .collect();
    assert!(error(json!({"any": many})).message.contains("leaves"));

    let ids: Vec<String> = (0..=100).map(|i| i.to_string()).collect();
    let e = error(json!({"erc721": {"chain": "eip155:1", "contract": TOKEN, "token_ids": ids}}));
    assert_eq!(e.path, "erc721.token_ids");

    let e = error(json!({"ens": {"name": "a.eth", "parent": "eth"}}));
    assert_eq!(e.path, "ens");
    let e = error(json!({"ens": {"name": "Alice.eth"}}));
    assert_eq!(e.path, "ens.name");
}

#[test]
fn token_contracts_are_collected_once() {
    let rule = parse(json!({"any": [
        {"erc20": {"chain": "eip155:1", "contract": TOKEN}},
        {"not": {"erc20": {"chain": "eip155:1", "contract": TOKEN, "min": "5"}}},
        {"native": {"chain": "eip155:1"}}
    ]}))
    .expect("valid");
    assert_eq!(rule.token_contracts().len(), 1);
}

/// `all[listed, not(banned)]` over two wallets of one user: the clean wallet passes on its
/// own, but judged with the banned one beside it the user fails, and the reason names the
/// banned wallet.
#[tokio::test]
async fn negated_leaves_are_judged_over_all_of_a_users_addresses() {
    let clean: alloy::primitives::Address = "0x1111111111111111111111111111111111111111"
        .parse()
        .expect("address");
    let banned: alloy::primitives::Address = "0x2222222222222222222222222222222222222222"
        .parse()
        .expect("address");
    let rule = parse(json!({"all": [
        {"allowlist": [clean.to_string(), banned.to_string()]},
        {"not": {"allowlist": [banned.to_string()]}}
    ]}))
    .expect("valid");
    let chains = crate::rpc::Chains::new(&std::collections::BTreeMap::new()).expect("no chains");
    let subjects = [(clean, Scope::Own), (banned, Scope::Own)];
    let mut verdicts = evaluate(&chains, &rule, &subjects, 100)
        .await
        .expect("no chain is read");
    assert!(verdicts[0].pass, "alone, the clean wallet passes");
    assert!(!verdicts[1].pass);
    judge_together(&rule, &mut verdicts);
    assert!(verdicts.iter().all(|v| !v.pass), "{verdicts:?}");
    let failing: Vec<&LeafResult> = verdicts[0].failing().collect();
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert_eq!(failing[0].path, "all[1].not.allowlist");
    assert!(
        failing[0].value.contains(&banned.to_checksum(None)),
        "{failing:?}"
    );

    // Only negated leaves are pooled: a user whose wallets each hold half of an `all`
    // still fails (each address must meet the positive part alone).
    let rule = parse(json!({"all": [
        {"allowlist": [clean.to_string()]},
        {"allowlist": [banned.to_string()]}
    ]}))
    .expect("valid");
    let mut verdicts = evaluate(&chains, &rule, &subjects, 100)
        .await
        .expect("no chain is read");
    judge_together(&rule, &mut verdicts);
    assert!(verdicts.iter().all(|v| !v.pass));
}
