//! R3: rounding to the nearest 20, halves up, in checked integer arithmetic.
//!
//! [`Rounded`] is the only number type the output of the sanitiser holds, and
//! the only way to make one is to round (or to add two). An unrounded count
//! therefore cannot reach a rendered file by accident.

use std::fmt;

/// The base every published figure is a multiple of.
pub const BASE: u64 = 20;

/// The largest count the sanitiser accepts (R1).
pub const MAX_COUNT: u64 = 1_000_000_000_000;

/// A figure rounded to a multiple of 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rounded(u64);

impl Rounded {
    /// Zero.
    pub const ZERO: Rounded = Rounded(0);

    /// R(x) = 20·⌊(x + 10) / 20⌋. `None` only if `x + 10` overflows, which
    /// cannot happen for counts within R1's limit.
    pub fn round(x: u64) -> Option<Rounded> {
        Some(Rounded(x.checked_add(BASE / 2)? / BASE * BASE))
    }

    /// The sum of two rounded figures, itself a multiple of 20.
    pub fn checked_add(self, other: Rounded) -> Option<Rounded> {
        self.0.checked_add(other.0).map(Rounded)
    }

    /// The rounded value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Rounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Sums rounded figures; `None` on overflow.
pub fn sum(values: impl IntoIterator<Item = Rounded>) -> Option<Rounded> {
    values
        .into_iter()
        .try_fold(Rounded::ZERO, Rounded::checked_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(x: u64) -> u64 {
        Rounded::round(x).expect("in range").get()
    }

    /// Worked case T1.
    #[test]
    fn t1_rounding_table() {
        let input = [
            0, 1, 9, 10, 11, 19, 20, 29, 30, 31, 49, 50, 51, 99, 100, 110, 1234,
        ];
        let expected = [
            0, 0, 0, 20, 20, 20, 20, 20, 40, 40, 40, 60, 60, 100, 100, 120, 1240,
        ];
        let got: Vec<u64> = input.iter().map(|&x| r(x)).collect();
        assert_eq!(got, expected);
    }

    /// Worked case T3 (the accepting half; the blocking half is in the reader).
    #[test]
    fn t3_largest_count_rounds_to_itself() {
        assert_eq!(r(MAX_COUNT), MAX_COUNT);
    }

    #[test]
    fn overflow_is_refused_not_wrapped() {
        assert_eq!(Rounded::round(u64::MAX), None);
        assert_eq!(Rounded::round(u64::MAX - 9).map(Rounded::get), None);
        assert!(Rounded(u64::MAX - 19).checked_add(Rounded(20)).is_none());
    }

    proptest! {
        #[test]
        fn multiple_of_twenty(x in 0..=MAX_COUNT) {
            prop_assert_eq!(r(x) % BASE, 0);
        }

        #[test]
        fn within_ten(x in 0..=MAX_COUNT) {
            prop_assert!(r(x).abs_diff(x) <= 10);
        }

        #[test]
        fn monotone(a in 0..=MAX_COUNT, b in 0..=MAX_COUNT) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(r(lo) <= r(hi));
        }

        #[test]
        fn idempotent(x in 0..=MAX_COUNT) {
            prop_assert_eq!(r(r(x)), r(x));
        }

        #[test]
        fn published_value_bounds_the_truth(x in 0..=MAX_COUNT) {
            // A published r > 0 means the truth is in [r-10, r+9]; 0 means 0..=9.
            let p = r(x);
            if p == 0 {
                prop_assert!(x <= 9);
            } else {
                prop_assert!(p - 10 <= x && x <= p + 9);
            }
        }
    }
}
