//! The single-runner lock: `SET key token NX PX ttl`, refreshed in the background by a task
//! that checks the token, released with a compare-and-delete.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use crate::redis::pool::Connection;
use redis::Script;
use tokio_util::sync::CancellationToken;

use crate::error::{PoolContext, Result};

static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    )
});

/// A held lock. Dropping it stops the refresher and releases the key in the background;
/// call [`release`](Lock::release) to release it before going on.
pub(crate) struct Lock {
    key: String,
    token: String,
    pool: String,
    con: Connection,
    lost: CancellationToken,
    stop: CancellationToken,
    released: bool,
}

impl Lock {
    /// Tries to take `key` for `ttl`; `None` when another holder has it.
    ///
    /// While held, a background task extends the TTL every `ttl / 3`; if the key vanishes,
    /// holds another token, or cannot be refreshed for a whole TTL, [`lost`](Lock::lost) fires.
    pub(crate) async fn acquire(
        con: Connection,
        pool: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<Lock>> {
        Self::acquire_as(con, pool, key, ttl, "").await
    }

    /// [`acquire`](Self::acquire) with a value naming its holder: `<owner>/<random>`
    /// (`keys::lock_value`), so `beehive status` can tell who runs a consumer.
    pub(crate) async fn acquire_as(
        mut con: Connection,
        pool: &str,
        key: &str,
        ttl: Duration,
        owner: &str,
    ) -> Result<Option<Lock>> {
        let token = if owner.is_empty() {
            random_token()
        } else {
            crate::keys::lock_value(owner, &random_token())
        };
        let mut acquired = super::commands::set_if_absent(&mut con, key, &token, ttl)
            .await
            .pool(pool)?;
        if !acquired && con.is_cluster() {
            // The cluster client sends a request again when its connection dropped, even
            // if Redis ran it: the second SET NX then finds our own token.
            let holder: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut con)
                .await
                .pool(pool)?;
            acquired = holder.as_deref() == Some(token.as_str());
        }
        if !acquired {
            return Ok(None);
        }
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        tokio::spawn(refresh(
            con.clone(),
            key.to_string(),
            token.clone(),
            ttl,
            lost.clone(),
            stop.clone(),
        ));
        Ok(Some(Lock {
            key: key.to_string(),
            token,
            pool: pool.to_string(),
            con,
            lost,
            stop,
            released: false,
        }))
    }

    /// Fires once the lock is known to be lost.
    pub(crate) fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// The key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The random token that proves ownership.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Stops refreshing and deletes the key if it still holds this lock's token.
    pub(crate) async fn release(mut self) -> Result<()> {
        self.stop.cancel();
        self.released = true;
        let mut con = self.con.clone();
        let _: i64 = RELEASE
            .key(&self.key)
            .arg(&self.token)
            .invoke_async(&mut con)
            .await
            .pool(&self.pool)?;
        Ok(())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.stop.cancel();
        if !self.released {
            // Dropped without release (a panic or a dropped future): release in the background.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let (mut con, key, token) =
                    (self.con.clone(), self.key.clone(), self.token.clone());
                handle.spawn(async move {
                    let _: redis::RedisResult<i64> =
                        RELEASE.key(&key).arg(&token).invoke_async(&mut con).await;
                });
            }
        }
    }
}

async fn refresh(
    mut con: Connection,
    key: String,
    token: String,
    ttl: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let every = ttl / 3;
    let ttl_ms = ttl.as_millis().max(1) as u64;
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let attempt = tokio::time::timeout(
            every.max(Duration::from_millis(50)),
            REFRESH
                .key(&key)
                .arg(&token)
                .arg(ttl_ms)
                .invoke_async::<i64>(&mut con),
        )
        .await;
        match attempt {
            Ok(Ok(1)) => last_ok = Instant::now(),
            Ok(Ok(_)) => {
                tracing::warn!(lock = %key, "lock lost: the key is gone or held by another runner");
                lost.cancel();
                return;
            }
            Ok(Err(e)) => tracing::warn!(lock = %key, error = %e, "cannot refresh lock"),
            Err(_) => tracing::warn!(lock = %key, "lock refresh timed out"),
        }
        if last_ok.elapsed() >= ttl {
            tracing::warn!(lock = %key, "lock lost: not refreshed within its TTL");
            lost.cancel();
            return;
        }
    }
}

/// 128 random bits as hex: unguessable, unique per holder.
pub(crate) fn random_token() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}
