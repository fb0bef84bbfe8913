//! The product page's environment variables, parsed once.
//!
//! `ENABLE_PASSTHROUGH_ROUTES`, `ALLOW_PASSTHROUGH_V1_ALIAS`, `ENABLED_PASSTHROUGH_PROVIDERS`,
//! `AURORA_MASTER_KEY` and, per provider, `<PROVIDER>_API_KEY` and `<PROVIDER>_BASE_URL`.
//! Every field is optional so that callers can tell "not set" from "set to the default": the
//! control plane applies only the variables an operator actually set (see its bootstrap).
//!
//! The secrets among them (the master key and the credentials) are not clap arguments at all:
//! a flag would put them in `/proc/PID/cmdline` and shell history. The binary edge reads each
//! from its variable or from the file its `_FILE` variable names (a mounted Kubernetes Secret)
//! and hands them to [`ProductVars::read_secrets`], which validates them here.

use std::ffi::OsStr;

use clap::builder::{BoolishValueParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{Arg, Args, Command};

use crate::{BaseUrl, KeyHash, ProviderKind, ProviderSet, Settings};

#[derive(Args, Clone, Default)]
pub struct ProductVars {
    /// Serve /p/{provider}/... at all [default: true].
    #[arg(long, env = "ENABLE_PASSTHROUGH_ROUTES", value_parser = BoolishValueParser::new())]
    pub enable_passthrough_routes: Option<bool>,

    /// Accept and strip a leading /v1 endpoint segment [default: true].
    #[arg(long, env = "ALLOW_PASSTHROUGH_V1_ALIAS", value_parser = BoolishValueParser::new())]
    pub allow_passthrough_v1_alias: Option<bool>,

    /// Comma-separated providers to expose [default: openai,anthropic,openrouter,zai,vllm].
    #[arg(long, env = "ENABLED_PASSTHROUGH_PROVIDERS", value_parser = parse_provider_set)]
    pub enabled_passthrough_providers: Option<ProviderSet>,

    /// The gateway's master key (`AURORA_MASTER_KEY`): a bearer token that passes gateway auth
    /// and the admin API. Set by [`ProductVars::read_secrets`], never from argv.
    #[arg(skip)]
    pub master_key: Option<String>,

    /// `<PROVIDER>_API_KEY`, set by [`ProductVars::read_secrets`], never from argv.
    #[arg(skip)]
    pub credentials: ProviderCredentials,

    #[command(flatten)]
    pub base_urls: ProviderBaseUrls,
}

/// `<PROVIDER>_API_KEY`: upstream credentials. Never printed.
#[derive(Clone, Default)]
pub struct ProviderCredentials {
    pub openai: Option<String>,
    pub anthropic: Option<String>,
    pub openrouter: Option<String>,
    pub zai: Option<String>,
    pub vllm: Option<String>,
}

/// The variable holding the master key (or, with `_FILE`, the file that does).
pub const MASTER_KEY_VAR: &str = "AURORA_MASTER_KEY";

/// The variable holding `kind`'s upstream credential.
pub const fn credential_var(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "OPENAI_API_KEY",
        ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
        ProviderKind::OpenRouter => "OPENROUTER_API_KEY",
        ProviderKind::Zai => "ZAI_API_KEY",
        ProviderKind::Vllm => "VLLM_API_KEY",
    }
}

/// `<PROVIDER>_BASE_URL`: upstream base URLs, validated at startup.
#[derive(Args, Clone, Default, Debug)]
pub struct ProviderBaseUrls {
    #[arg(id = "openai_base_url", long = "openai-base-url", env = "OPENAI_BASE_URL", value_parser = Quiet(parse_base_url))]
    pub openai: Option<BaseUrl>,
    #[arg(id = "anthropic_base_url", long = "anthropic-base-url", env = "ANTHROPIC_BASE_URL", value_parser = Quiet(parse_base_url))]
    pub anthropic: Option<BaseUrl>,
    #[arg(id = "openrouter_base_url", long = "openrouter-base-url", env = "OPENROUTER_BASE_URL", value_parser = Quiet(parse_base_url))]
    pub openrouter: Option<BaseUrl>,
    #[arg(id = "zai_base_url", long = "zai-base-url", env = "ZAI_BASE_URL", value_parser = Quiet(parse_base_url))]
    pub zai: Option<BaseUrl>,
    #[arg(id = "vllm_base_url", long = "vllm-base-url", env = "VLLM_BASE_URL", value_parser = Quiet(parse_base_url))]
    pub vllm: Option<BaseUrl>,
}

impl ProductVars {
    pub fn passthrough_enabled(&self) -> bool {
        self.enable_passthrough_routes.unwrap_or(true)
    }

    pub fn v1_alias_enabled(&self) -> bool {
        self.allow_passthrough_v1_alias.unwrap_or(true)
    }

    /// The settings these variables ask for, defaults filled in.
    pub fn settings(&self) -> Settings {
        Settings { passthrough_enabled: self.passthrough_enabled(), v1_alias_enabled: self.v1_alias_enabled() }
    }

    pub fn enabled_providers(&self) -> ProviderSet {
        self.enabled_passthrough_providers.unwrap_or_else(ProviderSet::all)
    }

    /// The master key, treating an empty variable as unset.
    pub fn master_key(&self) -> Option<&str> {
        self.master_key.as_deref().filter(|key| !key.is_empty())
    }

    pub fn master_key_hash(&self) -> Option<KeyHash> {
        self.master_key().map(KeyHash::of)
    }

    /// The credential set for `kind`, treating an empty variable as unset.
    pub fn credential(&self, kind: ProviderKind) -> Option<&str> {
        let c = &self.credentials;
        let value = match kind {
            ProviderKind::OpenAi => &c.openai,
            ProviderKind::Anthropic => &c.anthropic,
            ProviderKind::OpenRouter => &c.openrouter,
            ProviderKind::Zai => &c.zai,
            ProviderKind::Vllm => &c.vllm,
        };
        value.as_deref().filter(|v| !v.is_empty())
    }

    /// The base URL set for `kind`, if the operator set one.
    pub fn base_url(&self, kind: ProviderKind) -> Option<&BaseUrl> {
        let b = &self.base_urls;
        match kind {
            ProviderKind::OpenAi => b.openai.as_ref(),
            ProviderKind::Anthropic => b.anthropic.as_ref(),
            ProviderKind::OpenRouter => b.openrouter.as_ref(),
            ProviderKind::Zai => b.zai.as_ref(),
            ProviderKind::Vllm => b.vllm.as_ref(),
        }
    }

    /// Sets the master key and every credential from `secret(VAR)`, which answers with the
    /// variable's value (or its file's) or `None` when unset. A credential that cannot be sent
    /// as a header stops the start with the variable named, never its value.
    pub fn read_secrets<E>(
        &mut self,
        mut secret: impl FnMut(&'static str) -> Result<Option<String>, E>,
    ) -> Result<(), SecretsError<E>> {
        self.master_key = secret(MASTER_KEY_VAR).map_err(SecretsError::Read)?;
        for kind in ProviderKind::ALL {
            let var = credential_var(kind);
            let value = match secret(var).map_err(SecretsError::Read)? {
                Some(raw) => Some(parse_credential(&raw).map_err(|reason| SecretsError::Invalid { var, reason })?),
                None => None,
            };
            let c = &mut self.credentials;
            let slot = match kind {
                ProviderKind::OpenAi => &mut c.openai,
                ProviderKind::Anthropic => &mut c.anthropic,
                ProviderKind::OpenRouter => &mut c.openrouter,
                ProviderKind::Zai => &mut c.zai,
                ProviderKind::Vllm => &mut c.vllm,
            };
            *slot = value;
        }
        Ok(())
    }

    /// The base URL for `kind`: the operator's, or the provider's default.
    pub fn base_url_or_default(&self, kind: ProviderKind) -> BaseUrl {
        self.base_url(kind).cloned().unwrap_or_else(|| kind.default_base_url_parsed())
    }
}

/// Hand-written so that secrets can never reach a log line through `{:?}`.
impl std::fmt::Debug for ProductVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credentials: Vec<_> =
            ProviderKind::ALL.into_iter().filter(|kind| self.credential(*kind).is_some()).collect();
        f.debug_struct("ProductVars")
            .field("enable_passthrough_routes", &self.enable_passthrough_routes)
            .field("allow_passthrough_v1_alias", &self.allow_passthrough_v1_alias)
            .field("enabled_passthrough_providers", &self.enabled_passthrough_providers)
            .field("master_key_set", &self.master_key().is_some())
            .field("credentials_set", &credentials)
            .field("base_urls", &self.base_urls)
            .finish()
    }
}

impl std::fmt::Debug for ProviderCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderCredentials(<redacted>)")
    }
}

/// Why [`ProductVars::read_secrets`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError<E> {
    #[error("{0}")]
    Read(E),
    /// Names the variable, never its value.
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
}

fn parse_provider_set(raw: &str) -> Result<ProviderSet, String> {
    ProviderSet::parse_list(raw).map_err(|err| err.to_string())
}

/// A credential checked at startup, so a bad one stops the process with the variable named
/// instead of reaching the data planes. Empty means unset.
fn parse_credential(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Ok(String::new());
    }
    crate::validate_credential(raw).map(str::to_owned).map_err(|err| format!("the credential {err}"))
}

fn parse_base_url(raw: &str) -> Result<BaseUrl, String> {
    BaseUrl::parse(raw).map_err(|err| err.to_string())
}

/// A value parser whose errors name the variable but never repeat its value: clap's own errors
/// print `invalid value '<value>'`, which for a credential is the secret and for a base URL may
/// hold a password (`https://user:pw@host`), and would reach the terminal and the pod's log.
#[derive(Clone)]
struct Quiet<T>(fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Quiet<T> {
    type Value = T;

    fn parse_ref(&self, cmd: &Command, arg: Option<&Arg>, value: &OsStr) -> Result<T, clap::Error> {
        let name = arg.map_or_else(|| "value".to_owned(), describe);
        let error = |message: &str| {
            clap::Error::raw(ErrorKind::ValueValidation, format!("invalid {name}: {message}\n")).with_cmd(cmd)
        };
        let raw = value.to_str().ok_or_else(|| error("not valid UTF-8"))?;
        (self.0)(raw).map_err(|message| error(&message))
    }
}

/// `OPENAI_BASE_URL (--openai-base-url)`: how an operator finds the setting.
fn describe(arg: &Arg) -> String {
    match (arg.get_env(), arg.get_long()) {
        (Some(env), Some(long)) => format!("{} (--{long})", env.to_string_lossy()),
        (Some(env), None) => env.to_string_lossy().into_owned(),
        (None, Some(long)) => format!("--{long}"),
        (None, None) => arg.get_id().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        vars: ProductVars,
    }

    #[test]
    fn defaults_follow_the_product_page() {
        let vars = Cli::parse_from(["x"]).vars;
        assert!(vars.passthrough_enabled());
        assert!(vars.v1_alias_enabled());
        assert_eq!(vars.enabled_providers(), ProviderSet::all());
        assert_eq!(vars.base_url_or_default(ProviderKind::Zai).as_str(), "https://api.z.ai/api/paas/v4");
    }

    fn secrets<'a>(vars: &'a [(&'a str, &'a str)]) -> impl FnMut(&str) -> Result<Option<String>, String> + 'a {
        |name| Ok(vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn parses_flags_and_secrets_and_keeps_secrets_out_of_debug() {
        let mut vars = Cli::try_parse_from([
            "x",
            "--enable-passthrough-routes=false",
            "--enabled-passthrough-providers=anthropic",
            "--vllm-base-url=http://gpu:8000/v1/",
        ])
        .unwrap()
        .vars;
        vars.read_secrets(secrets(&[("ANTHROPIC_API_KEY", "sk-ant-secret"), ("AURORA_MASTER_KEY", "mk-secret")]))
            .unwrap();
        assert!(!vars.passthrough_enabled());
        assert_eq!(vars.enabled_providers().to_string(), "anthropic");
        assert_eq!(vars.credential(ProviderKind::Anthropic), Some("sk-ant-secret"));
        assert_eq!(vars.master_key(), Some("mk-secret"));
        assert_eq!(vars.base_url(ProviderKind::Vllm).unwrap().as_str(), "http://gpu:8000/v1");
        let debug = format!("{vars:?}");
        assert!(!debug.contains("sk-ant-secret") && !debug.contains("mk-secret"), "{debug}");
    }

    /// Secrets are no flags: argv is world-readable in /proc and kept in shell history.
    #[test]
    fn secrets_are_never_taken_from_argv() {
        for flag in ["--master-key=mk", "--anthropic-api-key=sk-ant", "--zai-api-key=sk-zai"] {
            assert!(Cli::try_parse_from(["x", flag]).is_err(), "{flag} must not exist");
        }
    }

    /// The startup error names the variable and what is wrong, never the value: a password in
    /// a base URL and a credential are secrets.
    #[test]
    fn errors_about_secrets_never_repeat_them() {
        for (flag, value) in [
            ("--openai-base-url", "ftp://admin:S3cretPw@x.com"),
            ("--openai-base-url", "http://admin:S3cretPw@[bad/v1"),
            ("--openai-base-url", "https://admin:S3cretPw@x.com/v1"),
        ] {
            let err = Cli::try_parse_from(["x", &format!("{flag}={value}")]).err().expect(value);
            let text = err.render().to_string();
            assert!(!text.contains("S3cretPw"), "{text}");
            assert!(text.contains(flag), "the error names the setting: {text}");
        }
        let err = ProductVars::default().read_secrets(secrets(&[("ZAI_API_KEY", "sk-S3cretPw\u{7f}")])).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("ZAI_API_KEY: ") && !text.contains("S3cretPw"), "{text}");
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Cli::try_parse_from(["x", "--enabled-passthrough-providers=gemini"]).is_err());
        assert!(Cli::try_parse_from(["x", "--openai-base-url=not a url"]).is_err());
        assert!(ProductVars::default().read_secrets(secrets(&[("ZAI_API_KEY", "bad\u{7f}key")])).is_err());
        let mut vars = ProductVars::default();
        vars.read_secrets(secrets(&[("ZAI_API_KEY", "sk-zai\n")])).unwrap();
        assert_eq!(vars.credential(ProviderKind::Zai), Some("sk-zai"), "a trailing newline from a file is trimmed");
    }
}
