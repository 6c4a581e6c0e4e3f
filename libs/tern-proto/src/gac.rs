//! Global admission control: routers report each table's demand to the table's GAC owner and
//! get back the rate at which they may admit its reads and writes.
//!
//! Units are DynamoDB capacity units (read units of 4 KB, write units of 1 KB), as floating point
//! because an eventually consistent read costs half a unit.

/// A GAC instance announces itself every few hundred milliseconds; routers and the other GAC
/// instances derive the live fleet, and with it each table's owner, from these.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GacHeartbeat {
    #[prost(string, tag = "1")]
    pub instance: String,
    /// A new on-demand table's previous peak (units per second) as this instance is configured:
    /// routers start such a table at twice it until its first grant.
    #[prost(double, tag = "2")]
    pub on_demand_initial_read_units: f64,
    #[prost(double, tag = "3")]
    pub on_demand_initial_write_units: f64,
}

/// One router's report of the tables it serves that the receiving GAC instance owns.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GrantRequest {
    #[prost(string, tag = "1")]
    pub router: String,
    #[prost(message, repeated, tag = "2")]
    pub tables: Vec<TableDemand>,
}

/// A table's traffic at one router since its last report.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TableDemand {
    /// The table's incarnation (`TableInfo::table_id`).
    #[prost(string, tag = "1")]
    pub table_id: String,
    #[prost(string, tag = "2")]
    pub table_name: String,
    /// PAY_PER_REQUEST; otherwise PROVISIONED at `read_capacity`/`write_capacity` units/s.
    #[prost(bool, tag = "3")]
    pub on_demand: bool,
    #[prost(uint64, tag = "4")]
    pub read_capacity: u64,
    #[prost(uint64, tag = "5")]
    pub write_capacity: u64,
    /// Units consumed by admitted requests since the last report.
    #[prost(double, tag = "6")]
    pub read_consumed: f64,
    #[prost(double, tag = "7")]
    pub write_consumed: f64,
    /// Units per second the router's clients asked for (consumed plus throttled).
    #[prost(double, tag = "8")]
    pub read_demand: f64,
    #[prost(double, tag = "9")]
    pub write_demand: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GrantResponse {
    #[prost(string, tag = "1")]
    pub instance: String,
    #[prost(message, repeated, tag = "2")]
    pub grants: Vec<TableGrant>,
}

/// The rates one router may admit a table's requests at until its next report.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TableGrant {
    #[prost(string, tag = "1")]
    pub table_id: String,
    /// Units per second.
    #[prost(double, tag = "2")]
    pub read_rate: f64,
    #[prost(double, tag = "3")]
    pub write_rate: f64,
    /// Routers sharing the table at the owner; a router cut off from GAC falls back toward the
    /// table's rate divided by this.
    #[prost(uint32, tag = "4")]
    pub routers: u32,
    /// The table's whole rate (provisioned, or what on-demand admits now), units per second.
    #[prost(double, tag = "5")]
    pub table_read_rate: f64,
    #[prost(double, tag = "6")]
    pub table_write_rate: f64,
    /// Units of the table's saved (burst) capacity this router may hold beyond a second of its
    /// rate: what it leaves unused accrues up to this, to be spent on a spike at once.
    #[prost(double, tag = "7")]
    pub read_burst_tokens: f64,
    #[prost(double, tag = "8")]
    pub write_burst_tokens: f64,
}

/// The GAC instance owning a table among `live` instances: rendezvous hashing, so every router
/// and GAC instance that sees the same fleet picks the same owner, and an instance leaving moves
/// only its own tables.
pub fn owner<'a>(table_id: &str, live: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    live.into_iter().max_by_key(|instance| {
        let mut buf = Vec::with_capacity(table_id.len() + instance.len() + 1);
        buf.extend_from_slice(instance.as_bytes());
        buf.push(0);
        buf.extend_from_slice(table_id.as_bytes());
        (xxhash_rust::xxh3::xxh3_64(&buf), *instance)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn owners_spread_and_move_only_when_their_instance_leaves() {
        let three = ["gac-1", "gac-2", "gac-3"];
        let tables: Vec<String> = (0..300).map(|i| format!("table-{i}")).collect();
        let owners: Vec<&str> = tables
            .iter()
            .map(|t| super::owner(t, three).unwrap())
            .collect();
        for g in three {
            let n = owners.iter().filter(|o| **o == g).count();
            assert!((60..=140).contains(&n), "{g} owns {n} of 300");
        }
        for (t, before) in tables.iter().zip(&owners) {
            let after = super::owner(t, ["gac-1", "gac-3"]).unwrap();
            if *before != "gac-2" {
                assert_eq!(after, *before, "{t} moved though its owner stayed");
            }
        }
        assert_eq!(super::owner("t", std::iter::empty()), None);
    }
}
