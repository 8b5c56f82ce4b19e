//! Test data: bytes that look random but are the same on every run.

/// `len` pseudo-random bytes from `seed` (xorshift64; a zero seed gives zeroes).
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
