//! Waiting on conditions with a deadline. The only way tests in this suite wait.

use std::time::{Duration, Instant};

/// Generous, because CI machines are small and busy; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `condition` until it returns `Some`, panicking with `what` after `DEADLINE`.
pub async fn until<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`until`] for an async condition.
pub async fn until_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut condition: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
