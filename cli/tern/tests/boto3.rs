//! boto3 (the Python SDK, as applications use it) and the AWS CLI against `tern up`: every
//! operation once through `tests/boto3/smoke.py`, the README's CLI commands as written, and a
//! wrong secret refused. `scripts/install-deps --test` installs boto3 and the CLI.

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

    // The README's AWS CLI commands, as written (the endpoint's port aside).
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let start = readme
        .find("```sh\npip install awscli\n")
        .expect("the README's AWS CLI block");
    let block = &readme[start + "```sh\n".len()..];
    let block = &block[..block.find("```").unwrap()];
    let script = block
        .lines()
        .filter(|l| !l.starts_with("pip install"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"));
    let script =
        format!("command -v aws >/dev/null || aws() {{ python3 -m awscli \"$@\"; }}\n{script}\n");
    let out = run("bash", &["-euo", "pipefail", "-c", &script]).await;
    assert!(out.0, "README commands failed:\n{}\n{}", out.1, out.2);
    assert!(out.1.contains("Sinnerman"), "get-item printed: {}", out.1);

    // A wrong secret is refused through boto3 as DynamoDB refuses it.
    let probe = format!(
        r#"
import boto3, botocore
c = boto3.client("dynamodb", endpoint_url="http://127.0.0.1:{port}", region_name="us-east-1",
                 aws_access_key_id="tern", aws_secret_access_key="wrong",
                 config=botocore.config.Config(retries={{"max_attempts": 1}}))
try:
    c.list_tables()
    print("accepted")
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
"#
    );
    let out = run("python3", &["-c", &probe]).await;
    assert_eq!(out.1.trim(), "InvalidSignatureException", "{}", out.2);
}

/// Runs a command to its end: (success, stdout, stderr).
async fn run(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let (cmd, args) = (
        cmd.to_string(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(&cmd)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    })
    .await
    .unwrap()
}
