//! The encoded body of a change larger than a message, built around its large values instead
//! of copying them.
//!
//! A value decoded from the replication stream is a slice of the WAL message it came in
//! (`Value::Text` holds `Bytes`). MessagePack writes such a value as a short header and then
//! its bytes verbatim, so the encoded body of a large change is mostly those same bytes:
//! [`Rope`] is an [`std::io::Write`] that, when the encoder writes a slice lying inside one of
//! the change's own large values, keeps a reference to that value's memory instead of copying
//! it. The body is then the small encoded pieces and the borrowed values, in order, and the
//! parts published to NATS are slices of them.
//!
//! Contract:
//! - [`Rope::into_parts`] cuts the body exactly where cutting the concatenated bytes would
//!   (parts of `size` bytes, the last one shorter), so the parts do not depend on how the body
//!   was written; a part lying inside one borrowed value is a slice of it (no copy), a part
//!   across pieces is a copy of at most `size` bytes.
//! - Only writes of at least [`BORROW_AT`] bytes are borrowed, and only when they lie wholly
//!   inside a registered value; everything else is copied, so what comes out is always the
//!   exact bytes the encoder wrote.
//! - A large value is therefore held once, in the WAL message it arrived in, until its last
//!   part is published: the replicator holds one copy of a large value, not two.

use std::io;

use bytes::{Bytes, BytesMut};

/// Writes at least this long are borrowed from the registered values when they lie inside one.
pub const BORROW_AT: usize = 64 * 1024;

/// An encoded body: small written pieces and borrowed large values, in order.
#[derive(Debug, Default)]
pub struct Rope {
    /// The pieces before `current`, in order.
    pieces: Vec<Bytes>,
    /// The piece being written (copied bytes).
    current: Vec<u8>,
    /// Values the encoder may write verbatim: borrowed instead of copied.
    values: Vec<Bytes>,
    len: usize,
}

impl Rope {
    /// A rope starting with `head`, borrowing from `values` (those shorter than
    /// [`BORROW_AT`] are dropped here: they are copied anyway).
    pub fn new(head: Vec<u8>, values: impl IntoIterator<Item = Bytes>) -> Rope {
        Rope {
            pieces: Vec::new(),
            len: head.len(),
            current: head,
            values: values
                .into_iter()
                .filter(|v| v.len() >= BORROW_AT)
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the written pieces that were copied (not borrowed).
    #[cfg(test)]
    fn copied(&self) -> usize {
        self.current.len()
            + self
                .pieces
                .iter()
                .filter(|p| !self.values.iter().any(|v| contains(v, p)))
                .map(Bytes::len)
                .sum::<usize>()
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.pieces.push(Bytes::from(self.current));
        }
        self.pieces
    }

    /// The whole body in one buffer (for a body that fits one message).
    pub fn into_vec(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for piece in self.finish() {
            out.extend_from_slice(&piece);
        }
        out
    }

    /// The body cut into parts of `size` bytes (the last one shorter).
    pub fn into_parts(self, size: usize) -> Vec<Bytes> {
        let size = size.max(1);
        let mut parts = Vec::with_capacity(self.len.div_ceil(size));
        let mut pending: Option<BytesMut> = None;
        for mut piece in self.finish() {
            while !piece.is_empty() {
                match pending.as_mut() {
                    Some(part) => {
                        let take = (size - part.len()).min(piece.len());
                        part.extend_from_slice(&piece.split_to(take));
                        if part.len() == size {
                            parts.extend(pending.take().map(BytesMut::freeze));
                        }
                    }
                    None if piece.len() >= size => parts.push(piece.split_to(size)),
                    None => {
                        let mut part = BytesMut::with_capacity(size);
                        part.extend_from_slice(&piece);
                        piece.clear();
                        pending = Some(part);
                    }
                }
            }
        }
        parts.extend(pending.map(BytesMut::freeze));
        parts
    }
}

/// Whether `inner` lies wholly inside `outer`'s memory.
fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr().addr(), inner.as_ptr().addr());
    !inner.is_empty() && i >= o && i + inner.len() <= o + outer.len()
}

impl io::Write for Rope {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let borrowed = (buf.len() >= BORROW_AT)
            .then(|| self.values.iter().find(|v| contains(v, buf)))
            .flatten()
            .map(|v| v.slice_ref(buf));
        match borrowed {
            Some(slice) => {
                if !self.current.is_empty() {
                    self.pieces
                        .push(Bytes::from(std::mem::take(&mut self.current)));
                }
                self.pieces.push(slice);
            }
            None => self.current.extend_from_slice(buf),
        }
        self.len += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// One write: the index of a registered value, or bytes to copy.
    type W<'a> = Result<usize, &'a [u8]>;

    /// A rope written as `writes`.
    fn rope(values: &[Bytes], writes: &[W]) -> Rope {
        let mut rope = Rope::new(b"head".to_vec(), values.iter().cloned());
        for w in writes {
            let r = match w {
                Ok(i) => rope.write_all(&values[*i]),
                Err(bytes) => rope.write_all(bytes),
            };
            assert!(r.is_ok());
        }
        rope
    }

    fn concat(values: &[Bytes], writes: &[W]) -> Vec<u8> {
        let mut out = b"head".to_vec();
        for w in writes {
            match w {
                Ok(i) => out.extend_from_slice(&values[*i]),
                Err(bytes) => out.extend_from_slice(bytes),
            }
        }
        out
    }

    fn value(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn parts_are_the_cut_of_the_concatenated_bytes() {
        let big = value(3 * BORROW_AT + 17, 1);
        let big2 = value(BORROW_AT, 2);
        let small = value(BORROW_AT - 1, 3);
        let values = [big.clone(), big2.clone(), small.clone()];
        // (writes, part size)
        let cases: &[(&[W], usize)] = &[
            (&[Ok(0)], BORROW_AT),
            (&[Ok(0)], 1000),
            (&[Ok(0)], 1),
            (&[Err(b"x"), Ok(0), Err(b"tail"), Ok(1)], BORROW_AT / 3),
            (&[Ok(0), Ok(1), Ok(2)], 4 * BORROW_AT),
            (&[Ok(2), Err(b"")], 7),
            (&[], 3),
        ];
        for (writes, size) in cases {
            let expected = concat(&values, writes);
            let r = rope(&values, writes);
            assert_eq!(r.len(), expected.len());
            let parts = r.into_parts(*size);
            let cut: Vec<&[u8]> = expected.chunks(*size).collect();
            assert_eq!(
                parts.iter().map(|p| &p[..]).collect::<Vec<_>>(),
                cut,
                "{writes:?} by {size}"
            );
            assert_eq!(rope(&values, writes).into_vec(), expected);
        }
    }

    #[test]
    fn large_values_are_borrowed_and_the_rest_copied() {
        let big = value(5 * BORROW_AT, 1);
        let other = value(2 * BORROW_AT, 9);
        let small = value(BORROW_AT - 1, 3);
        let values = [big.clone(), small.clone()];
        // A whole registered value, a slice inside one, a value never registered, a small one.
        let cases: &[(&[u8], usize)] = &[
            (&big, 0),
            (&big[BORROW_AT..3 * BORROW_AT], 0),
            (&big[..BORROW_AT - 1], BORROW_AT - 1),
            (&other, other.len()),
            (&small, small.len()),
        ];
        for (write, copied) in cases {
            let mut r = Rope::new(Vec::new(), values.iter().cloned());
            assert!(r.write_all(write).is_ok());
            assert_eq!(r.copied(), *copied, "write of {} bytes", write.len());
        }
        // A part inside a borrowed value shares its memory.
        let mut r = Rope::new(b"h".to_vec(), [big.clone()]);
        assert!(r.write_all(&big).is_ok());
        let parts = r.into_parts(BORROW_AT);
        assert!(contains(&big, &parts[1]));
        assert!(!contains(&big, &parts[0]));
    }
}
