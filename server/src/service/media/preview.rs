//! URL previews: the page's Open Graph data (title, description, image stored as media),
//! fetched under the same SSRF rules as name lookups, with their own allow-list and limits.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use matrixon_chain::ens::Gateway;
use ruma::UserId;
use serde_json::{Map, Value, json};

use super::Services;
use crate::{
    config::MediaConfig,
    http::error::{Error, Result},
};

/// How long a preview is reused.
const TTL_MS: i64 = 3_600_000;
/// Most previews remembered.
const CAPACITY: usize = 1_000;
/// Longest text kept from a page (title, description).
const MAX_TEXT_CHARS: usize = 500;

/// Recent previews by URL: `(expires at ms, preview)`.
#[derive(Default)]
pub struct PreviewCache(Mutex<HashMap<String, (i64, Value)>>);

impl PreviewCache {
    fn get(&self, url: &str, now_ms: i64) -> Option<Value> {
        let map = self.0.lock().ok()?;
        map.get(url)
            .filter(|(expires, _)| *expires > now_ms)
            .map(|(_, v)| v.clone())
    }

    fn put(&self, url: &str, now_ms: i64, preview: &Value) {
        let Ok(mut map) = self.0.lock() else { return };
        if map.len() >= CAPACITY {
            map.retain(|_, (expires, _)| *expires > now_ms);
            if map.len() >= CAPACITY {
                map.clear();
            }
        }
        map.insert(url.to_owned(), (now_ms + TTL_MS, preview.clone()));
    }
}

/// The fetch rules for previews: the names' trusted CAs, the preview allow-list and limits.
pub fn preview_policy(config: &MediaConfig, names: &Gateway) -> Gateway {
    Gateway {
        allow: config.preview_allow.clone(),
        timeout: Duration::from_millis(config.preview_timeout_ms),
        max_bytes: config.preview_max_bytes,
        extra_roots: names.extra_roots.clone(),
    }
}

/// Decodes the entities pages commonly use in attribute values and titles.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';').filter(|e| *e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some(' '),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The attributes of one tag's text (after the tag name), lower-cased names.
fn attributes(tag: &str) -> HashMap<String, String> {
    let mut attrs = HashMap::new();
    let bytes = tag.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && bytes[i] != b'='
            && bytes[i] != b'/'
        {
            i += 1;
        }
        let name = tag[start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                let quote = bytes[i];
                i += 1;
                let start = i;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
                let value = &tag[start..i];
                i += 1;
                value
            } else {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                &tag[start..i]
            };
            if !name.is_empty() {
                attrs.entry(name).or_insert_with(|| unescape(value));
            }
        } else if start == i {
            i += 1;
        }
    }
    attrs
}

fn clip(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_TEXT_CHARS)
        .collect()
}

/// Open Graph properties of a page (`og:*`), with the title and description as fallbacks.
pub fn open_graph(html: &str) -> Map<String, Value> {
    let lower = html.to_ascii_lowercase();
    let mut og = Map::new();
    let mut description = None;
    let mut from = 0;
    while let Some(at) = lower[from..].find("<meta") {
        let start = from + at + 5;
        let Some(end) = lower[start..].find('>') else {
            break;
        };
        let attrs = attributes(&html[start..start + end]);
        from = start + end;
        let key = attrs.get("property").or_else(|| attrs.get("name"));
        let (Some(key), Some(content)) = (key, attrs.get("content")) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if key.starts_with("og:") && !og.contains_key(&key) {
            og.insert(key, Value::from(clip(content)));
        } else if key == "description" && description.is_none() {
            description = Some(clip(content));
        }
    }
    if !og.contains_key("og:title")
        && let Some(at) = lower.find("<title")
        && let Some(open_end) = lower[at..].find('>')
        && let Some(close) = lower[at + open_end..].find("</title")
    {
        let title = &html[at + open_end + 1..at + open_end + close];
        let title = clip(&unescape(title));
        if !title.is_empty() {
            og.insert("og:title".into(), title.into());
        }
    }
    if !og.contains_key("og:description")
        && let Some(description) = description
    {
        og.insert("og:description".into(), description.into());
    }
    og
}

impl Services {
    /// `GET /media/v1/preview_url`: Open Graph data of `url`, its image stored as media.
    pub async fn url_preview(&self, requester: &UserId, url: &str) -> Result<Value> {
        if !self.config.media.url_preview {
            return Err(Error::not_found(
                "URL previews are turned off on this server",
            ));
        }
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::invalid_param(format!("{url} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid_param(
                "Only http and https URLs are previewed",
            ));
        }
        let now = self.now_ms();
        if let Some(preview) = self.previews.get(parsed.as_str(), now) {
            return Ok(preview);
        }
        let (content_type, body) = self
            .preview_fetch
            .get_page(parsed.as_str())
            .await
            .map_err(fetch_error)?;
        let content_type = content_type.unwrap_or_default().to_ascii_lowercase();
        let mut preview = if content_type.starts_with("image/") {
            let mut og = Map::new();
            self.preview_image(requester, &mut og, body).await?;
            og
        } else if content_type.starts_with("text/html")
            || content_type.starts_with("application/xhtml")
        {
            let html = String::from_utf8_lossy(&body);
            let mut og = open_graph(&html);
            if let Some(image) = og.get("og:image").and_then(Value::as_str)
                && let Ok(image_url) = parsed.join(image)
                && matches!(image_url.scheme(), "http" | "https")
            {
                og.remove("og:image");
                if let Ok((_, bytes)) = self.preview_fetch.get_page(image_url.as_str()).await {
                    self.preview_image(requester, &mut og, bytes).await?;
                }
            }
            og
        } else {
            return Err(Error::bad_request(format!(
                "{url} is neither a web page nor an image ({content_type})"
            )));
        };
        if !preview.contains_key("og:url") {
            preview.insert("og:url".into(), parsed.as_str().into());
        }
        let preview = Value::Object(preview);
        self.previews.put(parsed.as_str(), now, &preview);
        Ok(preview)
    }

    /// Stores an image for a preview and describes it in `og`; bytes that are no image are
    /// left out.
    async fn preview_image(
        &self,
        requester: &UserId,
        og: &mut Map<String, Value>,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let Some((content_type, (width, height))) = super::raster_image(&bytes) else {
            return Ok(());
        };
        let size = bytes.len();
        let uri = self
            .store_media_bytes(requester, content_type, bytes)
            .await?;
        og.insert("og:image".into(), uri.into());
        og.insert("og:image:width".into(), width.into());
        og.insert("og:image:height".into(), height.into());
        og.insert("og:image:type".into(), content_type.into());
        og.insert("matrix:image:size".into(), json!(size));
        Ok(())
    }
}

/// 403 for an address the rules refuse, 502 for a page that could not be fetched.
fn fetch_error(why: String) -> Error {
    if why.ends_with(matrixon_chain::ens::REFUSED_ADDRESS) {
        Error::forbidden(format!("Not previewed: {why}"))
    } else {
        Error::new(
            http::StatusCode::BAD_GATEWAY,
            ruma::api::error::ErrorKind::Unknown,
            format!("The page could not be fetched: {why}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_graph_reads_properties_title_and_entities() {
        let html = r#"<html><head><title>Fallback &amp; more</title>
            <meta property="og:title" content="The &quot;Title&quot;">
            <META name='description' content='A page'>
            <meta content="https://x.example/i.png" property=og:image />
            </head></html>"#;
        let og = open_graph(html);
        assert_eq!(og["og:title"], "The \"Title\"");
        assert_eq!(og["og:description"], "A page");
        assert_eq!(og["og:image"], "https://x.example/i.png");
        let plain = open_graph("<title>Only &#x41;&#66; title</title>");
        assert_eq!(plain["og:title"], "Only AB title");
    }
}
