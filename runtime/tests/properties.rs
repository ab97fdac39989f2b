//! Property tests of the parsers that read input we do not control: NATS message payloads
//! (anyone who can publish on the group's subject), pgoutput messages, COPY text, part
//! headers, and the rules and routing files. Properties: no input makes them panic; what we
//! encode decodes to the same value; COPY text escaped as PostgreSQL escapes it parses back
//! to the exact bytes. Bounded (a few hundred cases each) so they run in CI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use bytes::Bytes;
use pg_flo::fixtures::{batch, change, public_table};
use pg_flo::message::{patch_last, ChangeBatch, OldKind, Op, Position, SourceId, Value};
use pg_flo::source::{copy_text, pgoutput};
use pg_flo::worker::chunks::parse_index;
use pg_flo::worker::{routing::Routes, rules::Rules};
use proptest::collection::vec;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 384,
        ..ProptestConfig::default()
    }
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => Just(Value::UnchangedToast),
        6 => vec(any::<u8>(), 0..48).prop_map(|b| Value::Text(b.into())),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Insert),
        Just(Op::Update),
        Just(Op::Delete),
        Just(Op::Ddl)
    ]
}

/// A batch of changes on one two-column table, with every envelope field varied.
fn change_batch() -> impl Strategy<Value = ChangeBatch> {
    let one = (
        op(),
        any::<u64>(),
        proptest::option::of(vec(value(), 2)),
        proptest::option::of((any::<bool>(), vec(value(), 2))),
    )
        .prop_map(|(op, lsn, new, old)| {
            let old = old.map(|(full, v)| (if full { OldKind::Full } else { OldKind::Key }, v));
            let mut c = change(op, 0, new, old);
            c.lsn = lsn;
            c
        });
    (
        any::<u64>(),
        any::<(u32, u64, i64, bool, bool)>(),
        proptest::option::of(any::<(u64, u64)>()),
        proptest::option::of(any::<(u64, u64)>()),
        vec(one, 0..6),
    )
        .prop_map(
            |(commit, (xid, seq, time, last, copy), prev, source, changes)| {
                let rel = public_table("t", &[("id", 23), ("v", 25)]);
                let mut b = batch(commit, &[rel], changes);
                b.xid = xid;
                b.seq = seq;
                b.commit_time_us = time;
                b.emitted_at_us = time.wrapping_add(1);
                b.last = last;
                b.copy = copy;
                b.prev = prev.map(|(commit_lsn, seq)| Position { commit_lsn, seq });
                b.source = source.map(|(system_identifier, slot_origin)| SourceId {
                    system_identifier,
                    slot_origin,
                });
                b
            },
        )
}

/// `bytes` escaped as `COPY ... TO STDOUT` (text) escapes a value: backslash, the control
/// characters with a short escape, and the delimiter.
fn copy_escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x0b => out.extend_from_slice(b"\\v"),
            _ => out.push(b),
        }
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_message_decodes_to_what_was_encoded(b in change_batch()) {
        let payload = b.encode().unwrap();
        prop_assert_eq!(ChangeBatch::decode(&payload).unwrap(), b.clone());
        // The `last` flag patched in place is the only thing that changes.
        let mut patched = payload.clone();
        patch_last(&mut patched, !b.last).unwrap();
        let mut flipped = b;
        flipped.last = !flipped.last;
        prop_assert_eq!(ChangeBatch::decode(&patched).unwrap(), flipped);
    }

    #[test]
    fn no_payload_makes_the_message_decoder_panic(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = ChangeBatch::decode(&bytes);
        let mut b = bytes;
        let _ = patch_last(&mut b, true);
    }

    #[test]
    fn a_damaged_message_is_an_error_or_a_message_never_a_panic(
        b in change_batch(),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let payload = b.encode().unwrap();
        let _ = ChangeBatch::decode(&payload[..cut.index(payload.len() + 1)]);
        let mut damaged = payload.clone();
        if !damaged.is_empty() {
            let i = flip.0.index(damaged.len());
            damaged[i] ^= flip.1;
        }
        let _ = ChangeBatch::decode(&damaged);
    }

    #[test]
    fn no_pgoutput_message_makes_the_decoder_panic(
        tag in prop::sample::select(b"BCORIUDTYMw?".to_vec()),
        rest in vec(any::<u8>(), 0..512),
    ) {
        let mut data = vec![tag];
        data.extend_from_slice(&rest);
        let _ = pgoutput::decode(Bytes::from(data));
        let _ = pgoutput::decode(Bytes::from(rest));
    }

    #[test]
    fn copy_text_escaped_like_postgresql_parses_back_exactly(
        row in vec(proptest::option::of(vec(any::<u8>(), 0..32)), 1..6),
    ) {
        let line: Vec<u8> = row
            .iter()
            .map(|v| match v {
                None => b"\\N".to_vec(),
                Some(b) => copy_escape(b),
            })
            .collect::<Vec<_>>()
            .join(&b'\t');
        let parsed = copy_text::parse_row(&line, row.len()).unwrap();
        let want: Vec<Value> = row
            .into_iter()
            .map(|v| v.map_or(Value::Null, |b| Value::Text(b.into())))
            .collect();
        prop_assert_eq!(parsed, want);
    }

    #[test]
    fn no_copy_text_makes_the_parser_panic(line in vec(any::<u8>(), 0..256), columns in 0usize..8) {
        let _ = copy_text::parse_row(&line, columns);
    }

    #[test]
    fn part_headers_parse_back_or_are_refused(i in any::<u32>(), n in any::<u32>(), junk in ".{0,24}") {
        let parsed = parse_index(&format!("{i}/{n}"));
        if (1..=n).contains(&i) {
            prop_assert_eq!(parsed, Ok((i, n)));
        } else {
            prop_assert!(parsed.is_err());
        }
        let _ = parse_index(&junk);
    }

    #[test]
    fn no_rules_or_routing_file_makes_the_loaders_panic(yaml in "[ -~\n]{0,200}") {
        let _ = Rules::from_yaml("rules.yaml", &yaml);
        let _ = Routes::from_yaml("routing.yaml", &yaml);
    }

    #[test]
    fn rules_and_routing_files_of_the_right_shape_never_panic(
        table in "[a-z]{1,8}",
        key in prop::sample::select(vec!["type", "column", "parameters", "operations", "allow_empty_deletes", "name", "column_mappings", "bogus"]),
        value in prop::sample::select(vec!["transform", "filter", "exclude_column", "[INSERT]", "{}", "[]", "'('", "1", "~", "{type: mask, mask_char: ''}", "{operator: eq, value: 1}"]),
    ) {
        let rules = format!("tables:\n  {table}:\n    - {key}: {value}\n      column: c\n");
        let _ = Rules::from_yaml("rules.yaml", &rules);
        let routing = format!("{table}:\n  {key}: {value}\n");
        let _ = Routes::from_yaml("routing.yaml", &routing);
    }
}

proptest! {
    #![proptest_config(config())]

    /// A damaged payload's decode error never quotes a row value (errors are logged and
    /// dead-lettered; values are data).
    #[test]
    fn a_decode_error_never_quotes_a_value(
        b in change_batch(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut b = b;
        for (i, c) in b.changes.iter_mut().enumerate() {
            c.new = Some(vec![Value::Text(format!("SECRET{i}xyz").into_bytes().into()), Value::Null]);
        }
        let mut payload = b.encode().unwrap();
        for (at, x) in flips {
            let i = at.index(payload.len());
            payload[i] ^= x;
        }
        if let Err(e) = ChangeBatch::decode(&payload) {
            let shown = format!("{e} {e:?}");
            prop_assert!(!shown.contains("SECRET"), "{}", shown);
        }
    }
}
