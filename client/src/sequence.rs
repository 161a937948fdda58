//! The push sequence a client has seen, across its connections: which seq it has contiguously
//! (a reconnect resumes after that one), and which it has beyond a hole (so they are not handed
//! to the application again when the resume brings them back with the hole filled).

use std::collections::BTreeSet;

/// Seqs held beyond a hole; past this the hole is given up on (counted as a gap).
const MAX_AHEAD: usize = 10_000;

/// What a push's seq means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// New: hand it to the application.
    New,
    /// New, after a hole this push leaves (something before it has not come).
    AfterHole,
    /// Seen before: drop it.
    Again,
}

#[derive(Debug, Default)]
pub(crate) struct Sequence {
    /// Every seq up to this one has been seen (from the first one seen).
    contiguous: Option<u64>,
    /// Seqs seen beyond `contiguous + 1`.
    ahead: BTreeSet<u64>,
}

impl Sequence {
    /// Where a reconnect resumes: after the last contiguous seq.
    pub fn resume_after(&self) -> Option<u64> {
        self.contiguous
    }

    /// Takes a push's seq.
    pub fn see(&mut self, seq: u64) -> Seen {
        let Some(contiguous) = self.contiguous else {
            self.contiguous = Some(seq);
            return Seen::New;
        };
        if seq <= contiguous || self.ahead.contains(&seq) {
            return Seen::Again;
        }
        if seq == contiguous + 1 {
            let mut top = seq;
            while self.ahead.remove(&(top + 1)) {
                top += 1;
            }
            self.contiguous = Some(top);
            return Seen::New;
        }
        self.ahead.insert(seq);
        if self.ahead.len() > MAX_AHEAD {
            // The hole is not coming back: carry on from the highest seen.
            self.contiguous = self.ahead.last().copied();
            self.ahead.clear();
        }
        Seen::AfterHole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hole_holds_the_resume_point_and_what_fills_it_is_new_once() {
        let mut s = Sequence::default();
        assert_eq!(s.resume_after(), None);
        assert_eq!(s.see(5), Seen::New, "the first seen starts the sequence");
        assert_eq!(s.see(6), Seen::New);
        assert_eq!(s.see(6), Seen::Again);
        assert_eq!(s.see(4), Seen::Again, "before the start");
        assert_eq!(s.see(9), Seen::AfterHole);
        assert_eq!(s.resume_after(), Some(6), "resume before the hole");
        // The resume brings 7, 8, then 9 again.
        assert_eq!(s.see(7), Seen::New);
        assert_eq!(s.see(8), Seen::New);
        assert_eq!(s.resume_after(), Some(9), "the hole is filled: 9 joins");
        assert_eq!(s.see(9), Seen::Again);
        assert_eq!(s.see(10), Seen::New);
        assert_eq!(s.see(u64::MAX), Seen::AfterHole);
        assert_eq!(s.see(u64::MAX), Seen::Again);
    }

    #[test]
    fn a_hole_that_never_fills_is_given_up_on_and_memory_stays_bounded() {
        let mut s = Sequence::default();
        s.see(1);
        for seq in 3..(3 + MAX_AHEAD as u64 + 1) {
            s.see(seq);
        }
        assert!(s.ahead.len() <= MAX_AHEAD);
        assert_eq!(s.resume_after(), Some(2 + MAX_AHEAD as u64 + 1));
    }
}
