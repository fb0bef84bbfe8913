//! This control-plane process's identity, as audit records and the shared presence table name
//! it: `hostname:pid:instance`, where `instance` is random per start, so two processes (or two
//! starts of PID 1 in one container) never share an id.

use std::sync::Arc;

/// Makes the id for this process; called once at startup.
pub fn this_process() -> Arc<str> {
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let host = if host.is_empty() { "unknown-host".to_owned() } else { host };
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let short = instance.get(..8).unwrap_or(&instance);
    Arc::from(format!("{host}:{}:{short}", std::process::id()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_name_the_process_and_differ_per_start() {
        let a = super::this_process();
        let b = super::this_process();
        assert_ne!(a, b);
        let pid = std::process::id().to_string();
        assert_eq!(a.split(':').nth(1), Some(pid.as_str()), "{a}");
        assert_eq!(a.split(':').count(), 3, "{a}");
    }
}
