//! Stable hashing for deterministic splits and checksums.
//!
//! Splits must not change between machines, Rust versions or runs, so they cannot use
//! `std::hash` (randomly seeded and unspecified). FNV-1a followed by a SplitMix64 finaliser is
//! tiny, fully specified and well mixed, which is all a patient-level split needs.

use sha2::{Digest, Sha256};

/// 64-bit FNV-1a of `bytes`, mixed with `seed` and finalised with SplitMix64.
pub fn seeded_hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(GAMMA);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(h)
}

/// SplitMix64's increment: 2^64 divided by the golden ratio, odd.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 finaliser (one step from state `z`): a bijective mix of all 64 bits.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64 (Steele, Lea and Flood 2014) as a stream: the workspace's one pseudo-random
/// generator, for weight init, augmentation, epoch order, bootstrap replicates and test data.
/// Tiny, fast, fully specified in three lines and so easy to reproduce elsewhere
/// (tests/reference/eval_check.py does it in Python); not for cryptography. Output `k` (from 0) of a
/// stream seeded with `s` is [`splitmix64`]`(s + k * GAMMA)`.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        let out = splitmix64(self.state);
        self.state = self.state.wrapping_add(GAMMA);
        out
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        unit_interval(self.next_u64())
    }

    /// Uniform in `0..n` by Lemire's multiply-shift (bias below n / 2^64).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// A hash mapped to [0, 1) with 53 bits of precision.
pub fn unit_interval(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Lower-case hex SHA-256 of `bytes`, the checksum recorded in shard indexes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_pinned() {
        // Pinned values: a change here would silently move patients between splits.
        assert_eq!(seeded_hash(0, b"patient00001"), PINNED_0);
        assert_eq!(seeded_hash(42, b"00000001"), PINNED_42);
        assert_ne!(seeded_hash(1, b"patient00001"), PINNED_0);
    }

    const PINNED_0: u64 = 15023669695288526324;
    const PINNED_42: u64 = 16656882943000333431;

    /// The reference output of SplitMix64 seeded with 1234567 (Vigna's splitmix64.c, also
    /// rand_xoshiro's test vector): the generator is the published one, step for step.
    #[test]
    fn splitmix64_stream_is_the_reference_one() {
        let mut rng = SplitMix64::new(1234567);
        let first: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423,
                4593380528125082431,
                16408922859458223821,
            ]
        );
    }

    /// The ends of [0, 1) are reached exactly (all 53 bits are used, and 1 never is), and a
    /// stream's draws are uniform: each tenth of the interval gets its share of 100,000.
    #[test]
    fn unit_interval_spans_zero_to_one_uniformly() {
        assert_eq!(unit_interval(0), 0.0);
        assert_eq!(unit_interval(u64::MAX), 1.0 - f64::EPSILON / 2.0);
        let mut rng = SplitMix64::new(7);
        let mut bins = [0usize; 10];
        for _ in 0..100_000 {
            bins[(rng.uniform() * 10.0) as usize] += 1;
        }
        for (k, &n) in bins.iter().enumerate() {
            assert!((9_700..10_300).contains(&n), "tenth {k}: {n} of 100,000");
        }
        let below: Vec<usize> = (0..10_000).map(|_| rng.below(3)).collect();
        assert!((0..3).all(|v| below.iter().filter(|&&b| b == v).count() > 3_100));
    }
}
