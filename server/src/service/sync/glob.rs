//! Event-type patterns of sync filters (`*` stands for any run of characters), matched in
//! time linear in the lengths, and the bounds a filter's lists must keep.

use ruma::api::client::filter::{FilterDefinition, RoomEventFilter};

use crate::http::error::{Error, Result};

/// Most patterns in one `types` or `not_types` list of a filter.
pub const MAX_PATTERNS: usize = 100;
/// Longest pattern, in bytes (event types themselves are limited to 255).
pub const MAX_PATTERN_BYTES: usize = 255;

/// Whether `kind` matches `pattern`. The pieces between stars are found leftmost in turn,
/// the first anchored at the start and the last at the end: for patterns whose only
/// wildcard is `*` that is exact, and each piece is searched once (no backtracking).
pub fn type_matches(pattern: &str, kind: &str) -> bool {
    let mut pieces = pattern.split('*');
    let head = pieces.next().unwrap_or_default();
    let Some(mut rest) = kind.strip_prefix(head) else {
        return false;
    };
    let Some(mut piece) = pieces.next() else {
        return rest.is_empty();
    };
    for next in pieces {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
        piece = next;
    }
    rest.ends_with(piece)
}

/// 400 `M_BAD_JSON` unless every type list of the filter keeps the bounds: one filter is
/// matched against every event a sync reads, so its cost must not be the client's choice.
pub fn validate_filter(filter: &FilterDefinition) -> Result<()> {
    let lists = [
        (
            "event_fields",
            filter.event_fields.as_deref().unwrap_or_default(),
        ),
        (
            "presence.types",
            filter.presence.types.as_deref().unwrap_or_default(),
        ),
        ("presence.not_types", &filter.presence.not_types[..]),
        (
            "account_data.types",
            filter.account_data.types.as_deref().unwrap_or_default(),
        ),
        ("account_data.not_types", &filter.account_data.not_types[..]),
    ];
    for (path, list) in lists {
        check_list(path, list)?;
    }
    let room = &filter.room;
    for (name, events) in [
        ("timeline", &room.timeline),
        ("state", &room.state),
        ("ephemeral", &room.ephemeral),
        ("account_data", &room.account_data),
    ] {
        check_room_list(name, events)?;
    }
    Ok(())
}

fn check_room_list(name: &str, filter: &RoomEventFilter) -> Result<()> {
    check_list(
        &format!("room.{name}.types"),
        filter.types.as_deref().unwrap_or_default(),
    )?;
    check_list(&format!("room.{name}.not_types"), &filter.not_types)
}

fn check_list(path: &str, list: &[String]) -> Result<()> {
    if list.len() > MAX_PATTERNS {
        return Err(Error::bad_json(format!(
            "Filter {path} lists {} entries; at most {MAX_PATTERNS} are allowed",
            list.len()
        )));
    }
    if let Some(long) = list.iter().find(|p| p.len() > MAX_PATTERN_BYTES) {
        return Err(Error::bad_json(format!(
            "Filter {path} has an entry of {} bytes; at most {MAX_PATTERN_BYTES} are allowed",
            long.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::type_matches;

    /// The textbook dynamic programme: `m[i][j]` says whether the first `i` bytes of the
    /// pattern match the first `j` of the text.
    fn reference(pattern: &str, text: &str) -> bool {
        let (p, t) = (pattern.as_bytes(), text.as_bytes());
        let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
        m[0][0] = true;
        for i in 1..=p.len() {
            for j in 0..=t.len() {
                m[i][j] = if p[i - 1] == b'*' {
                    m[i - 1][j] || (j > 0 && m[i][j - 1])
                } else {
                    j > 0 && m[i - 1][j - 1] && p[i - 1] == t[j - 1]
                };
            }
        }
        m[p.len()][t.len()]
    }

    #[test]
    fn type_patterns_match_like_the_spec_says() {
        assert!(type_matches("m.room.message", "m.room.message"));
        assert!(!type_matches("m.room", "m.room.message"));
        assert!(type_matches("m.*", "m.room.message"));
        assert!(type_matches("*.message", "m.room.message"));
        assert!(type_matches("m.*.mess*", "m.room.message"));
        assert!(type_matches("*", "anything"));
        assert!(type_matches("*", ""));
        assert!(type_matches("**", "x"));
        assert!(!type_matches("m.*.topic", "m.room.message"));
        assert!(!type_matches("ab*ba", "aba"), "the parts may not overlap");
        assert!(type_matches("a*é", "aé"), "multi-byte characters");
    }

    /// Random patterns over a small alphabet (so that pieces recur and overlap) agree with
    /// the reference on random texts.
    #[test]
    fn agrees_with_the_reference_on_random_patterns() {
        let mut rng = StdRng::seed_from_u64(0x6d61_7472_6978);
        let alphabet = [b'a', b'b', b'.', b'*'];
        for _ in 0..200_000 {
            let pattern: String = (0..rng.gen_range(0..10))
                .map(|_| alphabet[rng.gen_range(0..4)] as char)
                .collect();
            let text: String = (0..rng.gen_range(0..14))
                .map(|_| alphabet[rng.gen_range(0..3)] as char)
                .collect();
            assert_eq!(
                type_matches(&pattern, &text),
                reference(&pattern, &text),
                "{pattern:?} against {text:?}"
            );
        }
    }

    /// The pattern that took 15.5 s per sync with the backtracking matcher: now a few
    /// microseconds, even at the longest pattern and type the server allows. The work runs
    /// on its own thread so that a matcher gone exponential fails the test instead of
    /// hanging it; the bound is loose on purpose (it catches exponential or
    /// quadratic-in-stars time, not a slow machine).
    #[test]
    fn adversarial_patterns_take_linear_time() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let kind = "a".repeat(255);
            let pattern = format!("{}b", "*a".repeat(127));
            let started = Instant::now();
            for _ in 0..1_000 {
                assert!(!type_matches(&pattern, &kind));
                assert!(!type_matches("*a*a*a*a*a*a*a*a*a*a*b", &kind[..40]));
            }
            let _ = done.send(started.elapsed());
        });
        let took = finished
            .recv_timeout(Duration::from_secs(5))
            .expect("2,000 adversarial matches did not finish within 5 s");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
}
