//! Faults: Redis losing its data, restarting, and authentication.

use std::process::Command;
use std::time::Duration;

use beehive_tests::{
    Beehive, RedisServer, TempDir, beehive_bin, component, engine, entries, eventually, field,
    pending,
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

async fn receipts_of(server: &RedisServer) -> Vec<String> {
    let mut of: Vec<String> = entries(server, "receipts")
        .await
        .iter()
        .map(|(_, f)| field(f, "of").unwrap().to_string())
        .collect();
    of.sort();
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
    let server = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--user",
        "alice",
        "on",
        ">s3cret-pw",
        "~*",
        "&*",
        "+@all",
        "--user",
        "default",
        "off",
    ])
    .unwrap();
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
