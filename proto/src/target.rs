//! Reconnect targets: where the coordinator wants a drained (or shed) node's clients to go, so a
//! fleet ends a rollout balanced instead of piling clients onto whichever node they pick.
//!
//! A drain or shed command carries a few targets with weights (their room); the node hands each
//! client one, in proportion, as `"reconnect_to":"<url>"` in its Close reason and
//! `"reconnectTo"` in its notice. The close reason is at most 123 bytes, so a target URL is
//! short printable ASCII, and a node that cannot fit it drops the field rather than cut it.

use serde::{Deserialize, Serialize};

/// Most targets one command may carry.
pub const MAX_TARGETS: usize = 16;
/// Longest target URL, in bytes (it must fit in a close reason beside the delay).
pub const MAX_TARGET_URL_LEN: usize = 64;
/// Largest weight of one target.
pub const MAX_WEIGHT: u64 = 100_000_000;

/// A node clients should reconnect to, with its share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Its advertised WebSocket URL.
    pub url: String,
    /// Its share of the clients, relative to the other targets' (at least 1).
    pub weight: u64,
}

impl Target {
    /// Checks the URL (a short printable `ws://` or `wss://` URL) and the weight.
    pub fn validate(&self) -> Result<(), String> {
        let url = &self.url;
        if url.len() > MAX_TARGET_URL_LEN {
            return Err(format!("target URL longer than {MAX_TARGET_URL_LEN} bytes"));
        }
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err("a target URL is a ws:// or wss:// URL".to_owned());
        }
        if !url
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return Err("a target URL is printable ASCII without quotes".to_owned());
        }
        if self.weight == 0 || self.weight > MAX_WEIGHT {
            return Err(format!("a target weight is 1 to {MAX_WEIGHT}"));
        }
        Ok(())
    }
}

/// Checks a list of targets (at most [`MAX_TARGETS`], each valid).
pub fn validate(targets: &[Target]) -> Result<(), String> {
    if targets.len() > MAX_TARGETS {
        return Err(format!("at most {MAX_TARGETS} targets"));
    }
    targets.iter().try_for_each(Target::validate)
}

/// Deals `n` clients over `targets` in proportion to their weights, evenly interleaved (largest
/// remainder), so that any prefix of the clients is spread like the whole: index `i` of the
/// result is the target of client `i`. Empty when there are no targets.
pub fn deal(targets: &[Target], n: usize) -> Vec<usize> {
    if targets.is_empty() {
        return Vec::new();
    }
    // Signed: a target already past its share owes a negative amount. Weights are at most
    // MAX_WEIGHT (1e8) and there are at most MAX_TARGETS of them in a command, but this is a
    // public function: it saturates rather than trusts that.
    let total: i128 = targets.iter().map(|t| t.weight as i128).sum();
    let mut given = vec![0i128; targets.len()];
    (0..n)
        .map(|i| {
            // The target furthest behind its share of the first i+1 clients.
            let owed = |k: usize| {
                (i as i128 + 1)
                    .saturating_mul(targets[k].weight as i128)
                    .saturating_sub(given[k].saturating_mul(total))
            };
            let k = (0..targets.len())
                .max_by_key(|&k| (owed(k), std::cmp::Reverse(k)))
                .expect("targets is not empty");
            given[k] += 1;
            k
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(url: &str, weight: u64) -> Target {
        Target {
            url: url.to_owned(),
            weight,
        }
    }

    #[test]
    fn targets_are_validated() {
        assert!(validate(&[t("ws://10.0.0.1:8080/ws", 5)]).is_ok());
        for bad in [
            t("http://x/ws", 1),
            t("ws://a b/ws", 1),
            t("ws://x/\"ws", 1),
            t(&format!("ws://{}", "a".repeat(MAX_TARGET_URL_LEN)), 1),
            t("ws://x/ws", 0),
            t("ws://x/ws", MAX_WEIGHT + 1),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(validate(&vec![t("ws://x/ws", 1); MAX_TARGETS + 1]).is_err());
    }

    #[test]
    fn clients_are_dealt_in_proportion_and_interleaved() {
        let targets = [t("ws://a/ws", 3), t("ws://b/ws", 1)];
        let dealt = deal(&targets, 8);
        assert_eq!(dealt, [0, 0, 1, 0, 0, 0, 1, 0]);
        let counts = |d: &[usize]| {
            (0..2)
                .map(|k| d.iter().filter(|x| **x == k).count())
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&deal(&targets, 1000)), [750, 250]);
        // Any prefix is spread like the whole, within one.
        let dealt = deal(&targets, 1000);
        for p in [10, 99, 500] {
            let c = counts(&dealt[..p]);
            assert!((c[0] as f64 - 0.75 * p as f64).abs() <= 1.0, "{p}: {c:?}");
        }
        assert!(deal(&[], 5).is_empty());
        // A target past its share (it got the tie) owes a negative amount, not an overflow.
        let uneven = [t("ws://a/ws", 1), t("ws://b/ws", 1000), t("ws://c/ws", 1)];
        let counts: Vec<usize> = (0..3)
            .map(|k| deal(&uneven, 5000).iter().filter(|x| **x == k).count())
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 5000);
        assert!(counts[0] <= 6 && counts[2] <= 6, "{counts:?}");
        assert_eq!(
            deal(
                &[t("ws://a/ws", u64::MAX / 2), t("ws://b/ws", u64::MAX / 2)],
                4
            ),
            [0, 1, 0, 1]
        );
    }

    proptest::proptest! {
        /// Any weights a command may carry: every client dealt, and every prefix within one of
        /// each target's share. (A panic here would be a node's drain dying on a command.)
        #[test]
        fn dealing_never_panics_and_keeps_every_prefix_in_proportion(
            weights in proptest::collection::vec(1..=MAX_WEIGHT, 1..=MAX_TARGETS),
            n in 0usize..400,
        ) {
            let targets: Vec<Target> = weights.iter().map(|w| t("ws://x/ws", *w)).collect();
            let dealt = deal(&targets, n);
            proptest::prop_assert_eq!(dealt.len(), n);
            let total: f64 = weights.iter().map(|w| *w as f64).sum();
            let mut counts = vec![0f64; targets.len()];
            for (i, k) in dealt.iter().enumerate() {
                counts[*k] += 1.0;
                for (k, c) in counts.iter().enumerate() {
                    let share = (i + 1) as f64 * weights[k] as f64 / total;
                    proptest::prop_assert!((c - share).abs() <= 1.0 + 1e-9, "target {k} at {i}: {c} vs {share}");
                }
            }
        }
    }
}
