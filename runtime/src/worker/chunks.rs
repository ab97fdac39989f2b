//! Putting a change sent in parts back together, without IO.
//!
//! Place in the pipeline: NATS message -> **parts** -> decode -> order -> ... A change too
//! large for one NATS message comes as consecutive messages with `Pg-Flo-Chunk: i/n` and
//! `Pg-Flo-Chunk-Set` (see `source::publish`); their payloads, concatenated, are one ordinary
//! message.
//!
//! Contract:
//! - A set is complete when parts `1..=n` of one set arrived in order; then its payload and
//!   the acks of all its parts are handed on together (acked only when the change is durable).
//! - A set that breaks off (a part missing, another set or a whole message arrives before it
//!   ends) can never be completed: its replicator run failed before the set was acknowledged,
//!   so the replicator publishes it again whole. Its parts are returned to be acked (dropped
//!   from the stream), never applied.
//! - A part of the open set delivered again (a redelivery) is ignored: the first delivery's
//!   ack stands for it.
//! - A set larger than [`MAX_SET_BYTES`] or with malformed headers is an error: nothing is
//!   acked (hostile or corrupt input never grows memory without bound).

use bytes::Bytes;

/// Most bytes of one change in parts (PostgreSQL values are at most 1 GiB).
pub const MAX_SET_BYTES: usize = 1536 * 1024 * 1024;

/// One part, as read from its headers.
#[derive(Debug)]
pub struct Part<A> {
    pub set: String,
    /// From 1.
    pub index: u32,
    pub count: u32,
    pub payload: Bytes,
    /// `Pg-Flo-Chunk-Last` of a final part: stands for the message's `last` field.
    pub last: Option<bool>,
    pub ack: A,
}

/// A completed set: its payload (owned, so `last` can be set in place), the acks of its parts
/// and its final part's `last`.
pub type Complete<A> = (Vec<u8>, Vec<A>, Option<bool>);

/// Parses `Pg-Flo-Chunk`'s `i/n`.
pub fn parse_index(header: &str) -> Result<(u32, u32), String> {
    let bad = || format!("malformed part header {header:?} (expected i/n with 1 <= i <= n)");
    let (i, n) = header.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if i == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// What feeding a part gave.
#[derive(Debug)]
pub struct Fed<A> {
    /// A completed set.
    pub complete: Option<Complete<A>>,
    /// Parts of broken sets: ack them (drop them from the stream), do not apply them.
    pub dropped: Vec<A>,
}

#[derive(Debug)]
struct Open<A> {
    set: String,
    count: u32,
    next: u32,
    /// The parts so far, concatenated as they come (each part's buffer is let go at once).
    data: Vec<u8>,
    acks: Vec<A>,
}

/// The set being put together (one per consuming session).
#[derive(Debug)]
pub struct Reassembly<A> {
    open: Option<Open<A>>,
}

impl<A> Default for Reassembly<A> {
    fn default() -> Self {
        Reassembly { open: None }
    }
}

impl<A> Reassembly<A> {
    /// A whole (unsplit) message arrived: an open set is broken.
    pub fn whole(&mut self) -> Vec<A> {
        self.open.take().map(|o| o.acks).unwrap_or_default()
    }

    pub fn part(&mut self, part: Part<A>) -> Result<Fed<A>, String> {
        let mut dropped = Vec::new();
        if let Some(open) = self.open.as_mut() {
            if open.set == part.set && open.count == part.count {
                if part.index < open.next {
                    // Delivered again: the first delivery's ack stands for it.
                    return Ok(Fed {
                        complete: None,
                        dropped,
                    });
                }
                if part.index == open.next {
                    if open.data.len() + part.payload.len() > MAX_SET_BYTES {
                        return Err(format!(
                            "a change in parts is larger than {MAX_SET_BYTES} bytes"
                        ));
                    }
                    open.data.extend_from_slice(&part.payload);
                    drop(part.payload);
                    open.acks.push(part.ack);
                    open.next += 1;
                    if open.next <= open.count {
                        return Ok(Fed {
                            complete: None,
                            dropped,
                        });
                    }
                    let Some(done) = self.open.take() else {
                        return Ok(Fed {
                            complete: None,
                            dropped,
                        });
                    };
                    return Ok(Fed {
                        complete: Some((done.data, done.acks, part.last)),
                        dropped,
                    });
                }
            }
            // Another set, or a part missing: the open one is broken.
            dropped.extend(self.open.take().map(|o| o.acks).unwrap_or_default());
        }
        if part.index != 1 {
            // The tail of a set whose head is gone.
            dropped.push(part.ack);
            return Ok(Fed {
                complete: None,
                dropped,
            });
        }
        if part.count == 1 {
            return Ok(Fed {
                complete: Some((part.payload.to_vec(), vec![part.ack], part.last)),
                dropped,
            });
        }
        self.open = Some(Open {
            set: part.set,
            count: part.count,
            next: 2,
            data: part.payload.to_vec(),
            acks: vec![part.ack],
        });
        Ok(Fed {
            complete: None,
            dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(set: &str, index: u32, count: u32, ack: u32) -> Part<u32> {
        Part {
            set: set.into(),
            index,
            count,
            payload: Bytes::from(format!("{set}{index}.")),
            last: (index == count).then_some(true),
            ack,
        }
    }

    /// (parts fed as (set, i, n), wholes between them marked as ("", 0, 0)) -> (completed
    /// payloads with their acks, dropped acks); acks number the deliveries from 1.
    #[test]
    fn sets_complete_in_order_and_broken_ones_are_dropped() {
        type Out = (Vec<(&'static str, Vec<u32>)>, Vec<u32>);
        type Feed = Vec<(&'static str, u32, u32)>;
        let table: Vec<(Feed, Out)> = vec![
            (
                vec![("a", 1, 3), ("a", 2, 3), ("a", 3, 3)],
                (vec![("a1.a2.a3.", vec![1, 2, 3])], vec![]),
            ),
            (vec![("a", 1, 1)], (vec![("a1.", vec![1])], vec![])),
            // A part lost: the set breaks, the next run's set completes.
            (
                vec![("a", 1, 3), ("a", 3, 3), ("b", 1, 2), ("b", 2, 2)],
                (vec![("b1.b2.", vec![3, 4])], vec![1, 2]),
            ),
            // Another set starts before the open one ended.
            (
                vec![("a", 1, 3), ("a", 2, 3), ("b", 1, 2), ("b", 2, 2)],
                (vec![("b1.b2.", vec![3, 4])], vec![1, 2]),
            ),
            // A whole message breaks an open set.
            (
                vec![("a", 1, 2), ("", 0, 0), ("a", 2, 2)],
                (vec![], vec![1, 3]),
            ),
            // A redelivered part is ignored.
            (
                vec![("a", 1, 2), ("a", 1, 2), ("a", 2, 2)],
                (vec![("a1.a2.", vec![1, 3])], vec![]),
            ),
            // The same set name with another count is another set.
            (
                vec![("a", 1, 2), ("a", 1, 3), ("a", 2, 3), ("a", 3, 3)],
                (vec![("a1.a2.a3.", vec![2, 3, 4])], vec![1]),
            ),
        ];
        for (feed, (want_complete, want_dropped)) in table {
            let mut r = Reassembly::default();
            let (mut complete, mut dropped) = (Vec::new(), Vec::new());
            for (n, (set, i, count)) in feed.iter().enumerate() {
                let ack = n as u32 + 1;
                if set.is_empty() {
                    dropped.extend(r.whole());
                    continue;
                }
                let fed = r.part(part(set, *i, *count, ack)).unwrap();
                dropped.extend(fed.dropped);
                if let Some((payload, acks, last)) = fed.complete {
                    assert_eq!(last, Some(true));
                    complete.push((String::from_utf8(payload).unwrap(), acks));
                }
            }
            let want: Vec<(String, Vec<u32>)> = want_complete
                .into_iter()
                .map(|(p, a)| (p.to_owned(), a))
                .collect();
            assert_eq!((complete, dropped), (want, want_dropped), "{feed:?}");
        }
    }

    #[test]
    fn part_headers_are_checked() {
        assert_eq!(parse_index("2/5"), Ok((2, 5)));
        for bad in ["", "0/1", "3/2", "1", "a/b", "1/-1"] {
            assert!(parse_index(bad).is_err(), "{bad}");
        }
    }
}
