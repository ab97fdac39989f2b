//! `pg_flo replicator --cleanup`: removes what a group created in the source database (slot,
//! publication, DDL capture objects) and in NATS (its streams), leaving another group's
//! objects alone (the publication's owner mark, `pg_flo_source::names`).

use async_nats::jetstream;
use tokio_postgres::Client;

use crate::config::ReplicatorConfig;
use crate::nats as nats_setup;
use crate::source::catalog::{self, CatalogError};
use crate::source::ddl;
use crate::source::publication;
use crate::source::ReplicatorError;

/// `--cleanup`: removes what the group created in the source (slot, publication, DDL capture
/// objects) and in NATS (its streams). Objects already gone count as removed. A slot still in
/// use by a running replicator is refused: stop it first. When the publication's owner mark
/// names another group (`a-b` for group `a_b`: the same slot and publication names), the
/// source objects are that group's and are left alone; only this group's streams go.
pub(super) async fn cleanup(
    cfg: &ReplicatorConfig,
    client: &Client,
    slot: &str,
    publication: &str,
) -> Result<(), ReplicatorError> {
    let q = |step: &'static str| move |source| CatalogError::Query { step, source };
    if let Some(pg_flo_source::names::Ownership::Other(owner)) =
        publication::publication_ownership(client, &cfg.group, publication).await?
    {
        tracing::warn!(
            group = cfg.group,
            owner,
            slot,
            publication,
            "the replication slot, publication and DDL capture objects belong to group {owner:?} \
             (the same names as this group's): left in place; removing only this group's streams"
        );
        return delete_streams(cfg).await;
    }
    client
        .batch_execute(&ddl::cleanup_sql(&cfg.group))
        .await
        .map_err(q("removing the DDL capture objects"))?;
    if let Some(info) = catalog::find_slot(client, slot).await? {
        if info.active {
            return Err(CatalogError::Slot {
                slot: slot.to_owned(),
                problem: "is in use by a running replicator: stop it before --cleanup".to_owned(),
            }
            .into());
        }
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
            .map_err(q("dropping the replication slot"))?;
        tracing::info!(slot, "dropped replication slot");
    }
    client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            pg_flo_source::sql::quote_ident(publication)
        ))
        .await
        .map_err(q("dropping the publication"))?;
    tracing::info!(publication, "dropped publication (if it existed)");
    delete_streams(cfg).await
}

/// The NATS part of `--cleanup`: deletes the group's streams.
async fn delete_streams(cfg: &ReplicatorConfig) -> Result<(), ReplicatorError> {
    let nats = nats_setup::connect(&cfg.nats, "pg_flo_cleanup").await?;
    let js = jetstream::new(nats);
    for stream in nats_setup::group_streams(&cfg.group) {
        match js.delete_stream(&stream).await {
            Ok(_) => tracing::info!(stream, "deleted stream"),
            Err(e)
                if matches!(e.kind(), jetstream::context::DeleteStreamErrorKind::JetStream(ref err)
                    if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) => {}
            Err(e) => {
                return Err(ReplicatorError::Publish(format!(
                    "deleting stream {stream}: {e}"
                )))
            }
        }
    }
    tracing::info!(group = cfg.group, "cleanup done");
    Ok(())
}
