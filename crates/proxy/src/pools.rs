//! Pools: credentials of equal rank share calls in proportion to their weights, by smooth
//! weighted round-robin (nginx's): each member's current weight grows by its weight on
//! every pick, the largest is chosen and loses the pool's total. Over any `W` calls
//! (`W` the sum of weights) each member is chosen exactly `weight` times, spread out
//! rather than in runs — so over 100 calls each share is within one call of its weight's
//! share, well inside the SPEC's ±10.
//!
//! State is kept per pool (its members, in a fixed order): calls whose scope admits a
//! different set of credentials form a different pool, with its own rotation.

use std::collections::HashMap;
use std::sync::Mutex;

use byok_domain::CredentialId;

/// Most pools remembered; beyond, the rotation state is forgotten and starts over
/// (fairness is kept within each window).
const MAX_POOLS: usize = 65_536;

/// Every pool's rotation state on this node.
#[derive(Debug, Default)]
pub(crate) struct PoolBook {
    pools: Mutex<HashMap<Box<[CredentialId]>, Vec<i64>>>,
}

impl PoolBook {
    /// Pick one of `members` (id, weight), in a fixed order; `None` when empty.
    pub(crate) fn pick(&self, members: &[(CredentialId, u16)]) -> Option<usize> {
        match members.len() {
            0 => return None,
            1 => return Some(0),
            _ => {}
        }
        let key: Box<[CredentialId]> = members.iter().map(|(id, _)| *id).collect();
        let mut pools = match self.pools.lock() {
            Ok(pools) => pools,
            Err(poisoned) => poisoned.into_inner(),
        };
        if pools.len() >= MAX_POOLS && !pools.contains_key(&key) {
            pools.clear();
        }
        let current = pools.entry(key).or_insert_with(|| vec![0; members.len()]);
        let total: i64 = members.iter().map(|(_, w)| i64::from(*w)).sum();
        let mut best = 0;
        for (i, (_, weight)) in members.iter().enumerate() {
            current[i] += i64::from(*weight);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_weights_exactly_over_a_cycle() {
        let book = PoolBook::default();
        let members: Vec<(CredentialId, u16)> = [5u16, 3, 2].iter().map(|w| (CredentialId::generate(), *w)).collect();
        let mut counts = [0; 3];
        for _ in 0..100 {
            counts[book.pick(&members).unwrap()] += 1;
        }
        assert_eq!(counts, [50, 30, 20]);
    }

    #[test]
    fn picks_are_spread_not_in_runs() {
        let book = PoolBook::default();
        let members: Vec<(CredentialId, u16)> = [1u16, 1].iter().map(|w| (CredentialId::generate(), *w)).collect();
        let picks: Vec<usize> = (0..6).map(|_| book.pick(&members).unwrap()).collect();
        assert!(picks.windows(2).all(|w| w[0] != w[1]), "{picks:?}");
    }

    #[test]
    fn uneven_weights_over_100_calls_stay_within_one_call() {
        let book = PoolBook::default();
        let weights = [7u16, 1, 1000, 13];
        let members: Vec<(CredentialId, u16)> = weights.iter().map(|w| (CredentialId::generate(), *w)).collect();
        let mut counts = [0f64; 4];
        for _ in 0..100 {
            counts[book.pick(&members).unwrap()] += 1.0;
        }
        let total: f64 = weights.iter().map(|w| f64::from(*w)).sum();
        for (count, weight) in counts.iter().zip(weights) {
            let share = 100.0 * f64::from(weight) / total;
            assert!((count - share).abs() <= 1.0, "{counts:?}");
        }
    }
}
