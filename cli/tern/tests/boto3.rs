//! boto3 (the Python SDK, as applications use it) against `tern up`: every operation once,
//! through `tests/boto3/smoke.py`. `scripts/install-deps --test` installs boto3.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_answers_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let port = tern_cluster::free_port().unwrap();
    let up = Up::start(dir.path(), port);
    up.wait_printed("endpoint:", std::time::Duration::from_secs(90))
        .await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/boto3/smoke.py");
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(endpoint)
            .output()
            .expect("run python3 (scripts/install-deps installs boto3)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "boto3 smoke failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all operations answered"), "{stdout}");
}
