//! A store file that cannot be read never crashes the store or opens
//! empty, and is never written to; a file left by an unclean shutdown
//! opens with everything committed. Real redb files in a temp dir.

use std::path::{Path, PathBuf};

use baton_policy::HealthReport;
use baton_store::{EmbeddedStore, Integrity, Store, check};
use baton_test_support::TempDir;

/// Health reports written to a good file: enough to span many 64 KiB blocks.
const BOTS: usize = 3000;

fn health(i: usize) -> HealthReport {
    HealthReport {
        bot: format!("bot-{i:05}-{}", "x".repeat(64)),
        window_ms: 60_000,
        sample_count: i as u64,
        p50_ms: 10.0,
        p95_ms: 50.0,
        p99_ms: 90.0,
        error_rate: 0.01,
        observed_at: 1_700_000_000_000,
        received_at: 1_700_000_000_000,
    }
}

fn store_file(dir: &Path) -> PathBuf {
    dir.join("baton.redb")
}

/// Writes `BOTS` health reports through the store, concurrently so they
/// share group commits.
async fn fill(store: &std::sync::Arc<EmbeddedStore>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..BOTS {
        let store = std::sync::Arc::clone(store);
        tasks.spawn(async move { store.put_health(&health(i)).await });
    }
    while let Some(put) = tasks.join_next().await {
        put.expect("put task").expect("put_health");
    }
}

/// A data dir whose store holds `BOTS` reports, closed cleanly.
async fn good_store(label: &str) -> TempDir {
    let dir = TempDir::new(label);
    let store = std::sync::Arc::new(EmbeddedStore::open(dir.path()).expect("open new store"));
    fill(&store).await;
    store.close().await.expect("close");
    drop(store);
    dir
}

/// A deterministic xorshift stream.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// Opening is refused with an error naming the file, and the file is
/// byte-identical afterwards.
fn assert_refused(dir: &Path, expect: &str) -> String {
    let path = store_file(dir);
    let before = std::fs::read(&path).expect("read store file");
    let err = match EmbeddedStore::open(dir) {
        Ok(_) => panic!("a damaged store file opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&path.display().to_string()),
        "error does not name the file: {err}"
    );
    assert!(err.contains(expect), "error does not say '{expect}': {err}");
    let after = std::fs::read(&path).expect("read store file");
    assert_eq!(before.len(), after.len(), "the refused file changed length");
    assert!(before == after, "the refused file was written to");
    err
}

#[tokio::test]
async fn an_empty_file_is_refused_not_started_empty_over() {
    let dir = TempDir::new("corrupt-empty");
    std::fs::write(store_file(dir.path()), b"").unwrap();
    let err = assert_refused(dir.path(), "is empty");
    assert!(err.contains("holds no data"), "{err}");
    assert!(err.contains("move it away"), "{err}");

    // Shorter than redb's header: no data either.
    std::fs::write(store_file(dir.path()), noise(100, 7)).unwrap();
    assert_refused(dir.path(), "holds no data");

    let report = check(dir.path(), false).unwrap();
    assert!(!report.readable());
    assert_eq!(report.bytes, 100);
}

#[tokio::test]
async fn random_bytes_in_the_middle_are_refused_without_a_panic() {
    let dir = good_store("corrupt-middle").await;
    let path = store_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle - 32 * 1024..middle + 32 * 1024].copy_from_slice(&noise(64 * 1024, 42));
    std::fs::write(&path, &bytes).unwrap();

    assert_refused(dir.path(), "baton-router check --data-dir");
}

#[tokio::test]
async fn a_byte_flipped_every_64_kib_is_refused_without_a_panic() {
    let dir = good_store("corrupt-flips").await;
    let path = store_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(
        bytes.len() > 16 * 64 * 1024,
        "file too small: {}",
        bytes.len()
    );
    // From the second block on: the header stays intact, the pages do not.
    for at in (64 * 1024..bytes.len()).step_by(64 * 1024) {
        bytes[at] ^= 0xff;
    }
    std::fs::write(&path, &bytes).unwrap();

    assert_refused(dir.path(), "baton-router check --data-dir");
}

#[tokio::test]
async fn a_file_that_is_not_redb_is_refused() {
    let dir = TempDir::new("corrupt-foreign");
    std::fs::write(store_file(dir.path()), noise(256 * 1024, 3)).unwrap();
    assert_refused(dir.path(), "baton-router check --data-dir");
}

#[tokio::test]
async fn a_file_left_by_an_unclean_shutdown_opens_with_every_commit() {
    let dir = TempDir::new("corrupt-crash");
    let crashed = TempDir::new("corrupt-crash-copy");
    // No checkpoint while it runs: everything written is in the journal.
    let options = baton_store::EmbeddedOptions {
        checkpoints: baton_store::Checkpoints {
            every: std::time::Duration::from_secs(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let store = std::sync::Arc::new(EmbeddedStore::open_with(dir.path(), options).unwrap());
    fill(&store).await;
    // What `kill -9` leaves: the file and its journal as they are while the
    // store has them open.
    for name in ["baton.redb", "baton.journal.0", "baton.journal.1"] {
        std::fs::copy(dir.path().join(name), crashed.path().join(name)).unwrap();
    }
    drop(store);

    let report = check(crashed.path(), false).unwrap();
    assert!(report.readable(), "{report}");
    assert!(report.needed_repair, "{report}");
    let pending = *report.journal.as_ref().unwrap();
    assert!(pending > 0, "{report}");
    // Rows as the router serves them: the journal replayed over the file.
    let rows = report.tables.iter().find(|(name, _)| *name == "health");
    assert_eq!(rows, Some(&("health", Ok(BOTS as u64))), "{report}");
    let store = EmbeddedStore::open(crashed.path()).expect("open after an unclean shutdown");
    assert_eq!(store.replayed(), pending);
    let mut bots: Vec<String> = store
        .health_reports()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.bot)
        .collect();
    bots.sort();
    let expected: Vec<String> = (0..BOTS).map(|i| health(i).bot).collect();
    assert_eq!(bots, expected);
}

#[tokio::test]
async fn check_reports_on_a_good_file_and_a_bad_one() {
    let dir = good_store("corrupt-check").await;
    let path = store_file(dir.path());
    let report = check(dir.path(), false).unwrap();
    assert!(report.readable(), "{report}");
    assert_eq!(report.path, path);
    assert_eq!(report.bytes, std::fs::metadata(&path).unwrap().len());
    assert!(report.opened);
    assert!(!report.needed_repair);
    assert_eq!(report.integrity, Integrity::Intact);
    let health = report.tables.iter().find(|(name, _)| *name == "health");
    assert_eq!(health, Some(&("health", Ok(BOTS as u64))));
    let contacts = report.tables.iter().find(|(name, _)| *name == "contacts");
    assert_eq!(contacts, Some(&("contacts", Ok(0))));
    let text = report.to_string();
    assert!(text.contains("integrity: intact"), "{text}");
    assert!(text.contains(&format!("health: {BOTS}")), "{text}");

    let mut bytes = std::fs::read(&path).unwrap();
    for at in (64 * 1024..bytes.len()).step_by(64 * 1024) {
        bytes[at] ^= 0xff;
    }
    std::fs::write(&path, &bytes).unwrap();
    // redb cannot repair this: `--repair` leaves it as it is, with no copy.
    for repair in [false, true] {
        let report = check(dir.path(), repair).unwrap();
        assert!(!report.readable(), "{report}");
        assert!(
            matches!(report.integrity, Integrity::Damaged(_)),
            "{report}"
        );
        assert!(report.to_string().contains("damaged"), "{report}");
        assert_eq!(report.backup, None);
        assert!(
            std::fs::read(&path).unwrap() == bytes,
            "check changed the file"
        );
    }
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["baton.journal.0", "baton.journal.1", "baton.redb"],
        "check left files beside the store"
    );
}
