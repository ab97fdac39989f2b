//! `BENCH_SCENARIO=large_values`: eight 64 MiB values (one transaction each, then four in one
//! transaction) through NATS at its default 1 MiB `max_payload`, with the replicator's peak RSS
//! against its bound (64 MiB + twice the largest value); written to `bench/large-values.json`.

use std::time::{Duration, Instant};

use e2e::{count, wait_for_eq, Pipeline};

/// Eight 64 MiB values, one per transaction, then four in one transaction: time to the target
/// and the replicator's and worker's peak RSS.
pub async fn run(p: &Pipeline) -> anyhow::Result<()> {
    const MIB: i64 = 64;
    p.both("CREATE TABLE public.large_values (id int PRIMARY KEY, v text)")
        .await?;
    let r = p.start_replicator("benchbig", "large_values").await?;
    let w = p.start_pg_worker("benchbig").await?;
    let src = p.source().await?;
    let target = p.target().await?;
    let value = |id: i64| format!("repeat(md5('{id}'), {MIB} * 1024 * 1024 / 32)");
    let start = Instant::now();
    for id in 1..=8 {
        src.batch_execute(&format!(
            "INSERT INTO public.large_values VALUES ({id}, {})",
            value(id)
        ))
        .await?;
    }
    let rows: Vec<String> = (9..=12)
        .map(|id| format!("({id}, {})", value(id)))
        .collect();
    src.batch_execute(&format!(
        "INSERT INTO public.large_values VALUES {}",
        rows.join(", ")
    ))
    .await?;
    wait_for_eq(
        "every large value in the target",
        Duration::from_secs(600),
        12,
        || count(&target, "public.large_values"),
    )
    .await?;
    let seconds = start.elapsed().as_secs_f64();
    p.wait_equal("public.large_values", "id").await?;
    let mib = |kib: Option<u64>| kib.map(|k| k / 1024);
    let json = serde_json::json!({
        "scenario": "large_values",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "values": 12,
        "value_mib": MIB,
        "nats_max_payload": "1 MiB (default)",
        "commit_to_target_seconds": seconds,
        "mib_per_second": (12 * MIB) as f64 / seconds,
        "replicator_peak_rss_mib": mib(r.peak_rss_kib()),
        "replicator_rss_bound_mib": 64 + 2 * MIB,
        "worker_peak_rss_mib": mib(w.peak_rss_kib()),
    });
    std::fs::create_dir_all("bench")?;
    std::fs::write(
        "bench/large-values.json",
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
