//! Faults: Redis losing its data, restarting, and authentication.

use std::process::Command;
use std::time::Duration;

use beehive_tests::{
    Beehive, RedisServer, TempDir, beehive_bin, certificates, component, engine, eventually,
    pending, receipt_ids, redis_with_user, xlen,
};

fn config(dir: &TempDir, address: &str) -> std::path::PathBuf {
    dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {address}\n  streams:\n    events: [handlers]\n    receipts: [auditors]\nconsumers:\n  handlers:\n    component: {}\n    publish: [receipts]\n    block: 100ms\n    count: 10\n",
            component("beehive-test-hostile").display()
        ),
    )
}

/// The distinct source IDs that got a receipt.
async fn receipts_of(server: &RedisServer) -> Vec<String> {
    let mut of = receipt_ids(server).await;
    of.dedup();
    of
}

#[tokio::test]
async fn flushall_is_survived_groups_are_recreated() {
    let server = beehive_tests::redis();
    let dir = TempDir::new();
    let cfg = config(&dir, &format!("{}:0", server.address()));
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let broker = engine.event_broker();
    let host = Beehive::run(&cfg, &[]);
    for i in 0..5 {
        broker
            .publish("events", &i, &[] as &[(&str, &str)])
            .await
            .unwrap();
    }
    eventually(
        "the first events to be handled",
        Duration::from_secs(60),
        || async { receipts_of(&server).await.len() == 5 },
    )
    .await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut beehive_tests::raw(&server).await)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            broker
                .publish("events", &i, &[] as &[(&str, &str)])
                .await
                .unwrap(),
        );
    }
    eventually(
        "events after FLUSHALL to be handled",
        Duration::from_secs(60),
        || async { receipts_of(&server).await.len() == 5 },
    )
    .await;
    ids.sort();
    assert_eq!(receipts_of(&server).await, ids);
    assert_eq!(pending(&server, "events", "handlers").await, 0);
    let log = host.log_text();
    assert!(
        log.contains("vanished") || log.contains("lost its lock"),
        "one loud warning about the lost state:\n{log}"
    );
}

#[tokio::test]
async fn a_redis_restart_with_aof_loses_nothing() {
    let mut server = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ])
    .unwrap();
    let dir = TempDir::new();
    let cfg = config(&dir, &format!("{}:0", server.address()));
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let _host = Beehive::run(&cfg, &[]);
    let mut ids = Vec::new();
    let broker = engine.event_broker();
    for i in 0..50 {
        ids.push(
            broker
                .publish("events", &i, &[] as &[(&str, &str)])
                .await
                .unwrap(),
        );
    }
    eventually(
        "the first half to be handled",
        Duration::from_secs(60),
        || async { receipts_of(&server).await.len() == 50 },
    )
    .await;
    server.restart().unwrap();
    // Publish through the same engine: its connection reconnects by itself.
    let mut published = 0;
    while published < 50 {
        match broker
            .publish("events", &published, &[] as &[(&str, &str)])
            .await
        {
            Ok(id) => {
                ids.push(id);
                published += 1;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    eventually(
        "every event, before and after the restart, to be handled",
        Duration::from_secs(90),
        || async {
            receipts_of(&server).await.len() == 100
                && pending(&server, "events", "handlers").await == 0
        },
    )
    .await;
    ids.sort();
    assert_eq!(
        receipts_of(&server).await,
        ids,
        "nothing lost (duplicates would be at-least-once, none expected here)"
    );
}

#[tokio::test]
async fn acl_users_and_passwords_work_and_stay_secret() {
    let server = redis_with_user("alice", "s3cret-pw");
    let dir = TempDir::new();
    let good = config(
        &dir,
        &format!("redis://alice:s3cret-pw@{}/0", server.address()),
    );
    let out = Command::new(beehive_bin())
        .args(["publish", "events", "--json", "1", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(beehive_bin())
        .args(["status", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("events") && !text.contains("s3cret-pw"),
        "{text}"
    );
    let out = Command::new(beehive_bin())
        .args(["status", "--json", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("s3cret-pw"),
        "{text}"
    );
    // The host's whole log (connections, consumers, handled events) never shows it either.
    let mut host = Beehive::run_with_env(&good, &["--drain"], &[("RUST_LOG", "debug")]);
    assert_eq!(
        host.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        host.log_text()
    );
    let log = host.log_text();
    assert!(
        log.contains("alice") || log.contains("beehive run"),
        "{log}"
    );
    assert!(
        !log.contains("s3cret-pw"),
        "the password never appears in logs:\n{log}"
    );

    let bad = dir.write(
        "bad.yaml",
        &std::fs::read_to_string(&good)
            .unwrap()
            .replace("s3cret-pw", "wrong-pw"),
    );
    let out = Command::new(beehive_bin())
        .args(["publish", "events", "--json", "1", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.to_lowercase().contains("wrongpass") || stderr.to_lowercase().contains("auth"),
        "a clear authentication error: {stderr}"
    );
    assert!(
        !stderr.contains("wrong-pw"),
        "the password never appears: {stderr}"
    );
}

/// The IDs of every client connected to `server` except `keep`.
async fn client_ids(con: &mut redis::aio::MultiplexedConnection, keep: &[i64]) -> Vec<i64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(con)
        .await
        .unwrap();
    list.lines()
        .filter_map(|line| line.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .filter(|id| !keep.contains(id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kills_restarts_and_dropped_connections_lose_and_duplicate_nothing() {
    const EVENTS: usize = 20_000;
    const KILLS: usize = 12;
    let mut rng = beehive_tests::Rng::from_clock("chaos");
    let server = beehive_tests::redis();
    let dir = TempDir::new();
    let cfg = dir.write(
        "beehive.yaml",
        &format!(
            "default:\n  redis: {}\n  streams:\n    events: [handlers]\n    receipts: [auditors]\nconsumers:\n  handlers:\n    component: {}\n    publish: [receipts]\n    count: 50\n    instances: 3\n    block: 100ms\n    min-idle: 3s\n    lock-ttl: 1s\n    limits: {{timeout: 1s}}\n",
            server.address(),
            component("beehive-test-hostile").display()
        ),
    );
    let args = ["--no-watch", "--gc-interval", "500ms"];
    let mut killed_host = Beehive::run(&cfg, &args);
    let steady_host = Beehive::run(&cfg, &args);

    // The publisher and the chaos monkey have their own connections, spared by CLIENT KILL.
    let mut publisher = beehive_tests::raw(&server).await;
    let mut monkey = beehive_tests::raw(&server).await;
    let mut spared = Vec::new();
    for con in [&mut publisher, &mut monkey] {
        spared.push(
            redis::cmd("CLIENT")
                .arg("ID")
                .query_async::<i64>(con)
                .await
                .unwrap(),
        );
    }
    // 20,000 events over ~15 s, in pipelines of 100.
    let publishing = tokio::spawn(async move {
        let mut ids: Vec<String> = Vec::with_capacity(EVENTS);
        let mut tick = tokio::time::interval(Duration::from_millis(75));
        while ids.len() < EVENTS {
            tick.tick().await;
            let mut pipe = redis::pipe();
            for i in ids.len()..ids.len() + 100 {
                pipe.cmd("XADD")
                    .arg("events")
                    .arg("*")
                    .arg("n")
                    .arg(i.to_string());
            }
            let batch: Vec<String> = pipe.query_async(&mut publisher).await.unwrap();
            ids.extend(batch);
        }
        ids
    });

    let (mut kills, mut client_kills) = (0, 0);
    while kills < KILLS {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        killed_host.signal("KILL");
        killed_host.wait(Duration::from_secs(10));
        kills += 1;
        if rng.below(2) == 0 {
            for id in client_ids(&mut monkey, &spared).await {
                let _: redis::RedisResult<()> = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("ID")
                    .arg(id)
                    .query_async(&mut monkey)
                    .await;
                client_kills += 1;
            }
        }
        killed_host = Beehive::run(&cfg, &args);
    }
    let mut ids = publishing.await.unwrap();
    eprintln!("chaos: {kills} SIGKILLs and restarts, {client_kills} connections killed");

    eventually(
        "every event to get its receipt and nothing to stay pending",
        Duration::from_secs(120),
        || async {
            xlen(&server, "receipts").await >= EVENTS as u64
                && pending(&server, "events", "handlers").await == 0
        },
    )
    .await;
    let mut of = receipt_ids(&server).await;
    ids.sort();
    let total = of.len();
    of.dedup();
    let duplicated = total - of.len();
    let lost = ids
        .iter()
        .filter(|id| of.binary_search(id).is_err())
        .count();
    eprintln!(
        "chaos: {} events, {} receipts, {lost} lost, {duplicated} duplicated",
        ids.len(),
        total
    );
    assert_eq!((lost, duplicated), (0, 0), "exactly one receipt per event");
    assert_eq!(of, ids);
    eventually(
        "GC to trim the fully acknowledged source stream",
        Duration::from_secs(30),
        || async { xlen(&server, "events").await == 0 },
    )
    .await;
    drop(steady_host);
}

#[tokio::test]
async fn a_restart_without_persistence_and_a_deleted_stream_are_survived_without_spinning() {
    let mut server = beehive_tests::redis();
    let dir = TempDir::new();
    let cfg = config(&dir, &format!("{}:0", server.address()));
    let engine = engine(&server, &[("events", &["handlers"])]).await;
    let broker = engine.event_broker();
    let host = Beehive::run(&cfg, &[]);
    let publish = |n: i32| {
        let broker = broker.clone();
        async move {
            let mut ids = Vec::new();
            while ids.len() < 5 {
                // The engine's connection reconnects by itself after the restart.
                match broker.publish("events", &n, &[] as &[(&str, &str)]).await {
                    Ok(id) => ids.push(id),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            ids
        }
    };
    let mut expected = Vec::new();
    for round in 0..3 {
        match round {
            // Everything, the group and the lock included, is gone.
            1 => server.restart().unwrap(),
            // Only the stream (and with it the group) is gone.
            2 => {
                let _: () = redis::cmd("DEL")
                    .arg("events")
                    .query_async(&mut beehive_tests::raw(&server).await)
                    .await
                    .unwrap();
            }
            _ => {}
        }
        let ids = publish(round).await;
        eventually(
            &format!("round {round}'s events to be handled"),
            Duration::from_secs(60),
            || async {
                let got = receipts_of(&server).await;
                ids.iter().all(|id| got.contains(id))
            },
        )
        .await;
        expected.extend(ids);
    }
    assert_eq!(pending(&server, "events", "handlers").await, 0);
    // The restart lost the earlier receipts; what is there must be exactly this round's.
    let got = receipts_of(&server).await;
    assert_eq!(
        xlen(&server, "receipts").await as usize,
        got.len(),
        "no duplicates"
    );
    let log = host.log_text();
    let warnings = log.matches("vanished").count();
    assert!(
        (1..=6).contains(&warnings),
        "a loud warning per loss, no spinning on NOGROUP ({warnings} warnings):\n{log}"
    );
}

#[tokio::test]
async fn tls_connections_work_and_an_untrusted_certificate_is_refused() {
    let dir = TempDir::new();
    let (ca, cert, key) = certificates(&dir);
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let server = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ])
    .expect("redis-server with TLS (Debian's is built with it)");
    let cfg = config(&dir, &format!("rediss://127.0.0.1:{tls_port}/0"));
    let beehive = |args: &[&str], trust: bool| {
        let mut cmd = Command::new(beehive_bin());
        cmd.args(args).arg("-c").arg(&cfg);
        if trust {
            cmd.env("SSL_CERT_FILE", &ca);
        } else {
            // Only the system's roots: the test CA is not among them.
            cmd.env_remove("SSL_CERT_FILE");
        }
        cmd.output().unwrap()
    };
    let out = beehive(&["publish", "events", "--json", "7"], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut host = Beehive::run_with_env(
        &cfg,
        &["--drain"],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    assert_eq!(
        host.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        host.log_text()
    );
    assert_eq!(receipts_of(&server).await, vec![id], "handled over TLS");

    let out = beehive(&["publish", "events", "--json", "8"], false);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("certificate"),
        "a clear TLS error: {stderr}"
    );
}
