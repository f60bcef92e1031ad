//! WebAssembly consumers: real components under the real host, on private Redis servers.

mod cache;
mod commit;
mod process;
mod run;
mod sandbox;
mod validate;

use std::path::{Path, PathBuf};

use beehive_tests::{RedisServer, TempDir};

/// A config with stream `events` read by group `handlers` (run by `component`), a
/// `receipts` stream the handler may publish to (unless `settings` says otherwise), and a
/// `forbidden` one it may not.
pub fn config(dir: &TempDir, server: &RedisServer, component: &Path, settings: &str) -> PathBuf {
    let publish = if settings.contains("publish:") {
        ""
    } else {
        "    publish: [receipts]
"
    };
    dir.write(
        "beehive.yaml",
        &format!(
            "default:
  redis: {}:0
  streams:
    events: [handlers]
    receipts: [auditors]
    forbidden: [auditors]
consumers:
  handlers:
    component: {}
{publish}{settings}",
            server.address(),
            component.display()
        ),
    )
}
