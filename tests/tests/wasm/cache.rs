//! The compiled-component cache: native code is loaded only from a folder owned by this
//! user and writable by nobody else, and only from artifacts owned by this user and not
//! writable by group or others.
//!
//! Each test plants the router's compiled artifact under the name of the echo's, then loads
//! the echo: an event the echo acknowledges and the router dead-letters (a body that is
//! not a colour) tells which native code ran.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use beehive::consumer::{BatchHandler, Outcome};
use beehive::event::{EntryId, Event};
use beehive::runtime::{Component, GuestSettings, WasmEngine, WasmHandler};
use beehive_tests::{TempDir, beehive_bin, component, redis};

const ECHO: &str = "beehive-example-echo";
const ROUTER: &str = "beehive-example-router";

/// Loads `package` with `dir` as the cache folder.
fn load(dir: &Path, package: &str) -> Component {
    WasmEngine::new()
        .unwrap()
        .with_cache_dir(Some(dir.to_path_buf()))
        .load_file(&component(package))
        .unwrap()
}

/// What the component's native code does with an event whose body is not a colour: the
/// echo acknowledges it, the router dead-letters it.
async fn outcome(component: Component) -> Outcome {
    let body = rmp_serde::to_vec("not a colour").unwrap();
    let event = Event::new("events", EntryId { ms: 1, seq: 0 }, Some(body), Vec::new());
    let mut handler = WasmHandler::new(component, GuestSettings::default(), "cache-test");
    let mut decision = handler.handle(std::slice::from_ref(&event)).await.unwrap();
    assert_eq!(decision.outcomes.len(), 1);
    decision.outcomes.remove(0)
}

fn is_echo(outcome: &Outcome) -> bool {
    *outcome == Outcome::Ack
}

fn is_router(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::DeadLetter(reason) if reason.contains("cannot decode v1 body"))
}

/// The files of `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The artifact `package` compiles to: its file name in a cache folder and its bytes
/// (compiled once per test process).
fn artifact(package: &str) -> (String, Vec<u8>) {
    static BUILT: Mutex<BTreeMap<String, (String, Vec<u8>)>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(artifact) = built.get(package) {
        return artifact.clone();
    }
    let tmp = TempDir::new();
    let dir = tmp.path().join("cache");
    load(&dir, package);
    let files = files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let artifact = (name, std::fs::read(&files[0]).unwrap());
    built.insert(package.to_string(), artifact.clone());
    artifact
}

/// A cache folder with `mode` holding the router's artifact under the echo's name (mode
/// 0600); returns the planted file's path.
fn planted(tmp: &TempDir, folder_mode: u32) -> PathBuf {
    let (echo_name, _) = artifact(ECHO);
    let (_, router_bytes) = artifact(ROUTER);
    let dir = tmp.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join(echo_name);
    std::fs::write(&path, &router_bytes).unwrap();
    chmod(&path, 0o600);
    chmod(&dir, folder_mode);
    path
}

#[tokio::test]
async fn the_cache_folder_is_created_private_and_artifacts_are_written_0600() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("cache").join("beehive");
    assert!(is_echo(&outcome(load(&dir, ECHO)).await));
    assert_eq!(mode(&dir), 0o700);
    let files = files(&dir);
    assert_eq!(
        files.len(),
        1,
        "one artifact, no temporary file left: {files:?}"
    );
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with(".cwasm") && !name.starts_with('.'), "{name}");
    assert_eq!(mode(&files[0]), 0o600);
    // A second engine loads it from the cache, and it is still the echo.
    let written = std::fs::read(&files[0]).unwrap();
    assert!(is_echo(&outcome(load(&dir, ECHO)).await));
    assert_eq!(std::fs::read(&files[0]).unwrap(), written);
}

/// The control for the tests below: in a private folder the cache is trusted, so the
/// planted artifact is what runs. The refusals below are therefore refusals, not misses.
#[tokio::test]
async fn a_private_cache_folder_is_trusted_so_an_artifact_planted_there_would_run() {
    let tmp = TempDir::new();
    planted(&tmp, 0o700);
    let loaded = outcome(load(&tmp.path().join("cache"), ECHO)).await;
    assert!(is_router(&loaded), "{loaded:?}");
}

#[tokio::test]
async fn a_cache_folder_writable_by_group_or_others_is_not_loaded_from() {
    for folder_mode in [0o770, 0o702, 0o1777] {
        let tmp = TempDir::new();
        let path = planted(&tmp, folder_mode);
        let planted_bytes = std::fs::read(&path).unwrap();
        let loaded = outcome(load(path.parent().unwrap(), ECHO)).await;
        assert!(is_echo(&loaded), "mode {folder_mode:o}: {loaded:?}");
        // Nothing is written into a folder that is not trusted either.
        assert_eq!(files(path.parent().unwrap()), std::slice::from_ref(&path));
        assert_eq!(std::fs::read(&path).unwrap(), planted_bytes);
        assert_eq!(mode(path.parent().unwrap()), folder_mode);
    }
}

#[tokio::test]
async fn an_artifact_writable_by_group_or_others_is_refused_and_replaced() {
    let (_, echo_bytes) = artifact(ECHO);
    for artifact_mode in [0o620, 0o606] {
        let tmp = TempDir::new();
        let path = planted(&tmp, 0o700);
        chmod(&path, artifact_mode);
        let loaded = outcome(load(path.parent().unwrap(), ECHO)).await;
        assert!(is_echo(&loaded), "mode {artifact_mode:o}: {loaded:?}");
        // The echo's own artifact took its place, private.
        assert_eq!(files(path.parent().unwrap()), std::slice::from_ref(&path));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), echo_bytes);
    }
}

/// The user this process runs as, from the owner of a file it creates.
fn own_uid(tmp: &TempDir) -> u32 {
    std::fs::metadata(tmp.write("whoami", "")).unwrap().uid()
}

#[tokio::test]
async fn a_cache_folder_or_artifact_of_another_user_is_refused() {
    let tmp = TempDir::new();
    if own_uid(&tmp) != 0 {
        eprintln!("skipped: giving a file to another user needs root");
        return;
    }
    const NOBODY: u32 = 65534;
    // The folder is another user's (and private to them).
    let path = planted(&tmp, 0o700);
    let dir = path.parent().unwrap().to_path_buf();
    std::os::unix::fs::chown(&dir, Some(NOBODY), None).unwrap();
    let loaded = outcome(load(&dir, ECHO)).await;
    assert!(is_echo(&loaded), "{loaded:?}");
    assert_eq!(files(&dir), std::slice::from_ref(&path));
    // The folder is ours, the artifact another user's.
    std::os::unix::fs::chown(&dir, Some(0), None).unwrap();
    std::os::unix::fs::chown(&path, Some(NOBODY), None).unwrap();
    let loaded = outcome(load(&dir, ECHO)).await;
    assert!(is_echo(&loaded), "{loaded:?}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().uid(),
        0,
        "replaced by ours"
    );
}

#[test]
fn a_refused_cache_folder_is_reported_once_per_process() {
    let server = redis();
    let tmp = TempDir::new();
    let dir = tmp.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    let echo = component(ECHO);
    let config = tmp.write(
        "beehive.yaml",
        &format!(
            "default:
  redis: {}:0
  streams:
    events: [first, second]
consumers:
  first:
    component: {echo}
  second:
    component: {echo}
",
            server.address(),
            echo = echo.display()
        ),
    );
    let out = Command::new(beehive_bin())
        .args(["validate", "-c"])
        .arg(&config)
        .env("BEEHIVE_CACHE_DIR", &dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.matches("implements beehive:broker/consumer").count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        stderr
            .matches("not using this folder to cache compiled components")
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("writable by group and others"), "{stderr}");
    assert!(files(&dir).is_empty());
}
