//! Secrets come from the environment or from files, never from argv.
//!
//! A flag would put a secret in `/proc/PID/cmdline`, which every user on the host can read, and
//! in shell history. Each secret `NAME` is read from the variable `NAME`, or from the file the
//! variable `NAME_FILE` names (a Kubernetes Secret mounted as a file, a Docker secret); setting
//! both is an error, so it is never unclear which one is in use. A file's trailing newline is
//! dropped. This is the only place the binary reads these variables.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, bail};

/// `NAME` or the contents of `NAME_FILE`, `None` when neither is set (or the value is empty).
pub(crate) fn read(name: &str) -> anyhow::Result<Option<String>> {
    read_with(name, |var| std::env::var_os(var))
}

fn read_with(name: &str, lookup: impl Fn(&str) -> Option<OsString>) -> anyhow::Result<Option<String>> {
    let file_var = format!("{name}_FILE");
    let direct = lookup(name).filter(|v| !v.is_empty());
    let file = lookup(&file_var).filter(|v| !v.is_empty()).map(PathBuf::from);
    let value = match (direct, file) {
        (Some(_), Some(_)) => bail!("both {name} and {file_var} are set: set one"),
        (Some(value), None) => value.into_string().map_err(|_| anyhow::anyhow!("{name} is not valid UTF-8"))?,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("{file_var}: cannot read {}", path.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        (None, None) => return Ok(None),
    };
    Ok(Some(value).filter(|v| !v.is_empty()))
}

/// Reads the product page's secrets into `vars`.
pub(crate) fn read_product(vars: &mut aurora_core::ProductVars) -> anyhow::Result<()> {
    vars.read_secrets(read).map_err(|err| anyhow::anyhow!("{err}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, OsString)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn a_secret_comes_from_its_variable_or_its_file_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let path = file.to_str().unwrap();

        assert_eq!(read_with("T", lookup(&[("T", "direct")])).unwrap().as_deref(), Some("direct"));
        assert_eq!(read_with("T", lookup(&[("T_FILE", path)])).unwrap().as_deref(), Some("from-file"));
        assert_eq!(read_with("T", lookup(&[])).unwrap(), None);
        assert_eq!(read_with("T", lookup(&[("T", "")])).unwrap(), None, "empty is unset");
        let both = read_with("T", lookup(&[("T", "direct"), ("T_FILE", path)])).unwrap_err();
        assert_eq!(both.to_string(), "both T and T_FILE are set: set one");
        let missing = read_with("T", lookup(&[("T_FILE", "/nonexistent/x")])).unwrap_err();
        assert!(missing.to_string().starts_with("T_FILE: cannot read /nonexistent/x"), "{missing}");
    }
}
