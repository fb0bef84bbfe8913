//! Keeping the store's secrets sealed, on every backend: what the store does with
//! [`Keyring`] beyond sealing on write and opening on read (`sql.rs`).
//!
//! - **At open** ([`SqlStore::seal_at_rest`]): every sealed value must open with the keyring,
//!   or the store does not open (the error names the key id it needs and the variable). Secrets
//!   an older version left in plaintext (`provider_credentials.secret`, where migration 0007
//!   copies an older store's `providers.credential`; `providers.client_key`;
//!   `settings.master_key_hash`; change-log payloads that carried them) are sealed, or scrubbed
//!   from the log, in one transaction; on SQLite the WAL is then checkpointed and truncated, so the old pages
//!   leave the `-wal` file too (`secure_delete` zeroes them in the main file).
//! - **Re-encryption** ([`SqlStore::reencrypt_all`]): every data key not wrapped by the current
//!   key is re-wrapped under it (client keys, every credential of every set, the master key).
//! - **The change log** holds no secret at all, not even sealed (`change.rs`), nor any
//!   credential of a provider's set. Its provider and master-key entries are completed when
//!   read ([`SqlStore::complete`]) with the object's *current* secrets (the whole current
//!   credential set), read in the same snapshot transaction. A replaced or cleared credential
//!   is therefore in no table once its change commits, and a replica that replays the log still
//!   ends at exactly the state a fresh snapshot gives (the last entry for each provider carries
//!   what the snapshot carries); between two entries it may hold a newer credential than the
//!   revision had, never an older one.
//!
//! Both passes that write run under the head row's lock (a write transaction whose first
//! statement updates the head without allocating a revision), so they are serialized with every
//! writer on every replica sharing a PostgreSQL database: no credential written meanwhile can be
//! overwritten by a stale re-wrap.

use aurora_core::KeyHash;
use aurora_proto::v1::{Change, change};
use prost::Message;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::change::{holds_secrets, scrubbed};
use super::model::{Credential, ProviderRecord};
use super::sealed::{KeyId, Keyring};
use super::sql::{Dialect, SqlStore};
use super::tx::Tx;
use super::{Revision, StoreError};

/// What [`SqlStore::reencrypt_all`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reencrypted {
    /// The key everything is now sealed under.
    pub key_id: KeyId,
    /// Sealed values whose data key was re-wrapped.
    pub rewrapped: usize,
    /// Sealed values already under the current key.
    pub unchanged: usize,
}

/// Seals `text` for `column` of `object`.
pub(super) fn seal_text(keyring: &Keyring, object: &str, column: &str, text: &str) -> Result<Vec<u8>, StoreError> {
    seal_bytes(keyring, object, column, text.as_bytes())
}

pub(super) fn seal_bytes(keyring: &Keyring, object: &str, column: &str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    keyring.seal(object, column, bytes).map_err(|source| sealed_error(object, column, source))
}

/// Opens a value [`seal_text`] sealed.
pub(super) fn open_text(keyring: &Keyring, object: &str, column: &str, sealed: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(open_bytes(keyring, object, column, sealed)?)
        .map_err(|_| StoreError::Corrupt(describe(object, column)))
}

pub(super) fn open_bytes(keyring: &Keyring, object: &str, column: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
    keyring.open(object, column, sealed).map_err(|source| sealed_error(object, column, source))
}

fn sealed_error(object: &str, column: &str, source: super::sealed::SealError) -> StoreError {
    StoreError::Sealed { what: describe(object, column), source }
}

/// Where a sealed value lives, for errors: `providers.client_key_sealed of openai`,
/// `provider_credentials.secret_sealed of openai/backup`, `settings.master_key_sealed of settings`.
fn describe(object: &str, column: &str) -> String {
    match column.split_once(':') {
        Some((column, name)) => format!("provider_credentials.{column} of {object}/{name}"),
        None if object == "settings" => format!("settings.{column} of {object}"),
        None => format!("providers.{column} of {object}"),
    }
}

/// The current secrets, loaded once per `changes_since` call and only if an entry needs them.
#[derive(Default)]
pub(super) struct Secrets {
    loaded: Option<(Vec<ProviderRecord>, Option<KeyHash>)>,
}

/// Plaintext an older version left behind, found by [`SqlStore::find_plaintext`].
#[derive(Default)]
struct Plaintext {
    /// (provider, sealed column, plaintext column, value)
    provider_fields: Vec<(String, &'static str, &'static str, String)>,
    /// (provider, credential name, value): what migration 0007 copied from `providers.credential`.
    credential_secrets: Vec<(String, String, String)>,
    master_key_hash: Option<Vec<u8>>,
    /// (revision, seq, scrubbed payload)
    payloads: Vec<(i64, i64, Vec<u8>)>,
}

impl Plaintext {
    fn is_empty(&self) -> bool {
        self.provider_fields.is_empty()
            && self.credential_secrets.is_empty()
            && self.master_key_hash.is_none()
            && self.payloads.is_empty()
    }
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'s> &'s str: ColumnIndex<DB::Row>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<Vec<u8>>: Encode<'q, DB>,
{
    /// Fills a change-log entry's secret fields with the object's current secrets.
    pub(super) async fn complete(
        &self,
        secrets: &mut Secrets,
        conn: &mut DB::Connection,
        entry: &mut Change,
    ) -> Result<(), StoreError> {
        if !matches!(entry.change, Some(change::Change::ProviderUpsert(_) | change::Change::MasterKeyHash(_))) {
            return Ok(());
        }
        if secrets.loaded.is_none() {
            let providers = Self::fetch_providers(&self.keyring, conn).await?;
            let (_, master_key) = Self::fetch_settings(&self.keyring, conn).await?;
            secrets.loaded = Some((providers, master_key));
        }
        let Some((providers, master_key)) = &secrets.loaded else { return Ok(()) };
        match &mut entry.change {
            Some(change::Change::ProviderUpsert(config)) => {
                let current = providers.iter().find(|p| p.kind.as_str() == config.name).map(ProviderRecord::to_config);
                let current = current.unwrap_or_default();
                // Field 4 (the first enabled credential) and field 9 (the whole set) as they are
                // now: the entry kept only the set's names, weights and flags.
                config.credential = current.credential;
                config.credentials = current.credentials;
                config.client_certificate_pem = current.client_certificate_pem;
                config.client_key_pem = current.client_key_pem;
            }
            Some(change::Change::MasterKeyHash(hash)) => {
                *hash = master_key.map(|h| h.as_bytes().to_vec()).unwrap_or_default();
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks that every sealed value opens, then seals what an older version left in plaintext
    /// (see the module docs). Writes nothing when there is nothing to seal.
    pub(super) async fn seal_at_rest(&self) -> Result<(), StoreError> {
        let found = Self::find_plaintext(&self.keyring, &mut *self.conn().await?).await?;
        if found.is_empty() {
            return Ok(());
        }
        let mut tx = self.lock_head().await?;
        // Read again under the lock: another replica may have sealed them meanwhile.
        let found = Self::find_plaintext(&self.keyring, &mut tx).await?;
        for (name, sealed_column, plain_column, value) in &found.provider_fields {
            let sealed = seal_text(&self.keyring, name, sealed_column, value)?;
            let sql = format!("UPDATE providers SET {plain_column} = NULL, {sealed_column} = $1 WHERE name = $2");
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(sealed).bind(name.clone()).execute(&mut *tx).await?;
        }
        for (provider, name, value) in &found.credential_secrets {
            let sealed =
                super::credentials::seal_secret(&self.keyring, provider, name, &Credential::new(value.clone()))?;
            sqlx::query(
                "UPDATE provider_credentials SET secret = NULL, secret_sealed = $1 WHERE provider = $2 AND name = $3",
            )
            .bind(sealed)
            .bind(provider.clone())
            .bind(name.clone())
            .execute(&mut *tx)
            .await?;
        }
        if let Some(hash) = &found.master_key_hash {
            let sealed = seal_bytes(&self.keyring, "settings", "master_key_sealed", hash)?;
            sqlx::query("UPDATE settings SET master_key_hash = NULL, master_key_sealed = $1 WHERE id = 1")
                .bind(sealed)
                .execute(&mut *tx)
                .await?;
        }
        for (revision, seq, payload) in &found.payloads {
            sqlx::query("UPDATE changes SET payload = $1 WHERE revision = $2 AND seq = $3")
                .bind(payload.clone())
                .bind(*revision)
                .bind(*seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        // SQLite: fold the WAL (which still holds the plaintext pages) into the file and empty it.
        DB::before_close(&self.pool).await;
        tracing::info!(
            credentials = found.credential_secrets.len(),
            client_keys = found.provider_fields.len(),
            master_key = found.master_key_hash.is_some(),
            change_log_entries = found.payloads.len(),
            key_id = %self.keyring.current_id(),
            "sealed the secrets an older version stored in plaintext"
        );
        Ok(())
    }

    /// Re-wraps every data key under the keyring's current key (`aurora controlplane
    /// re-encrypt`). Safe while other replicas run: it holds the head row's lock, like a write.
    pub(super) async fn reencrypt_all(&self) -> Result<Reencrypted, StoreError> {
        let mut tx = self.lock_head().await?;
        let rows =
            sqlx::query("SELECT name, client_key_sealed FROM providers ORDER BY name").fetch_all(&mut *tx).await?;
        let mut report = Reencrypted { key_id: self.keyring.current_id(), rewrapped: 0, unchanged: 0 };
        for row in &rows {
            let name: String = row.try_get("name")?;
            let column = "client_key_sealed";
            let Some(sealed) = row.try_get::<Option<Vec<u8>>, _>(column)? else { continue };
            match self.keyring.rewrap(&name, column, &sealed).map_err(|e| sealed_error(&name, column, e))? {
                Some(rewrapped) => {
                    sqlx::query("UPDATE providers SET client_key_sealed = $1 WHERE name = $2")
                        .bind(rewrapped)
                        .bind(name.clone())
                        .execute(&mut *tx)
                        .await?;
                    report.rewrapped += 1;
                }
                None => report.unchanged += 1,
            }
        }
        let rows = sqlx::query(
            "SELECT provider, name, secret_sealed FROM provider_credentials WHERE secret_sealed IS NOT NULL \
             ORDER BY provider, name",
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let provider: String = row.try_get("provider")?;
            let name: String = row.try_get("name")?;
            let sealed: Vec<u8> = row.try_get("secret_sealed")?;
            let column = super::credentials::sealed_column(&name);
            match self.keyring.rewrap(&provider, &column, &sealed).map_err(|e| sealed_error(&provider, &column, e))? {
                Some(rewrapped) => {
                    sqlx::query("UPDATE provider_credentials SET secret_sealed = $1 WHERE provider = $2 AND name = $3")
                        .bind(rewrapped)
                        .bind(provider.clone())
                        .bind(name.clone())
                        .execute(&mut *tx)
                        .await?;
                    report.rewrapped += 1;
                }
                None => report.unchanged += 1,
            }
        }
        let master: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT master_key_sealed FROM settings WHERE id = 1").fetch_one(&mut *tx).await?;
        if let Some(sealed) = master {
            let column = "master_key_sealed";
            match self.keyring.rewrap("settings", column, &sealed).map_err(|e| sealed_error("settings", column, e))? {
                Some(rewrapped) => {
                    sqlx::query("UPDATE settings SET master_key_sealed = $1 WHERE id = 1")
                        .bind(rewrapped)
                        .execute(&mut *tx)
                        .await?;
                    report.rewrapped += 1;
                }
                None => report.unchanged += 1,
            }
        }
        tx.commit().await?;
        DB::before_close(&self.pool).await;
        tracing::info!(
            key_id = %report.key_id,
            rewrapped = report.rewrapped,
            unchanged = report.unchanged,
            "re-encrypted the store's secrets"
        );
        Ok(report)
    }

    /// A write transaction holding the head row's lock, allocating no revision.
    async fn lock_head(&self) -> Result<Tx<DB>, StoreError> {
        let mut tx = self.begin(DB::BEGIN_WRITE).await?;
        let _: Revision = super::sql::to_revision(
            sqlx::query_scalar("UPDATE head SET revision = revision WHERE id = 1 RETURNING revision")
                .fetch_one(&mut *tx)
                .await?,
        )?;
        Ok(tx)
    }

    /// Opens every sealed value (so a missing key stops the start) and collects the plaintext
    /// secrets still stored.
    async fn find_plaintext(keyring: &Keyring, conn: &mut DB::Connection) -> Result<Plaintext, StoreError> {
        // Opening every provider and the settings proves the keyring holds every key in use.
        Self::fetch_providers(keyring, conn).await?;
        Self::fetch_settings(keyring, conn).await?;
        let mut found = Plaintext::default();
        let rows = sqlx::query("SELECT name, client_key FROM providers WHERE client_key IS NOT NULL ORDER BY name")
            .fetch_all(&mut *conn)
            .await?;
        for row in &rows {
            found.provider_fields.push((
                row.try_get("name")?,
                "client_key_sealed",
                "client_key",
                row.try_get("client_key")?,
            ));
        }
        let rows = sqlx::query(
            "SELECT provider, name, secret FROM provider_credentials WHERE secret IS NOT NULL ORDER BY provider, name",
        )
        .fetch_all(&mut *conn)
        .await?;
        for row in &rows {
            found.credential_secrets.push((row.try_get("provider")?, row.try_get("name")?, row.try_get("secret")?));
        }
        found.master_key_hash =
            sqlx::query_scalar("SELECT master_key_hash FROM settings WHERE id = 1").fetch_one(&mut *conn).await?;
        let rows = sqlx::query(
            "SELECT revision, seq, payload FROM changes WHERE kind IN ('provider', 'master_key') ORDER BY revision, seq",
        )
        .fetch_all(&mut *conn)
        .await?;
        for row in &rows {
            let revision: i64 = row.try_get("revision")?;
            let payload: Vec<u8> = row.try_get("payload")?;
            let entry = Change::decode(payload.as_slice())
                .map_err(|_| StoreError::Corrupt(format!("changes.payload of revision {revision}")))?;
            if holds_secrets(&entry) {
                found.payloads.push((revision, row.try_get("seq")?, scrubbed(entry).encode_to_vec()));
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
#[path = "at_rest_tests.rs"]
mod tests;
