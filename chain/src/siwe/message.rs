//! EIP-4361 messages: the exact text format, parsed and re-serialized.

use std::{fmt, str::FromStr};

use alloy_primitives::Address;
use serde::Deserialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::rfc3986;

const HEADER_SUFFIX: &str = " wants you to sign in with your Ethereum account:";

/// Length caps: a message larger than a page of text is not a login, it is an attack.
pub mod limits {
    /// Whole message, in bytes.
    pub const MESSAGE: usize = 16 * 1024;
    /// Domain (authority), in bytes.
    pub const DOMAIN: usize = 255;
    /// Statement, in bytes.
    pub const STATEMENT: usize = 1024;
    /// URI and each resource, in bytes.
    pub const URI: usize = 2048;
    /// Nonce, in bytes.
    pub const NONCE: usize = 128;
    /// Request ID, in bytes.
    pub const REQUEST_ID: usize = 256;
    /// Number of resources.
    pub const RESOURCES: usize = 64;
    /// A timestamp, in bytes.
    pub const TIMESTAMP: usize = 64;
}

/// A parse or validation failure, naming the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid SIWE message: {field}: {reason}")]
pub struct ParseError {
    /// The EIP-4361 field (or `message` for the overall structure).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> ParseError {
    ParseError {
        field,
        reason: reason.into(),
    }
}

/// An RFC 3339 timestamp, kept with its original text (the signature covers the text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timestamp {
    /// As written in the message.
    pub text: String,
    /// Parsed.
    pub at: OffsetDateTime,
}

impl Timestamp {
    /// The timestamp a message made now carries: UTC, whole seconds, as wallets show it.
    pub fn at(at: OffsetDateTime) -> Self {
        let at = at
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .unwrap_or(at);
        let text = at.format(&Rfc3339).unwrap_or_default();
        Self { text, at }
    }

    fn parse(field: &'static str, text: &str) -> Result<Self, ParseError> {
        if text.len() > limits::TIMESTAMP {
            return Err(err(field, "too long"));
        }
        let at = OffsetDateTime::parse(text, &Rfc3339)
            .map_err(|e| err(field, format!("not an RFC 3339 date-time: {e}")))?;
        Ok(Self {
            text: text.to_owned(),
            at,
        })
    }
}

/// A Sign-In with Ethereum message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Optional URI scheme of the requesting origin (`https`).
    pub scheme: Option<String>,
    /// RFC 3986 authority of the requesting origin.
    pub domain: String,
    /// The signing account, EIP-55 checksummed in the text.
    pub address: Address,
    /// Human-readable assertion, one line.
    pub statement: Option<String>,
    /// The resource the signature is for.
    pub uri: String,
    /// Always `1`.
    pub version: String,
    /// EIP-155 chain the account is on.
    pub chain_id: u64,
    /// Anti-replay token: at least 8 letters and digits.
    pub nonce: String,
    /// When the message was made.
    pub issued_at: Timestamp,
    /// When it stops being valid.
    pub expiration_time: Option<Timestamp>,
    /// When it starts being valid.
    pub not_before: Option<Timestamp>,
    /// System-specific identifier.
    pub request_id: Option<String>,
    /// URIs the user asks to be resolved as part of the sign-in.
    pub resources: Vec<String>,
}

fn check_domain(domain: &str) -> Result<(), ParseError> {
    if domain.is_empty() || domain.len() > limits::DOMAIN || !rfc3986::is_authority(domain) {
        return Err(err("domain", "not an RFC 3986 authority"));
    }
    Ok(())
}

fn check_scheme(scheme: &str) -> Result<(), ParseError> {
    let mut bytes = scheme.bytes();
    let valid = scheme.len() <= 32
        && bytes.next().is_some_and(|c| c.is_ascii_alphabetic())
        && bytes.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(err("scheme", "not an RFC 3986 scheme"))
    }
}

fn parse_address(text: &str) -> Result<Address, ParseError> {
    Address::parse_checksummed(text, None)
        .map_err(|_| err("address", "not an EIP-55 checksummed address"))
}

fn check_statement(statement: &str) -> Result<(), ParseError> {
    if statement.len() > limits::STATEMENT {
        return Err(err("statement", "too long"));
    }
    if statement.is_empty() || statement.chars().any(char::is_control) {
        return Err(err(
            "statement",
            "must be one non-empty line without control characters",
        ));
    }
    Ok(())
}

fn check_uri(field: &'static str, uri: &str) -> Result<(), ParseError> {
    if uri.len() > limits::URI || !rfc3986::is_uri(uri) {
        return Err(err(field, "not an RFC 3986 URI"));
    }
    Ok(())
}

fn check_nonce(nonce: &str) -> Result<(), ParseError> {
    if nonce.len() < 8
        || nonce.len() > limits::NONCE
        || !nonce.bytes().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(err("nonce", "must be 8 to 128 letters and digits"));
    }
    Ok(())
}

fn check_request_id(id: &str) -> Result<(), ParseError> {
    let pchar = |c: u8| c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&c);
    if id.len() > limits::REQUEST_ID || !id.bytes().all(pchar) {
        return Err(err("request-id", "must be RFC 3986 path characters"));
    }
    Ok(())
}

fn parse_chain_id(text: &str) -> Result<u64, ParseError> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|c| c.is_ascii_digit()) {
        return Err(err("chain-id", "not a decimal number"));
    }
    // One spelling per chain: "01" would re-serialize differently from what was signed.
    if text.len() > 1 && text.starts_with('0') {
        return Err(err("chain-id", "leading zeros are not allowed"));
    }
    text.parse().map_err(|_| err("chain-id", "out of range"))
}

impl Message {
    /// Checks every field against EIP-4361's grammar and Matrixon's length caps.
    pub fn validate(&self) -> Result<(), ParseError> {
        if let Some(scheme) = &self.scheme {
            check_scheme(scheme)?;
        }
        check_domain(&self.domain)?;
        if let Some(statement) = &self.statement {
            check_statement(statement)?;
        }
        check_uri("uri", &self.uri)?;
        if self.version != "1" {
            return Err(err("version", "must be 1"));
        }
        check_nonce(&self.nonce)?;
        if let Some(id) = &self.request_id {
            check_request_id(id)?;
        }
        if self.resources.len() > limits::RESOURCES {
            return Err(err("resources", "too many"));
        }
        for resource in &self.resources {
            check_uri("resources", resource)?;
        }
        Ok(())
    }

    /// The message's origin as the signer saw it: `scheme://domain` (https when no scheme).
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            self.scheme.as_deref().unwrap_or("https"),
            self.domain
        )
    }
}

impl FromStr for Message {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        if text.len() > limits::MESSAGE {
            return Err(err("message", "too long"));
        }
        if text.contains('\r') {
            return Err(err("message", "lines end with LF only"));
        }
        let mut lines = text.split('\n').peekable();
        let mut next = |field: &'static str| lines.next().ok_or_else(|| err(field, "missing"));

        let header = next("domain")?;
        let origin = header
            .strip_suffix(HEADER_SUFFIX)
            .ok_or_else(|| err("domain", "missing the preamble"))?;
        let (scheme, domain) = match origin.split_once("://") {
            Some((scheme, domain)) => (Some(scheme.to_owned()), domain),
            None => (None, origin),
        };
        let address = parse_address(next("address")?)?;
        if !next("address")?.is_empty() {
            return Err(err("address", "must be followed by an empty line"));
        }
        let line = next("uri")?;
        let statement = if line.is_empty() {
            None
        } else {
            if !next("statement")?.is_empty() {
                return Err(err(
                    "statement",
                    "must be one line followed by an empty line",
                ));
            }
            Some(line.to_owned())
        };
        let mut tagged = |field: &'static str, tag: &str| -> Result<String, ParseError> {
            let line = next(field)?;
            line.strip_prefix(tag)
                .map(str::to_owned)
                .ok_or_else(|| err(field, format!("expected `{tag}`")))
        };
        let uri = tagged("uri", "URI: ")?;
        let version = tagged("version", "Version: ")?;
        let chain_id = parse_chain_id(&tagged("chain-id", "Chain ID: ")?)?;
        let nonce = tagged("nonce", "Nonce: ")?;
        let issued_at = Timestamp::parse("issued-at", &tagged("issued-at", "Issued At: ")?)?;

        let mut rest: Vec<&str> = lines.collect();
        rest.reverse();
        let mut optional = |tag: &str| -> Option<String> {
            let value = rest.last()?.strip_prefix(tag)?.to_owned();
            rest.pop();
            Some(value)
        };
        let expiration_time = optional("Expiration Time: ")
            .map(|t| Timestamp::parse("expiration-time", &t))
            .transpose()?;
        let not_before = optional("Not Before: ")
            .map(|t| Timestamp::parse("not-before", &t))
            .transpose()?;
        let request_id = optional("Request ID: ");
        let mut resources = Vec::new();
        let has_resources = optional("Resources:").is_some_and(|after| after.is_empty());
        if has_resources {
            while let Some(resource) = optional("- ") {
                resources.push(resource);
                if resources.len() > limits::RESOURCES {
                    return Err(err("resources", "too many"));
                }
            }
        }
        if let Some(extra) = rest.last() {
            // A line out of place: name its field, and the resources block when it came
            // after it (which of the two moved cannot be told).
            let misplaced: [(&str, &'static str, &'static str); 9] = [
                ("URI: ", "uri", "resources/uri"),
                ("Version: ", "version", "resources/version"),
                ("Chain ID: ", "chain-id", "resources/chain-id"),
                ("Nonce: ", "nonce", "resources/nonce"),
                ("Issued At: ", "issued-at", "resources/issued-at"),
                (
                    "Expiration Time: ",
                    "expiration-time",
                    "resources/expiration-time",
                ),
                ("Not Before: ", "not-before", "resources/not-before"),
                ("Request ID: ", "request-id", "resources/request-id"),
                ("Resources:", "resources", "resources"),
            ];
            let field = misplaced
                .iter()
                .find(|(tag, _, _)| extra.starts_with(tag))
                .map_or(
                    if has_resources {
                        "resources"
                    } else {
                        "message"
                    },
                    |(_, alone, after)| {
                        if has_resources { after } else { alone }
                    },
                );
            return Err(err(
                field,
                format!(
                    "unexpected line `{}`",
                    extra.chars().take(40).collect::<String>()
                ),
            ));
        }
        let message = Message {
            scheme,
            domain: domain.to_owned(),
            address,
            statement,
            uri,
            version,
            chain_id,
            nonce,
            issued_at,
            expiration_time,
            not_before,
            request_id,
            resources,
        };
        message.validate()?;
        Ok(message)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = &self.scheme {
            write!(f, "{scheme}://")?;
        }
        writeln!(f, "{}{HEADER_SUFFIX}", self.domain)?;
        writeln!(f, "{}", self.address.to_checksum(None))?;
        writeln!(f)?;
        if let Some(statement) = &self.statement {
            writeln!(f, "{statement}")?;
        }
        writeln!(f)?;
        writeln!(f, "URI: {}", self.uri)?;
        writeln!(f, "Version: {}", self.version)?;
        writeln!(f, "Chain ID: {}", self.chain_id)?;
        writeln!(f, "Nonce: {}", self.nonce)?;
        write!(f, "Issued At: {}", self.issued_at.text)?;
        if let Some(t) = &self.expiration_time {
            write!(f, "\nExpiration Time: {}", t.text)?;
        }
        if let Some(t) = &self.not_before {
            write!(f, "\nNot Before: {}", t.text)?;
        }
        if let Some(id) = &self.request_id {
            write!(f, "\nRequest ID: {id}")?;
        }
        if !self.resources.is_empty() {
            write!(f, "\nResources:")?;
            for resource in &self.resources {
                write!(f, "\n- {resource}")?;
            }
        }
        Ok(())
    }
}

/// The message's fields as JSON (the reference implementation's shape), for building a
/// message from parts: `Message::try_from(fields)` validates like the parser.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fields {
    /// See [`Message::scheme`].
    pub scheme: Option<String>,
    /// See [`Message::domain`].
    pub domain: String,
    /// See [`Message::address`] (EIP-55 text).
    pub address: String,
    /// See [`Message::statement`].
    pub statement: Option<String>,
    /// See [`Message::uri`].
    pub uri: String,
    /// See [`Message::version`].
    pub version: String,
    /// See [`Message::chain_id`] (a number, or a decimal string).
    #[serde(deserialize_with = "chain_id_field")]
    pub chain_id: u64,
    /// See [`Message::nonce`].
    pub nonce: String,
    /// See [`Message::issued_at`].
    pub issued_at: String,
    /// See [`Message::expiration_time`].
    pub expiration_time: Option<String>,
    /// See [`Message::not_before`].
    pub not_before: Option<String>,
    /// See [`Message::request_id`].
    pub request_id: Option<String>,
    /// See [`Message::resources`].
    #[serde(default)]
    pub resources: Vec<String>,
}

fn chain_id_field<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrText {
        Number(u64),
        Text(String),
    }
    match NumberOrText::deserialize(deserializer) {
        Ok(NumberOrText::Number(n)) => Ok(n),
        Ok(NumberOrText::Text(text)) => parse_chain_id(&text).map_err(serde::de::Error::custom),
        Err(_) => Err(serde::de::Error::custom("chain-id: not a number")),
    }
}

impl TryFrom<Fields> for Message {
    type Error = ParseError;

    fn try_from(f: Fields) -> Result<Self, ParseError> {
        let message = Message {
            scheme: f.scheme,
            domain: f.domain,
            address: parse_address(&f.address)?,
            statement: f.statement,
            uri: f.uri,
            version: f.version,
            chain_id: f.chain_id,
            nonce: f.nonce,
            issued_at: Timestamp::parse("issued-at", &f.issued_at)?,
            expiration_time: f
                .expiration_time
                .map(|t| Timestamp::parse("expiration-time", &t))
                .transpose()?,
            not_before: f
                .not_before
                .map(|t| Timestamp::parse("not-before", &t))
                .transpose()?,
            request_id: f.request_id,
            resources: f.resources,
        };
        message.validate()?;
        Ok(message)
    }
}
