//! Parser for PostgreSQL's `COPY ... TO STDOUT` text format.
//!
//! The text format carries each value's text output (the same output functions pgoutput
//! uses), escaped: `\N` is NULL; `\\`, `\t`, `\n`, `\r`, `\b`, `\f`, `\v`, `\ddd` (octal) and
//! `\xhh` (hex) are unescaped; columns are separated by tabs and rows end with a newline.
//! Unescaping gives back the exact bytes the output function produced, so copied values equal
//! streamed ones byte for byte.

use crate::message::Value;

/// Malformed COPY text data.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CopyTextError {
    #[error("copy row has {got} columns, expected {expected}")]
    ColumnCount { got: usize, expected: usize },
}

/// Parses one row (without its trailing newline) into `columns` values.
pub fn parse_row(line: &[u8], columns: usize) -> Result<Vec<Value>, CopyTextError> {
    let mut values = Vec::with_capacity(columns);
    for field in line.split(|&b| b == b'\t') {
        values.push(parse_field(field));
    }
    if values.len() != columns {
        return Err(CopyTextError::ColumnCount {
            got: values.len(),
            expected: columns,
        });
    }
    Ok(values)
}

fn parse_field(field: &[u8]) -> Value {
    if field == b"\\N" {
        return Value::Null;
    }
    if !field.contains(&b'\\') {
        return Value::Text(field.to_vec().into());
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let e = field[i + 1];
        i += 2;
        match e {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut n = 1;
                while n < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    v = v * 8 + u32::from(field[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if i < field.len() && field[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    v = v * 16 + char::from(field[i]).to_digit(16).unwrap_or(0);
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            other => out.push(other),
        }
    }
    Value::Text(out.into())
}

/// Splits a stream of COPY data chunks into complete rows.
#[derive(Default)]
pub struct RowSplitter {
    partial: Vec<u8>,
}

impl RowSplitter {
    /// Feeds a chunk; calls `row` for every complete row (without its newline).
    pub fn feed<E>(
        &mut self,
        chunk: &[u8],
        mut row: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                row(&rest[..nl])?;
            } else {
                self.partial.extend_from_slice(&rest[..nl]);
                let line = std::mem::take(&mut self.partial);
                row(&line)?;
            }
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Bytes of an unfinished row (non-empty at the end means truncated data).
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &[u8]) -> Value {
        Value::Text(s.to_vec().into())
    }

    #[test]
    fn parses_nulls_empty_and_escapes() {
        let row = parse_row(
            b"1\t\\N\t\ta\\tb\\nc\\\\d\t\\\\N\t\\101\\x41\\r\\b\\f\\v",
            6,
        )
        .unwrap();
        assert_eq!(
            row,
            vec![
                t(b"1"),
                Value::Null,
                t(b""),
                t(b"a\tb\nc\\d"),
                t(b"\\N"),
                t(b"AA\r\x08\x0c\x0b"),
            ]
        );
        assert_eq!(
            parse_row(b"1\t2", 3),
            Err(CopyTextError::ColumnCount {
                got: 2,
                expected: 3
            })
        );
        // An array literal with quotes and backslashes as COPY escapes it.
        assert_eq!(
            parse_row(b"{\"a\\\\\\\\b\",\"c\\\\\"d\"}", 1).unwrap(),
            vec![t(b"{\"a\\\\b\",\"c\\\"d\"}")]
        );
    }

    #[test]
    fn splits_rows_across_chunks() {
        let mut s = RowSplitter::default();
        let mut rows: Vec<Vec<u8>> = Vec::new();
        for chunk in [&b"1\ta\n2\t"[..], b"b", b"\n3\tc\n", b"4\td"] {
            s.feed(chunk, |r| {
                rows.push(r.to_vec());
                Ok::<_, ()>(())
            })
            .unwrap();
        }
        assert_eq!(
            rows,
            vec![b"1\ta".to_vec(), b"2\tb".to_vec(), b"3\tc".to_vec()]
        );
        assert_eq!(s.pending(), 3);
    }
}
