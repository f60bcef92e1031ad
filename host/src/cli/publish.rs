//! `beehive publish <stream> [--json VALUE] [--meta k=v]...`: the body in the lossless JSON
//! form of [`crate::event::json`].

use super::{CommandResult, ConfigArg, Failure};

/// Arguments of `beehive publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The stream to publish to (must be registered).
    pub stream: String,
    /// The body as JSON, stored as MessagePack; the lossless form `tail --json` and
    /// `record` print (`{"$bin": "..."}`, `{"$time": "..."}`, `{"$map": [[1, "a"]]}`, ...)
    /// is read back byte for byte.
    #[arg(long)]
    pub json: Option<String>,
    /// A metadata pair; repeat for more.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub config: ConfigArg,
}

pub(super) async fn run(args: PublishArgs) -> CommandResult {
    let config = args.config.load()?;
    let body = match &args.json {
        Some(text) => {
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| Failure::Usage(format!("--json: expected a JSON value: {e}")))?;
            Some(
                crate::event::json::from_json(&value)
                    .map_err(|e| Failure::Usage(format!("--json: {e}")))?,
            )
        }
        None => None,
    };
    let meta = args
        .meta
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Failure::Usage(format!("--meta {pair:?}: expected KEY=VALUE")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let broker = config.registry.create_engine().event_broker();
    let id = broker
        .publish_event(crate::NewEvent::new(&args.stream, body, meta)?)
        .await?;
    println!("{id}");
    Ok(())
}
