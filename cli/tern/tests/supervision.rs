//! `tern up` watches its processes: kill -9 of the router, of MemDS, of a storage node and of
//! nats-server is each reported, followed by a restart within 5 s, and the endpoint serves reads
//! and writes again. Runs the real `tern up` command as a child process.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use common::{client, create_table, Up};

fn pid_of(dir: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(dir.join("run").join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// One PutItem and one consistent GetItem of the same item; true if both succeed.
async fn serves(c: &Client, i: u32) -> bool {
    let id = AttributeValue::S(format!("item-{i}"));
    let put = c
        .put_item()
        .table_name("watched")
        .item("pk", id.clone())
        .item("n", AttributeValue::N(i.to_string()))
        .send();
    if !matches!(
        tokio::time::timeout(Duration::from_secs(2), put).await,
        Ok(Ok(_))
    ) {
        return false;
    }
    let get = c
        .get_item()
        .table_name("watched")
        .key("pk", id)
        .consistent_read(true)
        .send();
    match tokio::time::timeout(Duration::from_secs(2), get).await {
        Ok(Ok(out)) => {
            out.item().and_then(|it| it.get("n")) == Some(&AttributeValue::N(i.to_string()))
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_killed_process_is_restarted_and_the_endpoint_serves_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = tern_cluster::free_port().unwrap();
    let up = Up::start(dir.path(), port);
    up.wait_printed("endpoint:", Duration::from_secs(90)).await;
    let c = client(&format!("http://127.0.0.1:{port}"));
    create_table(&c, "watched", None).await;
    assert!(serves(&c, 0).await, "the cluster serves before any kill");
    let mut acked = vec![0];

    let mut i = 1;
    let mut report = Vec::new();
    for name in ["router", "memds", "storage-a", "nats-server"] {
        let old = pid_of(dir.path(), name).unwrap_or_else(|| panic!("no pid file for {name}"));
        assert!(alive(old), "{name} runs before the kill");
        let killed = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // A new process within 5 s.
        let restarted = loop {
            if let Some(pid) = pid_of(dir.path(), name).filter(|p| *p != old && alive(*p)) {
                let _ = pid;
                break killed.elapsed();
            }
            assert!(
                killed.elapsed() < Duration::from_secs(5),
                "{name} was not restarted within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        up.wait_printed(&format!("{name} exited (signal: 9"), Duration::from_secs(2))
            .await;
        // And the endpoint serves a write and a consistent read of it again.
        let serving = loop {
            i += 1;
            if serves(&c, i).await {
                acked.push(i);
                break killed.elapsed();
            }
            assert!(
                killed.elapsed() < Duration::from_secs(15),
                "the endpoint did not serve again within 15 s of killing {name}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // The control plane too: a new table becomes ACTIVE.
        create_table(&c, &format!("after-{name}"), None).await;
        report.push(format!(
            "{name}: restarted after {:.2} s, serving after {:.2} s",
            restarted.as_secs_f64(),
            serving.as_secs_f64()
        ));
        println!("{}", report.last().unwrap());
    }
    // Every write acknowledged along the way is there.
    for n in &acked {
        let out = c
            .get_item()
            .table_name("watched")
            .key("pk", AttributeValue::S(format!("item-{n}")))
            .consistent_read(true)
            .send()
            .await
            .expect("read after the kills");
        let got = out.item().and_then(|it| it.get("n"));
        assert_eq!(got, Some(&AttributeValue::N(n.to_string())), "item-{n}");
    }
    println!("{}", report.join("\n"));

    // A clean stop: SIGTERM stops everything and tern up exits 0.
    let mut up = up;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = up.child.wait().unwrap();
    assert!(status.success(), "tern up exited with {status}");
    assert!(
        pid_of(dir.path(), "router").is_none(),
        "pid files are removed on a clean stop"
    );
}
