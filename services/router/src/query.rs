//! Query and Scan: pages of at most `Limit` items and 1 MB read, streamed from the storage nodes'
//! range reads (no partition is loaded whole), FilterExpression applied after the page is read,
//! LastEvaluatedKey to resume strictly after the last item read.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tern_model::{ApiError, ErrorCode, Item, KeySchema, PathElem, PrimaryKey, ReadExpressions};
use tern_proto::memds::TableInfo;
use tern_proto::storage::ScanRequest;

use tern_model::capacity::{read_units, ReadKind};

use crate::capacity::Kind;
use crate::dispatch;
use crate::items::{capacity_json, key_schema, wants_capacity, wants_indexes};
use crate::json::Request;
use crate::Router;

/// DynamoDB's page: reading stops once this much item data was read.
const PAGE_BYTES: u32 = 1024 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Select {
    All,
    Specific,
    Count,
}

/// What Query and Scan share: the parsed expressions and paging parameters.
struct Common {
    table: Arc<TableInfo>,
    schema: KeySchema,
    exprs: ReadExpressions,
    select: Select,
    limit: Option<u32>,
    consistent: bool,
    capacity: bool,
    indexes: bool,
    start_key: Option<PrimaryKey>,
}

fn common(req: &Request, t: Arc<TableInfo>, key_expr: bool) -> Result<Common, ApiError> {
    if let Some(index) = req.str("IndexName")? {
        return Err(ApiError::validation(format!(
            "The table does not have the specified index: {index}"
        )));
    }
    let schema = key_schema(&t)?;
    let key_text = if key_expr {
        req.str("KeyConditionExpression")?
    } else {
        None
    };
    let filter_text = req.str("FilterExpression")?;
    let projection_text = req.str("ProjectionExpression")?;
    let legacy_filter = if key_expr {
        "QueryFilter"
    } else {
        "ScanFilter"
    };
    for (legacy, modern, present) in [
        (
            "AttributesToGet",
            "ProjectionExpression",
            projection_text.is_some(),
        ),
        (legacy_filter, "FilterExpression", filter_text.is_some()),
        (
            "KeyConditions",
            "KeyConditionExpression",
            key_text.is_some(),
        ),
    ] {
        if present && req.get(legacy).is_some() {
            return Err(ApiError::validation(format!(
                "Can not use both expression and non-expression parameters in the same request: Non-expression parameters: {{{legacy}}} Expression parameters: {{{modern}}}"
            )));
        }
    }
    let legacy_filter_condition = match req.object(legacy_filter)? {
        Some(conds) => Some(tern_model::legacy_condition(
            legacy_filter,
            conds,
            req.str("ConditionalOperator")?,
        )?),
        None if req.get("ConditionalOperator").is_some() => {
            return Err(ApiError::validation(
                "ConditionalOperator can only be used when Expected or QueryFilter or ScanFilter is present",
            ))
        }
        None => None,
    };
    let (names, values) = req
        .substitutions(key_text.is_some() || filter_text.is_some() || projection_text.is_some())?;
    let mut exprs = tern_model::parse_read_expressions(
        &schema,
        key_text,
        filter_text,
        projection_text,
        names.as_ref(),
        values.as_ref(),
    )?;
    if legacy_filter_condition.is_some() {
        exprs.filter = legacy_filter_condition;
    }
    if let Some(attrs) = req.array("AttributesToGet")? {
        let paths = attrs
            .iter()
            .map(|a| match a.as_str() {
                Some(name) => Ok(vec![PathElem::Name(name.to_string())]),
                None => Err(ApiError::new(
                    ErrorCode::Serialization,
                    "AttributesToGet must hold strings",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        exprs.projection = Some(paths);
    }
    if key_expr && exprs.key.is_none() {
        let Some(legacy) = req.object("KeyConditions")? else {
            return Err(ApiError::validation(
                "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.",
            ));
        };
        exprs.key = Some(legacy_key_conditions(&schema, legacy)?);
    }
    let projected = exprs.projection.is_some();
    let select = match req.str("Select")? {
        None => {
            if projected {
                Select::Specific
            } else {
                Select::All
            }
        }
        Some("ALL_ATTRIBUTES") if projected => {
            return Err(ApiError::validation(
                "Cannot specify the ProjectionExpression when choosing to get ALL_ATTRIBUTES",
            ))
        }
        Some("ALL_ATTRIBUTES") => Select::All,
        Some("SPECIFIC_ATTRIBUTES") if !projected => {
            return Err(ApiError::validation(
                "Must specify the ProjectionExpression or AttributesToGet when choosing to get SPECIFIC_ATTRIBUTES",
            ))
        }
        Some("SPECIFIC_ATTRIBUTES") => Select::Specific,
        Some("COUNT") if projected => {
            return Err(ApiError::validation(
                "Cannot specify the ProjectionExpression when choosing to get COUNT",
            ))
        }
        Some("COUNT") => Select::Count,
        Some("ALL_PROJECTED_ATTRIBUTES") => {
            return Err(ApiError::validation(
                "ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName",
            ))
        }
        Some(other) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'select' failed to satisfy constraint: Member must satisfy enum value set: [SPECIFIC_ATTRIBUTES, COUNT, ALL_ATTRIBUTES, ALL_PROJECTED_ATTRIBUTES]"
            )))
        }
    };
    let limit = match req.get("Limit") {
        None => None,
        Some(v) => match v.as_i64() {
            Some(n) if n >= 1 => Some(n.min(u32::MAX as i64) as u32),
            _ => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{v}' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1"
                )))
            }
        },
    };
    let start_key = match req.get("ExclusiveStartKey") {
        None => None,
        Some(v) => {
            let item = tern_model::parse_item(v)?;
            Some(schema.parse_key(&item).map_err(|_| {
                ApiError::validation(
                    "The provided starting key is invalid: The provided key element does not match the schema",
                )
            })?)
        }
    };
    Ok(Common {
        table: t,
        schema,
        exprs,
        select,
        limit,
        consistent: req.bool("ConsistentRead")?.unwrap_or(false),
        capacity: wants_capacity(req)?,
        indexes: wants_indexes(req),
        start_key,
    })
}

fn legacy_key_conditions(
    schema: &KeySchema,
    legacy: &Map<String, Value>,
) -> Result<tern_model::KeyCondition, ApiError> {
    let mut conds = Vec::new();
    for (attr, spec) in legacy {
        let op = spec
            .get("ComparisonOperator")
            .and_then(Value::as_str)
            .ok_or_else(|| crate::json::null_member("keyConditions.member.comparisonOperator"))?;
        let args = match spec.get("AttributeValueList") {
            Some(Value::Array(list)) => list
                .iter()
                .map(tern_model::parse_value)
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        conds.push((attr.clone(), op.to_string(), args));
    }
    tern_model::legacy_key_condition(schema, &conds)
}

/// Items read so far, and what the answer reports of them.
#[derive(Default)]
struct Page {
    items: Vec<Vec<u8>>,
    count: usize,
    scanned: usize,
    /// DynamoDB's size of every item read (capacity is charged on what was read).
    bytes: usize,
    last: Option<Item>,
}

impl Page {
    /// Takes one page of a storage range read.
    fn take(&mut self, c: &Common, raw: Vec<Vec<u8>>) -> Result<(), ApiError> {
        let n = raw.len();
        for (i, bytes) in raw.into_iter().enumerate() {
            let item = tern_model::parse_item_json(&bytes)?;
            self.scanned += 1;
            self.bytes += tern_model::item_size(&item);
            let keep = c
                .exprs
                .filter
                .as_ref()
                .is_none_or(|f| f.evaluate(Some(&item)));
            if keep {
                self.count += 1;
                match (c.select, &c.exprs.projection) {
                    (Select::Count, _) => {}
                    (_, Some(paths)) => self
                        .items
                        .push(tern_model::item_to_json(&tern_model::project(&item, paths))),
                    (_, None) => self.items.push(bytes),
                }
            }
            if i + 1 == n {
                self.last = Some(item);
            }
        }
        Ok(())
    }

    /// Read units of the page: the sizes of every item read (filtered out or not), summed and
    /// rounded up to 4 KB once.
    fn units(&self, c: &Common) -> f64 {
        read_units(self.bytes, ReadKind::consistent(c.consistent))
    }

    fn answer(self, c: &Common, more: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.items.iter().map(Vec::len).sum::<usize>() + 128);
        out.push(b'{');
        if c.select != Select::Count {
            out.extend_from_slice(b"\"Items\":[");
            for (i, item) in self.items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(item);
            }
            out.extend_from_slice(b"],");
        }
        let mut tail = json!({ "Count": self.count, "ScannedCount": self.scanned });
        if more {
            if let Some(last) = &self.last {
                let mut key = Map::new();
                for name in
                    std::iter::once(&c.schema.hash.0).chain(c.schema.range.as_ref().map(|r| &r.0))
                {
                    if let Some(v) = last.get(name) {
                        let json: Value = serde_json::from_slice(&tern_model::value_to_json(v))
                            .expect("values encode as JSON");
                        key.insert(name.clone(), json);
                    }
                }
                tail["LastEvaluatedKey"] = Value::Object(key);
            }
        }
        if c.capacity {
            tail["ConsumedCapacity"] = capacity_json(&c.table.name, self.units(c), c.indexes);
        }
        let tail = serde_json::to_vec(&tail).expect("json");
        out.extend_from_slice(&tail[1..]);
        out
    }
}

pub async fn query(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let table = req.table_name()?;
    let t = dispatch::active_table(r, table, false).await?;
    let c = common(req, t, true)?;
    let key = c.exprs.key.clone().expect("Query has a key condition");
    let forward = req.bool("ScanIndexForward")?.unwrap_or(true);
    let mut range = key.range();
    if let Some(start) = &c.start_key {
        if start.hash != key.hash {
            return Err(ApiError::validation(
                "The provided starting key is outside query boundaries based on provided conditions",
            ));
        }
        let k = start.storage_key();
        if k < range.start || k > range.end {
            return Err(ApiError::validation(
                "The provided starting key is outside query boundaries based on provided conditions",
            ));
        }
        if forward {
            range.start = k;
            range.start_inclusive = false;
        } else {
            range.end = k;
            range.end_inclusive = false;
        }
    }
    let hash = PrimaryKey {
        hash: key.hash.clone(),
        range: None,
    }
    .hash();
    let scan = ScanRequest {
        start: range.start,
        start_inclusive: range.start_inclusive,
        end: range.end,
        end_inclusive: range.end_inclusive,
        reverse: !forward,
        limit: c.limit.unwrap_or(0),
        max_bytes: PAGE_BYTES,
        consistent: c.consistent,
        ..Default::default()
    };
    let admitted = r.capacity.admit(
        &c.table,
        Kind::Read,
        read_units(0, ReadKind::consistent(c.consistent)),
    )?;
    // A failed range read is charged nothing.
    let resp = dispatch::scan(r, c.table.clone(), hash, scan).await?;
    let limit_hit = c.limit.is_some_and(|l| resp.keys.len() as u32 >= l);
    let more = resp.more || limit_hit;
    let mut page = Page::default();
    page.take(&c, resp.items)?;
    r.capacity.consume(&admitted, page.units(&c));
    Ok(page.answer(&c, more))
}

pub async fn scan(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let table = req.table_name()?;
    let t = dispatch::active_table(r, table, false).await?;
    let c = common(req, t, false)?;
    let (seg_lo, seg_hi) = segment(req)?;
    // Where to start: after the start key, or at the segment's first hash.
    let (mut start, mut inclusive) = match &c.start_key {
        Some(k) => {
            let h = k.hash();
            if h < seg_lo || h > seg_hi {
                return Err(ApiError::validation(
                    "The provided Exclusive start key does not map to the provided Segment and TotalSegments values.",
                ));
            }
            (k.storage_key(), false)
        }
        None => (seg_lo.to_be_bytes().to_vec(), true),
    };
    let end = match seg_hi.checked_add(1) {
        Some(e) => e.to_be_bytes().to_vec(),
        None => Vec::new(),
    };
    let mut partitions: Vec<_> = c.table.partitions.clone();
    partitions.sort_by_key(|p| p.hash_start);
    let admitted = r.capacity.admit(
        &c.table,
        Kind::Read,
        read_units(0, ReadKind::consistent(c.consistent)),
    )?;
    let mut page = Page::default();
    let mut budget = PAGE_BYTES;
    let mut more = false;
    let result = loop {
        let hash = u64::from_be_bytes(
            start[..8]
                .try_into()
                .expect("storage keys start with a hash"),
        );
        let Some(p) = partitions
            .iter()
            .find(|p| p.hash_start <= hash && hash <= p.hash_end)
        else {
            break Ok(());
        };
        let remaining = c.limit.map(|l| l - page.scanned as u32);
        let scan = ScanRequest {
            start: start.clone(),
            start_inclusive: inclusive,
            end: end.clone(),
            end_inclusive: false,
            limit: remaining.unwrap_or(0),
            max_bytes: budget,
            consistent: c.consistent,
            ..Default::default()
        };
        let resp = match dispatch::scan(r, c.table.clone(), p.hash_start, scan).await {
            Ok(resp) => resp,
            Err(e) => break Err(e),
        };
        let read: usize = resp.items.iter().map(Vec::len).sum();
        budget = budget.saturating_sub(read as u32);
        let got = resp.keys.len() as u32;
        if let Err(e) = page.take(&c, resp.items) {
            break Err(e);
        }
        let limit_hit = remaining.is_some_and(|l| got >= l);
        if resp.more || limit_hit || budget == 0 {
            more = true;
            break Ok(());
        }
        // The next partition, if the segment reaches it.
        match p.hash_end.checked_add(1) {
            Some(next) if next <= seg_hi => {
                start = next.to_be_bytes().to_vec();
                inclusive = true;
            }
            _ => break Ok(()),
        }
    };
    // What was read is charged, whether or not the scan got to its end.
    r.capacity.consume(&admitted, page.units(&c));
    result?;
    Ok(page.answer(&c, more))
}

/// The hash range of a parallel scan's segment (the whole range without Segment/TotalSegments).
fn segment(req: &Request) -> Result<(u64, u64), ApiError> {
    let seg = req.get("Segment").map(|v| v.as_i64());
    let total = req.get("TotalSegments").map(|v| v.as_i64());
    match (seg, total) {
        (None, None) => Ok((0, u64::MAX)),
        (Some(Some(s)), Some(Some(t))) => {
            if !(1..=1_000_000).contains(&t) {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{t}' at 'totalSegments' failed to satisfy constraint: Member must have value less than or equal to 1000000"
                )));
            }
            if s < 0 || s >= t {
                return Err(ApiError::validation(format!(
                    "The Segment parameter is zero-based and must be less than parameter TotalSegments: Segment: {s} is out of bounds for TotalSegments: {t}"
                )));
            }
            // Segment s of t: hashes [2^64·s/t, 2^64·(s+1)/t), contiguous and covering all.
            let space = 1u128 << 64;
            let lo = space * s as u128 / t as u128;
            let hi = space * (s as u128 + 1) / t as u128 - 1;
            Ok((lo as u64, hi as u64))
        }
        (Some(_), None) | (Some(_), Some(None)) => Err(ApiError::validation(
            "The TotalSegments parameter is required but was not present in the request when Segment parameter is present",
        )),
        _ => Err(ApiError::validation(
            "The Segment parameter is required but was not present in the request when parameter TotalSegments is present",
        )),
    }
}
