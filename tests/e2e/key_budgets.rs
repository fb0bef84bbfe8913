//! Per-key limits and budgets from the control plane's side (issue 13): the CLI sets, shows
//! and clears them; a budget exhausted by metered usage is refused on every replica and
//! renews when its period rolls over.

use serde_json::json;

use crate::support::controlplane::TestControlplane;

#[tokio::test]
async fn limits_are_set_shown_patched_and_cleared_from_the_cli() {
    let cp = TestControlplane::start(&[]).await;
    let created = cp
        .cli(&[
            "keys",
            "create",
            "--name",
            "limited",
            "--rpm",
            "10",
            "--max-concurrent",
            "2",
            "--budget-tokens",
            "5000",
            "--budget-period",
            "month",
            "-o",
            "json",
        ])
        .await
        .json();
    let want = json!({
        "requests_per_minute": 10, "tokens_per_minute": 0, "max_concurrent": 2,
        "budget_tokens": 5000, "budget_period": "month",
    });
    assert_eq!(created["limits"], want);
    let id = created["id"].as_str().unwrap().to_owned();
    let table = cp.cli(&["keys", "get", &id]).await.ok().to_owned();
    assert!(
        table.contains("limits: rpm 10, tpm none, max concurrent 2, budget 5000 tokens per month (the key's own)"),
        "{table}"
    );

    // An update changes only the limits it names; 0 removes one.
    let updated = cp.cli(&["keys", "update", &id, "--rpm", "0", "--tpm", "900", "-o", "json"]).await.json();
    assert_eq!(updated["limits"]["requests_per_minute"], 0);
    assert_eq!(updated["limits"]["tokens_per_minute"], 900);
    assert_eq!(updated["limits"]["max_concurrent"], 2);
    let cleared = cp.cli(&["keys", "update", &id, "--default-limits", "-o", "json"]).await.json();
    assert_eq!(cleared["limits"], serde_json::Value::Null);
    let unlimited = cp.cli(&["keys", "update", &id, "--no-limits", "-o", "json"]).await.json();
    assert_eq!(unlimited["limits"]["budget_period"], "none");

    // Refusals name the field: in the store's transaction (a period without a budget) and in
    // the CLI's own parsing.
    let lonely = cp.cli(&["keys", "update", &id, "--budget-period", "day"]).await;
    assert_eq!(lonely.error_line(), "error: INVALID_ARGUMENT: limits: budget_period: day needs budget_tokens above 0");
    let conflicting = cp.cli(&["keys", "update", &id, "--default-limits", "--rpm", "3"]).await;
    assert_eq!(conflicting.code, Some(2), "{conflicting:?}");
    let negative = cp.cli(&["keys", "create", "--name", "n", "--rpm", "-3"]).await;
    assert_eq!(negative.code, Some(2), "{negative:?}");

    // Default limits and the fallback policy.
    let settings =
        cp.cli(&["settings", "set", "--default-rpm", "60", "--limit-fallback", "closed", "-o", "json"]).await.json();
    assert_eq!(settings["default_key_limits"]["requests_per_minute"], 60);
    assert_eq!(settings["limit_fallback"], "closed");
    let table = cp.cli(&["settings", "get"]).await.ok().to_owned();
    assert!(table.contains("rpm 60, tpm none, max concurrent none, budget none"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("limit fallback") && l.trim_end().ends_with("closed")), "{table}");
    let cleared = cp.cli(&["settings", "set", "--no-default-limits", "-o", "json"]).await.json();
    assert_eq!(cleared["default_key_limits"], serde_json::Value::Null);
    let bad = cp.cli(&["settings", "set", "--limit-fallback", "open"]).await;
    assert_eq!(bad.code, Some(2), "{bad:?}");
}
