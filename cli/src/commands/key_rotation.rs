//! `aurora keys rotate ID --grace DURATION`, and how a key's two secrets are shown by
//! `keys get` / `keys list`.

use aurora_proto::v1 as pb;
use clap::Args;
use pb::secret_state::State;
use serde_json::{Value, json};

use super::client::{AdminClient, CallExt, WaitArgs};
use super::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub(super) struct RotateArgs {
    /// The key's id.
    id: String,
    /// How long the replaced secret keeps working, e.g. 24h, 30m or 0 (stops at once); at most
    /// 90 days. Required: a rotation is either immediate or graceful, never by accident. The
    /// key's own expiry still applies to both secrets, and rotating again during a grace period
    /// stops the older secret at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_grace)]
    grace: u64,
}

fn parse_grace(raw: &str) -> Result<u64, String> {
    aurora_core::parse_rotation_grace(raw).map_err(|err| format!("{err} (expected e.g. 24h, 30m or 0)"))
}

pub(super) async fn rotate(
    client: &mut AdminClient,
    wait: &WaitArgs,
    args: RotateArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let request = pb::RotateKeyRequest { id: args.id, grace_seconds: args.grace };
    let rotated = client.rotate_key(request).await.or_status()?;
    let key = rotated.key.unwrap_or_default();
    match format {
        OutputFormat::Json => {
            let mut value = output::key_json(&key);
            value["secret"] = json!(rotated.secret);
            value["revision"] = json!(rotated.revision);
            output::print_json(&value)
        }
        OutputFormat::Table => {
            let previous = match key.previous_secret.as_ref() {
                Some(previous) if previous.state() == State::Grace => format!(
                    "The previous secret keeps working until {}.",
                    output::timestamp(previous.expires_at.as_ref()).unwrap_or_default()
                ),
                _ => "The previous secret no longer works.".to_owned(),
            };
            output::print(&format!(
                "{}\nsecret: {}\n\nStore the secret now: Aurora keeps only its hash and will not show it again.\n{previous}\nrevision: {}\n",
                output::key_table(std::slice::from_ref(&key)).render(),
                rotated.secret,
                rotated.revision
            ))
        }
    }?;
    wait.settle(client, rotated.revision).await
}

/// One secret's state for `-o json`: `{redacted, state, expires_at}`, or null.
pub(crate) fn secret_json(secret: Option<&pb::SecretState>) -> Value {
    secret.map_or(Value::Null, |secret| {
        json!({
            "redacted": secret.redacted,
            "state": state_name(secret.state()),
            "expires_at": output::timestamp(secret.expires_at.as_ref()),
        })
    })
}

/// The previous secret in a table cell: `-`, `aur_…x9Qz grace until T` or `aur_…x9Qz expired`.
pub(crate) fn previous_cell(key: &pb::Key) -> String {
    match key.previous_secret.as_ref() {
        None => "-".to_owned(),
        Some(previous) => match previous.state() {
            State::Grace => format!(
                "{} grace until {}",
                previous.redacted,
                output::timestamp(previous.expires_at.as_ref()).unwrap_or_default()
            ),
            state => format!("{} {}", previous.redacted, state_name(state)),
        },
    }
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Active => "active",
        State::Grace => "grace",
        State::Expired => "expired",
        State::Unspecified => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_is_checked_before_any_request() {
        assert_eq!(parse_grace("24h"), Ok(86_400));
        assert_eq!(parse_grace("0"), Ok(0));
        assert!(parse_grace("91d").unwrap_err().contains("90 days"));
        assert!(parse_grace("soon").is_err());
    }

    #[test]
    fn both_secrets_show_their_state() {
        let secret = |redacted: &str, state: State, expires: Option<i64>| pb::SecretState {
            redacted: redacted.into(),
            state: state.into(),
            expires_at: expires.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        };
        let key = pb::Key {
            current_secret: Some(secret("aur_…new1", State::Active, None)),
            previous_secret: Some(secret("aur_…old1", State::Grace, Some(1_800_000_000))),
            ..Default::default()
        };
        assert_eq!(previous_cell(&key), "aur_…old1 grace until 2027-01-15T08:00:00Z");
        assert_eq!(
            secret_json(key.previous_secret.as_ref()),
            json!({"redacted": "aur_…old1", "state": "grace", "expires_at": "2027-01-15T08:00:00Z"})
        );
        assert_eq!(secret_json(key.current_secret.as_ref())["state"], "active");
        let expired = pb::Key { previous_secret: Some(secret("aur_…old1", State::Expired, Some(0))), ..key };
        assert_eq!(previous_cell(&expired), "aur_…old1 expired");
        assert_eq!(previous_cell(&pb::Key::default()), "-");
        assert_eq!(secret_json(None), Value::Null);
    }
}
