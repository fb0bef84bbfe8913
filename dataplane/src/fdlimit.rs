//! The process's open-file limit: raised to its hard limit at startup, and the connection cap
//! fitted under it.
//!
//! Every client connection is a file descriptor, and so is every upstream connection it
//! causes. Many systems start services with a soft limit of 1024 (or less) although the hard
//! limit allows far more; left there, a few hundred idle clients exhaust it and `accept` fails
//! for everyone, authorised requests included.

/// File descriptors kept out of the connection budget: the listeners, the admin listener's
/// connections, the config stream, the cache file, logs.
const RESERVED: u64 = 128;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit now in effect
/// (`None`: unknown or unlimited).
#[cfg(unix)]
pub fn raise() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(from = ?limit.current, to = ?limit.maximum, "raised the open-file limit"),
            // macOS refuses an unlimited soft limit; the current one then stays.
            Err(err) => {
                tracing::warn!(error = %err, soft = ?limit.current, hard = ?limit.maximum, "cannot raise the open-file limit")
            }
        }
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(not(unix))]
pub fn raise() -> Option<u64> {
    None
}

/// The connection cap to use: `configured`, unless the open-file limit `nofile` cannot hold
/// that many client connections plus one upstream connection each (and [`RESERVED`]).
pub fn fit_connections(configured: u32, nofile: Option<u64>) -> u32 {
    let Some(nofile) = nofile else { return configured };
    let budget = u32::try_from(nofile.saturating_sub(RESERVED) / 2).unwrap_or(u32::MAX).max(1);
    if budget < configured {
        tracing::warn!(
            max_connections = configured,
            open_file_limit = nofile,
            lowered_to = budget,
            "the connection cap (AURORA_MAX_CONNECTIONS) does not fit the open-file limit, half of which is kept for upstream connections; lowered"
        );
        return budget;
    }
    configured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_upstream_connections() {
        assert_eq!(fit_connections(10_000, Some(1_048_576)), 10_000);
        assert_eq!(fit_connections(10_000, Some(256)), 64);
        assert_eq!(fit_connections(10_000, Some(10)), 1);
        assert_eq!(fit_connections(500, None), 500);
    }
}
