//! The arithmetic of admission: each table's rate, its burst balance, and how the rate is shared
//! among the routers that serve it. Pure: the caller passes the time.
//!
//! - A PROVISIONED table's rate is its provisioned units per second. Capacity it leaves unused
//!   accrues as burst balance, up to `burst_seconds` of its rate (DynamoDB keeps 300 seconds);
//!   a new table starts with none. Routers whose clients want more than their share draw on the
//!   balance; what they consume beyond the rate comes off it.
//! - A PAY_PER_REQUEST table's rate is twice its previous peak (DynamoDB: "instantly accommodates
//!   up to double the previous peak traffic"), and never less than twice the initial peak a new
//!   table is given. A level of traffic becomes the previous peak once it is `peak_delay` old:
//!   DynamoDB warns that going beyond double the previous peak within 30 minutes may be
//!   throttled. There is no burst balance.
//! - Each router may also save up to its share of the balance in its own bucket, so that a spike
//!   after a quiet spell is met at once, before GAC hears of it.
//! - The rate is shared max-min fairly by the routers' demands (a router asking for less than an
//!   equal share gets what it asks; the rest is shared by the others), and what no router asks
//!   for is split evenly so that any router's traffic can grow at once.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tern_proto::gac::{TableDemand, TableGrant};

/// A router that has not reported for this long no longer shares the table.
pub const ROUTER_TTL: Duration = Duration::from_secs(3);
/// Bins an on-demand table's traffic is summed in over the peak delay (their width is the delay
/// over this, at least 5 s), so its state stays small whatever the delay.
const PEAK_BINS: u64 = 60;

#[derive(Debug, Clone)]
pub struct Limits {
    pub burst_seconds: f64,
    pub initial_read_peak: f64,
    pub initial_write_peak: f64,
    pub peak_delay: Duration,
    pub max_tables: usize,
}

#[derive(Debug)]
struct Dim {
    /// Units of unused capacity saved (negative: consumption ran ahead of the rate).
    burst: f64,
    updated: Instant,
    /// On-demand: the highest per-second rate among traffic at least `peak_delay` old.
    settled_peak: f64,
    /// On-demand: units consumed per bin, the youngest last.
    bins: VecDeque<(u64, f64)>,
}

impl Dim {
    fn new(now: Instant) -> Self {
        Self {
            burst: 0.0,
            updated: now,
            settled_peak: 0.0,
            bins: VecDeque::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Demand {
    read: f64,
    write: f64,
}

#[derive(Debug)]
pub struct Table {
    pub name: String,
    on_demand: bool,
    read_capacity: f64,
    write_capacity: f64,
    read: Dim,
    write: Dim,
    routers: HashMap<String, (Instant, Demand)>,
    last_report: Instant,
}

/// What [`Tables::report`] decided, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    pub read_rate: f64,
    pub write_rate: f64,
    pub read_burst: f64,
    pub write_burst: f64,
}

pub struct Tables {
    limits: Limits,
    /// When time began for peak bins.
    epoch: Instant,
    tables: HashMap<String, Table>,
}

impl Tables {
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            epoch: now,
            tables: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.tables.len()
    }

    fn bin_secs(&self) -> u64 {
        (self.limits.peak_delay.as_secs() / PEAK_BINS).max(5)
    }

    /// One router's report of one table: updates the table's balance and peak and answers the
    /// router's rates. Returns the table ids evicted to stay within `max_tables`.
    pub fn report(
        &mut self,
        router: &str,
        d: &TableDemand,
        now: Instant,
    ) -> (TableGrant, Decision, Option<String>) {
        let bin_secs = self.bin_secs();
        let mut evicted = None;
        if !self.tables.contains_key(&d.table_id) && self.tables.len() >= self.limits.max_tables {
            // The table heard from least recently goes; its routers fall back to their floor
            // until they report it again.
            if let Some(oldest) = self
                .tables
                .iter()
                .min_by_key(|(_, t)| t.last_report)
                .map(|(id, _)| id.clone())
            {
                self.tables.remove(&oldest);
                evicted = Some(oldest);
            }
        }
        let t = self
            .tables
            .entry(d.table_id.clone())
            .or_insert_with(|| Table {
                name: d.table_name.clone(),
                on_demand: d.on_demand,
                read_capacity: 0.0,
                write_capacity: 0.0,
                read: Dim::new(now),
                write: Dim::new(now),
                routers: HashMap::new(),
                last_report: now,
            });
        t.name.clone_from(&d.table_name);
        t.on_demand = d.on_demand;
        t.read_capacity = d.read_capacity as f64;
        t.write_capacity = d.write_capacity as f64;
        t.last_report = now;
        t.routers.insert(
            router.to_string(),
            (
                now,
                Demand {
                    read: sane(d.read_demand),
                    write: sane(d.write_demand),
                },
            ),
        );
        t.routers
            .retain(|_, (at, _)| now.duration_since(*at) < ROUTER_TTL);
        let bin = now.duration_since(self.epoch).as_secs() / bin_secs;
        let limits = &self.limits;
        let read_rate = rate(
            &mut t.read,
            t.on_demand,
            t.read_capacity,
            limits.initial_read_peak,
            limits,
            sane(d.read_consumed),
            (bin, bin_secs),
            now,
        );
        let write_rate = rate(
            &mut t.write,
            t.on_demand,
            t.write_capacity,
            limits.initial_write_peak,
            limits,
            sane(d.write_consumed),
            (bin, bin_secs),
            now,
        );
        let demands: Vec<(&str, Demand)> = t
            .routers
            .iter()
            .map(|(r, (_, dem))| (r.as_str(), *dem))
            .collect();
        let read = share(
            router,
            &demands
                .iter()
                .map(|(r, d)| (*r, d.read))
                .collect::<Vec<_>>(),
            read_rate,
            t.read.burst,
        );
        let write = share(
            router,
            &demands
                .iter()
                .map(|(r, d)| (*r, d.write))
                .collect::<Vec<_>>(),
            write_rate,
            t.write.burst,
        );
        (
            TableGrant {
                table_id: d.table_id.clone(),
                read_rate: read,
                write_rate: write,
                routers: demands.len() as u32,
                table_read_rate: read_rate,
                table_write_rate: write_rate,
                read_burst_tokens: t.read.burst.max(0.0) / demands.len().max(1) as f64,
                write_burst_tokens: t.write.burst.max(0.0) / demands.len().max(1) as f64,
            },
            Decision {
                read_rate,
                write_rate,
                read_burst: t.read.burst,
                write_burst: t.write.burst,
            },
            evicted,
        )
    }

    /// Forgets tables no router has reported for `idle`; returns their ids.
    pub fn expire(&mut self, idle: Duration, now: Instant) -> Vec<(String, String)> {
        let gone: Vec<(String, String)> = self
            .tables
            .iter()
            .filter(|(_, t)| now.duration_since(t.last_report) >= idle)
            .map(|(id, t)| (id.clone(), t.name.clone()))
            .collect();
        for (id, _) in &gone {
            self.tables.remove(id);
        }
        gone
    }
}

/// Non-negative and finite: a report's numbers are a peer's, not to be trusted blindly.
fn sane(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x.min(1e12)
    } else {
        0.0
    }
}

/// The table's rate in one dimension now, after accounting `consumed` units.
#[allow(clippy::too_many_arguments)]
fn rate(
    dim: &mut Dim,
    on_demand: bool,
    capacity: f64,
    initial_peak: f64,
    limits: &Limits,
    consumed: f64,
    (bin, bin_secs): (u64, u64),
    now: Instant,
) -> f64 {
    let mut elapsed = now.duration_since(dim.updated).as_secs_f64();
    dim.updated = now;
    if elapsed > ROUTER_TTL.as_secs_f64() {
        // Nobody reported the table here for a while: it was idle at every router, or owned by
        // another instance (a takeover and back). What happened meanwhile was not seen here, so
        // it is not credited.
        elapsed = 0.0;
    }
    if on_demand {
        match dim.bins.back_mut() {
            Some((b, units)) if *b == bin => *units += consumed,
            _ => dim.bins.push_back((bin, consumed)),
        }
        let settled_before = bin.saturating_sub(limits.peak_delay.as_secs().div_ceil(bin_secs));
        while let Some(&(b, units)) = dim.bins.front() {
            if b >= settled_before {
                break;
            }
            dim.settled_peak = dim.settled_peak.max(units / bin_secs as f64);
            dim.bins.pop_front();
        }
        dim.burst = 0.0;
        2.0 * dim.settled_peak.max(initial_peak)
    } else {
        dim.bins.clear();
        dim.settled_peak = 0.0;
        let cap = capacity * limits.burst_seconds;
        dim.burst = (dim.burst + capacity * elapsed - consumed).clamp(-capacity, cap.max(0.0));
        capacity
    }
}

/// `router`'s rate: its max-min fair share of `rate` by `demands`, the unasked-for rest split
/// evenly, and, when it wants more than that, a share of the burst balance to draw within the
/// next second.
fn share(router: &str, demands: &[(&str, f64)], rate: f64, burst: f64) -> f64 {
    let n = demands.len().max(1);
    let mut order: Vec<(&str, f64)> = demands.to_vec();
    order.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut left = rate;
    let mut base: HashMap<&str, f64> = HashMap::new();
    for (i, (r, d)) in order.iter().enumerate() {
        let fair = left / (n - i) as f64;
        let got = d.min(fair);
        base.insert(r, got);
        left -= got;
    }
    let even = left.max(0.0) / n as f64;
    let mine = base.get(router).copied().unwrap_or(0.0) + even;
    let wanted = demands
        .iter()
        .find(|(r, _)| *r == router)
        .map_or(0.0, |(_, d)| *d);
    if burst <= 0.0 || wanted <= mine {
        return mine;
    }
    let excess: f64 = demands
        .iter()
        .map(|(r, d)| (d - base.get(r).copied().unwrap_or(0.0) - even).max(0.0))
        .sum();
    let extra = (wanted - mine).min(burst * (wanted - mine) / excess.max(f64::MIN_POSITIVE));
    mine + extra
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            burst_seconds: 300.0,
            initial_read_peak: 6000.0,
            initial_write_peak: 2000.0,
            peak_delay: Duration::from_secs(60),
            max_tables: 3,
        }
    }

    fn demand(write_demand: f64, write_consumed: f64) -> TableDemand {
        TableDemand {
            table_id: "t1".into(),
            table_name: "t".into(),
            read_capacity: 10,
            write_capacity: 100,
            write_demand,
            write_consumed,
            ..Default::default()
        }
    }

    #[test]
    fn shares_are_max_min_fair_and_use_the_whole_rate() {
        let d = [("a", 10.0), ("b", 290.0)];
        assert!((share("a", &d, 100.0, 0.0) - 10.0).abs() < 1e-9);
        assert!((share("b", &d, 100.0, 0.0) - 90.0).abs() < 1e-9);
        let d = [("a", 150.0), ("b", 150.0)];
        assert!((share("a", &d, 100.0, 0.0) - 50.0).abs() < 1e-9);
        // Nobody asks: an even split, so either can start at once.
        let d = [("a", 0.0), ("b", 0.0)];
        assert!((share("b", &d, 100.0, 0.0) - 50.0).abs() < 1e-9);
        // Asking for less than there is: the rest is split.
        let d = [("a", 20.0), ("b", 30.0)];
        assert!((share("a", &d, 100.0, 0.0) - 45.0).abs() < 1e-9);
        // The burst balance tops up a router that wants more, never beyond what it wants.
        let d = [("a", 150.0), ("b", 10.0)];
        assert!((share("a", &d, 100.0, 1000.0) - 150.0).abs() < 1e-9);
        assert!((share("a", &d, 100.0, 20.0) - 110.0).abs() < 1e-9);
    }

    #[test]
    fn unused_capacity_accrues_as_burst_up_to_its_cap() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut tables = Tables::new(limits(), t0);
        let (g, dec, _) = tables.report("a", &demand(0.0, 0.0), t0);
        assert_eq!(g.table_write_rate, 100.0);
        assert_eq!(dec.write_burst, 0.0, "a new table starts with no balance");
        // 60 idle seconds, reported each second as routers do: 6,000 units saved.
        let mut dec = dec;
        for s in 1..=60 {
            dec = tables.report("a", &demand(0.0, 0.0), at(s)).1;
        }
        assert!((dec.write_burst - 6000.0).abs() < 1e-6);
        // A spike: 300 units/s wanted, so the router gets its 100 plus the balance it may draw.
        let (g, _, _) = tables.report("a", &demand(300.0, 0.0), at(60));
        assert!((g.write_rate - 300.0).abs() < 1e-9);
        // Consuming 300/s for 10 s takes 2,000 units off.
        for s in 61..=70 {
            dec = tables.report("a", &demand(300.0, 300.0), at(s)).1;
        }
        assert!(
            (dec.write_burst - 4000.0).abs() < 1e-6,
            "{}",
            dec.write_burst
        );
        // Never more than 300 s of the rate.
        for s in 71..=400 {
            dec = tables.report("a", &demand(0.0, 0.0), at(s)).1;
        }
        assert!((dec.write_burst - 30_000.0).abs() < 1e-6);
        // Time nobody reported the table (it was another instance's, or idle everywhere) is not
        // credited: the balance goes on from where it was.
        let spent = tables.report("a", &demand(300.0, 20_000.0), at(401)).1;
        assert!(
            (spent.write_burst - 10_100.0).abs() < 1e-6,
            "{}",
            spent.write_burst
        );
        let later = tables.report("a", &demand(0.0, 0.0), at(500)).1;
        assert!(
            (later.write_burst - 10_100.0).abs() < 1e-6,
            "{}",
            later.write_burst
        );
    }

    #[test]
    fn on_demand_allows_double_the_settled_peak() {
        let t0 = Instant::now();
        let mut tables = Tables::new(limits(), t0);
        let od = |consumed: f64| TableDemand {
            on_demand: true,
            write_consumed: consumed,
            ..demand(0.0, 0.0)
        };
        let (g, _, _) = tables.report("a", &od(0.0), t0);
        assert_eq!(
            g.table_write_rate, 4000.0,
            "twice the initial peak of 2,000"
        );
        // 5,000 units/s for 20 s, reported each second.
        for s in 1..=20 {
            tables.report("a", &od(5000.0), t0 + Duration::from_secs(s));
        }
        let (g, _, _) = tables.report("a", &od(0.0), t0 + Duration::from_secs(30));
        assert_eq!(
            g.table_write_rate, 4000.0,
            "not yet: the peak is younger than the delay"
        );
        let (g, _, _) = tables.report("a", &od(0.0), t0 + Duration::from_secs(100));
        assert!(
            (g.table_write_rate - 10_000.0).abs() < 1e-6,
            "{}",
            g.table_write_rate
        );
    }

    #[test]
    fn routers_that_stop_reporting_stop_sharing_and_tables_stay_bounded() {
        let t0 = Instant::now();
        let mut tables = Tables::new(limits(), t0);
        tables.report("a", &demand(150.0, 0.0), t0);
        let (g, _, _) = tables.report("b", &demand(150.0, 0.0), t0);
        assert_eq!(g.routers, 2);
        assert!((g.write_rate - 50.0).abs() < 1e-9);
        let (g, _, _) = tables.report("b", &demand(150.0, 0.0), t0 + ROUTER_TTL);
        assert_eq!(g.routers, 1);
        // The whole rate, plus 50 of the 300 units the table saved in those 3 s.
        assert!((g.write_rate - 150.0).abs() < 1e-9, "{}", g.write_rate);
        for i in 0..5 {
            let d = TableDemand {
                table_id: format!("x{i}"),
                ..demand(1.0, 0.0)
            };
            tables.report("a", &d, t0 + Duration::from_secs(10 + i));
        }
        assert_eq!(tables.len(), 3);
        assert_eq!(
            tables
                .expire(Duration::from_secs(1), t0 + Duration::from_secs(100))
                .len(),
            3
        );
        assert_eq!(tables.len(), 0);
    }
}
