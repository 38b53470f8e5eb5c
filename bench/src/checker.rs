//! Per (sender, recipient) sequence checking: every message a sender sends to a
//! recipient carries the next number of that pair, so the recipient can tell a
//! message that is missing (a gap), one that arrives twice (a duplicate) and one
//! that arrives after a later one (reordered). The state is one counter in the
//! common case; missing numbers are kept as ranges, touched only when out of order.

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected number.
    InOrder,
    /// Ahead of the expected number: this many before it are missing (for now).
    Gap(u64),
    /// A number that was missing, arriving late: a reordering.
    Late,
    /// A number already received.
    Duplicate,
}

#[derive(Debug, Default, Clone)]
pub struct SeqChecker {
    next: u64,
    received: u64,
    duplicates: u64,
    reordered: u64,
    /// Missing numbers, as sorted, disjoint half-open ranges.
    missing: Vec<(u64, u64)>,
    missing_count: u64,
}

impl SeqChecker {
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.next += 1;
            self.received += 1;
            return Arrival::InOrder;
        }
        self.observe_slow(seq)
    }

    #[cold]
    fn observe_slow(&mut self, seq: u64) -> Arrival {
        if seq > self.next {
            let gap = seq - self.next;
            self.missing.push((self.next, seq));
            self.missing_count += gap;
            self.next = seq + 1;
            self.received += 1;
            return Arrival::Gap(gap);
        }
        // seq < next: either a late arrival of a missing number or a duplicate.
        let pos = self.missing.partition_point(|&(_, end)| end <= seq);
        match self.missing.get(pos).copied() {
            Some((start, end)) if start <= seq => {
                match (seq == start, seq + 1 == end) {
                    (true, true) => {
                        self.missing.remove(pos);
                    }
                    (true, false) => self.missing[pos].0 = seq + 1,
                    (false, true) => self.missing[pos].1 = seq,
                    (false, false) => {
                        self.missing[pos].1 = seq;
                        self.missing.insert(pos + 1, (seq + 1, end));
                    }
                }
                self.missing_count -= 1;
                self.received += 1;
                self.reordered += 1;
                Arrival::Late
            }
            _ => {
                self.duplicates += 1;
                Arrival::Duplicate
            }
        }
    }

    /// Distinct messages received.
    #[cfg(test)]
    pub fn received(&self) -> u64 {
        self.received
    }

    #[cfg(test)]
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    #[cfg(test)]
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Messages never received, given that the sender sent `sent` of them
    /// (numbers `0..sent`): the holes plus the missing tail.
    pub fn lost(&self, sent: u64) -> u64 {
        self.missing_count + sent.saturating_sub(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u64]) -> (SeqChecker, Vec<Arrival>) {
        let mut c = SeqChecker::new();
        let v = seqs.iter().map(|&s| c.observe(s)).collect();
        (c, v)
    }

    #[test]
    fn in_order_is_clean() {
        let (c, v) = feed(&[0, 1, 2, 3]);
        assert!(v.iter().all(|a| *a == Arrival::InOrder));
        assert_eq!(
            (c.lost(4), c.duplicates(), c.reordered(), c.received()),
            (0, 0, 0, 4)
        );
    }

    #[test]
    fn detects_a_gap() {
        let (c, v) = feed(&[0, 1, 4, 5]);
        assert_eq!(v[2], Arrival::Gap(2));
        assert_eq!(c.lost(6), 2);
        assert_eq!(c.lost(8), 4, "the unreceived tail counts too");
        assert_eq!((c.duplicates(), c.reordered()), (0, 0));
    }

    #[test]
    fn detects_a_duplicate() {
        let (c, v) = feed(&[0, 1, 1, 2, 0]);
        assert_eq!(v[2], Arrival::Duplicate);
        assert_eq!(v[4], Arrival::Duplicate);
        assert_eq!((c.lost(3), c.duplicates(), c.reordered()), (0, 2, 0));
    }

    #[test]
    fn detects_a_reorder() {
        let (c, v) = feed(&[0, 2, 1, 3]);
        assert_eq!(
            v,
            [
                Arrival::InOrder,
                Arrival::Gap(1),
                Arrival::Late,
                Arrival::InOrder
            ]
        );
        assert_eq!(
            (c.lost(4), c.duplicates(), c.reordered(), c.received()),
            (0, 0, 1, 4)
        );
    }

    #[test]
    fn late_arrivals_split_ranges_and_repeat_as_duplicates() {
        let (c, v) = feed(&[10, 5, 3, 7, 5, 0, 9, 20, 15]);
        assert_eq!(v[0], Arrival::Gap(10));
        assert_eq!(&v[1..4], &[Arrival::Late; 3]);
        assert_eq!(v[4], Arrival::Duplicate);
        assert_eq!(v[5], Arrival::Late);
        assert_eq!(v[6], Arrival::Late);
        assert_eq!(v[7], Arrival::Gap(9));
        assert_eq!(v[8], Arrival::Late);
        // Missing: 1,2,4,6,8 and 11..20 without 15.
        assert_eq!(c.lost(21), 5 + 8);
        assert_eq!((c.duplicates(), c.reordered()), (1, 6));
        assert_eq!(
            c.missing,
            vec![(1, 3), (4, 5), (6, 7), (8, 9), (11, 15), (16, 20)]
        );
    }
}
