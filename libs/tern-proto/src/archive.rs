//! The archive's bus API (archiver ↔ storage nodes) and the objects it stores.
//!
//! Replicas hand the archiver their committed log (`ArchiveReadRequest`); the archiver cuts it
//! into sealed segments (`ArchiveSegment`), uploads each once, and tells every replica of the
//! group how far the archive reaches (`ArchiveMark`), below which a replica may drop its log.
//! Scrub appends a checksum marker to a group's log (a write of kind `Checksum`); every replica
//! checksums its items as they stand at that entry (`ChecksumRequest`), and the archiver does the
//! same on a reference replica rebuilt from the archive.

/// Committed log entries of one replica from `from`, at most `max_bytes` and `max_entries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArchiveReadRequest {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    #[prost(uint64, tag = "2")]
    pub from: u64,
    #[prost(uint32, tag = "3")]
    pub max_bytes: u32,
    #[prost(uint32, tag = "4")]
    pub max_entries: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArchiveReadResponse {
    /// `crate::raft::RaftEntry`s as the replica's log stores them, from `from` on, contiguous.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub entries: Vec<Vec<u8>>,
    /// The replica's log is committed, durable and applied up to here.
    #[prost(uint64, tag = "2")]
    pub held: u64,
    /// The replica's log starts after this index (compacted up to it): `from` at or below it is
    /// gone from this replica.
    #[prost(uint64, tag = "3")]
    pub log_start: u64,
}

/// The archive holds the group's log up to `archived`: the replica may compact up to there.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArchiveMark {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    #[prost(uint64, tag = "2")]
    pub archived: u64,
}

/// The checksum of a replica's items as they stood right after log entry `index` (a checksum
/// marker).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChecksumRequest {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    #[prost(uint64, tag = "2")]
    pub index: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, prost::Enumeration)]
#[repr(i32)]
pub enum ChecksumState {
    /// The replica has no checksum at that index (not applied there, a log replica, restarted
    /// since, or forgotten).
    Unknown = 0,
    /// Being computed.
    Pending = 1,
    Done = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChecksumResponse {
    #[prost(enumeration = "ChecksumState", tag = "1")]
    pub state: i32,
    #[prost(message, optional, tag = "2")]
    pub checksum: Option<ItemsChecksum>,
}

/// What the items of one partition sum to: an order-dependent xxh3 over every (storage key,
/// item JSON) in key order.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ItemsChecksum {
    #[prost(uint64, tag = "1")]
    pub items: u64,
    #[prost(uint64, tag = "2")]
    pub bytes: u64,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// A sealed segment of one partition's log, as the archive stores it (after an 8-byte magic and
/// the xxh3-64 of this message's bytes, both little-endian: `crate::archive::seal`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArchiveSegment {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    #[prost(uint64, tag = "2")]
    pub first: u64,
    #[prost(uint64, tag = "3")]
    pub last: u64,
    /// Leader clock (ms since the epoch) of the first and last write in the segment (0: none).
    #[prost(uint64, tag = "4")]
    pub first_time_ms: u64,
    #[prost(uint64, tag = "5")]
    pub last_time_ms: u64,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub entries: Vec<Vec<u8>>,
}

/// One part of an archived partition snapshot: items in storage-key order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotPart {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub keys: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub values: Vec<Vec<u8>>,
}

/// What an archived partition snapshot is: written after its parts, so a snapshot whose manifest
/// exists is whole.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotManifest {
    #[prost(uint64, tag = "1")]
    pub partition_id: u64,
    /// The log index the items stand at.
    #[prost(uint64, tag = "2")]
    pub index: u64,
    #[prost(uint32, tag = "3")]
    pub parts: u32,
    #[prost(message, optional, tag = "4")]
    pub checksum: Option<ItemsChecksum>,
    /// Leader clock of the last write at or before `index` (0: unknown).
    #[prost(uint64, tag = "5")]
    pub time_ms: u64,
    #[prost(message, optional, tag = "6")]
    pub meta: Option<crate::raft::RaftSnapshotMeta>,
}

/// RestoreTableToPointInTime, as the router hands it to the archiver (validated): answered with
/// the new table (`memds::TableReply`, CREATING) once it exists; the items follow.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RestoreRequest {
    #[prost(string, tag = "1")]
    pub source_table: String,
    #[prost(string, tag = "2")]
    pub target_table: String,
    /// ms since the epoch.
    #[prost(uint64, tag = "3")]
    pub time_ms: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, prost::Enumeration)]
#[repr(i32)]
pub enum BackupOp {
    Create = 0,
    Describe = 1,
    List = 2,
    Delete = 3,
    Restore = 4,
}

/// An on-demand backup call, as the router hands it to the archiver (validated).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BackupRequest {
    #[prost(enumeration = "BackupOp", tag = "1")]
    pub op: i32,
    /// Create: the table; List: only this table's (empty: all).
    #[prost(string, tag = "2")]
    pub table: String,
    /// Create: the backup's name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// Describe, Delete, Restore; List: start after this one.
    #[prost(string, tag = "4")]
    pub arn: String,
    /// Restore: the new table.
    #[prost(string, tag = "5")]
    pub target_table: String,
    /// List: at most this many (0: 100).
    #[prost(uint32, tag = "6")]
    pub limit: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, prost::Enumeration)]
#[repr(i32)]
pub enum BackupStatus {
    /// The archive does not hold all of the table up to the backup's moment yet.
    Creating = 0,
    Available = 1,
    Deleted = 2,
}

/// One backup: the table as it was (metadata, partitions) and the moment; its items are the
/// archive's, restored as a point-in-time restore to that moment. Stored in the archive
/// (`backups/<id>`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BackupRecord {
    #[prost(string, tag = "1")]
    pub arn: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, optional, tag = "3")]
    pub table: Option<crate::memds::TableInfo>,
    #[prost(uint64, tag = "4")]
    pub time_ms: u64,
    #[prost(enumeration = "BackupStatus", tag = "5")]
    pub status: i32,
    #[prost(uint64, tag = "6")]
    pub size_bytes: u64,
    #[prost(uint64, tag = "7")]
    pub item_count: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BackupResponse {
    #[prost(message, repeated, tag = "1")]
    pub backups: Vec<BackupRecord>,
    /// Restore: the new table (CREATING).
    #[prost(message, optional, tag = "2")]
    pub table: Option<crate::memds::TableInfo>,
    /// List: more after this one.
    #[prost(string, tag = "3")]
    pub last_evaluated: String,
}

const MAGIC: &[u8; 8] = b"TERNARC1";

/// An archive object's bytes: magic, checksum, message.
pub fn seal(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The message in an archive object, if its magic and checksum hold.
pub fn unseal<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, String> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err("not an archive object (bad magic)".into());
    }
    let want = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| "short header")?);
    let body = &bytes[16..];
    let got = xxhash_rust::xxh3::xxh3_64(body);
    if got != want {
        return Err(format!(
            "checksum mismatch: stored {want:016x}, computed {got:016x}"
        ));
    }
    M::decode(body).map_err(|e| format!("undecodable: {e}"))
}

/// Running checksum of a partition's items, fed in storage-key order.
#[derive(Default)]
pub struct ChecksumBuilder {
    hasher: xxhash_rust::xxh3::Xxh3,
    items: u64,
    bytes: u64,
}

impl ChecksumBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one item: its storage key (without the partition prefix) and its JSON.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.hasher.update(&(key.len() as u32).to_le_bytes());
        self.hasher.update(key);
        self.hasher.update(&(value.len() as u32).to_le_bytes());
        self.hasher.update(value);
        self.items += 1;
        self.bytes += value.len() as u64;
    }

    pub fn finish(&self) -> ItemsChecksum {
        ItemsChecksum {
            items: self.items,
            bytes: self.bytes,
            hash: self.hasher.digest(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_objects_round_trip_and_a_flipped_byte_is_caught() {
        let seg = ArchiveSegment {
            partition_id: 7,
            first: 1,
            last: 2,
            entries: vec![b"one".to_vec(), b"two".to_vec()],
            ..Default::default()
        };
        let mut bytes = seal(&seg);
        assert_eq!(unseal::<ArchiveSegment>(&bytes).unwrap(), seg);
        let n = bytes.len() - 2;
        bytes[n] ^= 1;
        assert!(unseal::<ArchiveSegment>(&bytes)
            .unwrap_err()
            .contains("checksum mismatch"));
        assert!(unseal::<ArchiveSegment>(b"short").is_err());
    }

    #[test]
    fn the_checksum_depends_on_every_key_and_value_and_their_boundaries() {
        let sum = |items: &[(&[u8], &[u8])]| {
            let mut b = ChecksumBuilder::new();
            for (k, v) in items {
                b.add(k, v);
            }
            b.finish()
        };
        let base = sum(&[(b"a", b"1"), (b"b", b"2")]);
        assert_eq!(base, sum(&[(b"a", b"1"), (b"b", b"2")]));
        assert_ne!(base, sum(&[(b"a", b"1"), (b"b", b"3")]));
        assert_ne!(base, sum(&[(b"a", b"1")]));
        assert_ne!(sum(&[(b"ab", b"")]), sum(&[(b"a", b"b")]));
        assert_eq!(base.items, 2);
    }
}
