//! The default push rules as Synapse has them: the spec's, plus the body-based mention rules
//! it still applies (`.m.rule.contains_display_name`, `.m.rule.roomnotif`,
//! `.m.rule.contains_user_name`), deprecated since spec v1.7 but what makes a name or `@room`
//! typed by a bridge, a bot or an older client (none of which send `m.mentions`) notify.
//! Events that say whom they mention (`m.mentions`) skip them, as the spec requires.

use ruma::{
    UserId,
    power_levels::NotificationPowerLevelsKey,
    push::{
        Action, ConditionalPushRule, ConditionalPushRuleInit, EventMatchConditionData,
        FlattenedJson, HighlightTweakValue, PatternedPushRule, PatternedPushRuleInit,
        PushCondition, PushConditionRoomCtx, Ruleset, SenderNotificationPermissionConditionData,
        SoundTweakValue, Tweak,
    },
};

/// The rules that read the body for mentions.
const LEGACY_MENTION_RULES: [&str; 3] = [
    ".m.rule.contains_display_name",
    ".m.rule.roomnotif",
    ".m.rule.contains_user_name",
];

/// A user's rules before they change any: the spec's with the legacy mention rules.
pub fn default_ruleset(user_id: &UserId) -> Ruleset {
    let mut rules = Ruleset::server_default(user_id);
    let loud = || {
        vec![
            Action::Notify,
            Action::SetTweak(Tweak::Sound(SoundTweakValue::Default)),
            Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes)),
        ]
    };
    #[allow(deprecated)]
    let display_name = ConditionalPushRule::from(ConditionalPushRuleInit {
        actions: loud(),
        default: true,
        enabled: true,
        rule_id: LEGACY_MENTION_RULES[0].to_owned(),
        conditions: vec![PushCondition::ContainsDisplayName],
    });
    let room_notification = ConditionalPushRule::from(ConditionalPushRuleInit {
        actions: vec![
            Action::Notify,
            Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes)),
        ],
        default: true,
        enabled: true,
        rule_id: LEGACY_MENTION_RULES[1].to_owned(),
        conditions: vec![
            PushCondition::EventMatch(EventMatchConditionData::new(
                "content.body".to_owned(),
                "@room".to_owned(),
            )),
            PushCondition::SenderNotificationPermission(
                SenderNotificationPermissionConditionData::new(NotificationPowerLevelsKey::Room),
            ),
        ],
    });
    let after = |rules: &Ruleset, id: &str| {
        rules
            .override_
            .get_index_of(id)
            .map_or(rules.override_.len(), |i| i + 1)
    };
    let at = after(&rules, ".m.rule.is_user_mention");
    rules.override_.shift_insert(at, display_name);
    let at = after(&rules, ".m.rule.is_room_mention");
    rules.override_.shift_insert(at, room_notification);
    rules
        .content
        .insert(PatternedPushRule::from(PatternedPushRuleInit {
            actions: loud(),
            default: true,
            enabled: true,
            rule_id: LEGACY_MENTION_RULES[2].to_owned(),
            pattern: user_id.localpart().to_owned(),
        }));
    rules
}

/// The actions the first matching rule gives, in the spec's order; the legacy mention rules
/// are passed over for an event carrying `m.mentions`.
pub async fn actions_for<'a>(
    rules: &'a Ruleset,
    event: &FlattenedJson,
    has_mentions: bool,
    ctx: &PushConditionRoomCtx,
) -> &'a [Action] {
    for rule in rules {
        if has_mentions && LEGACY_MENTION_RULES.contains(&rule.rule_id()) {
            continue;
        }
        if rule.applies(event, ctx).await {
            return rule.actions();
        }
    }
    &[]
}

#[cfg(test)]
mod tests {
    use ruma::{push::PushConditionRoomCtx, serde::Raw, user_id};
    use serde_json::{Value, json};

    use super::*;

    async fn actions(content: Value) -> Vec<Action> {
        let alice = user_id!("@alice:example.org");
        let rules = default_ruleset(alice);
        let event = json!({
            "type": "m.room.message", "sender": "@bob:example.org",
            "room_id": "!r:example.org", "content": content,
        });
        let raw: Raw<Value> = Raw::new(&event).expect("raw");
        let ctx = PushConditionRoomCtx::new(
            ruma::room_id!("!r:example.org").to_owned(),
            ruma::uint!(3),
            alice.to_owned(),
            "Alice Liddell".to_owned(),
        );
        let has_mentions = event["content"].get("m.mentions").is_some();
        actions_for(&rules, &FlattenedJson::from_raw(&raw), has_mentions, &ctx)
            .await
            .to_vec()
    }

    fn highlights(actions: &[Action]) -> bool {
        actions.iter().any(Action::is_highlight)
    }

    #[tokio::test]
    async fn names_in_the_body_mention_unless_the_event_says_whom_it_mentions() {
        let body = |text: &str| json!({"msgtype": "m.text", "body": text});
        assert!(highlights(&actions(body("hey Alice Liddell, look")).await));
        assert!(highlights(&actions(body("ping alice")).await));
        assert!(!highlights(&actions(body("nothing for anyone")).await));
        assert!(!highlights(
            &actions(body("palice is not a word boundary")).await
        ));
        // With m.mentions the body does not count; the mention list does.
        let mut quoted = body("replying to Alice Liddell");
        quoted["m.mentions"] = json!({});
        assert!(!highlights(&actions(quoted).await));
        let mut mentioned = body("hi");
        mentioned["m.mentions"] = json!({"user_ids": ["@alice:example.org"]});
        assert!(highlights(&actions(mentioned).await));
        // Plain messages still notify, without a highlight.
        assert!(
            actions(body("hello"))
                .await
                .iter()
                .any(Action::should_notify)
        );
    }

    #[test]
    fn the_legacy_rules_sit_where_synapse_puts_them() {
        let rules = default_ruleset(user_id!("@alice:example.org"));
        let ids: Vec<&str> = rules.override_.iter().map(|r| r.rule_id.as_str()).collect();
        let at = |id: &str| ids.iter().position(|r| *r == id).expect(id);
        assert_eq!(
            at(".m.rule.contains_display_name"),
            at(".m.rule.is_user_mention") + 1
        );
        assert_eq!(at(".m.rule.roomnotif"), at(".m.rule.is_room_mention") + 1);
        assert!(rules.content.iter().any(|r| r.pattern == "alice"));
    }
}
