//! Real PostgreSQL errors of every shape that carries a value, rendered as the worker renders
//! them (`redact::error_chain`): the value never shows, the names do. Against a throw-away
//! cluster of the e2e harness (the unit tests of `redact` work on error texts alone).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use e2e::{PgCluster, PgOptions};
use pg_flo::redact::error_chain;

#[derive(Debug, thiserror::Error)]
#[error("applying a change failed")]
struct Wrapper(#[source] tokio_postgres::Error);

/// Real server errors of every shape that carries a value, rendered through the chain of a
/// wrapping error as the worker renders them: the value never shows, the names do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_server_errors_never_show_values() {
    let cluster = PgCluster::start(PgOptions::default()).await.unwrap();
    cluster.create_database("redact").await.unwrap();
    let c = cluster.client("redact").await.unwrap();
    c.batch_execute(
        "CREATE TABLE parent (id int PRIMARY KEY);
         CREATE TABLE users (
           id int PRIMARY KEY,
           email text UNIQUE,
           age int CHECK (age > 0),
           name text NOT NULL DEFAULT 'n',
           parent int REFERENCES parent (id),
           code varchar(3),
           doc jsonb);
         CREATE TABLE slots (during int4range, EXCLUDE USING gist (during WITH &&));
         CREATE TYPE mood AS ENUM ('ok');
         CREATE TABLE moods (m mood);
         CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS
           $$BEGIN RAISE EXCEPTION 'rejected %', NEW.email; END$$;
         CREATE TABLE loud (email text);
         CREATE TRIGGER loud BEFORE INSERT ON loud FOR EACH ROW EXECUTE FUNCTION shout();
         INSERT INTO parent VALUES (1);
         INSERT INTO users (id, email) VALUES (1, 'leak-unique@example.com');
         INSERT INTO slots VALUES ('[777001,777005)');",
    )
    .await
    .unwrap();
    // (statement, value that must not show, names and words that must show)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "INSERT INTO users (id, email) VALUES (2, 'leak-unique@example.com')",
            "leak-unique",
            &[
                "23505",
                "users_email_key",
                "Key (email)=(<redacted>) already exists",
            ],
        ),
        (
            "INSERT INTO users (id, age) VALUES (31337, -4242)",
            "4242",
            &[
                "23514",
                "users_age_check",
                "Failing row contains (<redacted>)",
            ],
        ),
        (
            "INSERT INTO users (id, email, name) VALUES (3, 'leak-notnull', NULL)",
            "leak-notnull",
            &["23502", "column name", "table users"],
        ),
        (
            "INSERT INTO users (id, parent) VALUES (4, 987654)",
            "987654",
            &[
                "23503",
                "users_parent_fkey",
                "is not present in table \"parent\"",
            ],
        ),
        (
            "DELETE FROM parent WHERE id = 1; INSERT INTO parent VALUES (55501); \
             INSERT INTO users (id, parent) VALUES (5, 55501); DELETE FROM parent",
            "55501",
            &["23503", "is still referenced from table \"users\""],
        ),
        (
            "INSERT INTO slots VALUES ('[777002,777003)')",
            "77700",
            &["23P01", "slots_during_excl", "conflicts with existing key"],
        ),
        (
            "INSERT INTO users (id, age) VALUES (6, 'leak-syntax'::text::int)",
            "leak-syntax",
            &["22P02", "invalid input syntax for type integer"],
        ),
        (
            "INSERT INTO users (id, doc) VALUES (8, 'leakjson'::text::jsonb)",
            "leakjson",
            &["22P02", "DETAIL: <redacted>"],
        ),
        (
            "INSERT INTO moods VALUES ('leak-enum'::text::mood)",
            "leak-enum",
            &["22P02", "invalid input value for enum mood"],
        ),
        (
            "SELECT '99999999999'::text::int",
            "99999999999",
            &["22003", "out of range"],
        ),
        (
            "INSERT INTO loud VALUES ('leak-raise@example.com')",
            "leak-raise",
            &["P0001", "raised by a trigger or function"],
        ),
    ];
    for (sql, value, names) in cases {
        let err = c.batch_execute(sql).await.unwrap_err();
        // The raw rendering would leak: the test reads the server's values.
        let raw = format!("{:?}", err);
        assert!(
            raw.contains(value),
            "{sql}: the server did not quote {value:?}: {raw}"
        );
        let shown = error_chain(&Wrapper(err));
        assert!(!shown.contains(value), "{sql}: {value:?} leaked: {shown}");
        assert!(
            shown.starts_with("applying a change failed: db error: ERROR "),
            "{shown}"
        );
        for n in *names {
            assert!(shown.contains(n), "{sql}: {n:?} missing: {shown}");
        }
    }
}
