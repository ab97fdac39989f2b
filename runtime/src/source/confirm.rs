//! Which LSN the replicator may confirm to the slot, without IO.
//!
//! Place in the pipeline: the replicator tells the window what it read and published, and
//! what JetStream acknowledged; the window answers which LSN the slot may be confirmed up to
//! (the standby status's flush position). Confirming an LSN lets PostgreSQL recycle the WAL
//! before it, so a change is lost for good if it is confirmed before it is stored.
//!
//! Contract:
//! - A transaction's end LSN is confirmed only once every message of it and of every earlier
//!   transaction is acknowledged: acknowledgements are taken in publish order.
//! - A transaction without changes of ours publishes nothing; its end is confirmed once
//!   everything published before it is acknowledged.
//! - A keepalive's WAL end is confirmed only between transactions with nothing in flight:
//!   then everything the server sent before it is handled (an idle group does not pin WAL).
//! - The confirmed LSN never goes back.

use std::collections::VecDeque;

use crate::lsn::Lsn;

#[derive(Debug, Clone, Default)]
pub struct ConfirmWindow {
    confirmed: Lsn,
    /// Per published message (or transaction without messages), in publish order: the LSN its
    /// acknowledgement lets the replicator confirm.
    in_flight: VecDeque<Option<Lsn>>,
    in_tx: bool,
}

impl ConfirmWindow {
    /// Starts from what the slot has confirmed.
    pub fn new(confirmed: Lsn) -> ConfirmWindow {
        ConfirmWindow {
            confirmed,
            ..ConfirmWindow::default()
        }
    }

    pub fn confirmed(&self) -> Lsn {
        self.confirmed
    }

    /// A transaction's Begin was read.
    pub fn begin(&mut self) {
        self.in_tx = true;
    }

    /// A message was published; `end` is its transaction's end LSN on the final message.
    pub fn published(&mut self, end: Option<Lsn>) {
        self.in_flight.push_back(end);
    }

    /// The transaction's Commit was read; its final message was published with
    /// [`ConfirmWindow::published`], or, with `published_nothing`, the transaction counts as
    /// one more in flight (acknowledged in its turn, [`ConfirmWindow::acked`]).
    pub fn committed(&mut self, end: Lsn, published_nothing: bool) {
        if published_nothing {
            self.in_flight.push_back(Some(end));
        }
        self.in_tx = false;
    }

    /// The oldest message in flight was acknowledged; returns the LSN newly confirmed.
    pub fn acked(&mut self) -> Option<Lsn> {
        let lsn = self.in_flight.pop_front().flatten()?;
        self.raise(lsn)
    }

    /// A keepalive from the server at `wal_end`; returns the LSN newly confirmed.
    pub fn keepalive(&mut self, wal_end: Lsn) -> Option<Lsn> {
        if self.in_tx || !self.in_flight.is_empty() {
            return None;
        }
        self.raise(wal_end)
    }

    fn raise(&mut self, lsn: Lsn) -> Option<Lsn> {
        (lsn > self.confirmed).then(|| {
            self.confirmed = lsn;
            lsn
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy)]
    enum Ev {
        Begin,
        Publish,
        /// Final message of a transaction ending at the LSN.
        PublishEnd(u64),
        Commit(u64),
        /// Commit of a transaction that published nothing.
        CommitEmpty(u64),
        Ack,
        Keepalive(u64),
    }
    use Ev::*;

    /// Events -> the confirmed LSN after each.
    #[test]
    fn confirms_only_what_is_stored() {
        let table: Vec<(Vec<Ev>, Vec<u64>)> = vec![
            // One transaction in two messages: its end once both are acked.
            (
                vec![Begin, Publish, PublishEnd(0x200), Commit(0x200), Ack, Ack],
                vec![0x100, 0x100, 0x100, 0x100, 0x100, 0x200],
            ),
            // Acks come in order: the second transaction waits for the first.
            (
                vec![
                    Begin,
                    PublishEnd(0x200),
                    Commit(0x200),
                    Begin,
                    PublishEnd(0x300),
                    Commit(0x300),
                    Ack,
                    Ack,
                ],
                vec![0x100, 0x100, 0x100, 0x100, 0x100, 0x100, 0x200, 0x300],
            ),
            // A transaction without our changes after one in flight: confirmed after it.
            (
                vec![
                    Begin,
                    PublishEnd(0x200),
                    Commit(0x200),
                    Begin,
                    CommitEmpty(0x300),
                    Ack,
                    Ack,
                ],
                vec![0x100, 0x100, 0x100, 0x100, 0x100, 0x200, 0x300],
            ),
            // Keepalives: not inside a transaction, not with messages in flight.
            (
                vec![
                    Keepalive(0x150),
                    Begin,
                    Keepalive(0x180),
                    Publish,
                    Keepalive(0x190),
                    PublishEnd(0x200),
                    Commit(0x200),
                    Keepalive(0x210),
                    Ack,
                    Keepalive(0x220),
                    Ack,
                    Keepalive(0x230),
                ],
                vec![
                    0x150, 0x150, 0x150, 0x150, 0x150, 0x150, 0x150, 0x150, 0x150, 0x150, 0x200,
                    0x230,
                ],
            ),
            // Never backwards.
            (
                vec![Keepalive(0x50), Begin, CommitEmpty(0x80), Ack],
                vec![0x100, 0x100, 0x100, 0x100],
            ),
        ];
        for (events, want) in table {
            let mut w = ConfirmWindow::new(Lsn(0x100));
            let got: Vec<u64> = events
                .iter()
                .map(|ev| {
                    match *ev {
                        Begin => w.begin(),
                        Publish => w.published(None),
                        PublishEnd(l) => w.published(Some(Lsn(l))),
                        Commit(l) => w.committed(Lsn(l), false),
                        CommitEmpty(l) => w.committed(Lsn(l), true),
                        Ack => {
                            w.acked();
                        }
                        Keepalive(l) => {
                            w.keepalive(Lsn(l));
                        }
                    }
                    w.confirmed().0
                })
                .collect();
            assert_eq!(got, want, "{events:?}");
        }
    }
}
