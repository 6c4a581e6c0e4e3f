//! boto3 (the Python SDK, as applications use it) against a real cluster: every operation once,
//! through `tests/boto3/smoke.py`. `scripts/install-deps` installs boto3.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_answers_every_operation() {
    let tc = start_cluster(&[]).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/boto3/smoke.py");
    let endpoint = tc.cluster.endpoint();
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
