//! Operator subcommands against PostgreSQL exit cleanly, every time. libpq uses OpenSSL, whose
//! clean-up at process exit once crashed `pilot-server migrate` (SIGSEGV, in about 2 to 8 runs
//! of 25) while a pool thread was still opening a connection: the binary now stops new
//! connections and waits for the last one to close before it returns from `main`. This test
//! runs the subcommands in a loop and requires exit status 0 each time.

use std::process::{Command, Output};

use pilot_storage::Keyring;
use pilot_storage::testing::TestDb;

/// Runs `pilot-server` with `args` against `url` (the database's owner, so it may migrate).
fn pilot_server(url: &str, key: &str, dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pilot-server"))
        .env_clear()
        .env("PILOT_DATABASE_URL", url)
        .env("PILOT_MASTER_KEY", key)
        .env("PILOT_DATA_DIR", dir)
        .env("PILOT_LOG", "warn")
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subcommands_exit_with_status_zero_every_time_on_postgresql() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    let url = t.owner_url().unwrap().to_owned();
    let key = Keyring::generate_key_base64().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runs = 50;
    for i in 0..runs {
        let name = format!("user{i}");
        let commands: [&[&str]; 3] = [
            &["migrate"],
            &["users", "create", &name],
            &["logs", "prune", "--older-than", "3650d"],
        ];
        // Every run migrates; the others take turns.
        for args in [commands[0], commands[1 + i % 2]] {
            let out = tokio::task::block_in_place(|| pilot_server(&url, &key, dir.path(), args));
            assert!(
                out.status.success(),
                "run {i}: pilot-server {} exited with {:?} (signal {:?})\nstderr: {}",
                args.join(" "),
                out.status.code(),
                std::os::unix::process::ExitStatusExt::signal(&out.status),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
