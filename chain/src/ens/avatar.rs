//! ENSIP-12 avatars: an `avatar` text record as something to fetch — an https URL, an IPFS
//! path through the configured gateway, inline data, or an NFT the name's address owns
//! (ERC-721 or ERC-1155), followed through its metadata to its image.

use alloy::{
    primitives::{Address, Bytes, U256},
    sol,
    sol_types::SolCall,
};
use base64::Engine;

use super::{EnsError, Resolver};
use crate::rpc::{ChainError, Chains};

sol! {
    /// The NFT reads an avatar needs.
    interface IAvatarNft {
        function ownerOf(uint256 tokenId) external view returns (address);
        function tokenURI(uint256 tokenId) external view returns (string);
        function balanceOf(address account, uint256 id) external view returns (uint256);
        function uri(uint256 id) external view returns (string);
    }
}

/// Largest inline (`data:`) avatar or metadata accepted, in bytes.
const MAX_INLINE: usize = 1024 * 1024;

/// Where an avatar's image is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Avatar {
    /// Fetch it from this https URL (IPFS paths already mapped to the gateway).
    Url(String),
    /// The image itself, from a `data:` URI.
    Data {
        /// Its media type.
        mime: String,
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

/// What a `data:` URI may hold where an image is expected: raster images only (an SVG can
/// carry script).
fn is_safe_image(mime: &str) -> bool {
    let mime = mime
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("image/") && mime != "image/svg+xml"
}

/// A URI for an image or metadata: https, `ipfs://` (through `ipfs_gateway`), or `data:`.
fn locate(uri: &str, ipfs_gateway: &str) -> Option<Avatar> {
    if let Some(rest) = uri.strip_prefix("ipfs://") {
        let path = rest.trim_start_matches("ipfs/");
        return Some(Avatar::Url(format!(
            "{}/{path}",
            ipfs_gateway.trim_end_matches('/')
        )));
    }
    if let Some(rest) = uri.strip_prefix("data:") {
        let (meta, payload) = rest.split_once(',')?;
        let (mime, base64) = match meta.strip_suffix(";base64") {
            Some(mime) => (mime, true),
            None => (meta, false),
        };
        let bytes = if base64 {
            base64::engine::general_purpose::STANDARD
                .decode(payload)
                .ok()?
        } else {
            percent_encoding::percent_decode_str(payload).collect()
        };
        if bytes.len() > MAX_INLINE {
            return None;
        }
        return Some(Avatar::Data {
            mime: mime.to_owned(),
            bytes,
        });
    }
    (uri.starts_with("https://")).then(|| Avatar::Url(uri.to_owned()))
}

/// An `eip155:<chain>/erc721:<contract>/<id>` (or `erc1155`) reference.
fn nft_reference(record: &str) -> Option<(u64, bool, Address, U256)> {
    let (chain, rest) = record.strip_prefix("eip155:")?.split_once('/')?;
    let (standard, rest) = rest.split_once(':')?;
    let (contract, id) = rest.split_once('/')?;
    let is_721 = match standard.to_ascii_lowercase().as_str() {
        "erc721" => true,
        "erc1155" => false,
        _ => return None,
    };
    Some((
        chain.parse().ok()?,
        is_721,
        crate::gate::parse_address(contract).ok()?,
        U256::from_str_radix(id, 10).ok()?,
    ))
}

impl Resolver<'_> {
    /// The avatar of `name`, whose address is `owner` (an NFT avatar counts only while
    /// `owner` holds it). `None` when there is none, or it cannot be used.
    pub async fn avatar(
        &self,
        chains: &Chains,
        name: &str,
        owner: Address,
        ipfs_gateway: &str,
    ) -> Result<Option<Avatar>, EnsError> {
        let Some(record) = self.text(name, "avatar").await? else {
            return Ok(None);
        };
        let Some((chain_id, is_721, contract, id)) = nft_reference(&record) else {
            return Ok(image(locate(&record, ipfs_gateway)));
        };
        let Ok(chain) = chains.get(chain_id) else {
            return Ok(None); // an NFT on a chain this server does not read
        };
        let read = |data: Vec<u8>| chain.call(Some(contract), Bytes::from(data), None);
        let owned = if is_721 {
            let answer = read(IAvatarNft::ownerOfCall { tokenId: id }.abi_encode()).await;
            match answer {
                Ok(raw) => IAvatarNft::ownerOfCall::abi_decode_returns(&raw).ok() == Some(owner),
                Err(ChainError::Refused(_)) => false, // no such token
                Err(e) => return Err(e.into()),
            }
        } else {
            let call = IAvatarNft::balanceOfCall { account: owner, id };
            match read(call.abi_encode()).await {
                Ok(raw) => {
                    IAvatarNft::balanceOfCall::abi_decode_returns(&raw).is_ok_and(|b| !b.is_zero())
                }
                Err(ChainError::Refused(_)) => false,
                Err(e) => return Err(e.into()),
            }
        };
        if !owned {
            return Ok(None);
        }
        let uri = if is_721 {
            let raw = read(IAvatarNft::tokenURICall { tokenId: id }.abi_encode()).await?;
            IAvatarNft::tokenURICall::abi_decode_returns(&raw).unwrap_or_default()
        } else {
            let raw = read(IAvatarNft::uriCall { id }.abi_encode()).await?;
            let template = IAvatarNft::uriCall::abi_decode_returns(&raw).unwrap_or_default();
            template.replace("{id}", &format!("{id:064x}"))
        };
        let metadata = match locate(&uri, ipfs_gateway) {
            Some(Avatar::Data { bytes, .. }) => serde_json::from_slice(&bytes).ok(),
            Some(Avatar::Url(url)) => self.gateway.get_json(&url).await.ok(),
            None => None,
        };
        let picture = metadata.as_ref().and_then(|m: &serde_json::Value| {
            ["image", "image_url", "image_data"]
                .iter()
                .find_map(|k| m[*k].as_str().map(str::to_owned))
        });
        Ok(image(picture.and_then(|p| locate(&p, ipfs_gateway))))
    }
}

/// Keeps a located avatar only when it can be shown safely: URLs, or inline raster images.
fn image(located: Option<Avatar>) -> Option<Avatar> {
    located.filter(|a| match a {
        Avatar::Url(_) => true,
        Avatar::Data { mime, .. } => is_safe_image(mime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avatar_uris_are_located() {
        let gateway = "https://ipfs.example/ipfs/";
        assert_eq!(
            locate("https://a.example/x.png", gateway),
            Some(Avatar::Url("https://a.example/x.png".to_owned()))
        );
        assert_eq!(
            locate("ipfs://QmHash/x.png", gateway),
            Some(Avatar::Url(
                "https://ipfs.example/ipfs/QmHash/x.png".to_owned()
            ))
        );
        assert_eq!(
            locate("data:image/png;base64,AAEC", gateway),
            Some(Avatar::Data {
                mime: "image/png".to_owned(),
                bytes: vec![0, 1, 2]
            })
        );
        assert_eq!(locate("http://plain.example/x.png", gateway), None);
        assert_eq!(
            locate("data:text/plain,a%26b%3Dc+d", gateway),
            Some(Avatar::Data {
                mime: "text/plain".to_owned(),
                bytes: b"a&b=c+d".to_vec()
            })
        );
        assert_eq!(image(locate("data:image/svg+xml,<svg/>", gateway)), None);
        assert_eq!(image(locate("data:text/html,<script>", gateway)), None);
        assert!(image(locate("data:image/png;base64,AAEC", gateway)).is_some());
        assert_eq!(locate("javascript:alert(1)", gateway), None);
        assert_eq!(
            nft_reference("eip155:1/erc721:0xb9c5714089478a327f09197987f16f9e5d936e8a/42"),
            Some((
                1,
                true,
                "0xb9c5714089478a327f09197987f16f9e5d936e8a"
                    .parse()
                    .expect("address"),
                U256::from(42)
            ))
        );
        assert!(
            nft_reference("eip155:1/erc20:0xb9c5714089478a327f09197987f16f9e5d936e8a/1").is_none()
        );
    }
}
