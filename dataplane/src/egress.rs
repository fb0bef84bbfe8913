//! Egress proxies: which upstream connections go through an HTTP proxy, and how.
//!
//! The rules are curl's, as every HTTP client operators know applies them (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`; lower case wins over upper case; no implicit
//! exemptions, so loopback is proxied unless `NO_PROXY` lists it). They are parsed once at
//! startup from [`ProxyVars`] into hyper-util's [`Matcher`]; [`connector`] applies them per
//! connection: HTTPS through a `CONNECT` tunnel (so TLS, ALPN and HTTP/2 run end to end with the
//! provider), plain HTTP sent to the proxy in absolute form. Proxy URLs may carry credentials,
//! so neither they nor the variables ever reach a log line or an error message.

pub mod connector;

use http::uri::Scheme;
use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::Matcher;

use crate::config::ProxyVars;

/// The parsed proxy rules; absent entirely when no proxy variable is set, so the connector's
/// direct path costs nothing more than before.
pub struct ProxyRules {
    matcher: Matcher,
}

/// A proxy variable that cannot be used. Never repeats the value: it may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    #[error("{0} is not a valid proxy URL")]
    Invalid(&'static str),
    #[error("{var}: only http:// proxies are supported (got a {scheme}:// URL)")]
    Scheme { var: &'static str, scheme: String },
}

impl ProxyRules {
    /// The rules `vars` describe, or `None` when no proxy is configured.
    pub fn from_vars(vars: &ProxyVars) -> Result<Option<ProxyRules>, ProxyConfigError> {
        let https = checked("HTTPS_PROXY", vars.https())?;
        let http = checked("HTTP_PROXY", vars.http())?;
        let all = checked("ALL_PROXY", vars.all())?;
        if https.is_none() && http.is_none() && all.is_none() {
            return Ok(None);
        }
        let matcher = Matcher::builder()
            .https(https.unwrap_or_default())
            .http(http.unwrap_or_default())
            .all(all.unwrap_or_default())
            .no(vars.no().unwrap_or_default())
            .build();
        Ok(Some(ProxyRules { matcher }))
    }

    /// The proxy a connection to `dst` goes through, if any.
    pub fn intercept(&self, dst: &Uri) -> Option<hyper_util::client::proxy::matcher::Intercept> {
        self.matcher.intercept(dst)
    }

    /// The `Proxy-Authorization` a plain-HTTP request to `dst` carries: such requests go to the
    /// proxy itself (in absolute form), so the credential rides on each request rather than on
    /// a tunnel.
    pub fn http_authorization(&self, dst: &Uri) -> Option<HeaderValue> {
        if dst.scheme() != Some(&Scheme::HTTP) {
            return None;
        }
        self.matcher.intercept(dst)?.basic_auth().cloned()
    }
}

/// Hand-written: the matcher holds proxy credentials.
impl std::fmt::Debug for ProxyRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyRules").finish_non_exhaustive()
    }
}

/// `value` if it is a usable proxy URL: `http://[user:pass@]host[:port]`, the scheme optional as
/// curl allows. hyper-util would silently ignore anything else, and the gateway would then try
/// to connect directly, which is exactly the silent failure proxies are configured to avoid.
fn checked(var: &'static str, value: Option<&str>) -> Result<Option<String>, ProxyConfigError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let uri: Uri = value.parse().map_err(|_| ProxyConfigError::Invalid(var))?;
    if let Some(scheme) = uri.scheme_str().filter(|s| !s.eq_ignore_ascii_case("http")) {
        // A parsed scheme is at most 64 letters, digits and `+-.`: safe to repeat.
        return Err(ProxyConfigError::Scheme { var, scheme: scheme.to_owned() });
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(ProxyConfigError::Invalid(var));
    }
    Ok(Some(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pairs: &[(&str, &str)]) -> Option<ProxyRules> {
        ProxyRules::from_vars(&ProxyVars::from_pairs(pairs)).unwrap()
    }

    fn proxied(rules: &ProxyRules, dst: &str) -> Option<String> {
        rules.intercept(&dst.parse().unwrap()).map(|i| i.uri().to_string())
    }

    #[test]
    fn nothing_set_means_no_rules() {
        assert!(rules(&[]).is_none());
        assert!(rules(&[("NO_PROXY", "*"), ("HTTPS_PROXY", " ")]).is_none());
    }

    #[test]
    fn scheme_picks_the_proxy_and_lower_case_wins() {
        let r =
            rules(&[("HTTPS_PROXY", "http://upper:3128"), ("https_proxy", "lower:3128"), ("HTTP_PROXY", "plain:80")])
                .unwrap();
        assert_eq!(proxied(&r, "https://api.openai.com/v1").as_deref(), Some("http://lower:3128/"));
        assert_eq!(proxied(&r, "http://vllm:8000/v1").as_deref(), Some("http://plain:80/"));

        let r = rules(&[("ALL_PROXY", "http://all:1")]).unwrap();
        assert_eq!(proxied(&r, "https://api.openai.com").as_deref(), Some("http://all:1/"));
    }

    #[test]
    fn no_proxy_follows_curl() {
        let r = rules(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("no_proxy", "internal.example, .corp.example, 10.0.0.0/8, 192.168.1.7"),
        ])
        .unwrap();
        for exempt in [
            "https://internal.example/v1",
            "https://a.internal.example/v1",
            "https://x.corp.example",
            "https://10.1.2.3:8443",
            "https://192.168.1.7",
        ] {
            assert_eq!(proxied(&r, exempt), None, "{exempt}");
        }
        for via_proxy in ["https://api.openai.com", "https://notinternal.example", "https://127.0.0.1:8443"] {
            assert!(proxied(&r, via_proxy).is_some(), "{via_proxy}: no implicit exemptions, loopback included");
        }
        let r = rules(&[("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", "*")]).unwrap();
        assert_eq!(proxied(&r, "https://api.openai.com"), None);
    }

    #[test]
    fn credentials_become_basic_auth_for_plain_http_only() {
        let r =
            rules(&[("HTTP_PROXY", "http://us%40er:p%3Ass@p:3128"), ("HTTPS_PROXY", "http://u:pw@p:3128")]).unwrap();
        let auth = r.http_authorization(&"http://vllm:8000/v1".parse().unwrap()).unwrap();
        // base64("us@er:p:ss")
        assert_eq!(auth, "Basic dXNAZXI6cDpzcw==");
        assert!(auth.is_sensitive());
        assert_eq!(r.http_authorization(&"https://api.openai.com".parse().unwrap()), None);
        assert_eq!(proxied(&r, "http://vllm:8000").as_deref(), Some("http://p:3128/"), "no user info kept in the URI");
        assert!(!format!("{r:?}").contains("pw"));
    }

    #[test]
    fn unusable_values_are_refused_without_repeating_them() {
        let err = ProxyRules::from_vars(&ProxyVars::from_pairs(&[("HTTPS_PROXY", "socks5://u:secret@p:1080")]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "HTTPS_PROXY: only http:// proxies are supported (got a socks5:// URL)");
        let err = ProxyRules::from_vars(&ProxyVars::from_pairs(&[("http_proxy", "http://u:secret@")]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "HTTP_PROXY is not a valid proxy URL");
    }
}
