//! The second line of admission: a token bucket per partition replica and one for the whole
//! node, for reads and for writes, checked before a request touches the partition.
//!
//! - A partition of a PROVISIONED table refills at the rate the router sends with each request
//!   (the table's: holding the table's total is the routers' job) and keeps what it leaves
//!   unused up to `burst_seconds` of it, to spend on a spike while the node has spare
//!   throughput. An on-demand table's partitions (rate 0 in the request) have no bucket of their
//!   own.
//! - The node refills at its own limit (`node_read_units`, `node_write_units` per second) and
//!   keeps at most a second of it: a node at its limit throttles every partition, bursting or not.
//! - Units are charged after the request, on what it consumed, as the router does.
//! - Consumption is also counted per partition and per eighth of the partition's key-hash range,
//!   so a partition that stays hot, and the key ranges that carry it, show in the metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tern_bus::BusError;
use tern_model::{ApiError, ErrorCode};

/// Slices each partition's hash range is cut into for the hot-range counts.
pub const SLICES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Self {
            tokens: rate,
            rate,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant, cap: f64) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + self.rate * dt).min(cap);
    }
}

#[derive(Debug)]
struct PartitionState {
    /// `None`: the table is on-demand (or the request named no rate).
    read: Option<Bucket>,
    write: Option<Bucket>,
    hash_start: u64,
    hash_end: u64,
    consumed: [f64; 2],
    throttled: [u64; 2],
    slices: [[f64; SLICES]; 2],
    used: Instant,
}

/// Partitions kept at most (a node holds far fewer replicas).
const MAX_PARTITIONS: usize = 100_000;
/// A partition no request touched for this long loses its bucket.
const IDLE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Limits {
    pub node_read_units: f64,
    pub node_write_units: f64,
    pub burst_seconds: f64,
}

pub struct Capacity {
    limits: Limits,
    /// When this node began watching: a partition's bucket, made at its first request, starts
    /// with the capacity it could have saved since (up to `burst_seconds`), as if it had been
    /// watched all along: a partition new to the node is not poorer than one it had served.
    started: Instant,
    node: Mutex<[Bucket; 2]>,
    node_throttled: Mutex<[u64; 2]>,
    partitions: Mutex<HashMap<u64, PartitionState>>,
}

fn idx(kind: Kind) -> usize {
    match kind {
        Kind::Read => 0,
        Kind::Write => 1,
    }
}

impl Capacity {
    pub fn new(limits: Limits) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            node: Mutex::new([
                Bucket::new(limits.node_read_units.max(1.0), now),
                Bucket::new(limits.node_write_units.max(1.0), now),
            ]),
            node_throttled: Mutex::new([0, 0]),
            partitions: Mutex::new(HashMap::new()),
            limits,
            started: now,
        })
    }

    /// Admits a request on partition `id` whose table gives the partition `rate` units per
    /// second (0: no limit of its own), or answers ProvisionedThroughputExceededException.
    /// `range` is the partition's hash range, for the hot-range counts.
    pub fn admit(
        &self,
        id: u64,
        kind: Kind,
        rate: f64,
        range: impl FnOnce() -> (u64, u64),
    ) -> Result<(), BusError> {
        let now = Instant::now();
        let k = idx(kind);
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            0.0
        };
        {
            let mut parts = self.partitions.lock();
            if !parts.contains_key(&id) {
                if parts.len() >= MAX_PARTITIONS {
                    parts.retain(|_, p| now.duration_since(p.used) < IDLE);
                }
                if parts.len() < MAX_PARTITIONS {
                    let (hash_start, hash_end) = range();
                    parts.insert(
                        id,
                        PartitionState {
                            read: None,
                            write: None,
                            hash_start,
                            hash_end,
                            consumed: [0.0; 2],
                            throttled: [0; 2],
                            slices: [[0.0; SLICES]; 2],
                            used: now,
                        },
                    );
                }
            }
            if let Some(p) = parts.get_mut(&id) {
                p.used = now;
                let slot = match kind {
                    Kind::Read => &mut p.read,
                    Kind::Write => &mut p.write,
                };
                if rate == 0.0 {
                    *slot = None;
                } else {
                    let saved = now
                        .duration_since(self.started)
                        .as_secs_f64()
                        .clamp(1.0, self.limits.burst_seconds.max(1.0));
                    let b = slot.get_or_insert_with(|| Bucket {
                        tokens: rate * saved,
                        ..Bucket::new(rate, now)
                    });
                    b.refill(now, b.rate * self.limits.burst_seconds.max(1.0));
                    // A changed rate (UpdateTable) applies from now on; what was saved stays.
                    b.rate = rate;
                    if b.tokens <= 0.0 {
                        p.throttled[k] += 1;
                        return Err(throttled("partition"));
                    }
                }
            }
        }
        let mut node = self.node.lock();
        let b = &mut node[k];
        let cap = b.rate;
        b.refill(now, cap);
        if b.tokens <= 0.0 {
            drop(node);
            self.node_throttled.lock()[k] += 1;
            return Err(throttled("node"));
        }
        Ok(())
    }

    /// Charges `units` a request on partition `id` consumed, and counts them against the slice
    /// of the partition's hash range that `hash` falls in.
    pub fn consume(&self, id: u64, kind: Kind, units: f64, hash: u64) {
        let k = idx(kind);
        self.node.lock()[k].tokens -= units;
        let mut parts = self.partitions.lock();
        let Some(p) = parts.get_mut(&id) else { return };
        if let Some(b) = match kind {
            Kind::Read => &mut p.read,
            Kind::Write => &mut p.write,
        } {
            b.tokens -= units;
        }
        p.consumed[k] += units;
        p.slices[k][slice_of(hash, p.hash_start, p.hash_end)] += units;
    }

    /// Per partition: consumed units, throttled requests, burst balance (tokens) and the
    /// consumption of each slice, by kind; and the node's throttles.
    pub fn snapshot(&self) -> (Vec<PartitionRow>, [u64; 2]) {
        let now = Instant::now();
        let mut parts = self.partitions.lock();
        let rows = parts
            .iter_mut()
            .map(|(id, p)| {
                let mut balance = [None, None];
                for (k, b) in [&mut p.read, &mut p.write].into_iter().enumerate() {
                    if let Some(b) = b {
                        b.refill(now, b.rate * self.limits.burst_seconds.max(1.0));
                        balance[k] = Some(b.tokens);
                    }
                }
                PartitionRow {
                    id: *id,
                    hash_start: p.hash_start,
                    hash_end: p.hash_end,
                    consumed: p.consumed,
                    throttled: p.throttled,
                    balance,
                    slices: p.slices,
                }
            })
            .collect();
        (rows, *self.node_throttled.lock())
    }
}

pub struct PartitionRow {
    pub id: u64,
    pub hash_start: u64,
    pub hash_end: u64,
    pub consumed: [f64; 2],
    pub throttled: [u64; 2],
    pub balance: [Option<f64>; 2],
    pub slices: [[f64; SLICES]; 2],
}

/// The slice of `[start, end]` that `hash` falls in.
pub fn slice_of(hash: u64, start: u64, end: u64) -> usize {
    let span = (end.saturating_sub(start) as u128) + 1;
    let off = hash.saturating_sub(start).min(end.saturating_sub(start)) as u128;
    ((off * SLICES as u128) / span).min(SLICES as u128 - 1) as usize
}

/// The first hash of slice `i` of `[start, end]`.
pub fn slice_start(i: usize, start: u64, end: u64) -> u64 {
    let span = (end.saturating_sub(start) as u128) + 1;
    start + ((span * i as u128).div_ceil(SLICES as u128)) as u64
}

fn throttled(level: &str) -> BusError {
    BusError::Api(ApiError::new(
        ErrorCode::ProvisionedThroughputExceeded,
        format!(
            "The level of configured provisioned throughput for the table was exceeded ({level} limit). Consider increasing your provisioning level with the UpdateTable API."
        ),
    ))
}

/// Per-partition consumption, throttles, burst balances and hot slices, read at each scrape.
pub struct Collector(pub std::sync::Weak<Capacity>);

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("partition capacity collector")
    }
}

impl tern_telemetry::metrics::Collector for Collector {
    fn encode(
        &self,
        mut encoder: tern_telemetry::metrics::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use tern_telemetry::metrics::encode_samples;
        let Some(c) = self.0.upgrade() else {
            return Ok(());
        };
        let (rows, node_throttled) = c.snapshot();
        const KINDS: [&str; 2] = ["read", "write"];
        let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
        // (labels, value) of every partition and kind for which `pick` has a value.
        let series = |pick: &dyn Fn(&PartitionRow, usize) -> Option<f64>| {
            let mut out = Vec::new();
            for (r, id) in rows.iter().zip(&ids) {
                for (k, kind) in KINDS.iter().enumerate() {
                    if let Some(v) = pick(r, k) {
                        out.push((vec![("partition", id.as_str()), ("kind", *kind)], v));
                    }
                }
            }
            out
        };
        encode_samples(
            &mut encoder,
            "storage_partition_consumed_units",
            "Capacity units consumed on each partition this node served, by kind",
            true,
            series(&|r, k| Some(r.consumed[k])),
        )?;
        encode_samples(
            &mut encoder,
            "storage_partition_throttled_requests",
            "Requests a partition's bucket refused (ProvisionedThroughputExceededException), by kind",
            true,
            series(&|r, k| Some(r.throttled[k] as f64)),
        )?;
        encode_samples(
            &mut encoder,
            "storage_partition_burst_balance_units",
            "Units in a provisioned table's partition bucket: a second of its rate plus what it saved, up to burst_seconds",
            false,
            series(&|r, k| r.balance[k]),
        )?;
        let froms: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                (0..SLICES)
                    .map(|i| format!("{:016x}", slice_start(i, r.hash_start, r.hash_end)))
                    .collect()
            })
            .collect();
        let mut slices = Vec::new();
        for ((r, id), from) in rows.iter().zip(&ids).zip(&froms) {
            for (k, kind) in KINDS.iter().enumerate() {
                for (i, units) in r.slices[k].iter().enumerate() {
                    if *units > 0.0 {
                        let labels = vec![
                            ("partition", id.as_str()),
                            ("kind", *kind),
                            ("from", from[i].as_str()),
                        ];
                        slices.push((labels, *units));
                    }
                }
            }
        }
        encode_samples(
            &mut encoder,
            "storage_partition_range_consumed_units",
            "Units consumed per eighth of each partition's key-hash range (from: its first hash, hex): where a hot partition's traffic falls",
            true,
            slices,
        )?;
        encode_samples(
            &mut encoder,
            "storage_node_throttled_requests",
            "Requests refused because the node was at its own limit (node_read_units, node_write_units)",
            true,
            KINDS
                .iter()
                .enumerate()
                .map(|(k, kind)| (vec![("kind", *kind)], node_throttled[k] as f64)),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            node_read_units: 1_000_000.0,
            node_write_units: 1_000_000.0,
            burst_seconds: 300.0,
        }
    }

    #[test]
    fn a_partition_spends_its_rate_then_throttles_and_saves_what_it_leaves() {
        let c = Capacity::new(limits());
        let full = || (0, u64::MAX);
        // A second of the rate is there at once: ten writes of 1.1 units at 10/s overdraw it.
        for _ in 0..10 {
            c.admit(1, Kind::Write, 10.0, full).unwrap();
            c.consume(1, Kind::Write, 1.1, 0);
        }
        let e = c.admit(1, Kind::Write, 10.0, full).unwrap_err();
        assert!(
            matches!(e, BusError::Api(ref a) if a.code == ErrorCode::ProvisionedThroughputExceeded)
        );
        // Reads have their own bucket; on-demand partitions none.
        c.admit(1, Kind::Read, 10.0, full).unwrap();
        for _ in 0..100 {
            c.admit(2, Kind::Write, 0.0, full).unwrap();
            c.consume(2, Kind::Write, 1.0, 0);
        }
        let (rows, _) = c.snapshot();
        let p1 = rows.iter().find(|r| r.id == 1).unwrap();
        assert!((p1.consumed[1] - 11.0).abs() < 1e-9);
        assert_eq!(p1.throttled[1], 1);
        assert!(p1.balance[1].unwrap() < 0.0);
        assert!(rows.iter().find(|r| r.id == 2).unwrap().balance[1].is_none());
    }

    #[test]
    fn the_node_limit_throttles_every_partition() {
        let c = Capacity::new(Limits {
            node_write_units: 5.0,
            ..limits()
        });
        for p in 0..5 {
            c.admit(p, Kind::Write, 0.0, || (0, u64::MAX)).unwrap();
            c.consume(p, Kind::Write, 1.1, 0);
        }
        assert!(c.admit(9, Kind::Write, 0.0, || (0, u64::MAX)).is_err());
        assert_eq!(c.snapshot().1, [0, 1]);
    }

    #[test]
    fn slices_cut_the_range_in_eight() {
        assert_eq!(slice_of(0, 0, u64::MAX), 0);
        assert_eq!(slice_of(u64::MAX, 0, u64::MAX), 7);
        assert_eq!(slice_of(1 << 61, 0, u64::MAX), 1);
        assert_eq!(slice_of(150, 100, 179), 5);
        assert_eq!(slice_start(0, 100, 179), 100);
        assert_eq!(slice_start(5, 100, 179), 150);
        for i in 0..SLICES {
            let s = slice_start(i, 0, u64::MAX);
            assert_eq!(slice_of(s, 0, u64::MAX), i);
        }
        let c = Capacity::new(limits());
        c.admit(1, Kind::Read, 0.0, || (0, u64::MAX)).unwrap();
        c.consume(1, Kind::Read, 2.0, u64::MAX - 5);
        let (rows, _) = c.snapshot();
        assert_eq!(rows[0].slices[0][7], 2.0);
    }
}
