//! Row values never leave the worker: a change the target rejects with a unique violation
//! (whose DETAIL quotes the value) is reported by constraint name only, in the log of a worker
//! that stops and in the log and the `Pg-Flo-Error` header of one that dead-letters it. Real
//! NATS, the real worker binary, a real PostgreSQL target.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use std::time::Duration;

use e2e::{wait_for, NatsServer, Process};
use pg_flo::fixtures::{insert_tx, public_table, text};
use pg_flo::message::ChangeBatch;
use pg_flo_source::oid::{INT4, TEXT};
use support::{wait_rows, Setup};

/// Inserts `(id, email)` into `public.users`, after the transaction at `prev`.
fn insert(lsn: u64, prev: Option<u64>, id: &str, email: &str) -> ChangeBatch {
    let rel = public_table("users", &[("id", INT4), ("email", TEXT)]);
    insert_tx(lsn, prev, rel, &[id, email])
}

const GROUP: &str = "redaction";
/// The value the target rejects; it must appear nowhere but in the data.
const EMAIL: &str = "leaked-secret@example.com";

fn assert_redacted(what: &str, text: &str) {
    assert!(!text.contains(EMAIL), "{what} holds the row value:\n{text}");
    assert!(!text.contains("leaked-secret"), "{what}:\n{text}");
    assert!(text.contains("users_email_key"), "{what}:\n{text}");
    assert!(text.contains("23505"), "{what}:\n{text}");
    assert!(
        text.contains("Key (email)=(<redacted>) already exists"),
        "{what}:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_violation_is_reported_without_the_value() {
    let s = Setup::start(
        GROUP,
        &format!(
            "CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE);
             INSERT INTO users VALUES (1, '{EMAIL}')"
        ),
    )
    .await;
    let target = s.target().await;
    // Row 2 takes the e-mail address row 1 holds in the target; row 3 is fine.
    for b in [
        insert(100, None, "2", EMAIL),
        insert(200, Some(100), "3", "ok@example.com"),
    ] {
        s.publish(&b).await;
    }

    // Without --dead-letter the worker stops and says why.
    let mut w = s.worker("worker", "postgres", &[]);
    let status = w.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(!status.success());
    let log = w.stderr();
    assert!(log.contains("rejected a change permanently"), "{log}");
    assert_redacted("the log of the stopped worker", &log);

    // With --dead-letter the message is set aside with the error in a header.
    let mut w = s.worker("worker", "postgres", &["--dead-letter"]);
    wait_rows(
        &target,
        "users",
        "row 3",
        format!("(1,{EMAIL})\n(3,ok@example.com)"),
    )
    .await;
    let dlq = wait_for("the dead letter", Duration::from_secs(60), || {
        s.group.last_dead_letter()
    })
    .await
    .unwrap();
    let header = dlq.headers.get("Pg-Flo-Error").unwrap().to_string();
    assert_redacted("the Pg-Flo-Error header", &header);
    // The row itself travels unchanged in the payload.
    let batch = ChangeBatch::decode(&dlq.payload).unwrap();
    assert_eq!(batch.changes[0].new.as_ref().unwrap()[1], text(EMAIL));
    w.terminate().unwrap();
    w.wait_exit(Duration::from_secs(30)).await.unwrap();
    let log = w.stderr();
    assert!(
        log.contains("moving a rejected message to the dead-letter subject"),
        "{log}"
    );
    assert_redacted("the log of the dead-lettering worker", &log);
}

/// Credentials in `--nats-url` authenticate the worker and are printed nowhere, not even at
/// debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_url_credentials_authenticate_and_stay_secret() {
    let nats = NatsServer::start_with_password("pgflo", "secretpw")
        .await
        .unwrap();
    let url = nats.url().replace("nats://", "nats://pgflo:secretpw@");
    // Without them the server refuses the client.
    assert!(async_nats::connect(nats.url()).await.is_err());
    let mut w = Process::spawn_pg_flo(
        "worker",
        ["worker", "stdout", "--group", GROUP, "--nats-url", &url],
        [("PG_FLO_LOG_LEVEL", "debug")],
    )
    .unwrap();
    w.wait_for_output("worker consuming", Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.output_dump()));
    let js = async_nats::jetstream::new(
        async_nats::ConnectOptions::with_user_and_password("pgflo".into(), "secretpw".into())
            .connect(nats.url())
            .await
            .unwrap(),
    );
    js.get_stream(pg_flo::config::stream_name(GROUP))
        .await
        .unwrap();
    w.terminate().unwrap();
    w.wait_exit(Duration::from_secs(30)).await.unwrap();
    let out = format!("{}{}", w.stdout(), w.stderr());
    assert!(!out.contains("secretpw"), "the password leaked:\n{out}");
}
