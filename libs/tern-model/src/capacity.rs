//! Capacity units, counted as DynamoDB counts them.
//!
//! - A read unit is one strongly consistent read of up to 4 KB; an eventually consistent read
//!   costs half, a transactional one twice.
//! - A write unit is one write of up to 1 KB; a transactional write costs twice.
//! - Every item read or written costs at least one unit (half for an eventually consistent read).
//! - Query and Scan add up the sizes of all the items they read and round the sum up to 4 KB once;
//!   GetItem and each item of BatchGetItem round up on their own.
//! - A write is charged on the larger of the item before and after it (PutItem replacing an item,
//!   UpdateItem); DeleteItem on the item it deleted.

/// The kind of a read, which sets its price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    Eventual,
    Strong,
    Transactional,
}

impl ReadKind {
    pub fn consistent(consistent: bool) -> Self {
        if consistent {
            Self::Strong
        } else {
            Self::Eventual
        }
    }

    fn factor(self) -> f64 {
        match self {
            Self::Eventual => 0.5,
            Self::Strong => 1.0,
            Self::Transactional => 2.0,
        }
    }
}

pub const READ_UNIT_BYTES: usize = 4096;
pub const WRITE_UNIT_BYTES: usize = 1024;

/// Read units of one item of `size` bytes (DynamoDB's item size), or of a Query or Scan that read
/// `size` bytes in all. Nothing read still costs one unit (half, eventually consistent).
pub fn read_units(size: usize, kind: ReadKind) -> f64 {
    size.div_ceil(READ_UNIT_BYTES).max(1) as f64 * kind.factor()
}

/// Write units of a write whose larger item (before or after) is `size` bytes.
pub fn write_units(size: usize, transactional: bool) -> f64 {
    let units = size.div_ceil(WRITE_UNIT_BYTES).max(1) as f64;
    if transactional {
        units * 2.0
    } else {
        units
    }
}

/// Read units of an item from its stored JSON, parsing it only when the JSON is longer than one
/// unit: an item's DynamoDB size is never more than its JSON's length (names and values appear in
/// it whole, with type tags and quotes around them; numbers and binaries take more characters than
/// bytes), so a short JSON is one unit for certain.
pub fn read_units_of_json(json: &[u8], kind: ReadKind) -> f64 {
    if json.len() <= READ_UNIT_BYTES {
        return read_units(0, kind);
    }
    read_units(size_of_json(json), kind)
}

/// Write units of an item from its stored JSON (the same shortcut as [`read_units_of_json`]).
pub fn write_units_of_json(json: &[u8]) -> f64 {
    if json.len() <= WRITE_UNIT_BYTES {
        return write_units(0, false);
    }
    write_units(size_of_json(json), false)
}

/// DynamoDB's size of an item from its stored JSON (its length if it does not parse).
pub fn size_of_json(json: &[u8]) -> usize {
    // An item that does not parse (never stored by Tern) is charged by its length.
    crate::parse_item_json(json).map_or(json.len(), |i| crate::item_size(&i))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of DynamoDB's developer guide ("Read/write capacity mode", "Item sizes and
    /// formats", "Capacity unit consumption for reads and writes").
    #[test]
    fn documented_examples() {
        // "One read capacity unit represents one strongly consistent read per second, or two
        // eventually consistent reads per second, for an item up to 4 KB in size."
        assert_eq!(read_units(4096, ReadKind::Strong), 1.0);
        assert_eq!(read_units(4096, ReadKind::Eventual), 0.5);
        // "Transactional read requests require two read capacity units to perform one read per
        // second for items up to 4 KB."
        assert_eq!(read_units(4096, ReadKind::Transactional), 2.0);
        // "If you need to read an item that is 8 KB, DynamoDB needs to consume two read capacity
        // units... one for eventually consistent... four for transactional."
        assert_eq!(read_units(8 * 1024, ReadKind::Strong), 2.0);
        assert_eq!(read_units(8 * 1024, ReadKind::Eventual), 1.0);
        assert_eq!(read_units(8 * 1024, ReadKind::Transactional), 4.0);
        // "a strongly consistent read of an item that is 3.5 KB consumes 1 RCU; 10 KB ... 3 RCU"
        assert_eq!(read_units(3584, ReadKind::Strong), 1.0);
        assert_eq!(read_units(10 * 1024, ReadKind::Strong), 3.0);
        // "For example, if you read an item that is 3.5 KB, DynamoDB rounds the item size to 4 KB.
        // If you read an item of 10 KB, DynamoDB rounds the item size to 12 KB."
        assert_eq!(read_units(10 * 1024, ReadKind::Eventual), 1.5);
        // "If you write an item that is 500 bytes ... 1 KB ... If 3.5 KB: 4 WCU"
        assert_eq!(write_units(500, false), 1.0);
        assert_eq!(write_units(3584, false), 4.0);
        // "Transactional write requests require 2 write capacity units to perform one write per
        // second for items up to 1 KB."
        assert_eq!(write_units(1024, true), 2.0);
        // "For example, if you write a 2 KB item, transactionally ... 4 write capacity units"
        assert_eq!(write_units(2048, true), 4.0);
        // "Query: ... if you Query 10 items of 40 bytes each, the 400 bytes are rounded up to 4 KB:
        // one strongly consistent read unit" (the sum is rounded once, not each item).
        assert_eq!(read_units(10 * 40, ReadKind::Strong), 1.0);
        // "BatchGetItem: each item rounded up to 4 KB: 100 items of 1.5 KB (as 4 KB each): 100
        // strongly consistent read units", not the 37.5 of a Query over the same bytes.
        let batch: f64 = (0..100).map(|_| read_units(1536, ReadKind::Strong)).sum();
        assert_eq!(batch, 100.0);
        assert_eq!(read_units(100 * 1536, ReadKind::Strong), 38.0);
        // Nothing read, nothing written: still the minimum.
        assert_eq!(read_units(0, ReadKind::Strong), 1.0);
        assert_eq!(read_units(0, ReadKind::Eventual), 0.5);
        assert_eq!(write_units(0, false), 1.0);
    }

    /// The shortcut never undercharges: a JSON within one unit is an item within one unit.
    #[test]
    fn units_from_json_match_the_item_size() {
        for n in [
            0usize, 10, 900, 1000, 1020, 1100, 4000, 4090, 4100, 9000, 40_000,
        ] {
            for (name, value) in [
                ("s", format!(r#"{{"S":"{}"}}"#, "x".repeat(n))),
                ("n", format!(r#"{{"N":"{}"}}"#, "9".repeat((n % 38).max(1)))),
                ("b", format!(r#"{{"B":"{}"}}"#, "QUJD".repeat(n / 4))),
            ] {
                let json = format!(r#"{{"pk":{{"S":"k"}},"{name}":{value}}}"#);
                let item = crate::parse_item_json(json.as_bytes()).unwrap();
                let size = crate::item_size(&item);
                assert!(size <= json.len(), "{json}");
                assert_eq!(
                    read_units_of_json(json.as_bytes(), ReadKind::Strong),
                    read_units(size, ReadKind::Strong),
                    "{n} {name}"
                );
                assert_eq!(
                    write_units_of_json(json.as_bytes()),
                    write_units(size, false),
                    "{n} {name}"
                );
            }
        }
    }
}
