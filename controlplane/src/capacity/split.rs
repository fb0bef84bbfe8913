//! How one limit is divided among the replicas that share it: the arithmetic behind every cap
//! in a lease, pure and exact (integers only), so its invariants can be tested directly.
//!
//! Invariants ([`split`]):
//! - every share is at least what its holder already used (`caps >= admitted`);
//! - when the holders together used no more than the limit, the shares sum to at most the
//!   limit (`sum of caps <= limit`); otherwise each share is exactly what its holder used, so
//!   nobody admits more;
//! - what is left is divided by demand, after a small reserve for holders that showed none,
//!   so a replica that starts seeing traffic can admit a few requests before its next lease.

/// One holder of a share: a data-plane replica of this control plane, or (on PostgreSQL) all
/// the replicas of another control plane, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Holder {
    /// What it already used in the window (requests admitted, tokens charged, requests in
    /// flight, ...).
    pub used: u64,
    /// Its recent demand, in any unit common to all holders (0: none).
    pub weight: u64,
    /// How many idle replicas it stands for (each gets a reserve); 1 for an idle replica,
    /// 0 for a busy one.
    pub idle: u64,
}

/// The part of what is left that is reserved for idle replicas, in percent, when some are busy.
pub(crate) const IDLE_RESERVE_PERCENT: u64 = 10;

/// Each holder's share of `limit` (same order as `holders`).
pub(crate) fn split(limit: u64, holders: &[Holder]) -> Vec<u64> {
    let used: u64 = holders.iter().map(|h| h.used).fold(0, u64::saturating_add);
    let mut shares: Vec<u64> = holders.iter().map(|h| h.used).collect();
    if holders.is_empty() || used >= limit {
        return shares;
    }
    let left = limit - used;
    let weight: u128 = holders.iter().map(|h| u128::from(h.weight)).sum();
    let idle: u64 = holders.iter().map(|h| h.idle).sum();
    if weight == 0 {
        // Nobody asks for anything: every replica gets an even part (idle ones count one each,
        // a holder with no idle replicas and no demand gets nothing).
        let slots: Vec<u128> = holders.iter().map(|h| u128::from(h.idle)).collect();
        distribute(left, &slots, &mut shares);
        return shares;
    }
    // At least one each while that leaves the busy ones the larger part.
    let reserve_each = match idle {
        0 => 0,
        _ if left >= 2 * idle => (left * IDLE_RESERVE_PERCENT / 100 / idle).max(1),
        _ => 0,
    };
    let mut rest = left;
    for (share, holder) in shares.iter_mut().zip(holders) {
        let reserve = reserve_each * holder.idle;
        *share += reserve;
        rest -= reserve;
    }
    let weights: Vec<u128> = holders.iter().map(|h| u128::from(h.weight)).collect();
    distribute(rest, &weights, &mut shares);
    shares
}

/// Adds `amount` to `shares` in proportion to `weights` (largest remainders get the units left
/// by rounding down, ties to the heavier, then the earlier holder), never more than `amount`.
fn distribute(amount: u64, weights: &[u128], shares: &mut [u64]) {
    let total: u128 = weights.iter().sum();
    if total == 0 || amount == 0 {
        return;
    }
    let amount_wide = u128::from(amount);
    let mut given = 0u64;
    let mut remainders: Vec<(u128, u128, usize)> = Vec::with_capacity(weights.len());
    for (index, &weight) in weights.iter().enumerate() {
        let exact = amount_wide * weight;
        // `exact / total <= amount`, so it fits.
        let part = u64::try_from(exact / total).unwrap_or(amount);
        shares[index] = shares[index].saturating_add(part);
        given += part;
        if weight > 0 {
            remainders.push((exact % total, weight, index));
        }
    }
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    for &(_, _, index) in remainders.iter().take(usize::try_from(amount - given).unwrap_or(usize::MAX)) {
        shares[index] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(used: u64, weight: u64) -> Holder {
        Holder { used, weight, idle: 0 }
    }

    fn idle(used: u64) -> Holder {
        Holder { used, weight: 0, idle: 1 }
    }

    #[test]
    fn idle_replicas_share_evenly_and_exactly() {
        assert_eq!(split(10, &[idle(0), idle(0), idle(0)]), [4, 3, 3]);
        assert_eq!(split(10, &[idle(2), idle(0)]), [6, 4]);
        assert_eq!(split(5, &[]), Vec::<u64>::new());
    }

    #[test]
    fn demand_gets_what_is_left_after_a_reserve() {
        // 100 left, 10 % reserved for the one idle replica.
        assert_eq!(split(100, &[busy(0, 3), idle(0)]), [90, 10]);
        let shares = split(600, &[busy(100, 1), busy(50, 1), idle(0)]);
        assert_eq!(shares.iter().sum::<u64>(), 600);
        assert_eq!(shares, [100 + 203, 50 + 202, 45]);
    }

    #[test]
    fn caps_never_fall_below_what_was_used_and_never_sum_above_the_limit() {
        // Deterministic pseudo-random cases.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..10_000 {
            let limit = next(1_000);
            let holders: Vec<Holder> = (0..1 + next(6))
                .map(|_| {
                    let weight = if next(3) == 0 { 0 } else { next(1_000) };
                    Holder { used: next(300), weight, idle: u64::from(weight == 0) * (1 + next(2)) }
                })
                .collect();
            let shares = split(limit, &holders);
            let used: u64 = holders.iter().map(|h| h.used).sum();
            for (share, holder) in shares.iter().zip(&holders) {
                assert!(*share >= holder.used, "{limit} {holders:?} {shares:?}");
            }
            if used <= limit {
                assert!(shares.iter().sum::<u64>() <= limit, "{limit} {holders:?} {shares:?}");
                if holders.iter().any(|h| h.weight > 0 || h.idle > 0) {
                    assert_eq!(shares.iter().sum::<u64>(), limit, "nothing is lost to rounding");
                }
            } else {
                assert_eq!(shares, holders.iter().map(|h| h.used).collect::<Vec<_>>(), "over: nobody gets more");
            }
        }
    }

    #[test]
    fn small_limits_lose_nothing_to_rounding() {
        // Three busy replicas, two requests left: the two heaviest get one each.
        assert_eq!(split(10, &[busy(3, 1), busy(3, 5), busy(2, 3)]), [3, 4, 3]);
        assert_eq!(split(1, &[busy(0, 1), busy(0, 1)]), [1, 0], "ties go to the earlier holder");
    }
}
