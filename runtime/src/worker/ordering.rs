//! The worker's ordering decision, without IO: whether a message is applied now, skipped as a
//! duplicate, skipped because it was dead-lettered, held for its predecessor, or refused; and
//! what to do while a held message waits.
//!
//! Place in the pipeline: NATS message -> decode -> **order** -> rules -> routing -> sink. The
//! worker loop (`worker/mod.rs`) asks [`Order::offer`] for every message and reports back what
//! it did ([`Order::applied`], [`Order::dead_lettered`], [`Order::committed`],
//! [`Order::rolled_back`]). One `Order` lives as long as the worker process, across consuming
//! sessions (a NATS reconnect, a gap restart, an isolation pass), so what was applied is never
//! forgotten between sessions; at start it is seeded from the position the sink (or the group's
//! NATS state) stored durably.
//!
//! Contract:
//! - Messages are applied in [`Position`] order. A message is applied only once the message
//!   named by its `prev` has been applied, or was dead-lettered after its own predecessor had
//!   been (a dead letter is "applied with no changes", in order).
//! - A message at or below the last applied position is a duplicate: it is acked at once when
//!   the position is durable, otherwise after the next commit. Positions are compared only
//!   within one source ([`position_verdict`]): a message of another source (a re-created slot
//!   or group) is never a duplicate; the first message of its run (no `prev`) goes to the
//!   sink, which starts over (a copy) or refuses it (postgres), and the rest follow in order.
//! - A transaction that spans several messages is applied without another transaction's
//!   messages between its parts; a dead-lettered final part still ends its transaction.
//! - A message whose predecessor is missing is held, unacked. [`gap_step`] decides when the
//!   worker restarts delivery (once, to recover a delivery lost in a reconnect) and when it
//!   gives up with an error naming both positions (never an endless restart loop).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::message::{Position, SourceId};
use crate::sink::{position_verdict, Verdict as PositionVerdict};

/// What to do with one offered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Apply it to the sink now.
    Apply,
    /// At or below the last applied position: skip it; ack now when `durable`, otherwise after
    /// the next commit.
    Duplicate { durable: bool },
    /// Moved to the dead-letter stream earlier; skip it in order and ack it now.
    DeadLettered,
    /// Its predecessor has not been applied: keep it, unacked, until it has.
    Hold { waiting_for: Position },
    /// It starts another transaction while the one at `expected` is incomplete.
    OutOfOrder { expected: Position, got: Position },
}

/// What is known of a dead-lettered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its `prev`.
    pub prev: Option<Position>,
    /// It was its transaction's final message.
    pub last: bool,
}

/// The ordering state of one worker process.
#[derive(Clone, Debug, Default)]
pub struct Order {
    /// The last message applied (or skipped in order), committed or not.
    last: Option<Position>,
    /// The source `last` belongs to, when known.
    source: Option<SourceId>,
    /// The last position made durable by a commit.
    committed: Option<Position>,
    /// The source `committed` belongs to, when known.
    committed_source: Option<SourceId>,
    /// `last` did not end its transaction.
    in_tx: bool,
    /// Dead-lettered messages above `committed`.
    dead: BTreeMap<Position, DeadLetter>,
}

impl Order {
    /// Starts from the position the destination holds durably (`None`: nothing yet) and the
    /// source it belongs to.
    pub fn new(durable: Option<Position>, source: Option<SourceId>) -> Order {
        Order {
            last: durable,
            source,
            committed: durable,
            committed_source: source,
            ..Order::default()
        }
    }

    pub fn last(&self) -> Option<Position> {
        self.last
    }

    pub fn committed(&self) -> Option<Position> {
        self.committed
    }

    /// The last applied message did not end its transaction (no commit may happen now).
    pub fn in_tx(&self) -> bool {
        self.in_tx
    }

    /// Raises the durable position to one learned later (the sink's stored position at the
    /// start of a session may be ahead of what this process committed: another process ran).
    pub fn durable_at_least(&mut self, durable: Option<Position>, source: Option<SourceId>) {
        let other_source = matches!((source, self.committed_source), (Some(a), Some(b)) if a != b);
        if other_source || durable > self.committed {
            self.committed = durable;
            self.committed_source = source.or(self.committed_source);
            if other_source || durable > self.last {
                self.last = durable;
                self.source = self.committed_source;
                self.in_tx = false;
            }
        }
    }

    /// Whether everything up to `prev` is applied (or dead-lettered in order).
    pub fn reached(&self, prev: Option<Position>) -> bool {
        let Some(last) = self.last else {
            // Nothing applied yet: the first message the stream holds starts the history.
            return true;
        };
        let mut cur = prev;
        while let Some(p) = cur {
            if p <= last {
                return true;
            }
            match self.dead.get(&p) {
                // Positions strictly fall along `prev`, so this walk ends.
                Some(d) if d.prev.is_none_or(|q| q < p) => cur = d.prev,
                _ => return false,
            }
        }
        true
    }

    /// Decides what to do with the message at `pos` whose predecessor is `prev`, from
    /// `source` (`copy`: a message of an initial copy).
    pub fn offer(
        &self,
        pos: Position,
        prev: Option<Position>,
        source: Option<SourceId>,
        copy: bool,
    ) -> Verdict {
        match position_verdict(self.last.map(|l| (l, self.source)), source, copy, pos) {
            PositionVerdict::Skip => {
                let same = |s: Option<SourceId>| s.is_none() || source.is_none() || s == source;
                return Verdict::Duplicate {
                    durable: self.committed.is_some_and(|c| pos <= c)
                        && same(self.committed_source),
                };
            }
            PositionVerdict::Reset | PositionVerdict::Mismatch { .. } => {
                // Another source: its positions start over with its run's first message.
                return match prev {
                    None => Verdict::Apply,
                    Some(waiting_for) => Verdict::Hold { waiting_for },
                };
            }
            PositionVerdict::Apply => {}
        }
        if !self.reached(prev) {
            if let Some(waiting_for) = prev {
                return Verdict::Hold { waiting_for };
            }
        }
        // The transaction state right before this message: after `last`, or after the
        // dead-lettered predecessor that is skipped on the way.
        let (before, in_tx) = match prev.and_then(|p| self.dead.get_key_value(&p)) {
            Some((p, d)) if self.last.is_none_or(|last| *p > last) => (Some(*p), !d.last),
            _ => (self.last, self.in_tx),
        };
        if let Some(expected) = before.filter(|b| in_tx && b.commit_lsn != pos.commit_lsn) {
            return Verdict::OutOfOrder { expected, got: pos };
        }
        if self.dead.contains_key(&pos) {
            return Verdict::DeadLettered;
        }
        Verdict::Apply
    }

    /// For a message at `pos` about to be applied: the WAL position through which changes of
    /// its transaction were applied already from other messages (the same transaction cut
    /// differently by another replicator run), so the worker drops those changes of it.
    pub fn applied_within(&self, pos: Position, source: Option<SourceId>) -> Option<u64> {
        let last = self.last?;
        let same_source = self.source.is_none() || source.is_none() || self.source == source;
        (same_source && last.commit_lsn == pos.commit_lsn && last.seq < pos.seq).then_some(last.seq)
    }

    /// The message at `pos` was applied to the sink, or skipped in order as a dead letter;
    /// `last` is its transaction-final flag.
    pub fn applied(&mut self, pos: Position, last: bool, source: Option<SourceId>) {
        self.last = Some(pos);
        self.source = source.or(self.source);
        self.in_tx = !last;
    }

    /// The message at `pos` was moved to the dead-letter stream (and acked there). Its
    /// successors will not wait for it; when it comes again it is skipped in order.
    pub fn dead_lettered(&mut self, pos: Position, letter: DeadLetter) {
        if self.committed.is_none_or(|c| pos > c) {
            self.dead.insert(pos, letter);
        }
    }

    /// Everything applied is durable now.
    pub fn commit(&mut self) {
        self.committed = self.last;
        self.committed_source = self.source;
        if let Some(c) = self.committed {
            self.dead.retain(|p, _| *p > c);
        }
    }

    /// What was applied but not committed is gone (the sink rolled back; it is redelivered).
    pub fn rolled_back(&mut self) {
        self.last = self.committed;
        self.source = self.committed_source;
        self.in_tx = false;
    }
}

/// How long a held message waits before delivery is restarted once (a delivery lost while the
/// worker reconnected to NATS comes back only after the ack wait otherwise).
pub const REDELIVER_AFTER: Duration = Duration::from_secs(15);

/// What the worker does while a message waits for a missing predecessor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapStep {
    /// Keep waiting (the replicator re-publishes what it did not get a PubAck for); look again
    /// after this long.
    Wait(Duration),
    /// Restart delivery from the oldest unacked message.
    Redeliver,
    /// The predecessor did not come within `limit`: stop with an error naming it.
    GiveUp,
}

/// The gap decision for a predecessor missing for `waited`, after `redeliveries` restarts of
/// delivery for it, with the configured `limit` (`--gap-timeout`).
pub fn gap_step(waited: Duration, redeliveries: u32, limit: Duration) -> GapStep {
    let redeliver_at = REDELIVER_AFTER.min(limit / 2);
    if waited >= limit {
        GapStep::GiveUp
    } else if redeliveries == 0 && waited >= redeliver_at {
        GapStep::Redeliver
    } else if redeliveries == 0 {
        GapStep::Wait(redeliver_at - waited)
    } else {
        GapStep::Wait(limit - waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lsn: u64, seq: u64) -> Position {
        Position {
            commit_lsn: lsn,
            seq,
        }
    }

    /// An `Order` after applying `(pos, last)` in turn and committing the first `committed`.
    fn after(applied: &[(Position, bool)], committed: usize) -> Order {
        let mut o = Order::default();
        for (i, (pos, last)) in applied.iter().enumerate() {
            o.applied(*pos, *last, None);
            if i + 1 == committed {
                o.commit();
            }
        }
        o
    }

    #[test]
    fn offer_table() {
        let dead = |o: &mut Order, pos, prev, last| o.dead_lettered(pos, DeadLetter { prev, last });
        // (case, state, offered pos, prev, expected)
        let mut cases: Vec<(&str, Order, Position, Option<Position>, Verdict)> = vec![
            (
                "fresh worker applies the first message it sees",
                Order::default(),
                p(100, 0),
                Some(p(50, 0)),
                Verdict::Apply,
            ),
            (
                "successor of the last applied",
                after(&[(p(100, 0), true)], 1),
                p(200, 0),
                Some(p(100, 0)),
                Verdict::Apply,
            ),
            (
                "first message of a replicator run (no prev)",
                after(&[(p(100, 0), true)], 1),
                p(200, 0),
                None,
                Verdict::Apply,
            ),
            (
                "redelivered committed message",
                after(&[(p(100, 0), true), (p(200, 0), true)], 2),
                p(100, 0),
                None,
                Verdict::Duplicate { durable: true },
            ),
            (
                "duplicate of an applied, uncommitted message",
                after(&[(p(100, 0), true), (p(200, 0), true)], 1),
                p(200, 0),
                Some(p(100, 0)),
                Verdict::Duplicate { durable: false },
            ),
            (
                "re-published late: predecessor missing",
                after(&[(p(100, 0), true)], 1),
                p(300, 0),
                Some(p(200, 0)),
                Verdict::Hold {
                    waiting_for: p(200, 0),
                },
            ),
            (
                "next part of an open transaction",
                after(&[(p(100, 0), false)], 0),
                p(100, 1),
                Some(p(100, 0)),
                Verdict::Apply,
            ),
            (
                "another transaction while one is open",
                after(&[(p(100, 0), false)], 0),
                p(200, 0),
                Some(p(100, 0)),
                Verdict::OutOfOrder {
                    expected: p(100, 0),
                    got: p(200, 0),
                },
            ),
        ];
        // A dead-lettered final part ends its transaction: the next transaction follows it.
        let mut o = after(&[(p(100, 0), false)], 0);
        dead(&mut o, p(100, 1), Some(p(100, 0)), true);
        cases.push((
            "successor of a dead-lettered final part",
            o.clone(),
            p(200, 0),
            Some(p(100, 1)),
            Verdict::Apply,
        ));
        cases.push((
            "the dead-lettered part itself, redelivered",
            o,
            p(100, 1),
            Some(p(100, 0)),
            Verdict::DeadLettered,
        ));
        // A dead-lettered middle part keeps its transaction open.
        let mut o = after(&[(p(100, 0), false)], 0);
        dead(&mut o, p(100, 1), Some(p(100, 0)), false);
        cases.push((
            "part after a dead-lettered middle part",
            o.clone(),
            p(100, 2),
            Some(p(100, 1)),
            Verdict::Apply,
        ));
        cases.push((
            "another transaction after a dead-lettered middle part",
            o,
            p(200, 0),
            Some(p(100, 1)),
            Verdict::OutOfOrder {
                expected: p(100, 1),
                got: p(200, 0),
            },
        ));
        // Two dead letters in a row (several rejected parts of one transaction).
        let mut o = after(&[(p(50, 0), true)], 1);
        dead(&mut o, p(100, 0), Some(p(50, 0)), false);
        dead(&mut o, p(100, 1), Some(p(100, 0)), false);
        cases.push((
            "after two dead-lettered parts",
            o.clone(),
            p(100, 2),
            Some(p(100, 1)),
            Verdict::Apply,
        ));
        // A dead letter whose own predecessor was never applied does not open the way.
        let mut o = after(&[(p(50, 0), true)], 1);
        dead(&mut o, p(100, 1), Some(p(100, 0)), true);
        cases.push((
            "dead letter after a missing message",
            o,
            p(200, 0),
            Some(p(100, 1)),
            Verdict::Hold {
                waiting_for: p(100, 1),
            },
        ));
        for (name, order, pos, prev, want) in cases {
            assert_eq!(order.offer(pos, prev, None, false), want, "{name}");
        }
    }

    #[test]
    fn state_survives_a_rollback_and_forgets_only_the_uncommitted() {
        let mut o = after(&[(p(100, 0), true), (p(200, 0), true)], 1);
        o.rolled_back();
        assert_eq!(o.last(), Some(p(100, 0)));
        assert!(!o.in_tx());
        // The rolled-back message comes again and is applied again, not skipped.
        assert_eq!(
            o.offer(p(200, 0), Some(p(100, 0)), None, false),
            Verdict::Apply
        );
        // The committed one is still a duplicate.
        assert_eq!(
            o.offer(p(100, 0), None, None, false),
            Verdict::Duplicate { durable: true }
        );
    }

    #[test]
    fn a_dead_letter_redelivered_after_a_rollback_is_skipped_in_order() {
        // T#0 applied, T#1 (final) rejected and dead-lettered, session restarts.
        let mut o = after(&[(p(50, 0), true)], 1);
        o.applied(p(100, 0), false, None);
        o.dead_lettered(
            p(100, 1),
            DeadLetter {
                prev: Some(p(100, 0)),
                last: true,
            },
        );
        o.rolled_back();
        assert_eq!(
            o.offer(p(100, 0), Some(p(50, 0)), None, false),
            Verdict::Apply
        );
        o.applied(p(100, 0), false, None);
        assert_eq!(
            o.offer(p(100, 1), Some(p(100, 0)), None, false),
            Verdict::DeadLettered
        );
        o.applied(p(100, 1), true, None);
        assert!(
            !o.in_tx(),
            "a dead-lettered final part ends the transaction"
        );
        assert_eq!(
            o.offer(p(200, 0), Some(p(100, 1)), None, false),
            Verdict::Apply
        );
        o.applied(p(200, 0), true, None);
        o.commit();
        assert!(
            o.dead.is_empty(),
            "dead letters at or below the commit are dropped"
        );
    }

    #[test]
    fn another_source_starts_over_with_its_first_message() {
        let a = Some(SourceId {
            system_identifier: 1,
            slot_origin: 0x100,
        });
        let b = Some(SourceId {
            system_identifier: 2,
            slot_origin: 0x100,
        });
        let mut o = Order::new(Some(p(900, 0)), a);
        // Lower positions of another source are not duplicates; only the run's first message
        // (no prev) may start it, the others wait for it.
        assert_eq!(o.offer(p(100, 0), None, b, false), Verdict::Apply);
        assert_eq!(
            o.offer(p(100, 1), Some(p(100, 0)), b, true),
            Verdict::Hold {
                waiting_for: p(100, 0)
            }
        );
        o.applied(p(100, 0), false, b);
        assert_eq!(o.offer(p(100, 1), Some(p(100, 0)), b, true), Verdict::Apply);
        o.applied(p(100, 1), true, b);
        // The old source's messages are now another source's.
        assert_eq!(
            o.offer(p(950, 0), Some(p(900, 0)), a, false),
            Verdict::Hold {
                waiting_for: p(900, 0)
            }
        );
        // A rollback returns to what was committed, source included.
        o.rolled_back();
        assert_eq!(
            o.offer(p(900, 0), None, a, false),
            Verdict::Duplicate { durable: true }
        );
        // Same positions, the same source: duplicates; a message without source compares by
        // position.
        assert_eq!(
            o.offer(p(800, 0), None, None, false),
            Verdict::Duplicate { durable: true }
        );
    }

    #[test]
    fn a_later_durable_position_wins() {
        let mut o = Order::new(Some(p(100, 0)), None);
        o.durable_at_least(Some(p(300, 0)), None);
        assert_eq!(
            o.offer(p(200, 0), None, None, false),
            Verdict::Duplicate { durable: true }
        );
        o.durable_at_least(Some(p(150, 0)), None);
        assert_eq!(o.committed(), Some(p(300, 0)));
    }

    #[test]
    fn a_transaction_cut_differently_is_applied_from_the_next_change() {
        let src = |o: u64| {
            Some(SourceId {
                system_identifier: 1,
                slot_origin: o,
            })
        };
        let mut o = Order::default();
        // Run 1 applied the changes through WAL position 0x150 of transaction 0x900.
        o.applied(p(0x900, 0x150), false, src(1));
        // (message position, source) -> changes at or before this WAL position are applied
        let table = [
            (p(0x900, 0x200), src(1), Some(0x150)),
            (p(0x900, 0x200), None, Some(0x150)),
            (p(0x900, 0x150), src(1), None),
            (p(0x900, 0x100), src(1), None),
            (p(0x901, 0x200), src(1), None),
            (p(0x900, 0x200), src(2), None),
        ];
        for (pos, source, want) in table {
            assert_eq!(o.applied_within(pos, source), want, "{pos} {source:?}");
        }
        assert_eq!(
            o.offer(p(0x900, 0x200), None, src(1), false),
            Verdict::Apply
        );
        assert_eq!(
            o.offer(p(0x900, 0x140), None, src(1), false),
            Verdict::Duplicate { durable: false }
        );
        assert_eq!(Order::default().applied_within(p(1, 1), None), None);
    }

    #[test]
    fn gap_steps() {
        let s = Duration::from_secs;
        let limit = s(300);
        let cases = [
            (s(0), 0, GapStep::Wait(s(15))),
            (s(10), 0, GapStep::Wait(s(5))),
            (s(15), 0, GapStep::Redeliver),
            (s(16), 1, GapStep::Wait(s(284))),
            (s(299), 1, GapStep::Wait(s(1))),
            (s(300), 1, GapStep::GiveUp),
            (s(400), 0, GapStep::GiveUp),
        ];
        for (waited, redeliveries, want) in cases {
            assert_eq!(
                gap_step(waited, redeliveries, limit),
                want,
                "{waited:?} {redeliveries}"
            );
        }
        // A short limit redelivers half-way.
        assert_eq!(gap_step(s(2), 0, s(4)), GapStep::Redeliver);
        assert_eq!(gap_step(s(3), 1, s(4)), GapStep::Wait(s(1)));
    }
}
