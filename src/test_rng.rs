//! A small deterministic generator (xorshift64*) for the randomized unit
//! tests: the same cases on every run, no dependency.

pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..n`. The seed must not be zero.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}
