//! A store file that cannot be read stops the router at start, with an
//! error naming the file, and is left exactly as it was; `baton-router
//! check` tells a good file from a bad one. A file left by `kill -9` is not
//! bad: it is checked, and served, as usual.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use baton_proto::v1::{Decision, GetContactRequest, Signal};
use baton_test_support::{Router, TempDir};

use crate::{decision, request, router, router_bin};

/// Approvals written to the store before it is damaged: enough that its
/// pages span many 64 KiB blocks.
const CONTACTS: usize = 600;

fn handoff_to_seller(contact: &str) -> baton_proto::v1::RequestHandoffRequest {
    let mut req = request(contact, "lead", "quick question about selling my house");
    req.request_id = format!("{contact}-r");
    req.signals = vec![Signal {
        target_bot: "seller".into(),
        confidence: 0.95,
        pattern: "sell".into(),
    }];
    req
}

/// Approves `contacts` new contacts through `router`, 8 clients at a time.
async fn approve(router: &Router, contacts: usize) {
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8 {
        let mut handoff = router.handoff().await;
        clients.spawn(async move {
            for i in (client..contacts).step_by(8) {
                let reply = handoff
                    .request_handoff(handoff_to_seller(&format!("c-{i}")))
                    .await
                    .expect("RequestHandoff")
                    .into_inner();
                assert_eq!(decision(&reply), Decision::Approved, "{}", reply.reason);
            }
        });
    }
    while let Some(client) = clients.join_next().await {
        client.expect("client task");
    }
}

/// The store file of a router that approved `CONTACTS` contacts and was
/// stopped cleanly.
async fn written_store() -> Vec<u8> {
    let mut router = router(&[]).await;
    approve(&router, CONTACTS).await;
    router.process().signal("TERM").expect("SIGTERM");
    let status = router.process().wait(Duration::from_secs(15)).await;
    assert!(status.success(), "router stopped with {status}");
    std::fs::read(router.data.path().join("baton.redb")).expect("read store file")
}

/// Runs the router binary with `args`; it must exit within 15 s.
async fn run(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(router_bin());
    cmd.args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("RUST_LIB_BACKTRACE")
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(15), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("baton-router {args:?} still running after 15s"))
        .expect("run baton-router")
}

fn data_dir_with(bytes: &[u8]) -> (TempDir, PathBuf) {
    let dir = TempDir::new("corrupt-store");
    let file = dir.path().join("baton.redb");
    std::fs::write(&file, bytes).expect("write store file");
    (dir, file)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_stops_the_router_and_is_left_as_it_was() {
    let good = written_store().await;
    assert!(good.len() > 8 * 64 * 1024, "store of {} bytes", good.len());

    let mut middle = good.clone();
    let at = middle.len() / 2 - 32 * 1024;
    middle[at..at + 64 * 1024].copy_from_slice(&noise(64 * 1024, 42));
    let mut flipped = good.clone();
    for at in (64 * 1024..flipped.len()).step_by(64 * 1024) {
        flipped[at] ^= 0xff;
    }
    let damaged = [
        ("random bytes in the middle", middle),
        ("a byte flipped every 64 KiB", flipped),
        ("truncated to 0 bytes", Vec::new()),
    ];
    for (damage, bytes) in damaged {
        let (dir, file) = data_dir_with(&bytes);
        let data_dir = dir.path().display().to_string();
        let named = file.display().to_string();

        let started = std::time::Instant::now();
        let out = run(&["--data-dir", &data_dir, "--listen", "127.0.0.1:0"]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{damage}: router served: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{damage}: took {:?}",
            started.elapsed()
        );
        assert!(
            stderr.contains(&named),
            "{damage}: file not named: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{damage}: {stderr}");
        assert!(
            std::fs::read(&file).unwrap() == bytes,
            "{damage}: the file was changed"
        );

        let out = run(&["check", "--data-dir", &data_dir]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{damage}: {stdout}");
        assert!(stdout.contains(&named), "{damage}: {stdout}");
        assert!(stdout.contains("integrity: damaged"), "{damage}: {stdout}");
        assert!(
            std::fs::read(&file).unwrap() == bytes,
            "{damage}: check changed the file"
        );
    }

    let (dir, _) = data_dir_with(&good);
    let out = run(&["check", "--data-dir", &dir.path().display().to_string()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("integrity: intact"), "{stdout}");
    assert!(
        stdout.contains(&format!("contacts: {CONTACTS}")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_left_by_kill_9_checks_good_and_serves_everything() {
    let mut router = router(&[]).await;
    approve(&router, 20).await;
    router.kill();
    let data_dir = router.data.path().display().to_string();

    let out = run(&["check", "--data-dir", &data_dir]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("shutdown: not clean"), "{stdout}");
    assert!(stdout.contains("contacts: 20"), "{stdout}");

    router.restart().await.expect("restart after kill -9");
    let mut admin = router.admin().await;
    for i in 0..20 {
        let contact = admin
            .get_contact(GetContactRequest {
                contact_id: format!("c-{i}"),
            })
            .await
            .unwrap_or_else(|e| panic!("c-{i} lost: {e}"))
            .into_inner();
        assert_eq!(contact.owner, "seller");
    }
    assert_clean_after_term(&mut router, Path::new(&data_dir)).await;
}

/// After SIGTERM the file is shut down cleanly, and checks intact.
async fn assert_clean_after_term(router: &mut Router, data_dir: &Path) {
    router.process().signal("TERM").expect("SIGTERM");
    let status = router.process().wait(Duration::from_secs(15)).await;
    assert!(status.success(), "router stopped with {status}");
    let out = run(&["check", "--data-dir", &data_dir.display().to_string()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("not clean"), "{stdout}");
    assert!(stdout.contains("contacts: 20"), "{stdout}");
}

/// Offsets of the records in a journal file: they start one page in, each
/// a 16-byte head (payload length first) and its payload.
fn journal_records(bytes: &[u8]) -> Vec<usize> {
    let mut at = 4096;
    let mut records = Vec::new();
    while let Some(head) = bytes.get(at..at + 16) {
        let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
        if len == 0 || at + 16 + len > bytes.len() {
            break;
        }
        records.push(at);
        at += 16 + len;
    }
    records
}

/// A journal damaged before its last record stops the router, naming the
/// file and leaving it as it was; `check` says so, and `check --repair`
/// keeps a copy and cuts it at the damage, so the router starts with
/// every whole contact before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_stops_the_router_until_check_repairs_it() {
    // No checkpoint during the test: every approval is in the journal only.
    let mut router = router(&["--set", "store.checkpoint_every=10m"]).await;
    approve(&router, 40).await;
    router.kill();
    let data_dir = router.data.path().display().to_string();
    let journal = router.data.path().join("baton.journal.0");
    let mut bytes = std::fs::read(&journal).expect("read journal");
    let records = journal_records(&bytes);
    assert!(records.len() >= 4, "{} records", records.len());
    let damaged_at = records[records.len() / 2];
    bytes[damaged_at + 16 + 3] ^= 0xff;
    std::fs::write(&journal, &bytes).expect("write journal");
    let named = journal.display().to_string();

    let out = run(&["--data-dir", &data_dir, "--listen", "127.0.0.1:0"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "router served: {stderr}");
    assert!(
        stderr.contains(&format!("{named} is damaged at byte {damaged_at}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(std::fs::read(&journal).unwrap() == bytes, "journal changed");

    let out = run(&["check", "--data-dir", &data_dir]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("journal: unreadable"), "{stdout}");
    assert!(
        std::fs::read(&journal).unwrap() == bytes,
        "check changed it"
    );

    let out = run(&["check", "--data-dir", &data_dir, "--repair"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("backup of a journal file before repair"),
        "{stdout}"
    );

    router.restart().await.expect("start after the repair");
    let mut admin = router.admin().await;
    let mut found = 0;
    for i in 0..40 {
        let reply = admin
            .get_contact(GetContactRequest {
                contact_id: format!("c-{i}"),
            })
            .await;
        match reply {
            Ok(contact) => {
                assert_eq!(contact.into_inner().owner, "seller", "c-{i}");
                found += 1;
            }
            Err(status) => assert_eq!(status.code(), tonic::Code::NotFound, "c-{i}"),
        }
    }
    // The records before the damage are replayed, the rest are not.
    assert!((1..40).contains(&found), "{found} of 40 contacts");
}
