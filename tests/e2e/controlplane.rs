//! The control plane and the `aurora` CLI, end to end: real processes, real database files.

use aurora_core::KeyHash;
use serde_json::Value;

use crate::support::controlplane::{ADMIN_KEY, TestControlplane, run_cli};

#[tokio::test]
async fn cli_manages_a_key_through_its_whole_life() {
    let cp = TestControlplane::start(&[]).await;

    let created = cp
        .cli(&["keys", "create", "--name", "ci", "--expires-in", "30d", "--providers", "anthropic", "-o", "json"])
        .await
        .json();
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("aur_") && secret.len() >= 47, "{created}");
    assert_eq!(created["allowed_providers"], serde_json::json!(["anthropic"]));
    assert!(created["expires_at"].is_string());
    let created_revision = created["revision"].as_u64().unwrap();

    let fetched = cp.cli(&["keys", "get", &id, "-o", "json"]).await.json();
    assert_eq!(fetched["name"], "ci");
    assert!(fetched.get("secret").is_none(), "the secret is shown only once");
    assert!(!fetched.to_string().contains(&secret));

    let table = cp.cli(&["keys", "list"]).await.ok().to_owned();
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains(&id) && table.contains("enabled") && !table.contains(&secret), "{table}");

    let updated = cp
        .cli(&["keys", "update", &id, "--name", "ci-2", "--disable", "--no-expiry", "--all-providers", "-o", "json"])
        .await
        .json();
    assert_eq!(updated["revision"].as_u64(), Some(created_revision + 1));
    assert_eq!((updated["name"].as_str(), updated["enabled"].as_bool()), (Some("ci-2"), Some(false)));
    assert!(updated["expires_at"].is_null());
    assert_eq!(updated["allowed_providers"], serde_json::json!([]));

    let revoked = cp.cli(&["keys", "revoke", &id, "-o", "json"]).await.json();
    assert!(revoked["revoked_at"].is_string());
    let error = cp.cli(&["keys", "update", &id, "--enable"]).await;
    assert!(error.error_line().starts_with("error: FAILED_PRECONDITION: "), "{error:?}");

    let deleted = cp.cli(&["keys", "delete", &id, "-o", "json"]).await.json();
    assert_eq!(deleted["revision"].as_u64(), Some(created_revision + 3));
    let missing = cp.cli(&["keys", "get", &id]).await;
    assert_eq!(missing.error_line(), format!("error: NOT_FOUND: key {id} not found"));

    let logs = cp.process.logs();
    assert!(logs.contains(&id), "mutations are logged by key id");
    assert!(!logs.contains(&secret) && !logs.contains(ADMIN_KEY), "no secret reaches the log:\n{logs}");
}

#[tokio::test]
async fn cli_errors_are_one_clear_line() {
    let cp = TestControlplane::start(&[]).await;
    let invalid = cp.cli(&["keys", "create", "--name", ""]).await;
    assert_eq!(invalid.error_line(), "error: INVALID_ARGUMENT: name: must be 1 to 128 characters");
    let unknown = cp.cli(&["providers", "set", "gemini", "--enable"]).await;
    assert!(unknown.error_line().contains("known providers: openai, anthropic, openrouter, zai, vllm"), "{unknown:?}");
    cp.cli(&["keys", "create", "--name", "dup"]).await.ok();
    let duplicate = cp.cli(&["keys", "create", "--name", "dup"]).await;
    assert!(duplicate.error_line().starts_with("error: ALREADY_EXISTS: "), "{duplicate:?}");

    let wrong_token = cp.cli_with(&["keys", "list"], &[("AURORA_MASTER_KEY", "wrong")], None).await;
    assert_eq!(wrong_token.error_line(), "error: UNAUTHENTICATED: invalid master key");
    let no_token = cp.cli_with(&["settings", "get"], &[], None).await;
    assert!(no_token.error_line().contains("AURORA_MASTER_KEY"), "{no_token:?}");

    let unreachable =
        run_cli(&["keys", "list", "--control-plane", "http://127.0.0.1:1"], &[("AURORA_MASTER_KEY", ADMIN_KEY)], None)
            .await;
    assert!(unreachable.error_line().starts_with("error: cannot reach the control plane at http://127.0.0.1:1"));
}

#[tokio::test]
async fn without_a_master_key_the_admin_api_refuses_everything() {
    let cp = TestControlplane::start(&[("AURORA_MASTER_KEY", "")]).await;
    let refused = cp.cli_with(&["keys", "list"], &[("AURORA_MASTER_KEY", "anything")], None).await;
    assert_eq!(
        refused.error_line(),
        "error: UNAUTHENTICATED: the admin API is disabled until AURORA_MASTER_KEY is set on the control plane"
    );
}

#[tokio::test]
async fn provider_credentials_come_from_env_or_stdin_and_never_come_back() {
    let cp = TestControlplane::start(&[]).await;
    let from_env = cp
        .cli_with(
            &[
                "providers",
                "set",
                "openai",
                "--api-key-env",
                "MY_OPENAI_KEY",
                "--base-url",
                "http://127.0.0.1:9/v1/",
                "-o",
                "json",
            ],
            &[("AURORA_MASTER_KEY", ADMIN_KEY), ("MY_OPENAI_KEY", "sk-openai-e2e-secret")],
            None,
        )
        .await
        .json();
    assert_eq!(from_env["base_url"], "http://127.0.0.1:9/v1");
    assert_eq!(from_env["credential_fingerprint"], KeyHash::of("sk-openai-e2e-secret").fingerprint());

    let from_stdin = cp
        .cli_with(
            &["providers", "set", "vllm", "--api-key-stdin", "--disable", "-o", "json"],
            &[("AURORA_MASTER_KEY", ADMIN_KEY)],
            Some("vllm-e2e-secret\n"),
        )
        .await
        .json();
    assert_eq!(from_stdin["credential_fingerprint"], KeyHash::of("vllm-e2e-secret").fingerprint());
    assert_eq!(from_stdin["enabled"], false);

    let missing_var = cp.cli(&["providers", "set", "zai", "--api-key-env", "NOT_SET_ANYWHERE"]).await;
    assert_eq!(missing_var.error_line(), "error: environment variable NOT_SET_ANYWHERE is not set");

    let listed = cp.cli(&["providers", "list", "-o", "json"]).await.json();
    let names: Vec<&str> =
        listed["providers"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["openai", "anthropic", "openrouter", "zai", "vllm"]);
    let table = cp.cli(&["providers", "list"]).await.ok().to_owned();
    for shown in [listed.to_string(), table, cp.process.logs()] {
        assert!(!shown.contains("sk-openai-e2e-secret") && !shown.contains("vllm-e2e-secret"), "{shown}");
    }

    let deleted = cp.cli(&["providers", "delete", "zai"]).await.ok().to_owned();
    assert!(deleted.starts_with("deleted provider zai"), "{deleted}");
    let again = cp.cli(&["providers", "delete", "zai"]).await;
    assert_eq!(again.error_line(), "error: NOT_FOUND: provider zai has no record");
}

fn settings(cp_output: &Value) -> (bool, bool, u64) {
    (
        cp_output["passthrough_enabled"].as_bool().unwrap(),
        cp_output["v1_alias_enabled"].as_bool().unwrap(),
        cp_output["revision"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn restarts_keep_everything_and_set_variables_win() {
    let cp = TestControlplane::start(&[("ENABLE_PASSTHROUGH_ROUTES", "false")]).await;
    let key = cp.cli(&["keys", "create", "--name", "survivor", "-o", "json"]).await.json();
    let changed = cp.cli(&["settings", "set", "--v1-alias", "false", "-o", "json"]).await.json();
    let (passthrough, v1_alias, revision) = settings(&changed);
    assert!(!passthrough && !v1_alias);

    // Same environment: nothing is re-applied, no revision is written, the API's change stays.
    let cp = cp.restart(&[("ENABLE_PASSTHROUGH_ROUTES", "false")]).await;
    let after = cp.cli(&["settings", "get", "-o", "json"]).await.json();
    assert_eq!(settings(&after), (false, false, revision));
    let survivor = cp.cli(&["keys", "get", key["id"].as_str().unwrap(), "-o", "json"]).await.json();
    assert_eq!(survivor["name"], "survivor");

    // A variable that is set overrides the API's value for that field at startup.
    let cp = cp.restart(&[("ALLOW_PASSTHROUGH_V1_ALIAS", "true"), ("ENABLE_PASSTHROUGH_ROUTES", "false")]).await;
    let overridden = cp.cli(&["settings", "get", "-o", "json"]).await.json();
    assert_eq!(settings(&overridden), (false, true, revision + 1));
    assert!(cp.process.logs().contains("ALLOW_PASSTHROUGH_V1_ALIAS"), "the applied variables are logged by name");
    assert!(cp.database_url().starts_with("sqlite://"));
}
