//! Admission by capacity: a token bucket per table for reads and one for writes, refilled at the
//! rate the table's GAC owner granted this router.
//!
//! - A request is admitted while its bucket holds tokens; once answered, the units it consumed
//!   (known only then: the item's size) are taken off, so a bucket may go below zero and the
//!   next requests wait for the refill. Otherwise it is answered
//!   ProvisionedThroughputExceededException, which the AWS SDKs retry with backoff.
//! - About once a second (`gac_report_ms`) the router reports each table's consumption and demand
//!   to the table's owner among the live GAC instances (heard on `tern.gac.heartbeat`), one
//!   message per owner, and takes the rates it answers. A table seen for the first time is
//!   reported at once.
//! - The rate a bucket refills at is always `rate(age of the last grant)`: the granted rate for
//!   `gac_hold_ms`, then decaying exponentially (time constant `gac_decay_ms`) toward a floor,
//!   the table's rate divided by the routers sharing it at the last grant. A router cut off from
//!   GAC runs the same code as one that is not; it just stops hearing new grants. Before any
//!   grant a table starts at its floor, as if it were this router's alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tern_bus::Bus;
use tern_model::{ApiError, ErrorCode};
use tern_proto::gac::{GacHeartbeat, GrantRequest, GrantResponse, TableDemand};
use tern_proto::memds::TableInfo;
use tern_proto::subjects;

/// A new on-demand table's rates before its first grant, until a GAC heartbeat says how GAC is
/// configured: DynamoDB's initial "previous peak" is 6,000 read and 2,000 write units, doubled.
pub(crate) const ON_DEMAND_INITIAL: (f64, f64) = (12_000.0, 4_000.0);
/// A GAC instance not heard from for this long is not asked.
const GAC_TTL: Duration = Duration::from_secs(2);
/// A table no request has touched for this long is forgotten (and no longer reported).
const TABLE_IDLE: Duration = Duration::from_secs(300);
/// Tables tracked at most; beyond, a new table is admitted at its floor without a bucket of its
/// own being kept (so memory stays bounded however many tables a client touches).
const MAX_TABLES: usize = 50_000;

/// The soonest a report follows the one before when a bucket runs dry or a table is young.
const EARLY_REPORT: Duration = Duration::from_millis(200);
/// Tables per report message (about 100 bytes each).
const REPORT_CHUNK: usize = 2_000;
/// A table this new to the router is reported every EARLY_REPORT.
const YOUNG: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    pub report: Duration,
    pub hold: Duration,
    pub decay: Duration,
    /// Read and write units a new on-demand table starts at before a GAC heartbeat says GAC's.
    pub on_demand_initial: (f64, f64),
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    granted: f64,
    granted_at: Option<Instant>,
    floor: f64,
    /// Saved capacity GAC lets this router hold beyond a second of its rate.
    burst_tokens: f64,
    /// Since the last report.
    consumed: f64,
    admitted: u64,
    throttled: u64,
    since: Instant,
    /// Lifetime totals, for metrics.
    consumed_total: f64,
    throttled_total: u64,
}

impl Bucket {
    fn new(floor: f64, now: Instant) -> Self {
        Self {
            // A tenth of a second's worth: enough to start, little to overshoot with while the
            // first grant is on its way.
            tokens: (floor / 10.0).max(1.0),
            refilled: now,
            granted: floor,
            granted_at: None,
            floor,
            burst_tokens: 0.0,
            consumed: 0.0,
            admitted: 0,
            throttled: 0,
            since: now,
            consumed_total: 0.0,
            throttled_total: 0,
        }
    }

    /// How much of the last grant still holds: all of it for `hold`, then decaying
    /// exponentially; none before any grant.
    fn held(&self, now: Instant, s: &Settings) -> f64 {
        let Some(at) = self.granted_at else {
            return 0.0;
        };
        let age = now.saturating_duration_since(at);
        if age <= s.hold {
            return 1.0;
        }
        let t = (age - s.hold).as_secs_f64() / s.decay.as_secs_f64().max(1e-3);
        (-t).exp()
    }

    /// The rate the bucket refills at now: the granted rate, moving toward the floor as the
    /// grant ages.
    fn rate(&self, now: Instant, s: &Settings) -> f64 {
        self.floor + (self.granted - self.floor) * self.held(now, s)
    }

    /// Tokens kept at most: a second's worth, plus the saved capacity GAC lets this router keep
    /// (which ages with the grant).
    fn cap(&self, now: Instant, s: &Settings) -> f64 {
        self.rate(now, s).max(1.0) + self.burst_tokens * self.held(now, s)
    }

    /// Takes `units` off (gives them back if negative). The debt is bounded: at most as far below
    /// zero as the bucket holds above it, so one huge request cannot lock a table out for long.
    fn take(&mut self, units: f64, now: Instant, s: &Settings) {
        self.tokens = (self.tokens - units).max(-self.cap(now, s));
    }

    fn refill(&mut self, now: Instant, s: &Settings) {
        let rate = self.rate(now, s);
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + rate * dt).min(self.cap(now, s));
    }

    /// Units per second wanted since the last report: consumed, plus throttled requests at the
    /// average price of admitted ones.
    fn take_report(&mut self, now: Instant) -> (f64, f64) {
        let secs = now
            .saturating_duration_since(self.since)
            .as_secs_f64()
            .max(0.05);
        let price = if self.admitted > 0 {
            self.consumed / self.admitted as f64
        } else {
            1.0
        };
        let consumed = self.consumed;
        let demand = (consumed + self.throttled as f64 * price) / secs;
        self.consumed = 0.0;
        self.admitted = 0;
        self.throttled = 0;
        self.since = now;
        (consumed, demand)
    }
}

#[derive(Debug)]
pub struct TableCapacity {
    created: Instant,
    id: String,
    name: String,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    on_demand: bool,
    read_capacity: u64,
    write_capacity: u64,
    read: Bucket,
    write: Bucket,
    used: Instant,
    /// Routers sharing the table and its whole rates, at the last grant.
    routers: u32,
    table_rates: (f64, f64),
}

impl State {
    fn bucket(&mut self, kind: Kind) -> &mut Bucket {
        match kind {
            Kind::Read => &mut self.read,
            Kind::Write => &mut self.write,
        }
    }

    fn floors(&self) -> (f64, f64) {
        let n = self.routers.max(1) as f64;
        (self.table_rates.0 / n, self.table_rates.1 / n)
    }
}

fn table_rates(t: &TableInfo, on_demand_start: (f64, f64)) -> (f64, f64) {
    if t.billing_mode == "PAY_PER_REQUEST" {
        on_demand_start
    } else {
        (t.read_capacity as f64, t.write_capacity as f64)
    }
}

/// The router's side of admission control.
pub struct Capacity {
    settings: Settings,
    instance: String,
    tables: RwLock<HashMap<String, Arc<TableCapacity>>>,
    gacs: Mutex<HashMap<String, Instant>>,
    wake: tokio::sync::Notify,
    /// When a throttle last asked for an early report.
    woken: Mutex<Instant>,
    /// A new on-demand table's (read, write) rates before its first grant: twice the initial
    /// peak GAC's heartbeats announce.
    on_demand_start: Mutex<(f64, f64)>,
    grants: prometheus_client::metrics::counter::Counter,
    grant_failures: prometheus_client::metrics::counter::Counter,
}

/// What a request was admitted under, and the units taken off at admission (its estimate);
/// [`Capacity::consume`] settles the difference with what it consumed.
pub struct Admitted(Option<Arc<TableCapacity>>, Kind, f64);

impl Capacity {
    pub fn new(
        settings: Settings,
        instance: &str,
        registry: &tern_telemetry::metrics::Metrics,
    ) -> Arc<Self> {
        let on_demand_initial = settings.on_demand_initial;
        let c = Arc::new(Self {
            settings,
            instance: instance.to_string(),
            tables: RwLock::default(),
            gacs: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            woken: Mutex::new(Instant::now()),
            on_demand_start: Mutex::new(on_demand_initial),
            grants: registry.register(
                "router_gac_grants",
                "grants received from GAC (one per table per report)",
                Default::default(),
            ),
            grant_failures: registry.register(
                "router_gac_report_failures",
                "reports to a GAC owner that got no answer",
                Default::default(),
            ),
        });
        registry.register_collector(Box::new(Collector(Arc::downgrade(&c))));
        c
    }

    /// Admits a request on `t` expected to cost `estimate` units (the least it can cost, or what
    /// is known before it runs: a put's item) and takes them off at once, so that requests in
    /// flight together, and the items of one batch, each see what the others took; or answers
    /// why not.
    pub fn admit(&self, t: &TableInfo, kind: Kind, estimate: f64) -> Result<Admitted, ApiError> {
        if !self.settings.enabled {
            return Ok(Admitted(None, kind, 0.0));
        }
        let table = self.table(t);
        let Some(table) = table else {
            // Beyond MAX_TABLES a table has no bucket here: admitted, and said in the log.
            tracing::debug!(table = %t.name, "more tables than the router tracks: admitted without a bucket");
            return Ok(Admitted(None, kind, 0.0));
        };
        let now = Instant::now();
        let mut st = table.state.lock();
        st.used = now;
        if st.on_demand != (t.billing_mode == "PAY_PER_REQUEST")
            || st.read_capacity != t.read_capacity
            || st.write_capacity != t.write_capacity
        {
            // UpdateTable changed the table: start from its new rates until GAC answers.
            st.on_demand = t.billing_mode == "PAY_PER_REQUEST";
            st.read_capacity = t.read_capacity;
            st.write_capacity = t.write_capacity;
            st.table_rates = table_rates(t, *self.on_demand_start.lock());
            let (rf, wf) = st.floors();
            st.read.floor = rf;
            st.write.floor = wf;
            st.read.granted_at = None;
            st.write.granted_at = None;
            self.wake.notify_one();
        }
        let settings = &self.settings;
        let b = st.bucket(kind);
        b.refill(now, settings);
        if b.tokens > 0.0 {
            b.admitted += 1;
            b.take(estimate, now, settings);
            drop(st);
            Ok(Admitted(Some(table), kind, estimate))
        } else {
            b.throttled += 1;
            b.throttled_total += 1;
            let on_demand = st.on_demand;
            drop(st);
            // A bucket that runs dry reports its demand at once (at most every EARLY_REPORT),
            // so a spike is met by GAC's answer instead of waiting for the next round.
            let mut woken = self.woken.lock();
            if now.saturating_duration_since(*woken) >= EARLY_REPORT {
                *woken = now;
                self.wake.notify_one();
            }
            Err(throttled(on_demand))
        }
    }

    /// Charges `units`, what the request `admitted` consumed, to its bucket (less the estimate
    /// taken at admission).
    pub fn consume(&self, admitted: &Admitted, units: f64) {
        let Some(table) = &admitted.0 else { return };
        let mut st = table.state.lock();
        let b = st.bucket(admitted.1);
        b.take(units - admitted.2, Instant::now(), &self.settings);
        b.consumed += units;
        b.consumed_total += units;
    }

    fn table(&self, t: &TableInfo) -> Option<Arc<TableCapacity>> {
        if let Some(c) = self.tables.read().get(&t.table_id) {
            return Some(c.clone());
        }
        let mut tables = self.tables.write();
        if let Some(c) = tables.get(&t.table_id) {
            return Some(c.clone());
        }
        if tables.len() >= MAX_TABLES {
            return None;
        }
        let now = Instant::now();
        let rates = table_rates(t, *self.on_demand_start.lock());
        let c = Arc::new(TableCapacity {
            created: now,
            id: t.table_id.clone(),
            name: t.name.clone(),
            state: Mutex::new(State {
                on_demand: t.billing_mode == "PAY_PER_REQUEST",
                read_capacity: t.read_capacity,
                write_capacity: t.write_capacity,
                read: Bucket::new(rates.0, now),
                write: Bucket::new(rates.1, now),
                used: now,
                routers: 1,
                table_rates: rates,
            }),
        });
        tables.insert(t.table_id.clone(), c.clone());
        self.wake.notify_one();
        Some(c)
    }

    /// A GAC instance's heartbeat: the instance is known from now on, and a new on-demand
    /// table starts at twice the initial peak it announces. A table this router began admitting
    /// before it heard that (its first requests came before the first heartbeat) and that has
    /// had no grant yet moves to the announced start too: it would otherwise stay at DynamoDB's
    /// default start until a grant, whatever GAC is configured with.
    fn heard_gac(&self, hb: GacHeartbeat) {
        let (r, w) = (
            hb.on_demand_initial_read_units,
            hb.on_demand_initial_write_units,
        );
        if r.is_finite() && r > 0.0 && w.is_finite() && w > 0.0 {
            let start = (2.0 * r.min(1e12), 2.0 * w.min(1e12));
            let before = std::mem::replace(&mut *self.on_demand_start.lock(), start);
            if before != start {
                let now = Instant::now();
                for t in self.tables.read().values() {
                    let mut st = t.state.lock();
                    if !st.on_demand
                        || st.read.granted_at.is_some()
                        || st.write.granted_at.is_some()
                    {
                        continue;
                    }
                    st.table_rates = start;
                    let (rf, wf) = st.floors();
                    let settings = &self.settings;
                    let st = &mut *st;
                    for (b, floor) in [(&mut st.read, rf), (&mut st.write, wf)] {
                        b.refill(now, settings);
                        b.floor = floor;
                        b.granted = floor;
                        b.tokens = b.tokens.max((floor / 10.0).max(1.0));
                    }
                }
            }
        }
        if subjects::is_valid_token(&hb.instance) {
            let mut gacs = self.gacs.lock();
            if gacs.len() < 1024 || gacs.contains_key(&hb.instance) {
                gacs.insert(hb.instance, Instant::now());
            }
        }
    }

    /// Listens for GAC instances and reports to them until the bus closes.
    pub async fn run(self: Arc<Self>, bus: Bus) -> anyhow::Result<()> {
        if !self.settings.enabled {
            return Ok(());
        }
        let me = self.clone();
        bus.consume(subjects::GAC_HEARTBEAT, move |hb: GacHeartbeat| {
            me.heard_gac(hb)
        })
        .await?;
        let bus = bus.with_timeout(self.settings.report.min(Duration::from_millis(500)));
        tokio::spawn(async move {
            loop {
                // Tables seen in the last seconds are reported more often, so that the routers
                // sharing them converge on their shares quickly.
                let young = self
                    .tables
                    .read()
                    .values()
                    .any(|t| t.created.elapsed() < YOUNG);
                let every = if young {
                    EARLY_REPORT.min(self.settings.report)
                } else {
                    self.settings.report
                };
                let _ = tokio::time::timeout(every, self.wake.notified()).await;
                self.report(&bus).await;
                tokio::time::sleep(EARLY_REPORT / 2).await;
            }
        });
        Ok(())
    }

    async fn report(&self, bus: &Bus) {
        let now = Instant::now();
        let live: Vec<String> = {
            let mut gacs = self.gacs.lock();
            gacs.retain(|_, at| now.duration_since(*at) < GAC_TTL * 5);
            gacs.iter()
                .filter(|(_, at)| now.duration_since(**at) < GAC_TTL)
                .map(|(g, _)| g.clone())
                .collect()
        };
        let tables: Vec<Arc<TableCapacity>> = {
            let mut tables = self.tables.write();
            tables.retain(|_, t| now.duration_since(t.state.lock().used) < TABLE_IDLE);
            tables.values().cloned().collect()
        };
        if live.is_empty() || tables.is_empty() {
            return;
        }
        // One message per owner, split every REPORT_CHUNK tables to stay far below the bus's
        // largest message however many tables the router serves.
        let mut by_owner: HashMap<&str, Vec<GrantRequest>> = HashMap::new();
        for t in &tables {
            let Some(owner) = tern_proto::gac::owner(&t.id, live.iter().map(String::as_str)) else {
                continue;
            };
            let mut st = t.state.lock();
            let (read_consumed, read_demand) = st.read.take_report(now);
            let (write_consumed, write_demand) = st.write.take_report(now);
            let chunks = by_owner.entry(owner).or_default();
            if chunks.last().is_none_or(|c| c.tables.len() >= REPORT_CHUNK) {
                chunks.push(GrantRequest {
                    router: self.instance.clone(),
                    tables: Vec::new(),
                });
            }
            chunks
                .last_mut()
                .expect("a chunk was just made")
                .tables
                .push(TableDemand {
                    table_id: t.id.clone(),
                    table_name: t.name.clone(),
                    on_demand: st.on_demand,
                    read_capacity: st.read_capacity,
                    write_capacity: st.write_capacity,
                    read_consumed,
                    write_consumed,
                    read_demand,
                    write_demand,
                });
        }
        let calls = by_owner
            .into_iter()
            .flat_map(|(owner, chunks)| chunks.into_iter().map(move |req| (owner, req)))
            .map(|(owner, req)| async move {
                let subject = subjects::gac_grant(owner);
                let result = bus.call::<_, GrantResponse>(&subject, &req).await;
                (owner, req, result)
            });
        let by_id: HashMap<&str, &Arc<TableCapacity>> =
            tables.iter().map(|t| (t.id.as_str(), t)).collect();
        for (owner, req, result) in futures::future::join_all(calls).await {
            match result {
                Ok(resp) => {
                    let now = Instant::now();
                    for g in resp.grants {
                        let Some(t) = by_id.get(g.table_id.as_str()) else {
                            continue;
                        };
                        self.grants.inc();
                        let mut st = t.state.lock();
                        st.routers = g.routers.max(1);
                        st.table_rates = (sane(g.table_read_rate), sane(g.table_write_rate));
                        let (rf, wf) = st.floors();
                        for (kind, rate, floor, burst) in [
                            (Kind::Read, g.read_rate, rf, g.read_burst_tokens),
                            (Kind::Write, g.write_rate, wf, g.write_burst_tokens),
                        ] {
                            let b = st.bucket(kind);
                            b.refill(now, &self.settings);
                            b.granted = sane(rate);
                            b.floor = floor;
                            b.granted_at = Some(now);
                            b.burst_tokens = sane(burst);
                            b.tokens = b.tokens.min(b.cap(now, &self.settings));
                        }
                    }
                }
                Err(e) => {
                    self.grant_failures.inc();
                    tracing::debug!(gac = owner, error = %e, "no grant from GAC");
                    // What was consumed goes into the next report (to this owner or another).
                    for d in &req.tables {
                        if let Some(t) = by_id.get(d.table_id.as_str()) {
                            let mut st = t.state.lock();
                            st.read.consumed += d.read_consumed;
                            st.write.consumed += d.write_consumed;
                        }
                    }
                }
            }
        }
    }
}

fn sane(x: f64) -> f64 {
    if x.is_finite() && x >= 0.0 {
        x
    } else {
        0.0
    }
}

/// DynamoDB's answer to a request beyond the table's throughput: a provisioned table's own
/// limit, or (on demand) the capacity it has now, which DynamoDB reports as a key range's.
pub fn throttled(on_demand: bool) -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::ProvisionedThroughputExceeded,
        if on_demand {
            "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically scaling your table or index so please try again shortly."
        } else {
            "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."
        },
    );
    e.throttled_by = Some(if on_demand {
        "KeyRangeThroughputExceeded"
    } else {
        "ProvisionedThroughputExceeded"
    });
    e
}

/// One kind's row of the scrape: kind, units consumed, requests throttled, rate now.
type KindRow = (&'static str, f64, u64, f64);

/// Consumed units, throttled requests and current rates per table, read at each scrape.
struct Collector(std::sync::Weak<Capacity>);

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("capacity collector")
    }
}

impl tern_telemetry::metrics::Collector for Collector {
    fn encode(
        &self,
        mut encoder: tern_telemetry::metrics::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let Some(c) = self.0.upgrade() else {
            return Ok(());
        };
        let now = Instant::now();
        let rows: Vec<(String, [KindRow; 2])> = c
            .tables
            .read()
            .values()
            .map(|t| {
                let st = t.state.lock();
                (
                    t.name.clone(),
                    [
                        (
                            "read",
                            st.read.consumed_total,
                            st.read.throttled_total,
                            st.read.rate(now, &c.settings),
                        ),
                        (
                            "write",
                            st.write.consumed_total,
                            st.write.throttled_total,
                            st.write.rate(now, &c.settings),
                        ),
                    ],
                )
            })
            .collect();
        use tern_telemetry::metrics::encode_samples;
        let series = |pick: fn(&KindRow) -> f64| {
            rows.iter().flat_map(move |(table, kinds)| {
                kinds
                    .iter()
                    .map(move |k| (vec![("table", table.as_str()), ("kind", k.0)], pick(k)))
            })
        };
        encode_samples(
            &mut encoder,
            "router_consumed_units",
            "Capacity units consumed by admitted requests, by table and kind (read, write)",
            true,
            series(|k| k.1),
        )?;
        encode_samples(
            &mut encoder,
            "router_throttled_requests",
            "Requests answered ProvisionedThroughputExceededException, by table and kind",
            true,
            series(|k| k.2 as f64),
        )?;
        encode_samples(
            &mut encoder,
            "router_admitted_rate_units",
            "The rate this router admits a table's units at now (granted by GAC, or decaying toward its floor)",
            false,
            series(|k| k.3),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            enabled: true,
            report: Duration::from_secs(1),
            hold: Duration::from_secs(5),
            decay: Duration::from_secs(5),
            on_demand_initial: ON_DEMAND_INITIAL,
        }
    }

    /// The granted rate holds, then decays toward the floor along one curve: no step.
    #[test]
    fn a_grant_holds_then_decays_smoothly_to_the_floor() {
        let s = settings();
        let t0 = Instant::now();
        let mut b = Bucket::new(50.0, t0);
        assert_eq!(b.rate(t0, &s), 50.0, "before any grant: the floor");
        b.granted = 90.0;
        b.granted_at = Some(t0);
        assert_eq!(b.rate(t0 + Duration::from_secs(5), &s), 90.0);
        let mut last = 90.0;
        for ms in (5_100..60_000).step_by(100) {
            let r = b.rate(t0 + Duration::from_millis(ms), &s);
            assert!(r <= last && r >= 50.0, "{ms}: {r} after {last}");
            assert!(last - r < 1.0, "a step of {} at {ms} ms", last - r);
            last = r;
        }
        assert!((last - 50.0).abs() < 0.01, "{last}");
    }

    /// A table first used before the router heard GAC starts at DynamoDB's default (4,000
    /// write units a second: a 390 KB put every ~0.1 s); the heartbeat announcing a higher
    /// initial peak raises it before any grant, as if the table had been first used after.
    #[test]
    fn a_table_used_before_the_first_heartbeat_takes_the_announced_start() {
        let registry = tern_telemetry::metrics::Metrics::new();
        let c = Capacity::new(settings(), "router-test", &registry);
        let t = TableInfo {
            name: "big".into(),
            table_id: "big-1".into(),
            billing_mode: "PAY_PER_REQUEST".into(),
            ..Default::default()
        };
        let admitted = |n: usize| {
            (0..n)
                .filter(|_| c.admit(&t, Kind::Write, 390.0).is_ok())
                .count()
        };
        assert!(
            admitted(20) < 5,
            "DynamoDB's start admits a put or two at once"
        );
        c.heard_gac(GacHeartbeat {
            instance: "gac-1".into(),
            on_demand_initial_read_units: 30_000_000.0,
            on_demand_initial_write_units: 10_000_000.0,
        });
        assert_eq!(admitted(20), 20, "the announced start admits them all");
        let st = c.tables.read()["big-1"].state.lock().table_rates;
        assert_eq!(st, (60_000_000.0, 20_000_000.0));
    }

    /// A router configured with GAC's raised initial peak admits at it before any heartbeat.
    #[test]
    fn a_router_set_like_gac_starts_there_before_hearing_it() {
        let registry = tern_telemetry::metrics::Metrics::new();
        let c = Capacity::new(
            Settings {
                on_demand_initial: (60_000_000.0, 20_000_000.0),
                ..settings()
            },
            "router-test",
            &registry,
        );
        let t = TableInfo {
            name: "big".into(),
            table_id: "big-1".into(),
            billing_mode: "PAY_PER_REQUEST".into(),
            ..Default::default()
        };
        let admitted = (0..20)
            .filter(|_| c.admit(&t, Kind::Write, 390.0).is_ok())
            .count();
        assert_eq!(admitted, 20, "the configured start admits them all");
        let st = c.tables.read()["big-1"].state.lock().table_rates;
        assert_eq!(st, (60_000_000.0, 20_000_000.0));
    }

    #[test]
    fn tokens_refill_at_the_rate_and_keep_at_most_a_second() {
        let s = settings();
        let t0 = Instant::now();
        let mut b = Bucket::new(100.0, t0);
        b.tokens = -50.0;
        b.refill(t0 + Duration::from_millis(500), &s);
        assert!((b.tokens - 0.0).abs() < 1e-9);
        b.refill(t0 + Duration::from_secs(10), &s);
        assert_eq!(b.tokens, 100.0);
        b.consumed = 30.0;
        b.admitted = 30;
        b.throttled = 20;
        let (consumed, demand) = b.take_report(t0 + Duration::from_secs(1));
        assert_eq!(consumed, 30.0);
        assert!((demand - 50.0).abs() < 1e-9);
    }
}
