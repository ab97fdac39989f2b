//! End-to-end: two groups whose names map to the same replication slot and publication
//! (`a-b` and `a_b`, pg_flo's names replace `-` by `_`). The publication's comment names the
//! group that owns it: the other group is refused, and its `--cleanup` leaves the owner's slot
//! and publication alone, so the owner resumes without a gap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use e2e::{dump_table, wait_for_eq, PgOptions, Pipeline, Process, ARRIVAL_TIMEOUT};
use tokio_postgres::Client;

const SLOT: &str = "pg_flo_a_b_publication";

async fn stop(mut p: Process) {
    p.terminate().unwrap();
    assert!(
        p.wait_exit(Duration::from_secs(60)).await.is_some(),
        "{} did not stop",
        p.name()
    );
}

/// The slot's confirmed flush LSN and whether the publication exists with its owner mark.
async fn source_objects(c: &Client) -> (Option<String>, Option<Option<String>>) {
    let slot = c
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .await
        .unwrap()
        .map(|r| r.get(0));
    let publication = c
        .query_opt(
            "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = $1",
            &[&SLOT],
        )
        .await
        .unwrap()
        .map(|r| r.get(0));
    (slot, publication)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_maps_to_another_groups_slot_is_refused_and_cleans_up_only_its_own() {
    let p = Pipeline::start(PgOptions::default()).await.unwrap();
    p.both("CREATE TABLE items (id int PRIMARY KEY, v text)")
        .await
        .unwrap();
    let src = p.source().await.unwrap();
    let dst = p.target().await.unwrap();

    // Group a-b replicates, then stops; a row is written while it is stopped.
    let r = p.start_replicator("a-b", "items").await.unwrap();
    let _w = p.start_pg_worker("a-b").await.unwrap();
    src.batch_execute("INSERT INTO items VALUES (1, 'one')")
        .await
        .unwrap();
    wait_for_eq("row 1", ARRIVAL_TIMEOUT, "(1,one)".to_owned(), || {
        dump_table(&dst, "public.items", "id")
    })
    .await
    .unwrap();
    stop(r).await;
    src.batch_execute("INSERT INTO items VALUES (2, 'two')")
        .await
        .unwrap();
    let before = source_objects(&src).await;
    assert_eq!(before.1, Some(Some("pg_flo group a-b".to_owned())));
    assert!(before.0.is_some());

    // Group a_b would read a-b's slot: refused, naming both groups and the fix.
    let mut other = Pipeline::spawn("replicator-a_b", &p.replicator_args("a_b", "items")).unwrap();
    let status = other
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("a_b did not exit\n{}", other.output_dump()));
    assert!(!status.success(), "{}", other.output_dump());
    let err = other.stderr();
    assert!(
        err.contains(
            "group \"a_b\" and group \"a-b\" map to the same replication slot and publication \
             \"pg_flo_a_b_publication\", which belong to group \"a-b\""
        ),
        "{err}"
    );
    assert!(err.contains("choose a group name"), "{err}");
    assert_eq!(source_objects(&src).await, before, "a_b touched a-b's slot");

    // Its cleanup removes only its own streams.
    let mut args = p.replicator_args("a_b", "items");
    args.push("--cleanup".into());
    let mut cleanup = Pipeline::spawn("cleanup-a_b", &args).unwrap();
    let status = cleanup.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(status.success(), "{}", cleanup.output_dump());
    assert!(
        cleanup.stderr().contains("belong to group \"a-b\""),
        "{}",
        cleanup.output_dump()
    );
    assert_eq!(
        source_objects(&src).await,
        before,
        "a_b's cleanup touched a-b's objects"
    );

    // a-b resumes where it stopped: the row written meanwhile arrives.
    let _r = p.start_replicator("a-b", "items").await.unwrap();
    wait_for_eq(
        "row 2 after the restart",
        ARRIVAL_TIMEOUT,
        "(1,one)\n(2,two)".to_owned(),
        || dump_table(&dst, "public.items", "id"),
    )
    .await
    .unwrap();
}
