//! The rule language: its JSON shape, and the checks that make a parsed rule safe to run.

use std::fmt;

use alloy::{
    dyn_abi::{DynSolType, DynSolValue},
    json_abi::{Function, StateMutability},
    primitives::{Address, U256},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use serde_json::Value;

use crate::{ens, rpc::parse_caip2};

/// Deepest nesting of `all`/`any`/`not`.
pub const MAX_DEPTH: usize = 8;
/// Most leaves in one rule.
pub const MAX_LEAVES: usize = 64;
/// Most addresses over all allowlists of one rule.
pub const MAX_ALLOWLISTED: usize = 10_000;
/// Most token ids in one `erc721` leaf.
pub const MAX_TOKEN_IDS: usize = 100;
/// Longest `call` function signature.
const MAX_SIGNATURE: usize = 512;

/// A gating rule: leaves that read the chain (or a list), combined with `all`, `any`, `not`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// Every sub-rule holds.
    All(Vec<Rule>),
    /// At least one sub-rule holds.
    Any(Vec<Rule>),
    /// The sub-rule does not hold.
    Not(Box<Rule>),
    /// A native-coin balance of at least `min` wei.
    Native(Native),
    /// An ERC-20 balance of at least `min` base units.
    Erc20(Erc20),
    /// Any token of an ERC-721 collection, or one of the listed ids.
    Erc721(Erc721),
    /// At least `min` of one ERC-1155 token id.
    Erc1155(Erc1155),
    /// A view function whose result, for the address, compares as expected.
    Call(Call),
    /// Owns an ENS name, or a subname of a parent.
    Ens(Ens),
    /// Holds a valid (unexpired) key of an Unlock Protocol lock.
    Unlock(Unlock),
    /// Paid at least `amount` to `recipient` within the last `period_s` (a payment the
    /// server found in transfer logs or that the payer submitted).
    Paid(Paid),
    /// One of these addresses.
    Allowlist(Vec<Addr>),
}

/// `native` leaf.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Native {
    /// CAIP-2 chain.
    pub chain: Caip2,
    /// Minimum balance in wei.
    #[serde(default = "Amount::one")]
    pub min: Amount,
}

/// `erc20` leaf.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erc20 {
    /// CAIP-2 chain.
    pub chain: Caip2,
    /// Token contract.
    pub contract: Addr,
    /// Minimum balance in base units.
    #[serde(default = "Amount::one")]
    pub min: Amount,
}

/// `erc721` leaf.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erc721 {
    /// CAIP-2 chain.
    pub chain: Caip2,
    /// Collection contract.
    pub contract: Addr,
    /// When present, owning one of these ids is required; otherwise any token will do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<Amount>>,
}

/// `erc1155` leaf.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erc1155 {
    /// CAIP-2 chain.
    pub chain: Caip2,
    /// Token contract.
    pub contract: Addr,
    /// Token id.
    pub token_id: Amount,
    /// Minimum balance of that id.
    #[serde(default = "Amount::one")]
    pub min: Amount,
}

/// `call` leaf.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// CAIP-2 chain.
    pub chain: Caip2,
    /// Contract to call.
    pub contract: Addr,
    /// Human-readable signature, `function isMember(address) view returns (bool)`.
    pub function: String,
    /// Arguments; the string `:address` stands for the address being checked.
    #[serde(default)]
    pub args: Vec<Value>,
    /// How the single return value must compare.
    pub expect: Expect,
}

/// The comparison a `call` result must pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Operator.
    pub op: Op,
    /// Right-hand side, in the return type (numbers as JSON numbers or decimal strings).
    pub value: Value,
}

/// Comparison operators; ordering ones need an integer return type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
}

/// `ens` leaf: exactly one of `name` and `parent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ens {
    /// The chain ENS lives on (mainnet unless said otherwise).
    #[serde(default = "Caip2::mainnet")]
    pub chain: Caip2,
    /// The address must own this name in the ENS registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The address's primary name (forward-verified) must be a subname of this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// `unlock` leaf: a membership of an Unlock Protocol lock (`getHasValidKey`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unlock {
    /// CAIP-2 chain.
    pub chain: Caip2,
    /// The lock contract (a PublicLock).
    pub lock: Addr,
}

/// `paid` leaf: one payment, in the chain's coin or in an ERC-20 token, buys `period_s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paid {
    /// CAIP-2 chain.
    pub chain: Caip2,
    /// The ERC-20 token paid in; the chain's coin when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Addr>,
    /// Who must be paid.
    pub recipient: Addr,
    /// The least one payment must be, in base units (wei for the coin).
    pub amount: Amount,
    /// How long a payment counts, in seconds.
    pub period_s: u64,
}

/// Longest period a payment counts for: about ten years.
pub const MAX_PERIOD_S: u64 = 3_660 * 86_400;

/// A CAIP-2 `eip155:<id>` chain id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Caip2(pub u64);

impl Caip2 {
    fn mainnet() -> Self {
        Self(1)
    }
}

impl fmt::Display for Caip2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "eip155:{}", self.0)
    }
}

impl Serialize for Caip2 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Caip2 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_caip2(&text).map(Self).map_err(D::Error::custom)
    }
}

/// An address: `0x` and 40 hex digits, EIP-55 checksummed when written in mixed case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr(pub Address);

impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0.to_checksum(None))
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_address(&text).map(Self).map_err(D::Error::custom)
    }
}

/// Parses an address as a user writes it: all-lowercase, all-uppercase or EIP-55.
pub fn parse_address(text: &str) -> Result<Address, String> {
    let hex = text
        .strip_prefix("0x")
        .ok_or_else(|| format!("`{text}` is not an address (0x and 40 hex digits)"))?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("`{text}` is not an address (0x and 40 hex digits)"));
    }
    let mixed =
        hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    if mixed {
        Address::parse_checksummed(text, None)
            .map_err(|_| format!("`{text}` has a wrong EIP-55 checksum"))
    } else {
        text.parse()
            .map_err(|_| format!("`{text}` is not an address"))
    }
}

/// A non-negative integer written as a decimal string (amounts and token ids exceed JSON numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(pub U256);

impl Amount {
    fn one() -> Self {
        Self(U256::from(1))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() || text.len() > 78 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(D::Error::custom(format!(
                "`{text}` is not a decimal integer string"
            )));
        }
        U256::from_str_radix(&text, 10)
            .map(Self)
            .map_err(|_| D::Error::custom(format!("`{text}` does not fit in 256 bits")))
    }
}

/// Why a rule was refused, and where in it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RuleError {
    /// JSON path of the offending value, e.g. `any[0].erc20.min`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Rule {
    /// Parses and validates a rule; `configured` says whether a chain can be asked here.
    pub fn parse(value: &Value, configured: &dyn Fn(u64) -> bool) -> Result<Self, RuleError> {
        let rule: Self = serde_path_to_error::deserialize(value).map_err(|e| RuleError {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
        rule.validate(configured)?;
        Ok(rule)
    }

    /// Checks limits, chains and `call` signatures; paths as in [`RuleError`].
    pub fn validate(&self, configured: &dyn Fn(u64) -> bool) -> Result<(), RuleError> {
        let mut budget = Budget::default();
        self.check(String::new(), 1, configured, &mut budget)
    }

    fn check(
        &self,
        path: String,
        depth: usize,
        configured: &dyn Fn(u64) -> bool,
        budget: &mut Budget,
    ) -> Result<(), RuleError> {
        let err = |at: &str, message: String| RuleError {
            path: join(&path, at),
            message,
        };
        if depth > MAX_DEPTH {
            return Err(err("", format!("rules nest at most {MAX_DEPTH} deep")));
        }
        let chain_ok = |chain: &Caip2, kind: &str| {
            if configured(chain.0) {
                Ok(())
            } else {
                Err(err(
                    &format!("{kind}.chain"),
                    format!("chain {chain} is not configured on this server"),
                ))
            }
        };
        match self {
            Self::All(rules) | Self::Any(rules) => {
                let kind = if matches!(self, Self::All(_)) {
                    "all"
                } else {
                    "any"
                };
                if rules.is_empty() {
                    return Err(err(kind, "needs at least one rule".to_owned()));
                }
                for (i, rule) in rules.iter().enumerate() {
                    rule.check(
                        join(&path, &format!("{kind}[{i}]")),
                        depth + 1,
                        configured,
                        budget,
                    )?;
                }
                return Ok(());
            }
            Self::Not(rule) => {
                return rule.check(join(&path, "not"), depth + 1, configured, budget);
            }
            Self::Native(leaf) => chain_ok(&leaf.chain, "native")?,
            Self::Erc20(leaf) => chain_ok(&leaf.chain, "erc20")?,
            Self::Erc721(leaf) => {
                chain_ok(&leaf.chain, "erc721")?;
                if let Some(ids) = &leaf.token_ids
                    && (ids.is_empty() || ids.len() > MAX_TOKEN_IDS)
                {
                    return Err(err(
                        "erc721.token_ids",
                        format!("list between 1 and {MAX_TOKEN_IDS} token ids, or leave it out"),
                    ));
                }
            }
            Self::Erc1155(leaf) => chain_ok(&leaf.chain, "erc1155")?,
            Self::Unlock(leaf) => chain_ok(&leaf.chain, "unlock")?,
            Self::Paid(leaf) => {
                chain_ok(&leaf.chain, "paid")?;
                if leaf.amount.0.is_zero() {
                    return Err(err("paid.amount", "must be more than 0".to_owned()));
                }
                if !(1..=MAX_PERIOD_S).contains(&leaf.period_s) {
                    return Err(err(
                        "paid.period_s",
                        format!("must be between 1 and {MAX_PERIOD_S} seconds"),
                    ));
                }
            }
            Self::Call(leaf) => {
                chain_ok(&leaf.chain, "call")?;
                leaf.compile()
                    .map_err(|(at, message)| err(&format!("call.{at}"), message))?;
            }
            Self::Ens(leaf) => {
                chain_ok(&leaf.chain, "ens")?;
                match (&leaf.name, &leaf.parent) {
                    (Some(name), None) => {
                        ens::check_name(name).map_err(|m| err("ens.name", m))?;
                    }
                    (None, Some(parent)) => {
                        ens::check_name(parent).map_err(|m| err("ens.parent", m))?;
                    }
                    _ => {
                        return Err(err(
                            "ens",
                            "give exactly one of `name` and `parent`".to_owned(),
                        ));
                    }
                }
            }
            Self::Allowlist(addresses) => {
                if addresses.is_empty() {
                    return Err(err("allowlist", "needs at least one address".to_owned()));
                }
                budget.allowlisted += addresses.len();
                if budget.allowlisted > MAX_ALLOWLISTED {
                    return Err(err(
                        "allowlist",
                        format!("allowlists hold at most {MAX_ALLOWLISTED} addresses in all"),
                    ));
                }
            }
        }
        budget.leaves += 1;
        if budget.leaves > MAX_LEAVES {
            return Err(err("", format!("a rule has at most {MAX_LEAVES} leaves")));
        }
        Ok(())
    }

    /// The leaf kind or combinator name, as written in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::All(_) => "all",
            Self::Any(_) => "any",
            Self::Not(_) => "not",
            Self::Native(_) => "native",
            Self::Erc20(_) => "erc20",
            Self::Erc721(_) => "erc721",
            Self::Erc1155(_) => "erc1155",
            Self::Call(_) => "call",
            Self::Ens(_) => "ens",
            Self::Unlock(_) => "unlock",
            Self::Paid(_) => "paid",
            Self::Allowlist(_) => "allowlist",
        }
    }

    /// The chains this rule reads.
    pub fn chains(&self) -> Vec<u64> {
        let mut out = Vec::new();
        self.walk(&mut |rule| match rule {
            Self::Native(l) => out.push(l.chain.0),
            Self::Erc20(l) => out.push(l.chain.0),
            Self::Erc721(l) => out.push(l.chain.0),
            Self::Erc1155(l) => out.push(l.chain.0),
            Self::Call(l) => out.push(l.chain.0),
            Self::Ens(l) => out.push(l.chain.0),
            Self::Unlock(l) => out.push(l.chain.0),
            Self::Paid(l) => out.push(l.chain.0),
            _ => {}
        });
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Every contract a leaf names (tokens and `call` targets), with its chain.
    pub fn contracts(&self) -> Vec<(u64, Address)> {
        let mut out = self.token_contracts();
        self.walk(&mut |rule| {
            if let Self::Call(l) = rule {
                out.push((l.chain.0, l.contract.0));
            }
        });
        out.sort();
        out.dedup();
        out
    }

    /// Token contracts whose transfers can change this rule's verdict, with their chains
    /// (a lock's keys are ERC-721 tokens: buying, moving or burning one is a transfer).
    pub fn token_contracts(&self) -> Vec<(u64, Address)> {
        let mut out = Vec::new();
        self.walk(&mut |rule| match rule {
            Self::Unlock(l) => out.push((l.chain.0, l.lock.0)),
            Self::Paid(Paid {
                chain,
                token: Some(token),
                ..
            }) => out.push((chain.0, token.0)),
            Self::Erc20(l) => out.push((l.chain.0, l.contract.0)),
            Self::Erc721(l) => out.push((l.chain.0, l.contract.0)),
            Self::Erc1155(l) => out.push((l.chain.0, l.contract.0)),
            _ => {}
        });
        out.sort();
        out.dedup();
        out
    }

    /// How many chain reads judging one address takes (the cost a dry run is charged): one
    /// per leaf call, one per listed ERC-721 token id, four for a primary-name check.
    pub fn reads_per_address(&self) -> usize {
        let mut reads = 0;
        self.walk(&mut |rule| {
            reads += match rule {
                Self::Native(_)
                | Self::Erc20(_)
                | Self::Erc1155(_)
                | Self::Call(_)
                | Self::Unlock(_) => 1,
                Self::Erc721(l) => l.token_ids.as_ref().map_or(1, Vec::len),
                Self::Ens(l) => usize::from(l.name.is_some()) + 4 * usize::from(l.parent.is_some()),
                Self::Paid(_) | Self::Allowlist(_) | Self::All(_) | Self::Any(_) | Self::Not(_) => {
                    0
                }
            }
        });
        reads
    }

    /// The `paid` leaves of this rule.
    pub fn paid_leaves(&self) -> Vec<&Paid> {
        let mut out = Vec::new();
        self.walk(&mut |rule| {
            if let Self::Paid(leaf) = rule {
                out.push(leaf);
            }
        });
        out
    }

    /// Calls `f` on this rule and every rule inside it, depth first.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Rule)) {
        f(self);
        match self {
            Self::All(rules) | Self::Any(rules) => rules.iter().for_each(|r| r.walk(f)),
            Self::Not(rule) => rule.walk(f),
            _ => {}
        }
    }
}

#[derive(Default)]
struct Budget {
    leaves: usize,
    allowlisted: usize,
}

fn join(path: &str, at: &str) -> String {
    match (path.is_empty(), at.is_empty()) {
        (_, true) => path.to_owned(),
        (true, false) => at.to_owned(),
        (false, false) => format!("{path}.{at}"),
    }
}

/// A `call` leaf made ready to run: the function, its arguments with the address slot, and
/// the expected value in the return type.
#[derive(Clone, Debug)]
pub struct CompiledCall {
    /// The parsed function.
    pub function: Function,
    /// Arguments; `None` marks the address being checked.
    pub args: Vec<Option<DynSolValue>>,
    /// The single return type.
    pub output: DynSolType,
    /// The expected value.
    pub expect: DynSolValue,
    /// The operator.
    pub op: Op,
}

impl Call {
    /// Parses the signature and coerces arguments and the expected value to their types;
    /// errors carry the field at fault.
    pub fn compile(&self) -> Result<CompiledCall, (&'static str, String)> {
        if self.function.len() > MAX_SIGNATURE {
            return Err(("function", format!("at most {MAX_SIGNATURE} characters")));
        }
        let function = Function::parse(&self.function).map_err(|e| {
            (
                "function",
                format!("not a human-readable function signature: {e}"),
            )
        })?;
        if !matches!(
            function.state_mutability,
            StateMutability::View | StateMutability::Pure
        ) {
            return Err(("function", "must be declared `view` or `pure`".to_owned()));
        }
        if function.inputs.len() != self.args.len() {
            return Err((
                "args",
                format!(
                    "the function takes {} arguments, {} given",
                    function.inputs.len(),
                    self.args.len()
                ),
            ));
        }
        let mut args = Vec::with_capacity(self.args.len());
        for (param, arg) in function.inputs.iter().zip(&self.args) {
            let ty = DynSolType::parse(&param.selector_type())
                .map_err(|e| ("function", format!("parameter type: {e}")))?;
            if arg.as_str() == Some(":address") {
                if ty != DynSolType::Address {
                    return Err((
                        "args",
                        format!("`:address` is passed for a parameter of type {ty}"),
                    ));
                }
                args.push(None);
            } else {
                args.push(Some(coerce(&ty, arg).map_err(|m| ("args", m))?));
            }
        }
        let [output] = function.outputs.as_slice() else {
            return Err((
                "function",
                "must return exactly one value (`returns (…)`)".to_owned(),
            ));
        };
        let output = DynSolType::parse(&output.selector_type())
            .map_err(|e| ("function", format!("return type: {e}")))?;
        let expect = coerce(&output, &self.expect.value).map_err(|m| ("expect.value", m))?;
        let ordered = matches!(output, DynSolType::Uint(_) | DynSolType::Int(_));
        if !ordered && !matches!(self.expect.op, Op::Eq | Op::Ne) {
            return Err((
                "expect.op",
                format!("a {output} result can only be compared with eq or ne"),
            ));
        }
        Ok(CompiledCall {
            function,
            args,
            output,
            expect,
            op: self.expect.op,
        })
    }
}

/// A JSON value in a Solidity type: strings through alloy's coercion, numbers and booleans
/// by their text.
fn coerce(ty: &DynSolType, value: &Value) -> Result<DynSolValue, String> {
    let text = match value {
        Value::String(s) => s.clone(),
        // Only integers JSON carries exactly; anything else must be a decimal string.
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        Value::Number(n) => {
            return Err(format!(
                "{n} is not exact as a JSON number: write it as a decimal string"
            ));
        }
        Value::Bool(b) => b.to_string(),
        other => return Err(format!("{other} cannot be read as {ty}")),
    };
    ty.coerce_str(&text)
        .map_err(|_| format!("`{text}` is not a valid {ty}"))
}
