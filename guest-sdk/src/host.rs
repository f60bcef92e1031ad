//! The host's imports: the component's own on wasm, the fakes of [`crate::testing`]
//! elsewhere (where the generated imports would be unreachable stubs).

use crate::Level;

/// `publisher.publish`.
pub(crate) fn publish(
    stream: &str,
    body: Option<&[u8]>,
    meta: &[(String, String)],
) -> Result<(), String> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::beehive::broker::publisher::publish(stream, body, meta)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::fake_publish(stream, body, meta)
    }
}

/// `logging.log`.
pub(crate) fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::beehive::broker::logging::log(level, message)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::fake_log(level, message)
    }
}
