//! The chaos workload: the tables, and clients writing to them continuously while faults
//! happen.
//!
//! Six tables cover every kind of replica identity: a primary key, a composite key, a unique
//! index (`REPLICA IDENTITY USING INDEX`), `REPLICA IDENTITY FULL` without any key, a
//! hash-partitioned table, and one the postgres pipeline masks and routes. Every row carries
//! `uid` (never changed), `ver` (incremented by every update) and `owner` (the client that
//! writes it, so clients never wait for each other's rows).
//!
//! Each client picks its transactions with a generator seeded from the round's workload seed
//! (and `setseed` makes the values the server draws repeat too): inserts, updates (some leave
//! a TOASTed column unchanged), deletes, key changes (across partitions too), transactions of
//! several hundred changes (several NATS messages), a value larger than NATS's `max_payload`,
//! transactions over several tables; client 0 also truncates now and then and changes a
//! table's schema inside a transaction that uses the change. A failed transaction is rolled
//! back; a lost connection is opened again: the source's own log is the truth the outputs are
//! checked against, not what a client believes it committed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt as _, SeedableRng as _};
use rand_pcg::Pcg64;
use tokio_postgres::Client;

/// The chaos tables (schema `public`).
pub const TABLES: [&str; 6] = [
    "t_pk",
    "t_composite",
    "t_unique",
    "t_full",
    "t_parted",
    "t_routed",
];

/// The columns every table has after its key.
const COMMON: &str = "uid bigint NOT NULL DEFAULT nextval('chaos_uid'), \
     ver int NOT NULL DEFAULT 0, owner int NOT NULL, note text, doc text";

/// The schema, for the source and (with `t_routed` renamed by the route) the postgres
/// pipeline's target.
pub fn schema_sql(for_target: bool) -> String {
    let routed = if for_target {
        "CREATE TABLE t_routed_copy (rid bigint PRIMARY KEY, uid bigint NOT NULL, \
         ver int NOT NULL, owner int NOT NULL, secret text, note text);"
            .to_owned()
    } else {
        "CREATE TABLE t_routed (id bigint PRIMARY KEY DEFAULT nextval('chaos_key'), \
         uid bigint NOT NULL DEFAULT nextval('chaos_uid'), ver int NOT NULL DEFAULT 0, \
         owner int NOT NULL, secret text, note text);"
            .to_owned()
    };
    format!(
        "CREATE SEQUENCE chaos_uid; CREATE SEQUENCE chaos_key;
         CREATE TABLE t_pk (id bigint PRIMARY KEY DEFAULT nextval('chaos_key'), {COMMON});
         CREATE TABLE t_composite (a int NOT NULL, b bigint NOT NULL DEFAULT nextval('chaos_key'),
             {COMMON}, PRIMARY KEY (a, b));
         CREATE TABLE t_unique (uk bigint NOT NULL DEFAULT nextval('chaos_key'), {COMMON});
         CREATE UNIQUE INDEX t_unique_uk ON t_unique (uk);
         ALTER TABLE t_unique REPLICA IDENTITY USING INDEX t_unique_uk;
         CREATE TABLE t_full ({COMMON});
         ALTER TABLE t_full REPLICA IDENTITY FULL;
         CREATE TABLE t_parted (id bigint NOT NULL DEFAULT nextval('chaos_key'), {COMMON},
             PRIMARY KEY (id)) PARTITION BY HASH (id);
         CREATE TABLE t_parted_0 PARTITION OF t_parted FOR VALUES WITH (MODULUS 2, REMAINDER 0);
         CREATE TABLE t_parted_1 PARTITION OF t_parted FOR VALUES WITH (MODULUS 2, REMAINDER 1);
         {routed}"
    )
}

/// The partitioned table a partition belongs to (`public.t_parted_0` -> `public.t_parted`).
pub fn root_of(table: &str) -> Option<String> {
    ["public.t_parted_0", "public.t_parted_1"]
        .contains(&table)
        .then(|| "public.t_parted".to_owned())
}

/// Whether `table` (`schema.name`) is a chaos table.
pub fn is_chaos_table(table: &str) -> bool {
    table
        .strip_prefix("public.")
        .is_some_and(|t| TABLES.contains(&t))
}

/// What a client's transaction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Insert {
        table: usize,
        rows: u32,
    },
    /// `ver` only: a TOASTed `doc` stays unchanged.
    Bump {
        table: usize,
        rows: u32,
    },
    Update {
        table: usize,
        rows: u32,
    },
    Delete {
        table: usize,
        rows: u32,
    },
    /// A new key (a new partition, maybe); on `t_full`, which has none, a plain update.
    ChangeKey {
        table: usize,
    },
    /// Hundreds of changes: several NATS messages.
    Big {
        table: usize,
    },
    /// A value larger than NATS's `max_payload` (1 MiB).
    Large {
        table: usize,
    },
    /// Inserts into two tables and an update of a third, in one transaction.
    Several {
        tables: [usize; 3],
    },
    Truncate {
        tables: [usize; 2],
        both: bool,
    },
    /// `ALTER TABLE ... ADD COLUMN` and an insert using it, or `DROP COLUMN`.
    Ddl {
        table: usize,
        add: bool,
    },
}

fn pick(rng: &mut Pcg64, client: u32) -> Op {
    let table = rng.random_range(0..TABLES.len());
    let rows = rng.random_range(1..=5);
    let roll = rng.random_range(0..1000u32);
    match roll {
        0..=299 => Op::Insert { table, rows },
        300..=479 => Op::Bump { table, rows },
        480..=579 => Op::Update { table, rows },
        580..=699 => Op::Delete { table, rows },
        700..=799 => Op::ChangeKey { table },
        800..=831 => Op::Big { table },
        832..=834 => Op::Large {
            // Never the routed table: its rows have no doc.
            table: rng.random_range(0..TABLES.len() - 1),
        },
        835..=979 => Op::Several {
            tables: [
                table,
                rng.random_range(0..TABLES.len()),
                rng.random_range(0..TABLES.len()),
            ],
        },
        980..=989 if client == 0 => Op::Truncate {
            tables: [table, rng.random_range(0..TABLES.len())],
            both: rng.random_bool(0.3),
        },
        990..=999 if client == 0 => Op::Ddl {
            table: rng.random_range(0..2),
            add: rng.random_bool(0.6),
        },
        _ => Op::Insert { table, rows },
    }
}

/// A `doc` for a new row: mostly none or short, one in five 8 KiB of hex (stored out of line,
/// so an update that does not touch it leaves it as an unchanged TOAST value).
const DOC: &str = "CASE WHEN random() < 0.2 THEN \
     (SELECT string_agg(md5(random()::text || i), '') FROM generate_series(1, 256) i) \
     WHEN random() < 0.5 THEN NULL ELSE 'd' || g END";

fn insert(table: usize, client: u32, rows: u32) -> String {
    let t = TABLES[table];
    match t {
        "t_routed" => format!(
            "INSERT INTO t_routed (owner, secret, note) \
             SELECT {client}, md5(random()::text), 'n' || g FROM generate_series(1, {rows}) g;"
        ),
        "t_composite" => format!(
            "INSERT INTO t_composite (a, owner, note, doc) \
             SELECT {client}, {client}, 'n' || g, {DOC} FROM generate_series(1, {rows}) g;"
        ),
        _ => format!(
            "INSERT INTO {t} (owner, note, doc) \
             SELECT {client}, 'n' || g, {DOC} FROM generate_series(1, {rows}) g;"
        ),
    }
}

/// Up to `rows` of the client's rows of `table`, by `uid` (a subset chosen by `slice`).
fn owned(table: usize, client: u32, rows: u32, slice: u32) -> String {
    format!(
        "(SELECT uid FROM {} WHERE owner = {client} AND uid % 7 = {slice} LIMIT {rows})",
        TABLES[table]
    )
}

fn sql(op: Op, client: u32, slice: u32) -> String {
    let body = match op {
        Op::Insert { table, rows } => insert(table, client, rows),
        Op::Bump { table, rows } => format!(
            "UPDATE {} SET ver = ver + 1 WHERE uid IN {};",
            TABLES[table],
            owned(table, client, rows, slice)
        ),
        Op::Update { table, rows } => {
            let set = if TABLES[table] == "t_routed" {
                "secret = md5(random()::text)"
            } else {
                "doc = CASE WHEN random() < 0.5 THEN doc || 'u' END"
            };
            format!(
                "UPDATE {} SET ver = ver + 1, note = md5(random()::text), {set} WHERE uid IN {};",
                TABLES[table],
                owned(table, client, rows, slice)
            )
        }
        Op::Delete { table, rows } => format!(
            "DELETE FROM {} WHERE uid IN {};",
            TABLES[table],
            owned(table, client, rows, slice)
        ),
        Op::ChangeKey { table } => {
            let set = match TABLES[table] {
                "t_composite" => "b = nextval('chaos_key')",
                "t_unique" => "uk = nextval('chaos_key')",
                "t_full" => "note = note || 'k'",
                _ => "id = nextval('chaos_key')",
            };
            format!(
                "UPDATE {} SET {set}, ver = ver + 1 WHERE uid IN {};",
                TABLES[table],
                owned(table, client, 1, slice)
            )
        }
        Op::Big { table } => format!(
            "{} UPDATE {} SET ver = ver + 1, note = 'big' WHERE uid IN {}; DELETE FROM {} WHERE uid IN {};",
            insert(table, client, 400),
            TABLES[table],
            owned(table, client, 150, slice),
            TABLES[table],
            owned(table, client, 100, (slice + 1) % 7),
        ),
        Op::Large { table } => {
            let t = TABLES[table];
            let key = if t == "t_composite" {
                format!("a, owner, note, doc) VALUES ({client}, ")
            } else {
                "owner, note, doc) VALUES (".to_owned()
            };
            format!(
                "INSERT INTO {t} ({key}{client}, 'large', repeat(md5(random()::text), 40000));"
            )
        }
        Op::Several { tables: [a, b, c] } => format!(
            "{} {} UPDATE {} SET ver = ver + 1 WHERE uid IN {};",
            insert(a, client, 2),
            insert(b, client, 1),
            TABLES[c],
            owned(c, client, 3, slice)
        ),
        Op::Truncate {
            tables: [a, b],
            both,
        } => {
            if both && a != b {
                format!("TRUNCATE {}, {};", TABLES[a], TABLES[b])
            } else {
                format!("TRUNCATE {};", TABLES[a])
            }
        }
        Op::Ddl { table, add: true } => format!(
            "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS extra int DEFAULT 7; {}
             UPDATE {t} SET extra = 8 WHERE uid IN (SELECT max(uid) FROM {t});",
            insert(table, client, 1),
            t = TABLES[table],
        ),
        Op::Ddl { table, add: false } => format!(
            "ALTER TABLE {} DROP COLUMN IF EXISTS extra; {}",
            TABLES[table],
            insert(table, client, 1)
        ),
    };
    format!("BEGIN; {body} COMMIT;")
}

/// What the clients did in a round (their view: a commit whose answer was lost counts as
/// failed, though the source may hold it).
#[derive(Debug, Default)]
pub struct Counts {
    pub committed: AtomicU64,
    pub failed: AtomicU64,
    pub reconnects: AtomicU64,
}

/// Runs `clients` clients against the source (`conn`: a libpq connection string) until
/// `stop` is set.
pub async fn run(
    conn: String,
    clients: u32,
    seed: u64,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (conn, stop, counts) = (conn.clone(), stop.clone(), counts.clone());
        tasks.spawn(run_client(conn, client, seed, stop, counts));
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn run_client(
    conn: String,
    client: u32,
    seed: u64,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) -> anyhow::Result<()> {
    let mut rng = Pcg64::seed_from_u64(seed.wrapping_add(u64::from(client)));
    let mut db: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = db.as_ref().filter(|c| !c.is_closed()) else {
            db = connect(&conn, rng.random_range(-1.0..1.0)).await;
            if db.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            counts.reconnects.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let op = pick(&mut rng, client);
        let text = sql(op, client, rng.random_range(0..7));
        match c.batch_execute(&text).await {
            Ok(()) => {
                counts.committed.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                // Deadlocks and lost connections; the source's log says what committed.
                counts.failed.fetch_add(1, Ordering::Relaxed);
                let _ = c.batch_execute("ROLLBACK").await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
    }
    Ok(())
}

async fn connect(conn: &str, seed: f64) -> Option<Client> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SELECT setseed({seed})"))
        .await
        .ok()?;
    Some(client)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn clients_do_every_kind_of_transaction_and_only_client_0_truncates_or_alters() {
        let kinds = |client| {
            let mut rng = Pcg64::seed_from_u64(3);
            (0..5000)
                .map(|_| {
                    let op = format!("{:?}", pick(&mut rng, client));
                    op.split([' ', '{']).next().unwrap().to_owned()
                })
                .collect::<BTreeSet<String>>()
        };
        let all: BTreeSet<String> = [
            "Insert",
            "Bump",
            "Update",
            "Delete",
            "ChangeKey",
            "Big",
            "Large",
            "Several",
            "Truncate",
            "Ddl",
        ]
        .map(String::from)
        .into();
        assert_eq!(kinds(0), all);
        let others: BTreeSet<String> = all
            .iter()
            .filter(|k| *k != "Truncate" && *k != "Ddl")
            .cloned()
            .collect();
        assert_eq!(kinds(1), others);
    }

    #[test]
    fn every_transaction_is_one_explicit_transaction() {
        let mut rng = Pcg64::seed_from_u64(9);
        for _ in 0..500 {
            let text = sql(pick(&mut rng, 0), 0, 3);
            assert!(
                text.starts_with("BEGIN; ") && text.ends_with(" COMMIT;"),
                "{text}"
            );
            assert_eq!(text.matches("BEGIN").count(), 1, "{text}");
        }
    }

    #[test]
    fn partitions_map_to_their_root() {
        assert_eq!(
            root_of("public.t_parted_1").as_deref(),
            Some("public.t_parted")
        );
        assert_eq!(root_of("public.t_pk"), None);
        assert!(is_chaos_table("public.t_full"));
        assert!(!is_chaos_table("public.t_parted_0"));
        assert!(!is_chaos_table("internal_pg_flo.ddl_log"));
    }
}
