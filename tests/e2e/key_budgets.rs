//! Per-key limits and budgets from the control plane's side (issue 13): the CLI sets, shows
//! and clears them; a budget exhausted by metered usage is refused on every replica and
//! renews when its period rolls over.

use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::key_limits_fleet::{anthropic_upstream, metric, unix_ms};
use crate::support::controlplane::TestControlplane;
use crate::support::dataplane::TestDataplane;
use crate::support::wait;

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

/// Tokens each OpenAI-shaped call of the mock upstream is charged (prompt 3 + completion 1).
const TOKENS_PER_CALL: u64 = 4;
/// Seconds from the control plane's start until its budget clock crosses midnight UTC.
const UNTIL_ROLLOVER: i64 = 25;

async fn chat(client: &reqwest::Client, dp: &TestDataplane, token: &str) -> (u16, Value) {
    let response = client
        .post(dp.url("/p/openai/v1/chat/completions"))
        .bearer_auth(token)
        .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json::<Value>().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_exhausted_budget_is_refused_on_every_replica_and_renews_when_the_period_rolls_over() {
    let upstream = anthropic_upstream().await;
    // The control plane's budget clock (a debug-build-only offset) is set so that its UTC
    // day ends UNTIL_ROLLOVER seconds from now: the test sees a period roll over without
    // waiting for midnight. Windows and lease validity stay on the real clock.
    let now = unix_ms().div_euclid(1000);
    let next_midnight = (now.div_euclid(86_400) + 1) * 86_400;
    let offset = next_midnight - UNTIL_ROLLOVER - now;
    let rollover = now + UNTIL_ROLLOVER;
    let (offset, openai) = (offset.to_string(), format!("{}/openai/v1", upstream.uri()));
    let cp = TestControlplane::start(&[
        ("AURORA_DEBUG_BUDGET_CLOCK_OFFSET", offset.as_str()),
        ("OPENAI_BASE_URL", openai.as_str()),
        ("OPENAI_API_KEY", "sk-oa-upstream"),
    ])
    .await;
    let mut dataplanes = Vec::new();
    for index in 0..3 {
        dataplanes.push(TestDataplane::subscribed(&cp.url(), &format!("dp-budget-{index}"), &[]).await);
    }
    for dp in &dataplanes {
        dp.wait_ready().await;
    }
    let budget = (4 * TOKENS_PER_CALL).to_string();
    let created = cp
        .cli(&[
            "keys",
            "create",
            "--name",
            "budgeted",
            "--budget-tokens",
            &budget,
            "--budget-period",
            "day",
            "-o",
            "json",
            "--wait",
        ])
        .await
        .json();
    let (id, token) = (created["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());
    let client = reqwest::Client::new();
    // Until its first lease reaches a replica, a new key has the fallback share there.
    for dp in &dataplanes {
        wait::until_async("the new key's lease", || async {
            (metric(dp, "aurora_dataplane_limit_leases{state=\"held\"}").await? >= 1.0).then_some(())
        })
        .await;
    }

    // Metered usage on one replica spends the budget.
    for _ in 0..4 {
        let (status, body) = chat(&client, &dataplanes[0], &token).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(unix_ms().div_euclid(1000) < rollover - 5, "the machine is too slow for this test's clock");

    // Within a second of the last usage-carrying response, every replica refuses, with
    // OpenAI's own code for an exhausted quota.
    let spent = Instant::now();
    let mut refused = [false; 3];
    while !refused.iter().all(|r| *r) {
        assert!(spent.elapsed() < Duration::from_secs(1), "not refused everywhere within 1 s: {refused:?}");
        for (index, dp) in dataplanes.iter().enumerate() {
            if refused[index] {
                continue;
            }
            let (status, body) = chat(&client, dp, &token).await;
            if status == 429 {
                assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
                refused[index] = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for dp in &dataplanes {
        let (status, body) = chat(&client, dp, &token).await;
        assert_eq!((status, body["error"]["code"].as_str()), (429, Some("insufficient_quota")), "stays refused");
    }

    // `keys get` shows the budget used, what is left (nothing) and when it renews.
    let shown = cp.cli(&["keys", "get", &id, "-o", "json"]).await.json();
    let status = &shown["limit_status"];
    assert_eq!(status["source"], "key");
    assert!(status["budget_used"].as_u64().unwrap() >= 4 * TOKENS_PER_CALL, "{status}");
    assert!(status["budget_remaining"].as_i64().unwrap() <= 0, "{status}");
    let end = status["budget_period_end"].as_str().unwrap().to_owned();
    let expected = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(rollover.unsigned_abs()));
    assert_eq!(end, expected.to_string(), "{status}");
    let table = cp.cli(&["keys", "get", &id]).await.ok().to_owned();
    assert!(table.contains(&format!("left of {budget}, renews {end}")), "{table}");

    // The period rolls over: every replica admits the key again.
    let deadline = Instant::now() + Duration::from_secs(u64::try_from(UNTIL_ROLLOVER).unwrap() + 15);
    for dp in &dataplanes {
        loop {
            let (status, body) = chat(&client, dp, &token).await;
            if status == 200 {
                break;
            }
            assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
            assert!(Instant::now() < deadline, "the budget did not renew on {}", dp.addr);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(unix_ms().div_euclid(1000) >= rollover, "admitted again only once the period ended");
}
