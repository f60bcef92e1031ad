//! Fleet deploy through Redis: `beehive deploy` stores a checked component under `beehive:`
//! keys (keeping the previous version for `beehive rollback`) and notifies every running
//! host; each host running the group fetches, compiles and swaps it exactly as for a file
//! reload. A host started later loads the deployed version.
//!
//! Keys (in the group's pool): `beehive:component:<group>` is a hash with `current` and
//! `previous` digests; `beehive:component-bytes:<digest>` holds the bytes. Notifications go
//! to the channel `beehive:deploy` with the group name as message.

use std::sync::Arc;
use std::time::Duration;

use crate::redis::pool::Connection;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::error::{Error, PoolContext, Result};
use crate::keys;
use crate::ops::reload::{ReloadOutcome, Reloader};
use crate::redis::records;
use crate::runtime::WasmEngine;

/// How components loaded from a deployment name their origin: `deployed <group>@<digest>`.
pub const DEPLOYED_ORIGIN: &str = "deployed ";

/// The origin of a deployed component, for logs.
pub fn deployed_origin(group: &str, digest: &str) -> String {
    format!(
        "{DEPLOYED_ORIGIN}{group}@{}",
        &digest[..12.min(digest.len())]
    )
}

/// How often running hosts also poll for a deployment, in case a notification was missed.
pub const POLL_EVERY: Duration = Duration::from_secs(30);

async fn group_connection(
    engine: &Engine,
    group: &str,
) -> Result<(Connection, String, crate::registry::GroupDef)> {
    let def = engine
        .registry()
        .group(group)
        .ok_or_else(|| Error::UnregisteredGroup(group.to_string()))?;
    let pool = def.pool.clone();
    Ok((engine.connection(&pool).await?, pool, def.clone()))
}

/// Stores `bytes` (already checked by the caller) as `group`'s current version, keeps the
/// old current as previous, and notifies running hosts. Returns the digest.
pub async fn deploy(engine: &Engine, group: &str, digest: &str, bytes: &[u8]) -> Result<()> {
    let (mut con, pool, group) = group_connection(engine, group).await?;
    let current = records::deployed_digest(&mut con, &group)
        .await
        .pool(&pool)?;
    records::store_deployment(&mut con, &group, digest, bytes, current.as_deref())
        .await
        .pool(&pool)
}

/// Makes the previous deployed version current again (and the current one previous), or,
/// after a first deploy, withdraws the deployment so hosts return to their configured
/// files; notifies running hosts. Returns the digest now deployed (`None`: withdrawn).
pub async fn rollback(engine: &Engine, group: &str) -> Result<Option<String>> {
    let (mut con, pool, group) = group_connection(engine, group).await?;
    let (current, previous) = records::deployed_versions(&mut con, &group)
        .await
        .pool(&pool)?;
    let Some(current) = current else {
        return Err(Error::InvalidArgument(format!(
            "group {} has no deployed version to roll back",
            group.name
        )));
    };
    records::store_rollback(&mut con, &group, &current, previous.as_deref())
        .await
        .pool(&pool)?;
    Ok(previous)
}

/// The deployed digest of `group`, if any.
pub async fn deployed_digest(engine: &Engine, group: &str) -> Result<Option<String>> {
    let (mut con, pool, group) = group_connection(engine, group).await?;
    records::deployed_digest(&mut con, &group).await.pool(&pool)
}

/// The deployed version of `group`: its digest and bytes.
pub async fn deployed(engine: &Engine, group: &str) -> Result<Option<(String, Vec<u8>)>> {
    let (mut con, pool, group) = group_connection(engine, group).await?;
    let Some(digest) = records::deployed_digest(&mut con, &group)
        .await
        .pool(&pool)?
    else {
        return Ok(None);
    };
    let bytes = records::component_bytes(&mut con, &group, &digest)
        .await
        .pool(&pool)?;
    Ok(bytes.map(|bytes| (digest, bytes)))
}

/// Loads `group`'s deployed version into `reloader` if it differs from the live one.
pub async fn sync_group(
    engine: &Engine,
    wasm: &WasmEngine,
    reloader: &Reloader,
    group: &str,
) -> Result<Option<ReloadOutcome>> {
    let Some(digest) = deployed_digest(engine, group).await? else {
        // Nothing deployed: a host still running a withdrawn deployment returns to its file.
        if reloader
            .current(group)
            .is_some_and(|c| c.origin().starts_with(DEPLOYED_ORIGIN))
        {
            return Ok(Some(reloader.reload(group).await));
        }
        return Ok(None);
    };
    if reloader
        .current(group)
        .is_some_and(|c| c.digest() == digest)
    {
        return Ok(Some(ReloadOutcome::Unchanged));
    }
    let Some((digest, bytes)) = deployed(engine, group).await? else {
        return Ok(None);
    };
    let wasm = wasm.clone();
    let origin = deployed_origin(group, &digest);
    let loaded = tokio::task::spawn_blocking(move || wasm.load_bytes(&bytes, &origin)).await;
    let outcome = match loaded {
        Ok(Ok(component)) => reloader.offer(group, component).await,
        Ok(Err(e)) => ReloadOutcome::Refused(e.to_string()),
        Err(e) => ReloadOutcome::Refused(e.to_string()),
    };
    Ok(Some(outcome))
}

/// Follows deployments for every group of `reloader`: subscribes to [`DEPLOY_CHANNEL`](keys::DEPLOY_CHANNEL) on
/// each pool and polls every [`POLL_EVERY`], until `cancel`.
pub fn follow(
    engine: Engine,
    wasm: WasmEngine,
    reloader: Arc<Reloader>,
    cancel: CancellationToken,
) {
    let mut pools: Vec<String> = reloader
        .groups()
        .iter()
        .filter_map(|g| engine.registry().group(g).map(|d| d.pool.clone()))
        .collect();
    pools.sort();
    pools.dedup();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for pool in pools {
        let (engine, tx, cancel) = (engine.clone(), tx.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let subscribed = async {
                    let mut pubsub = engine.pool(&pool)?.pubsub().await?;
                    pubsub.subscribe(keys::DEPLOY_CHANNEL).await.pool(&pool)?;
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        if let Ok(group) = message.get_payload::<String>() {
                            let _ = tx.send(group);
                        }
                    }
                    Ok::<(), Error>(())
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    result = subscribed => if let Err(e) = result {
                        tracing::warn!(pool = %pool, error = %e, "deploy notifications interrupted; resubscribing");
                    },
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }
    tokio::spawn(async move {
        loop {
            let groups = reloader.groups();
            let wanted: Vec<String> = tokio::select! {
                _ = cancel.cancelled() => return,
                group = rx.recv() => match group {
                    Some(group) => vec![group],
                    None => return,
                },
                _ = tokio::time::sleep(POLL_EVERY) => groups.clone(),
            };
            for group in wanted.iter().filter(|g| groups.contains(g)) {
                match sync_group(&engine, &wasm, &reloader, group).await {
                    Ok(Some(ReloadOutcome::Swapped { digest })) => {
                        tracing::info!(group = %group, digest = %digest, "now running the deployed version")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(group = %group, error = %e, "cannot check the deployed version")
                    }
                }
            }
        }
    });
}
