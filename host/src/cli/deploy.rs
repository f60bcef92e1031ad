//! `beehive deploy` and `beehive rollback`: fleet deploys through Redis.

use std::path::PathBuf;

use super::{CommandResult, ConfigArg, Failure};
use crate::runtime::{GuestSettings, WasmEngine, check_instantiation};

/// Arguments of `beehive deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The consumer group.
    pub group: String,
    /// The component to deploy.
    pub file: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

/// Arguments of `beehive rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The consumer group.
    pub group: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

pub(super) async fn deploy(args: DeployArgs) -> CommandResult {
    let config = args.config.load()?;
    if config.registry.group(&args.group).is_none() {
        return Err(Failure::Usage(format!(
            "unregistered consumer group {}",
            args.group
        )));
    }
    let bytes = std::fs::read(&args.file)
        .map_err(|e| Failure::Usage(format!("{}: cannot read: {e}", args.file.display())))?;
    // Check it here, as each host will: compile, world, instantiation with the group's limits.
    let wasm = WasmEngine::new()
        .map_err(|e| Failure::Runtime(format!("cannot start the WebAssembly engine: {e:#}")))?;
    let origin = args.file.display().to_string();
    let (checked, bytes) =
        tokio::task::spawn_blocking(move || (wasm.load_bytes(&bytes, &origin), bytes))
            .await
            .map_err(|e| Failure::Runtime(e.to_string()))?;
    let component = checked.map_err(|e| Failure::Usage(e.to_string()))?;
    let settings = config
        .consumers
        .get(&args.group)
        .map_or_else(GuestSettings::default, |c| {
            GuestSettings::for_consumer(c, None)
        });
    check_instantiation(&component, &settings)
        .await
        .map_err(|reason| {
            Failure::Usage(format!(
                "component {}: traps on instantiation: {reason}",
                args.file.display()
            ))
        })?;
    let engine = config.registry.create_engine();
    crate::ops::deploy::deploy(&engine, &args.group, component.digest(), &bytes).await?;
    println!(
        "deployed {} to {} (sha256 {}); running hosts swap to it",
        args.file.display(),
        args.group,
        component.digest()
    );
    Ok(())
}

pub(super) async fn rollback(args: RollbackArgs) -> CommandResult {
    let config = args.config.load()?;
    if config.registry.group(&args.group).is_none() {
        return Err(Failure::Usage(format!(
            "unregistered consumer group {}",
            args.group
        )));
    }
    let engine = config.registry.create_engine();
    match crate::ops::deploy::rollback(&engine, &args.group).await? {
        Some(digest) => println!(
            "rolled {} back to sha256 {digest}; running hosts swap to it",
            args.group
        ),
        None => println!(
            "withdrew the deployment of {}; running hosts return to their configured component files",
            args.group
        ),
    }
    Ok(())
}
