//! Operating a Redis Cluster pool through the real binary (issue 16): `beehive tail`,
//! `record` (and `beehive test` replaying what was recorded), `redrive` (back to the origin
//! stream in the dead-letter stream's slot, and `--to` a stream in another slot),
//! `deploy` / `rollback` and a file reload on running hosts, and `CLIENT KILL` of every
//! normal connection on every node while events flow. Each test starts its own private
//! 3-master cluster (`beehive::redis_cluster`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use beehive::Registry;
use beehive::redis_cluster::RedisCluster;
use beehive_tests::cluster::{
    echo_inputs, entries, pending, raw, raw_entries, three_masters as cluster, xlen,
};
use beehive_tests::{
    Beehive, TempDir, beehive_bin, component, drain, eventually, field, hostile_version,
    receipt_versions, run_beehive, sha256,
};
use redis::cluster_async::ClusterConnection;
use serde_json::{Value, json};

/// `XINFO GROUPS` of `stream` (empty when the stream has none, or does not exist).
async fn groups_info(con: &mut ClusterConnection, stream: &str) -> redis::Value {
    redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(con)
        .await
        .unwrap_or(redis::Value::Nil)
}

/// `field` of every entry of `stream`, in stream order.
async fn column(con: &mut ClusterConnection, stream: &str, key: &str) -> Vec<String> {
    entries(con, stream)
        .await
        .iter()
        .map(|(id, f)| {
            field(f, key)
                .unwrap_or_else(|| panic!("{stream} entry {id} has no {key}"))
                .to_string()
        })
        .collect()
}

/// A registry with one cluster pool `orders` holding `streams` (name, groups).
async fn engine(cluster: &RedisCluster, streams: &[(&str, &[&str])]) -> beehive::Engine {
    let mut registry = Registry::new();
    registry.register_redis_cluster(&cluster.seeds(), "orders");
    for (stream, groups) in streams {
        registry.register_redis_stream(stream, "orders", groups);
    }
    registry.validate().await.expect("valid").create_engine()
}

/// The echo group on a cluster: input `{orders}-created`; outputs to its own slot
/// (`{orders}-echoed`, `{orders}-audit`) and to another slot (`elsewhere`); `publish`
/// lists what it may publish to. The group `archive`, never created, keeps every input
/// from garbage collection, so tests can compare outputs with all inputs.
fn echo_config(dir: &TempDir, cluster: &RedisCluster, publish: &str, settings: &str) -> PathBuf {
    dir.write(
        "beehive.yaml",
        &format!(
            "orders:
  cluster: [{}]
  streams:
    \"{{orders}}-created\": [echoes, archive]
    \"{{orders}}-echoed\": [readers]
    \"{{orders}}-audit\": [auditors]
    elsewhere: [others]
consumers:
  echoes:
    component: {}
    publish: [{publish}]
{settings}",
            cluster.seeds().join(", "),
            component("beehive-example-echo").display()
        ),
    )
}

const ECHO_STREAMS: [(&str, &[&str]); 4] = [
    ("{orders}-created", &["echoes", "archive"]),
    ("{orders}-echoed", &["readers"]),
    ("{orders}-audit", &["auditors"]),
    ("elsewhere", &["others"]),
];

/// Runs `beehive <args> -c <config>`; stdout, failing the test on a non-zero exit.
fn ok(args: &[&str], config: &Path) -> String {
    let mut all = args.to_vec();
    all.extend(["-c", config.to_str().unwrap()]);
    let (code, out, err) = run_beehive(&all, Duration::from_secs(60));
    assert_eq!(code, Some(0), "beehive {args:?}: {err}");
    out
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[derive(serde::Serialize)]
struct Order {
    n: u32,
    total: f64,
    items: Vec<String>,
}

fn order(n: u32) -> Order {
    Order {
        n,
        total: f64::from(n) + 0.5,
        items: vec!["tea".into(), format!("cup-{n}")],
    }
}

fn order_json(n: u32) -> Value {
    json!({"n": n, "total": f64::from(n) + 0.5, "items": ["tea", format!("cup-{n}")]})
}

/// `tail` and `record` read streams in two slots (on two masters) exactly as written, in
/// order, without creating or moving any group; `tail` without `--from` follows new entries
/// only; what `record` printed, replayed offline by `beehive test` with the echo component,
/// publishes what the live run on the cluster published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_and_record_read_every_slot_without_joining_a_group_and_replay_offline() {
    const N: u32 = 600; // more than one page (500) of `record`
    let cluster = cluster();
    assert_ne!(
        cluster
            .master_of_slot(beehive::keys::slot("{orders}-created"))
            .unwrap(),
        cluster
            .master_of_slot(beehive::keys::slot("elsewhere"))
            .unwrap(),
        "the two streams live on two masters"
    );
    let dir = TempDir::new();
    let config = echo_config(&dir, &cluster, "\"{orders}-echoed\", elsewhere", "");
    let engine = engine(&cluster, &ECHO_STREAMS).await;
    let broker = engine.event_broker();
    let mut flusher = broker.new_flusher();
    for n in 0..N {
        let to = if n % 2 == 0 {
            "{orders}-echoed"
        } else {
            "elsewhere"
        };
        flusher
            .publish(
                "{orders}-created",
                &order(n),
                &[("echo-to", to), ("n", &n.to_string())],
            )
            .unwrap();
    }
    let ids = flusher.flush().await.expect("publish to the cluster");
    assert_eq!(ids.len(), N as usize);
    // The live run: every event echoed once, to its slot or to the other one.
    drain(&config);
    let mut con = raw(&cluster).await;
    assert_eq!(
        xlen(&mut con, "{orders}-echoed").await + xlen(&mut con, "elsewhere").await,
        u64::from(N)
    );
    let groups_before = (
        groups_info(&mut con, "{orders}-created").await,
        groups_info(&mut con, "elsewhere").await,
    );

    // tail --json from the start: every entry, in order, body and meta as written.
    let tailed = ok(
        &[
            "tail",
            "{orders}-created",
            "--from",
            "0",
            "--count",
            &N.to_string(),
            "--json",
        ],
        &config,
    );
    let lines = json_lines(&tailed);
    assert_eq!(lines.len(), N as usize);
    for (n, (line, id)) in lines.iter().zip(&ids).enumerate() {
        let n = n as u32;
        assert_eq!(line["id"], id.as_str());
        assert_eq!(line["stream"], "{orders}-created");
        assert_eq!(line["body"], order_json(n), "{line}");
        assert_eq!(line["meta"]["n"], n.to_string());
    }
    // The echoes in the other slot, in input order, from a given ID on (inclusive).
    let elsewhere = entries(&mut con, "elsewhere").await;
    let from = &elsewhere[10].0;
    let tailed = json_lines(&ok(
        &[
            "tail",
            "elsewhere",
            "--from",
            from,
            "--count",
            "5",
            "--json",
        ],
        &config,
    ));
    let want: Vec<&str> = ids
        .iter()
        .skip(1)
        .step_by(2)
        .skip(10)
        .take(5)
        .map(String::as_str)
        .collect();
    let got: Vec<&str> = tailed
        .iter()
        .map(|l| l["meta"]["echo-of"].as_str().unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(tailed[0]["id"], from.as_str());
    assert_eq!(tailed[0]["body"], order_json(21));

    // record: the same lines as tail --json, across its pages; --from is inclusive.
    let recorded = ok(&["record", "{orders}-created"], &config);
    assert_eq!(recorded, tailed_all(&config, "{orders}-created", N));
    let part = json_lines(&ok(
        &[
            "record",
            "{orders}-created",
            "--from",
            &ids[100],
            "--count",
            "3",
        ],
        &config,
    ));
    let part_ids: Vec<&str> = part.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(part_ids, [&ids[100], &ids[101], &ids[102]]);

    // tail without --from prints only what arrives after it started.
    let follow = std::process::Command::new(beehive_bin())
        .args(["tail", "elsewhere", "--count", "2", "--json", "-c"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waiter = std::thread::spawn(move || follow.wait_with_output().unwrap());
    let mut new_ids = Vec::new();
    let started = std::time::Instant::now();
    while !waiter.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "tail printed no new entries"
        );
        new_ids.push(
            broker
                .publish("elsewhere", "new", &[("k", "v")])
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = waiter.join().unwrap();
    assert!(out.status.success());
    let followed: Vec<String> = json_lines(&String::from_utf8_lossy(&out.stdout))
        .iter()
        .map(|l| {
            assert_eq!(l["body"], "new", "{l}");
            l["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(followed.len(), 2);
    let at = new_ids
        .iter()
        .position(|id| *id == followed[0])
        .expect("tail printed an entry published after it started");
    assert_eq!(
        new_ids.get(at + 1),
        Some(&followed[1]),
        "in order, none skipped"
    );

    // Neither tail nor record joined, created or moved a group.
    let groups_after = (
        groups_info(&mut con, "{orders}-created").await,
        groups_info(&mut con, "elsewhere").await,
    );
    assert_eq!(groups_after, groups_before);
    assert_eq!(pending(&mut con, "{orders}-created", "echoes").await, 0);

    // beehive test replays the recording offline; each event's expected publish is the
    // echo the live run wrote on the cluster (stream, body, meta).
    let events = dir.write("recorded.jsonl", &recorded);
    let events = events.to_str().unwrap();
    let publish = "{orders}-echoed,elsewhere";
    let guest = component("beehive-example-echo");
    let guest = guest.to_str().unwrap();
    let (code, out, err) = run_beehive(
        &["test", guest, events, "--publish", publish, "--update"],
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let mut live: BTreeMap<String, Value> = BTreeMap::new();
    for stream in ["{orders}-echoed", "elsewhere"] {
        let text = tailed_all(&config, stream, N / 2);
        for line in json_lines(&text) {
            let of = line["meta"]["echo-of"].as_str().unwrap().to_string();
            live.insert(
                of,
                json!({"stream": line["stream"], "body": line["body"], "meta": line["meta"]}),
            );
        }
    }
    let expected =
        json_lines(&std::fs::read_to_string(dir.path().join("recorded.expected.jsonl")).unwrap());
    assert_eq!(expected.len(), N as usize);
    for record in &expected {
        let id = record["id"].as_str().unwrap();
        assert_eq!(record["outcome"], "ack", "{record}");
        assert_eq!(
            record["publishes"],
            json!([live[id].clone()]),
            "offline replay of {id} differs from the live run"
        );
    }
    let (code, out, err) = run_beehive(
        &["test", guest, events, "--publish", publish],
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out.lines().last(),
        Some(format!("{N} passed, 0 failed").as_str()),
        "{out}"
    );
}

/// `beehive tail <stream> --from 0 --count <n> --json`'s output.
fn tailed_all(config: &Path, stream: &str, n: u32) -> String {
    ok(
        &[
            "tail",
            stream,
            "--from",
            "0",
            "--count",
            &n.to_string(),
            "--json",
        ],
        config,
    )
}

/// Dead letters on a cluster: `redrive --to` a stream in another slot moves them through
/// the redrive outbox exactly once and in order, with body and meta; `redrive` to the
/// origin stream (same slot as the dead-letter stream) brings them back, and the group
/// then handles each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_on_a_cluster_returns_dead_letters_to_their_slot_and_to_another() {
    let cluster = cluster();
    let dir = TempDir::new();
    let settings = "    block: 100ms\n";
    let config = echo_config(&dir, &cluster, "\"{orders}-echoed\", elsewhere", settings);
    let engine = engine(&cluster, &ECHO_STREAMS).await;
    let broker = engine.event_broker();
    // Even: refused publish to {orders}-audit (dead-lettered); odd: asked to dead-letter.
    let mut published = Vec::new();
    for n in 0..10u32 {
        let meta: &[(&str, &str)] = if n % 2 == 0 {
            &[("echo-to", "{orders}-audit")]
        } else {
            &[("fail", "dead")]
        };
        let mut meta = meta.to_vec();
        let n_text = n.to_string();
        meta.push(("n", &n_text));
        published.push(
            broker
                .publish("{orders}-created", &order(n), &meta)
                .await
                .unwrap(),
        );
    }
    drain(&config);
    let dead_letter = "{orders}echoes-dead-letter";
    assert_eq!(
        beehive::keys::slot(dead_letter),
        beehive::keys::slot("{orders}-created")
    );
    let mut con = raw(&cluster).await;
    assert_eq!(
        column(&mut con, dead_letter, "n").await,
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    );
    let bodies: BTreeMap<String, Vec<u8>> = raw_entries(&mut con, "{orders}-created")
        .await
        .into_iter()
        .map(|(_, f)| {
            let get = |k: &[u8]| {
                f.iter()
                    .find(|(fk, _)| fk == k)
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            (String::from_utf8(get(b"n")).unwrap(), get(b"s"))
        })
        .collect();

    let out = ok(&["redrive", dead_letter, "--dry-run"], &config);
    assert!(out.contains("would redrive 10 entries"), "{out}");
    assert_eq!(
        xlen(&mut con, dead_letter).await,
        10,
        "a dry run changes nothing"
    );

    // --to a stream in another slot: through the redrive outbox, once each, in order.
    assert_ne!(
        beehive::keys::slot("elsewhere"),
        beehive::keys::slot(dead_letter)
    );
    let out = ok(
        &[
            "redrive",
            dead_letter,
            "--to",
            "elsewhere",
            "--filter",
            "reason=asked to dead-letter",
        ],
        &config,
    );
    assert!(out.contains("redrove 5 entries"), "{out}");
    let moved = entries(&mut con, "elsewhere").await;
    let ns: Vec<&str> = moved.iter().map(|(_, f)| field(f, "n").unwrap()).collect();
    assert_eq!(
        ns,
        ["1", "3", "5", "7", "9"],
        "once each, in dead-letter order"
    );
    for (id, fields) in &moved {
        assert_eq!(field(fields, "fail"), Some("dead"), "{id}");
        assert_eq!(field(fields, "beehive.redrives"), Some("1"), "{id}");
        assert!(
            fields
                .iter()
                .all(|(k, _)| k == "beehive.redrives" || !k.starts_with("beehive.")),
            "dead-letter fields are stripped: {fields:?}"
        );
    }
    for (_, fields) in raw_entries(&mut con, "elsewhere").await {
        let get = |k: &[u8]| {
            fields
                .iter()
                .find(|(fk, _)| fk == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let n = String::from_utf8(get(b"n")).unwrap();
        assert_eq!(get(b"s"), bodies[&n], "the body of {n} byte for byte");
    }
    assert_eq!(
        xlen(&mut con, &beehive::keys::redrive_outbox(dead_letter, true)).await,
        0,
        "the redrive outbox is empty"
    );
    assert_eq!(
        column(&mut con, dead_letter, "n").await,
        ["0", "2", "4", "6", "8"]
    );

    // Back to the origin stream, once the group may publish where those events echo to.
    let config = echo_config(
        &dir,
        &cluster,
        "\"{orders}-echoed\", \"{orders}-audit\", elsewhere",
        settings,
    );
    let out = ok(
        &["redrive", dead_letter, "--filter", "reason=publish refused"],
        &config,
    );
    assert!(out.contains("redrove 5 entries"), "{out}");
    assert_eq!(xlen(&mut con, dead_letter).await, 0);
    let back = entries(&mut con, "{orders}-created").await;
    assert_eq!(back.len(), 15);
    let redriven: Vec<&str> = back[10..]
        .iter()
        .map(|(_, f)| field(f, "n").unwrap())
        .collect();
    assert_eq!(redriven, ["0", "2", "4", "6", "8"]);
    assert!(
        back[10..]
            .iter()
            .all(|(_, f)| field(f, "beehive.redrives") == Some("1"))
    );
    drain(&config);
    let audited = entries(&mut con, "{orders}-audit").await;
    let ns: Vec<&str> = audited
        .iter()
        .map(|(_, f)| field(f, "n").unwrap())
        .collect();
    assert_eq!(
        ns,
        ["0", "2", "4", "6", "8"],
        "each redriven event handled once"
    );
    let of: Vec<&str> = audited
        .iter()
        .map(|(_, f)| field(f, "echo-of").unwrap())
        .collect();
    let new_ids: Vec<&str> = back[10..].iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(of, new_ids, "handled under their new IDs");
    assert!(of.iter().all(|id| !published.iter().any(|p| p == id)));
    assert_eq!(pending(&mut con, "{orders}-created", "echoes").await, 0);
    assert_eq!(xlen(&mut con, dead_letter).await, 0);
}

/// The digests the hosts running `handlers` advertise (sorted), and the deployed one, from
/// `beehive status --json`.
fn rollout(config: &Path) -> (Vec<String>, Option<String>) {
    let (_, out, _) = run_beehive(
        &["status", "--json", "-c", config.to_str().unwrap()],
        Duration::from_secs(30),
    );
    let status: Value = serde_json::from_str(&out).unwrap_or_default();
    let group = status["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == "{orders}-events")
        .flat_map(|s| s["groups"].as_array().cloned().unwrap_or_default())
        .find(|g| g["name"] == "handlers")
        .unwrap_or_default();
    let mut hosts: Vec<String> = group["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h["digest"].as_str().unwrap_or("").to_string())
        .collect();
    hosts.sort();
    (hosts, group["deployed"].as_str().map(String::from))
}

/// `(of, version)` of every receipt, in stream order.
async fn versions(con: &mut ClusterConnection) -> Vec<(String, String)> {
    receipt_versions(entries(con, "receipts").await)
}

/// The versions of the receipts in commit order, runs of one version collapsed.
fn version_runs(receipts: &[(String, String)]) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    for (_, version) in receipts {
        if runs.last() != Some(version) {
            runs.push(version.clone());
        }
    }
    runs
}

/// (This test found that `deploy` and `rollback` failed on a cluster with CROSSSLOT: the
/// deploy channel's `PUBLISH` was in the records' transaction; it now follows it.)
///
/// Hot reload on a cluster pool while events flow: a new file renamed over the configured one
/// (v1 to v2), `beehive deploy` (v3, stored under keys in the group's slot, also run by a
/// host started later) and `beehive rollback` (withdrawn: both hosts return to the file,
/// v2). Every event has exactly one receipt, and in commit order the versions go v1, v2,
/// v3, v2 without interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_reload_deploy_and_rollback_on_a_cluster_swap_without_losing_events() {
    let (v1, v2, v3) = (
        hostile_version("v1"),
        hostile_version("v2"),
        hostile_version("v3"),
    );
    let (d1, d2, d3) = (sha256(&v1), sha256(&v2), sha256(&v3));
    let cluster = cluster();
    let dir = TempDir::new();
    let live = dir.path().join("handler.wasm");
    std::fs::copy(&v1, &live).unwrap();
    let config = dir.write(
        "beehive.yaml",
        &format!(
            "orders:
  cluster: [{}]
  streams:
    \"{{orders}}-events\": [handlers]
    receipts: [auditors]
consumers:
  handlers:
    component: {}
    publish: [receipts]
    count: 20
    block: 100ms
    lock-ttl: 2s
",
            cluster.seeds().join(", "),
            live.display()
        ),
    );
    let engine = engine(
        &cluster,
        &[
            ("{orders}-events", &["handlers"]),
            ("receipts", &["auditors"]),
        ],
    )
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    // A failing assertion stops the publisher before the cluster goes.
    let _stop_on_drop = stop.clone().drop_guard();
    let publisher = beehive_tests::publish_steadily(
        engine.event_broker(),
        "{orders}-events",
        Duration::from_millis(20),
        stop.clone(),
    );
    let mut con = raw(&cluster).await;
    let watcher = con.clone();
    let receipts_of = |version: &'static str| {
        let con = watcher.clone();
        move || {
            let mut con = con.clone();
            async move { versions(&mut con).await.iter().any(|(_, v)| v == version) }
        }
    };
    let mut a = Beehive::run(&config, &[]);
    eventually("the host to run v1", Duration::from_secs(60), || async {
        rollout(&config) == (vec![d1.clone()], None)
    })
    .await;
    eventually("v1 receipts", Duration::from_secs(30), receipts_of("v1")).await;

    // A file reload.
    let staged = dir.path().join("handler.wasm.tmp");
    std::fs::copy(&v2, &staged).unwrap();
    std::fs::rename(&staged, &live).unwrap();
    eventually(
        "the host to run v2 from its file",
        Duration::from_secs(60),
        || async { rollout(&config) == (vec![d2.clone()], None) },
    )
    .await;
    eventually("v2 receipts", Duration::from_secs(30), receipts_of("v2")).await;

    // A fleet deploy: its records share the group's slot.
    let out = ok(&["deploy", "handlers", v3.to_str().unwrap()], &config);
    assert!(out.contains(&d3), "{out}");
    let component_key = beehive::keys::component_key_in(Some("orders"), "handlers");
    let bytes_key = beehive::keys::component_bytes_key_in(Some("orders"), &d3);
    for key in [&component_key, &bytes_key] {
        assert_eq!(
            beehive::keys::slot(key),
            beehive::keys::slot("{orders}-events"),
            "{key}"
        );
    }
    let current: Option<String> = redis::cmd("HGET")
        .arg(&component_key)
        .arg("current")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(current.as_deref(), Some(d3.as_str()));
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&bytes_key)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(stored, std::fs::read(&v3).unwrap(), "the deployed bytes");
    eventually(
        "the host to run the deployed v3",
        Duration::from_secs(60),
        || async { rollout(&config) == (vec![d3.clone()], Some(d3.clone())) },
    )
    .await;
    eventually("v3 receipts", Duration::from_secs(30), receipts_of("v3")).await;
    // A host started after the deploy runs the deployed version, not its file.
    let mut b = Beehive::run(&config, &[]);
    eventually(
        "the late host to run v3",
        Duration::from_secs(60),
        || async { rollout(&config) == (vec![d3.clone(), d3.clone()], Some(d3.clone())) },
    )
    .await;

    // Rollback of a first deploy withdraws it: both hosts return to their file (v2).
    let out = ok(&["rollback", "handlers"], &config);
    assert!(out.contains("withdrew"), "{out}");
    eventually(
        "both hosts back on the file's v2",
        Duration::from_secs(60),
        || async { rollout(&config) == (vec![d2.clone(), d2.clone()], None) },
    )
    .await;
    eventually("v2 receipts after v3", Duration::from_secs(30), || {
        let mut con = con.clone();
        async move { version_runs(&versions(&mut con).await).len() >= 4 }
    })
    .await;

    stop.cancel();
    let mut ids = publisher.await.unwrap();
    eventually("every event handled", Duration::from_secs(60), || {
        let (mut con, n) = (con.clone(), ids.len());
        async move {
            xlen(&mut con, "receipts").await >= n as u64
                && pending(&mut con, "{orders}-events", "handlers").await == 0
        }
    })
    .await;
    assert!(a.is_running() && b.is_running(), "{}", a.log_text());
    let receipts = versions(&mut con).await;
    assert_eq!(
        version_runs(&receipts),
        ["v1", "v2", "v3", "v2"],
        "versions interleave"
    );
    let mut of: Vec<String> = receipts.into_iter().map(|(id, _)| id).collect();
    of.sort();
    ids.sort();
    assert_eq!(
        of, ids,
        "every event exactly once across reload, deploy and rollback"
    );
}

/// `CLIENT KILL TYPE normal` on every node: the number of connections killed there.
async fn kill_normal_clients(cluster: &RedisCluster) -> u64 {
    let mut killed = 0;
    for seed in cluster.seeds() {
        let mut node = redis::Client::open(format!("redis://{seed}/"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a node");
        let n: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut node)
            .await
            .expect("CLIENT KILL");
        killed += n;
    }
    killed
}

/// XADDs events numbered `first..first + n` to `{orders}-created`, echoed alternately to
/// the group's slot and to another slot. On an error (our connection killed too) the batch
/// is sent again: some of its events may then be in the stream twice, each under its own
/// ID, and each entry must still be echoed once.
async fn publish_batch(con: &mut ClusterConnection, first: usize, n: usize) {
    let pipe = echo_inputs(first, n);
    for attempt in 0.. {
        match pipe.query_async::<Vec<String>>(con).await {
            Ok(_) => return,
            Err(e) => {
                assert!(attempt < 50, "the cluster refuses events: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The `echo-of` of every echo in both targets: the input entry IDs the host handled.
async fn echoed_ids(con: &mut ClusterConnection) -> Vec<String> {
    let mut of = column(con, "{orders}-echoed", "echo-of").await;
    of.extend(column(con, "elsewhere", "echo-of").await);
    of.sort();
    of
}

/// (This test found batches committed twice: the cluster client resends a request whose
/// connection dropped even when Redis ran it. A consumer's commits on a cluster carry a
/// mark, `beehive:commit-mark:<lock>`, that makes a resent commit a no-op.)
///
/// Every normal connection on every node killed 6 times while 3,000 events flow (half
/// echoed in the input's slot, half to another slot through the outbox): the host stays
/// up, reconnects, and every input entry is echoed exactly once; nothing is
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_on_every_node_under_flow_neither_loses_nor_duplicates_an_echo() {
    const EVENTS: usize = 3_000;
    const TICKS: usize = 60;
    const KILLS: usize = 6;
    let mut rng = beehive_tests::Rng::from_clock("cluster client kill");
    let seed = rng.seed();
    let cluster = cluster();
    let dir = TempDir::new();
    let config = echo_config(
        &dir,
        &cluster,
        "\"{orders}-echoed\", elsewhere",
        "    count: 50\n    instances: 2\n    block: 100ms\n    min-idle: 3s\n    lock-ttl: 2s\n    limits: { timeout: 1s }\n",
    );
    let mut host = Beehive::run(&config, &["--no-watch", "--gc-interval", "1h"]);
    let mut con = raw(&cluster).await;
    publish_batch(&mut con, 0, 10).await;
    eventually("the host to echo", Duration::from_secs(30), || {
        let mut con = con.clone();
        async move { echoed_ids(&mut con).await.len() >= 10 }
    })
    .await;
    let segment = TICKS / KILLS;
    let kill_ticks: Vec<usize> = (0..KILLS)
        .map(|k| k * segment + rng.below(segment as u64) as usize)
        .collect();
    let per_tick = EVENTS / TICKS;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for t in 0..TICKS {
        tick.tick().await;
        publish_batch(&mut con, 10 + t * per_tick, per_tick).await;
        if kill_ticks.contains(&t) {
            let killed = kill_normal_clients(&cluster).await;
            assert!(killed > 0, "the host's connections were there to kill");
        }
    }
    // One more after the last publish, then a few events that must still get through.
    kill_normal_clients(&cluster).await;
    publish_batch(&mut con, 10 + EVENTS, 10).await;
    let inputs = || {
        let con = con.clone();
        async move {
            let mut con = con;
            let mut ids: Vec<String> = entries(&mut con, "{orders}-created")
                .await
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            ids.sort();
            ids
        }
    };
    eventually("every input echoed", Duration::from_secs(90), || {
        let mut con = con.clone();
        let inputs = inputs();
        async move {
            let inputs = inputs.await;
            let echoed = echoed_ids(&mut con).await;
            inputs.iter().all(|id| echoed.binary_search(id).is_ok())
        }
    })
    .await;
    assert!(host.is_running(), "the host stays up:\n{}", host.log_text());
    let inputs = inputs().await;
    let srcs: std::collections::BTreeSet<String> = column(&mut con, "{orders}-created", "src")
        .await
        .into_iter()
        .collect();
    let missing: Vec<usize> = (0..EVENTS + 20)
        .filter(|n| !srcs.contains(&n.to_string()))
        .collect();
    assert!(
        missing.is_empty(),
        "published but not in the stream: {missing:?}"
    );
    let echoed = echoed_ids(&mut con).await;
    let mut seen = BTreeMap::<&str, usize>::new();
    for id in &echoed {
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<&str> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    if !twice.is_empty() {
        let mut where_ = Vec::new();
        for stream in ["{orders}-echoed", "elsewhere"] {
            for (id, fields) in entries(&mut con, stream).await {
                if twice.contains(&field(&fields, "echo-of").unwrap()) {
                    where_.push(format!("{stream} {id} {fields:?}"));
                }
            }
        }
        panic!(
            "{} inputs echoed more than once: {twice:?}\n{}\nseed {seed}\n{}",
            twice.len(),
            where_.join("\n"),
            host.log_text()
        );
    }
    assert_eq!(echoed, inputs, "one echo per input entry; seed {seed}");
    assert_eq!(xlen(&mut con, "{orders}echoes-dead-letter").await, 0);
    assert_eq!(pending(&mut con, "{orders}-created", "echoes").await, 0);
    assert_eq!(xlen(&mut con, "beehive:outbox:{orders}echoes").await, 0);
    host.signal("TERM");
    assert_eq!(
        host.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        host.log_text()
    );
}
