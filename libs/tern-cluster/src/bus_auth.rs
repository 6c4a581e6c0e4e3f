//! Who may do what on the bus: one NATS user (an nkey) per service, and per storage node, with
//! the subjects it may publish and subscribe to; nats-server enforces them.
//!
//! nats-server's configuration holds only public keys; each process reads its own seed from
//! `<data>/secrets/nats/<identity>.nk` (directory 0700, files 0600). A key is made once and
//! kept: a restarted cluster (or compose's `bus-keys` run again) uses the same keys.
//!
//! What the permissions allow, by identity:
//! - `router`: requests to MemDS (lookups, DDL) and to the storage nodes' data subjects
//!   (write, get, scan). It cannot speak replication, admin or snapshot subjects.
//! - `memds`: serves `tern.memds.>`, creates and drops partition replicas, and uses JetStream
//!   (the table metadata bucket).
//! - `storage-<node>`: serves its own `tern.storage.<node>.>` only; sends replication batches,
//!   rebuild and snapshot requests to other nodes; heartbeats and reports to MemDS.
//! - `gac`: serves its own subjects.
//! - `archiver`: lists and describes tables in MemDS; reads the storage nodes' committed logs,
//!   marks what is archived, appends checksum markers (a write of kind Checksum), reads
//!   snapshots and asks for repairs (rebuilds); creates restored tables and writes their items;
//!   serves its own subjects (restores, asked by routers).
//! - `admin`: everything (the launcher's health checks, tests, operators).
//!
//! Every identity subscribes to its own reply inboxes only (`_INBOX.<service>.<instance>.>`,
//! [`tern_proto::subjects::inbox_prefix`]), and may answer the requests it receives.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The identity that may do anything.
pub const ADMIN: &str = "admin";

/// The NATS users of one cluster and where their seeds are.
pub struct BusAuth {
    dir: PathBuf,
    /// (identity, public key, publish allowed, subscribe allowed).
    users: Vec<(String, String, Vec<String>, Vec<String>)>,
}

/// The identity a process of `service` (instance or node `id`) connects as.
pub fn identity(service: &str, id: &str) -> String {
    match service {
        "storage" => id.to_string(),
        other => other.to_string(),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// (publish, subscribe) allowed to `identity`. Each may also publish to its own inboxes (the bus
/// proves a subscription reached the server by a message to itself).
fn permissions(identity: &str) -> (Vec<String>, Vec<String>) {
    let (mut publish, subscribe) = service_permissions(identity);
    let own_inboxes = subscribe
        .iter()
        .filter(|s| s.starts_with("_INBOX."))
        .cloned()
        .collect::<Vec<_>>();
    publish.extend(own_inboxes);
    (publish, subscribe)
}

fn service_permissions(identity: &str) -> (Vec<String>, Vec<String>) {
    match identity {
        ADMIN => (strings(&[">"]), strings(&[">"])),
        "router" => (
            strings(&[
                "tern.memds.lookup",
                "tern.memds.lookup_batch",
                "tern.memds.ddl.>",
                "tern.storage.*.write",
                "tern.storage.*.get",
                "tern.storage.*.scan",
                "tern.gac.*.grant",
                "tern.archiver.restore",
                "tern.archiver.backup",
            ]),
            strings(&[
                "tern.gac.heartbeat",
                "tern.health.router.*",
                "tern.router.control.>",
                "_INBOX.router.*.>",
            ]),
        ),
        "memds" => (
            strings(&[
                "tern.storage.*.admin.create_partition",
                "tern.storage.*.admin.drop_partition",
                "$JS.API.>",
                "$JS.ACK.>",
                "$JS.FC.>",
                "$KV.>",
            ]),
            strings(&["tern.memds.>", "tern.health.memds.*", "_INBOX.memds.*.>"]),
        ),
        "gac" => (
            strings(&["tern.gac.heartbeat"]),
            strings(&["tern.gac.>", "tern.health.gac.*", "_INBOX.gac.*.>"]),
        ),
        "archiver" => (
            strings(&[
                "tern.memds.ddl.list_tables",
                "tern.memds.ddl.describe_table",
                "tern.memds.lookup_batch",
                "tern.memds.ddl.create_table",
                "tern.memds.ddl.alter_table",
                "tern.storage.*.archive.>",
                "tern.storage.*.write",
                "tern.storage.*.snapshot",
                "tern.storage.*.admin.rebuild",
            ]),
            vec![
                format!("tern.{identity}.>"),
                format!("tern.health.{identity}.*"),
                format!("_INBOX.{identity}.*.>"),
            ],
        ),
        node => (
            strings(&[
                "tern.storage.*.raft",
                "tern.storage.*.snapshot",
                "tern.storage.*.admin.rebuild",
                "tern.memds.node_heartbeat",
                "tern.memds.place_replica",
                "tern.memds.report_partition",
            ]),
            vec![
                format!("tern.storage.{node}.>"),
                format!("tern.health.storage.{node}"),
                format!("_INBOX.storage.{node}.>"),
            ],
        ),
    }
}

impl BusAuth {
    /// Keys for `admin`, the fleets and each of `storage_nodes`: those under
    /// `<data_dir>/secrets/nats` kept, missing ones made.
    pub fn generate(data_dir: &Path, storage_nodes: &[String]) -> anyhow::Result<Self> {
        let dir = data_dir.join("secrets").join("nats");
        crate::secrets::private_dir(&data_dir.join("secrets"))?;
        crate::secrets::private_dir(&dir)?;
        let mut identities = strings(&[ADMIN, "router", "memds", "gac", "archiver"]);
        identities.extend(storage_nodes.iter().cloned());
        let mut users = Vec::new();
        for id in identities {
            let path = dir.join(format!("{id}.nk"));
            if let Some(key) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| nkeys::KeyPair::from_seed(s.trim()).ok())
            {
                let (publish, subscribe) = permissions(&id);
                users.push((id, key.public_key(), publish, subscribe));
                continue;
            }
            let key = nkeys::KeyPair::new_user();
            let seed = key.seed().context("nkey seed")?;
            crate::secrets::private_file(&path, seed.as_bytes())?;
            let (publish, subscribe) = permissions(&id);
            users.push((id, key.public_key(), publish, subscribe));
        }
        Ok(Self { dir, users })
    }

    /// The seed file of `identity`.
    pub fn seed_file(&self, identity: &str) -> PathBuf {
        self.dir.join(format!("{identity}.nk"))
    }

    /// Writes [`Self::config_block`] to `path`, for a nats-server configuration to `include`.
    pub fn write_config(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.config_block())
            .with_context(|| format!("write {}", path.display()))
    }

    /// nats-server's `authorization` block: public keys and permissions.
    pub fn config_block(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = String::from("authorization {\n  users = [\n");
        for (id, key, publish, subscribe) in &self.users {
            out.push_str(&format!(
                "    # {id}\n    {{ nkey: \"{key}\", permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }}, allow_responses: true }} }}\n",
                list(publish),
                list(subscribe)
            ));
        }
        out.push_str("  ]\n}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn every_identity_gets_a_private_seed_and_a_user() {
        let dir = tempfile::tempdir().unwrap();
        let auth =
            BusAuth::generate(dir.path(), &["storage-a".into(), "storage-b".into()]).unwrap();
        let conf = auth.config_block();
        for id in [
            ADMIN,
            "router",
            "memds",
            "gac",
            "archiver",
            "storage-a",
            "storage-b",
        ] {
            let seed_file = auth.seed_file(id);
            let mode = std::fs::metadata(&seed_file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{id}");
            let seed = std::fs::read_to_string(&seed_file).unwrap();
            let public = nkeys::KeyPair::from_seed(&seed).unwrap().public_key();
            assert!(conf.contains(&public), "{id}'s public key is in the config");
            assert!(!conf.contains(&seed), "no seed in the config");
        }
        // Kept across starts.
        let again =
            BusAuth::generate(dir.path(), &["storage-a".into(), "storage-b".into()]).unwrap();
        assert_eq!(again.config_block(), conf);
        // A storage node serves its own subjects only.
        assert!(conf.contains("\"tern.storage.storage-a.>\""));
        let (_, sub) = permissions("storage-a");
        assert!(!sub.iter().any(|s| s.contains("storage-b")));
        // The router cannot speak replication.
        let (publish, _) = permissions("router");
        assert!(!publish.iter().any(|s| s.contains("raft") || s == ">"));
    }
}
