//! The slices of RFC 3986 that EIP-4361 refers to: URIs and authorities.

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(c: u8) -> bool {
    matches!(
        c,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// True when every `%` in `s` starts a `%HH` escape.
fn pct_encodings_valid(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if i + 2 >= s.len() || !(s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|c| c.is_ascii_alphabetic())
        && bytes.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

fn is_port(s: &str) -> bool {
    s.bytes().all(|c| c.is_ascii_digit())
}

fn is_ipv6_literal(s: &str) -> bool {
    // `[` IPv6address / IPvFuture `]`; the address itself is checked by std.
    match s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        Some(inner) if inner.starts_with(['v', 'V']) => {
            inner.len() > 3
                && inner
                    .bytes()
                    .all(|c| is_unreserved(c) || is_sub_delim(c) || c == b':')
        }
        Some(inner) => inner.parse::<std::net::Ipv6Addr>().is_ok(),
        None => false,
    }
}

fn is_reg_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    pct_encodings_valid(bytes)
        && bytes
            .iter()
            .all(|&c| is_unreserved(c) || is_sub_delim(c) || c == b'%')
}

/// `authority = [ userinfo "@" ] host [ ":" port ]`, with a non-empty host.
pub fn is_authority(s: &str) -> bool {
    let (userinfo, hostport) = match s.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, s),
    };
    if let Some(userinfo) = userinfo {
        let bytes = userinfo.as_bytes();
        if !(pct_encodings_valid(bytes)
            && bytes
                .iter()
                .all(|&c| is_unreserved(c) || is_sub_delim(c) || c == b':' || c == b'%'))
        {
            return false;
        }
    }
    let (host, port) = if hostport.starts_with('[') {
        match hostport.find(']') {
            Some(end) => {
                let (host, rest) = hostport.split_at(end + 1);
                match rest.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None if rest.is_empty() => (host, None),
                    None => return false,
                }
            }
            None => return false,
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if port.is_some_and(|p| !is_port(p)) || host.is_empty() {
        return false;
    }
    is_ipv6_literal(host) || is_reg_name(host)
}

/// An absolute RFC 3986 URI: `scheme ":" hier-part [ "?" query ] [ "#" fragment ]`.
pub fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    if !is_scheme(scheme) {
        return false;
    }
    let bytes = rest.as_bytes();
    let allowed = |c: u8| {
        is_unreserved(c)
            || is_sub_delim(c)
            || matches!(c, b':' | b'/' | b'?' | b'#' | b'[' | b']' | b'@' | b'%')
    };
    if !(pct_encodings_valid(bytes) && bytes.iter().all(|&c| allowed(c))) {
        return false;
    }
    // `[` and `]` only inside an authority's IP literal; `#` at most once.
    if rest.matches('#').count() > 1 {
        return false;
    }
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let authority = &after[..end];
        if !(authority.is_empty() || is_authority(authority)) {
            return false;
        }
        !after[end..].contains(['[', ']'])
    } else {
        !rest.contains(['[', ']'])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for ok in [
            "service.org",
            "127.0.0.1:8080",
            "test@127.0.0.1:8080",
            "localhost:3030",
            "[::1]:443",
            "a%20b",
        ] {
            assert!(is_authority(ok), "{ok}");
        }
        for bad in ["", "#notrfc4501", "a b", "host:port", "[::1", "[zz]", "a%2"] {
            assert!(!is_authority(bad), "{bad}");
        }
    }

    #[test]
    fn uris() {
        for ok in [
            "https://service.org/login",
            "ipfs://Qme7ss3ARVgxv6rXqVPiikMJ8u2NLgmgszg13pYrDKEoiu",
            "http://[::1]:80/x?y#z",
            "urn:isbn:0451450523",
            "did:pkh:eip155:1:0xabc",
        ] {
            assert!(is_uri(ok), "{ok}");
        }
        for bad in [
            ":not_a_rfc3986_valid_uri_",
            "service.org",
            "1http://x",
            "http://a b",
            "http://x/%zz",
            "http://x#a#b",
        ] {
            assert!(!is_uri(bad), "{bad}");
        }
    }
}
