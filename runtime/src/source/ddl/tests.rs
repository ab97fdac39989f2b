use super::*;
use crate::message::{ddl_replay, DdlReplay};

fn users() -> TableName {
    TableName {
        schema: "public".into(),
        table: "users".into(),
    }
}

fn at(tag: &str, stmt: Option<u32>) -> StatementRef<'_> {
    StatementRef {
        tag,
        stmt,
        nested: false,
    }
}

#[test]
fn isolates_the_statement_the_source_counted() {
    let q = "ALTER TABLE users ADD COLUMN age int; INSERT INTO users VALUES (1, 2); \
             ALTER TABLE other ADD x int; ALTER TABLE users ADD COLUMN b int";
    let t = users();
    let ok = |stmt, object: &str| {
        isolate(
            q,
            at("ALTER TABLE", Some(stmt)),
            &t,
            object,
            "ddl_command_end",
        )
    };
    assert_eq!(
        ok(1, "public.users"),
        Ok("ALTER TABLE users ADD COLUMN age int".to_owned())
    );
    assert_eq!(
        ok(3, "public.users"),
        Ok("ALTER TABLE users ADD COLUMN b int".to_owned())
    );
    // The 2nd ALTER TABLE is about another table: not this command's statement.
    assert!(matches!(ok(2, "public.users"), Err(Refusal::Unmatched(_))));
    assert!(matches!(ok(4, "public.users"), Err(Refusal::Unmatched(_))));
    // Two tracked tables in one query: each gets its own statement.
    let two = "ALTER TABLE a ADD COLUMN x int; ALTER TABLE b ADD COLUMN y int;";
    let b = TableName {
        schema: "public".into(),
        table: "b".into(),
    };
    assert_eq!(
        isolate(
            two,
            at("ALTER TABLE", Some(2)),
            &b,
            "public.b",
            "ddl_command_end"
        ),
        Ok("ALTER TABLE b ADD COLUMN y int".to_owned())
    );
    // A single statement needs no count.
    assert_eq!(
        isolate(
            "CREATE INDEX ON users (age)",
            at("CREATE INDEX", None),
            &t,
            "public.users_age_idx",
            "ddl_command_end"
        ),
        Ok("CREATE INDEX ON users (age)".to_owned())
    );
    // Quoted names are matched exactly, unquoted ones folded.
    let mixed = TableName {
        schema: "public".into(),
        table: "Users".into(),
    };
    assert!(isolate(
        "ALTER TABLE \"Users\" ADD a int",
        at("ALTER TABLE", Some(1)),
        &mixed,
        "public.\"Users\"",
        "ddl_command_end"
    )
    .is_ok());
    assert!(isolate(
        "ALTER TABLE users ADD a int",
        at("ALTER TABLE", Some(1)),
        &mixed,
        "public.\"Users\"",
        "ddl_command_end"
    )
    .is_err());
    assert!(isolate(
        "ALTER TABLE USERS ADD a int",
        at("ALTER TABLE", Some(1)),
        &t,
        "public.users",
        "ddl_command_end"
    )
    .is_ok());
    // Substrings are not names: `t` is not in `ALTER TABLE victim`.
    let short = TableName {
        schema: "public".into(),
        table: "t".into(),
    };
    assert!(isolate(
        "ALTER TABLE victim ADD a int",
        at("ALTER TABLE", Some(1)),
        &short,
        "public.t",
        "ddl_command_end"
    )
    .is_err());
}

#[test]
fn never_replays_do_blocks_calls_or_dml() {
    let t = users();
    for (query, tag, stmt) in [
        (
            "DO $$ BEGIN ALTER TABLE users ADD c int; END $$",
            "ALTER TABLE",
            None,
        ),
        ("CALL add_column('users')", "ALTER TABLE", None),
        ("SELECT migrate('users')", "ALTER TABLE", None),
        ("INSERT INTO users VALUES (1)", "ALTER TABLE", Some(1)),
        (
            "UPDATE users SET a = 1; DELETE FROM users",
            "ALTER TABLE",
            Some(1),
        ),
        ("", "ALTER TABLE", Some(1)),
    ] {
        let got = isolate(query, at(tag, stmt), &t, "public.users", "ddl_command_end");
        assert!(
            matches!(got, Err(Refusal::Unmatched(_))),
            "{query}: {got:?}"
        );
    }
    // Nested commands are refused whatever the query looks like.
    let nested = StatementRef {
        tag: "ALTER TABLE",
        stmt: None,
        nested: true,
    };
    assert_eq!(
        isolate(
            "ALTER TABLE users ADD c int",
            nested,
            &t,
            "public.users",
            "ddl_command_end"
        ),
        Err(Refusal::Nested)
    );
    // A query that rolls back part of itself cannot be counted.
    let q = "SAVEPOINT s; ALTER TABLE users ADD a int; ROLLBACK TO s; ALTER TABLE users ADD b int";
    assert!(isolate(
        q,
        at("ALTER TABLE", Some(1)),
        &t,
        "public.users",
        "ddl_command_end"
    )
    .is_err());
    // Without a count, a multi-statement query is refused.
    assert!(isolate(
        "ALTER TABLE users ADD a int; SELECT 1",
        at("ALTER TABLE", None),
        &t,
        "public.users",
        "ddl_command_end"
    )
    .is_err());
}

#[test]
fn a_dropped_index_is_replayed_alone() {
    let t = users();
    assert_eq!(
        isolate(
            "DROP INDEX users_a_idx, other_idx CASCADE",
            at("DROP INDEX", Some(1)),
            &t,
            "public.users_a_idx",
            "sql_drop"
        ),
        Ok("DROP INDEX IF EXISTS public.users_a_idx CASCADE".to_owned())
    );
    assert_eq!(
        isolate(
            "DROP INDEX CONCURRENTLY users_a_idx",
            at("DROP INDEX", Some(1)),
            &t,
            "public.users_a_idx",
            "sql_drop"
        ),
        Ok("DROP INDEX CONCURRENTLY IF EXISTS public.users_a_idx".to_owned())
    );
}

fn sign(key: &[u8], json: &str) -> Vec<u8> {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), json.as_bytes());
    let mut out: Vec<u8> = tag
        .as_ref()
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect();
    out.extend_from_slice(json.as_bytes());
    out
}

const KEY: [u8; 64] = [7; 64];

fn json(query: &str, xid: &str) -> String {
    serde_json::json!({
        "v": 2, "event_type": "ddl_command_end", "object_type": "table",
        "object_identity": "public.users", "command_tag": "ALTER TABLE", "tag": "ALTER TABLE",
        "table": "public.users", "query": query, "stmt": 1, "nested": false, "xid": xid,
    })
    .to_string()
}

#[test]
fn only_signed_messages_of_the_transaction_are_accepted() {
    let capture = Capture::new("g", &KEY, vec![users()]);
    assert_eq!(capture.prefix(), "pg_flo_ddl:g");
    let good = json("ALTER TABLE users ADD COLUMN x int; SELECT 1", "4294967396");
    // xid 100 in epoch 1.
    let a = capture.accept(&sign(&KEY, &good), 100, 42).unwrap();
    assert_eq!(
        (a.table.schema.as_str(), a.table.table.as_str()),
        ("public", "users")
    );
    assert_eq!(a.change.op, Op::Ddl);
    assert_eq!(
        ddl_replay(&a.relation, &a.change),
        DdlReplay::Run("ALTER TABLE users ADD COLUMN x int".to_owned())
    );
    assert!(a.refused.is_none());

    let forged = |r: Result<Accepted, Rejected>| matches!(r, Err(Rejected::Forged(_)));
    // The old, unsigned form, and anything without a MAC.
    assert!(forged(capture.accept(good.as_bytes(), 100, 42)));
    assert!(forged(capture.accept(b"short", 100, 42)));
    // Signed with another key, or altered after signing.
    assert!(forged(capture.accept(&sign(&[8; 64], &good), 100, 42)));
    let mut altered = sign(&KEY, &good);
    let n = altered.len();
    altered[n - 3] = b'9';
    assert!(forged(capture.accept(&altered, 100, 42)));
    // A genuine message emitted again in another transaction.
    assert!(forged(capture.accept(&sign(&KEY, &good), 101, 42)));
    // Genuine but about a table of no concern, or not JSON.
    let other = good.replace("\"public.users\"", "\"public.other\"");
    assert!(matches!(
        capture.accept(&sign(&KEY, &other), 100, 42),
        Err(Rejected::Malformed(_))
    ));
    assert!(matches!(
        capture.accept(&sign(&KEY, "nope"), 100, 42),
        Err(Rejected::Malformed(_))
    ));
}

#[test]
fn a_refused_command_travels_with_its_reason() {
    let capture = Capture::new("g", &KEY, vec![users()]);
    let msg = json("DO $$ BEGIN ALTER TABLE users ADD c int; END $$", "7")
        .replace("\"nested\":false", "\"nested\":true");
    let a = capture.accept(&sign(&KEY, &msg), 7, 42).unwrap();
    assert_eq!(a.refused, Some(Refusal::Nested));
    let DdlReplay::Refused(reason) = ddl_replay(&a.relation, &a.change) else {
        panic!("not refused");
    };
    assert!(
        reason.contains("inside a function, DO block or procedure"),
        "{reason}"
    );
    // The DO block is nowhere in the change.
    assert!(!format!("{:?}", a.change).contains("BEGIN"));
    assert_eq!(a.relation.columns.len(), DDL_COLUMNS.len() + 1);
}

#[test]
fn one_statement_replays_once_and_two_runs_of_a_query_twice() {
    let capture = Capture::new("g", &KEY, vec![users()]);
    let at = |json: &str, when: &str| json.replacen('}', &format!(",\"at\":\"{when}\"}}"), 1);
    let msg = json(
        "ALTER TABLE users ALTER COLUMN a TYPE text USING a || 'x'",
        "7",
    );
    let key = |m: &str| capture.accept(&sign(&KEY, m), 7, 1).unwrap().key;
    // Two commands of one statement (same receipt time): one replay.
    assert_eq!(key(&at(&msg, "10:00:00.1")), key(&at(&msg, "10:00:00.1")));
    // The same text sent twice in one transaction: two replays.
    assert_ne!(key(&at(&msg, "10:00:00.1")), key(&at(&msg, "10:00:00.2")));
}
