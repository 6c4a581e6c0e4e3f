//! Every NATS subject Tern uses, in one place.
//!
//! Fleets that any instance may answer (MemDS, GAC) serve through queue groups named in [`queue`];
//! per-node subjects carry the node id.

/// Queue group names.
pub mod queue {
    pub const MEMDS: &str = "memds";
    pub const GAC: &str = "gac";
    pub const ARCHIVER: &str = "archiver";
}

/// Routing lookup of one table, sent by routers for every request (constant work).
pub const MEMDS_LOOKUP: &str = "tern.memds.lookup";
/// The background lookups of cache hits, coalesced ([`crate::memds::LookupBatchRequest`]).
pub const MEMDS_LOOKUP_BATCH: &str = "tern.memds.lookup_batch";
pub const MEMDS_CREATE_TABLE: &str = "tern.memds.ddl.create_table";
pub const MEMDS_DESCRIBE_TABLE: &str = "tern.memds.ddl.describe_table";
pub const MEMDS_LIST_TABLES: &str = "tern.memds.ddl.list_tables";
pub const MEMDS_DELETE_TABLE: &str = "tern.memds.ddl.delete_table";
pub const MEMDS_ALTER_TABLE: &str = "tern.memds.ddl.alter_table";
/// A partition leader asks for a node to host a replacement member of its group.
pub const MEMDS_PLACE_REPLICA: &str = "tern.memds.place_replica";
/// A partition leader reports its group's membership and leadership into the metadata.
pub const MEMDS_REPORT_PARTITION: &str = "tern.memds.report_partition";
/// Storage nodes publish their liveness here; every MemDS instance listens (no queue group).
pub const NODE_HEARTBEAT: &str = "tern.memds.node_heartbeat";

/// GAC instances announce themselves here ([`crate::gac::GacHeartbeat`]); routers and the other
/// GAC instances listen.
pub const GAC_HEARTBEAT: &str = "tern.gac.heartbeat";

/// Where one GAC instance takes routers' reports of the tables it owns.
pub fn gac_grant(instance: &str) -> String {
    format!("tern.gac.{instance}.grant")
}

/// Every router drops its routing cache when it hears this (operators; the constant-work
/// experiment). Answered by each router with [`crate::memds::CacheFlushed`].
pub const ROUTER_FLUSH_CACHE: &str = "tern.router.control.flush_cache";

/// Statistics of one MemDS instance (lookups served), for tests and operators.
pub fn memds_stats(instance: &str) -> String {
    format!("tern.memds.{instance}.stats")
}

/// Where the replies to one instance's requests arrive: `_INBOX.<service>.<instance>.…`. With
/// bus authentication on, each service may subscribe to its own inboxes only.
pub fn inbox_prefix(service: &str, instance: &str) -> String {
    format!("_INBOX.{service}.{instance}")
}

/// Health of one instance of a service: `tern.health.<service>.<instance>`.
pub fn health(service: &str, instance: &str) -> String {
    format!("tern.health.{service}.{instance}")
}

/// Data and admin subjects of one storage node.
pub fn storage_write(node: &str) -> String {
    format!("tern.storage.{node}.write")
}
pub fn storage_get(node: &str) -> String {
    format!("tern.storage.{node}.get")
}
/// Range reads of a partition's items (Query and Scan).
pub fn storage_scan(node: &str) -> String {
    format!("tern.storage.{node}.scan")
}
pub fn storage_create_partition(node: &str) -> String {
    format!("tern.storage.{node}.admin.create_partition")
}
pub fn storage_drop_partition(node: &str) -> String {
    format!("tern.storage.{node}.admin.drop_partition")
}

/// A token-valid NATS subject segment: node and instance ids must be this.
pub fn is_valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Replication traffic to one storage node (published, no reply).
pub fn storage_raft(node: &str) -> String {
    format!("tern.storage.{node}.raft")
}

/// Rebuild a log replica's items from a snapshot (sent by the group's leader).
pub fn storage_rebuild(node: &str) -> String {
    format!("tern.storage.{node}.admin.rebuild")
}

/// Chunks of a consistent snapshot of one partition's items, served by any full replica.
pub fn storage_snapshot(node: &str) -> String {
    format!("tern.storage.{node}.snapshot")
}

/// The archiver reads a replica's committed log (`archive::ArchiveReadRequest`).
pub fn storage_archive_read(node: &str) -> String {
    format!("tern.storage.{node}.archive.read")
}

/// The archiver tells a replica how far the archive holds its group's log (`archive::ArchiveMark`).
pub fn storage_archive_mark(node: &str) -> String {
    format!("tern.storage.{node}.archive.mark")
}

/// A replica's items checksum at a scrub marker (`archive::ChecksumRequest`).
pub fn storage_checksum(node: &str) -> String {
    format!("tern.storage.{node}.archive.checksum")
}

/// Restores to a point in time (`archive::RestoreRequest`), served by the archiver.
pub const ARCHIVER_RESTORE: &str = "tern.archiver.restore";

/// On-demand backups (`archive::BackupRequest`), served by the archiver.
pub const ARCHIVER_BACKUP: &str = "tern.archiver.backup";
