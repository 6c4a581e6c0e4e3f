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

    // Auth on (the default) without a key: no start, and the line says what to set.
    let out = Command::new(bin_dir().join("tern-router"))
        .env("TERN_ROUTER_NATS_URL", "nats://127.0.0.1:1")
        .output()
        .expect("run tern-router");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no access keys are configured"),
        "{stderr}"
    );
    let out = Command::new(bin_dir().join("tern-router"))
        .env("TERN_ROUTER_AUTH", "sometimes")
        .output()
        .expect("run tern-router");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("auth"), "{stderr}");

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
    // A copy of `tern` outside the build tree, with an empty PATH: no nats-server anywhere.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("a/b/tern");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(bin_dir().join("tern"), &bin).unwrap();
    let out = Command::new(&bin)
        .args(["up", "--port", "1", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("PATH", dir.path())
        .env_remove("TERN_NATS_SERVER")
        .output()
        .expect("run tern up");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no nats-server 2.10 or newer found"),
        "{stderr}"
    );
    assert!(stderr.contains("scripts/install-deps"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A TERN_NATS_SERVER that names nothing is said so, too.
    let out = Command::new(&bin)
        .args(["up", "--port", "1", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("TERN_NATS_SERVER", dir.path().join("nope"))
        .output()
        .expect("run tern up");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TERN_NATS_SERVER names"), "{stderr}");
}
