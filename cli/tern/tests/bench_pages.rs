//! The short variant of `tern bench --ops pages` (CI runs it; the 1-million-item run is in the
//! README): Query and Scan page through every item of a loaded table, page by page.

mod common;

use common::bin_dir;

#[test]
fn pages_benchmark_reads_every_item_once() {
    let out = std::process::Command::new(bin_dir().join("tern"))
        .args([
            "bench",
            "--ops",
            "pages",
            "--page-items",
            "3000",
            "--page-limit",
            "100",
        ])
        .output()
        .expect("run tern bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let line = |what: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{what}:")) && l.contains("pages of"))
            .unwrap_or_else(|| panic!("no {what} line in:\n{stdout}"))
            .to_string()
    };
    assert!(
        line("query").contains("600 items in 7 pages of 100"),
        "{}",
        line("query")
    );
    assert!(
        line("scan").contains("3000 items in 31 pages of 100"),
        "{}",
        line("scan")
    );
}
