//! The audit trail end to end: admin changes through the real CLI against a real control plane
//! appear in `aurora audit -o json` with their revisions, actor and peer; no secret is in any
//! record or log line; rows edited or deleted in the SQLite file are found by `aurora audit
//! verify`, which then exits non-zero naming the record.

use aurora_core::KeyHash;
use serde_json::Value;
use sqlx::Connection;

use crate::support::controlplane::{ADMIN_KEY, TestControlplane};

const OPENAI_SECRET: &str = "sk-e2e-audit-openai-credential-0123456789";
const ANTHROPIC_SECRET: &str = "sk-ant-e2e-audit-bootstrap-credential";

fn records(output: &Value) -> &Vec<Value> {
    output["records"].as_array().unwrap()
}

async fn raw_sql(cp: &TestControlplane, sql: &str) {
    let mut conn = sqlx::sqlite::SqliteConnection::connect(cp.database_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn every_change_is_audited_without_a_secret_and_tampering_fails_verify() {
    let cp = TestControlplane::start(&[("ANTHROPIC_API_KEY", ANTHROPIC_SECRET)]).await;

    let created = cp.cli(&["keys", "create", "--name", "ci", "-o", "json"]).await.json();
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let revoked = cp.cli(&["keys", "revoke", &id, "-o", "json"]).await.json();
    let provider = cp
        .cli_with(
            &["providers", "set", "openai", "--api-key-env", "OPENAI_CRED", "-o", "json"],
            &[("AURORA_MASTER_KEY", ADMIN_KEY), ("OPENAI_CRED", OPENAI_SECRET)],
            None,
        )
        .await
        .json();
    let settings = cp.cli(&["settings", "set", "--v1-alias", "false", "-o", "json"]).await.json();

    let all = cp.cli(&["audit", "-o", "json"]).await.json();
    let got: Vec<(u64, &str, &str, &str)> = records(&all)
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap(),
                r["action"].as_str().unwrap(),
                r["target"].as_str().unwrap(),
                r["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "bootstrap", "environment", "bootstrap"),
            (created["revision"].as_u64().unwrap(), "key.create", id.as_str(), "master-key"),
            (revoked["revision"].as_u64().unwrap(), "key.revoke", id.as_str(), "master-key"),
            (provider["revision"].as_u64().unwrap(), "provider.upsert", "openai", "master-key"),
            (settings["revision"].as_u64().unwrap(), "settings.update", "settings", "master-key"),
        ],
        "{all}"
    );
    let api = &records(&all)[1];
    assert!(api["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{api}");
    let pid = cp.process.pid().to_string();
    assert_eq!(api["replica"].as_str().unwrap().split(':').nth(1), Some(pid.as_str()), "{api}");
    assert_eq!(records(&all)[0]["peer"], "", "bootstrap has no peer");
    assert_eq!(records(&all)[0]["changes"]["provider.anthropic.credential"], "set");
    assert_eq!(records(&all)[3]["changes"]["credential"], "set");
    assert_eq!(records(&all)[4]["changes"], serde_json::json!({ "v1_alias_enabled": false }));

    // Filters: by key, by action group, by time.
    let by_key = cp.cli(&["audit", "--key", &id, "-o", "json"]).await.json();
    assert_eq!(records(&by_key).len(), 2);
    let by_action = cp.cli(&["audit", "--action", "provider", "-o", "json"]).await.json();
    assert_eq!(records(&by_action).len(), 1);
    assert_eq!(records(&cp.cli(&["audit", "--since", "1h", "-o", "json"]).await.json()).len(), 5);
    assert!(records(&cp.cli(&["audit", "--until", "1h", "-o", "json"]).await.json()).is_empty());
    let table = cp.cli(&["audit", "--action", "key.revoke"]).await.ok().to_owned();
    assert!(table.starts_with("SEQ ") && table.contains("key.revoke") && table.ends_with("1 record(s)\n"), "{table}");
    let unknown = cp.cli(&["audit", "--action", "key.explode"]).await;
    assert!(unknown.error_line().starts_with("error: INVALID_ARGUMENT: action: "), "{unknown:?}");

    // No secret, nor its hash or fingerprint, in any record or in the audit log lines.
    let secrets = [
        secret.clone(),
        KeyHash::of(&secret).to_hex(),
        OPENAI_SECRET.to_owned(),
        KeyHash::of(OPENAI_SECRET).to_hex(),
        KeyHash::of(OPENAI_SECRET).fingerprint(),
        ANTHROPIC_SECRET.to_owned(),
        KeyHash::of(ANTHROPIC_SECRET).fingerprint(),
        ADMIN_KEY.to_owned(),
        KeyHash::of(ADMIN_KEY).to_hex(),
    ];
    let text = all.to_string();
    let audit_lines: Vec<Value> =
        cp.process.events().into_iter().filter(|e| e["target"] == "aurora::audit" && e["message"] == "audit").collect();
    assert_eq!(audit_lines.len(), 5, "one log line per record");
    for (line, record) in audit_lines.iter().zip(records(&all)) {
        assert_eq!(line["hash"], record["hash"]);
        assert_eq!(line["revision"], record["revision"]);
    }
    let logs = cp.process.logs();
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "{secret} in the audit trail: {text}");
        assert!(!logs.contains(secret.as_str()), "{secret} in the logs");
    }

    let verified = cp.cli(&["audit", "verify"]).await.ok().to_owned();
    assert!(verified.starts_with("audit trail verified: 5 record(s), 1..5"), "{verified}");

    // An edited field: verify fails, naming the record.
    raw_sql(&cp, "UPDATE audit_log SET changes = '{\"v1_alias_enabled\":true}' WHERE seq = 5").await;
    let failed = cp.cli(&["audit", "verify"]).await;
    assert_ne!(failed.code, Some(0));
    assert!(
        failed.error_line().starts_with("error: audit trail broken at record 5: record 5 (revision 5) was altered"),
        "{failed:?}"
    );
    raw_sql(&cp, "UPDATE audit_log SET changes = '{\"v1_alias_enabled\":false}' WHERE seq = 5").await;
    cp.cli(&["audit", "verify"]).await.ok();

    // A deleted row.
    raw_sql(&cp, "DELETE FROM audit_log WHERE seq = 2").await;
    let failed = cp.cli(&["audit", "verify", "-o", "json"]).await;
    assert_ne!(failed.code, Some(0));
    let report: Value = serde_json::from_str(&failed.stdout).unwrap();
    assert_eq!((report["ok"].as_bool(), report["broken_seq"].as_u64()), (Some(false), Some(2)), "{report}");
    assert!(report["problem"].as_str().unwrap().contains("missing"), "{report}");
}

/// Two control-plane replicas on one PostgreSQL database write one chain: changes through either
/// appear, in commit order, in the trail read through the other, each naming its replica, and
/// the chain verifies; a row deleted with raw SQL is found.
#[tokio::test]
async fn replicas_on_postgres_write_one_chain() {
    let db = crate::support::postgres::TestDatabase::create().await;
    let url = db.url();
    let env = [("AURORA_DATABASE_URL", url.as_str())];
    let a = TestControlplane::start(&env).await;
    let b = TestControlplane::start(&env).await;
    for i in 0..3 {
        a.cli(&["keys", "create", "--name", &format!("a-{i}")]).await.ok();
        b.cli(&["keys", "create", "--name", &format!("b-{i}")]).await.ok();
    }
    let all = a.cli(&["audit", "--action", "key", "-o", "json"]).await.json();
    let replicas: Vec<&str> = records(&all).iter().map(|r| r["replica"].as_str().unwrap()).collect();
    assert_eq!(replicas.len(), 6, "{all}");
    let pid = |cp: &TestControlplane| cp.process.pid().to_string();
    let by = |r: &str| r.split(':').nth(1).unwrap().to_owned();
    assert_eq!(
        replicas.iter().map(|r| by(r)).collect::<Vec<_>>(),
        [pid(&a), pid(&b), pid(&a), pid(&b), pid(&a), pid(&b)]
    );
    let revisions: Vec<u64> = records(&all).iter().map(|r| r["revision"].as_u64().unwrap()).collect();
    assert!(revisions.windows(2).all(|w| w[1] == w[0] + 1), "{revisions:?}");
    assert_eq!(b.cli(&["audit", "-o", "json"]).await.json(), a.cli(&["audit", "-o", "json"]).await.json());
    let verified = b.cli(&["audit", "verify", "-o", "json"]).await.json();
    assert_eq!(verified["ok"], true, "{verified}");

    let mut conn = db.connect().await;
    sqlx::query("DELETE FROM audit_log WHERE seq = 3").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let failed = a.cli(&["audit", "verify"]).await;
    assert!(
        failed.error_line().starts_with("error: audit trail broken at record 3: records 3 to 3 are missing"),
        "{failed:?}"
    );
}
