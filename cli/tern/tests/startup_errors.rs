//! What a newcomer sees when something is missing or misconfigured: one clear line, no panic.

mod common;

use std::process::Command;

use common::bin_dir;

#[test]
fn invalid_configuration_names_the_key() {
    let out = Command::new(bin_dir().join("tern-router"))
        .env("TERN_ROUTER_CACHE_MODE", "sometimes")
        .output()
        .expect("run tern-router");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid router configuration"), "{stderr}");
    assert!(
        stderr.contains("cache_mode"),
        "the error should name the key: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = Command::new(bin_dir().join("tern-storage"))
        .env("TERN_STORAGE_MAX_BATCH", "lots")
        .output()
        .expect("run tern-storage");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("max_batch"),
        "{stderr}"
    );
}

#[test]
fn missing_nats_server_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin_dir().join("tern"))
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .env("PATH", dir.path())
        .env_remove("TERN_NATS_SERVER")
        .output()
        .expect("run tern up");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nats-server not found"), "{stderr}");
    assert!(stderr.contains("apt-get install nats-server"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
