//! Table operations: validated here, carried out by MemDS.

use serde_json::{json, Value};
use tern_model::ApiError;
use tern_proto::memds::{
    AttributeDefinition, CreateTableRequest, KeySchema, ListTablesRequest, TableInfo, TableReply,
    TableStatus,
};

use crate::json::{null_member, Request};
use crate::Router;

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::validation(format!(
        "One or more parameter values were invalid: {}",
        msg.into()
    ))
}

pub async fn create_table(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let table = parse_create_table(req)?;
    let name = table.name.clone();
    let reply = r
        .memds
        .create_table(&CreateTableRequest { table: Some(table) })
        .await
        .map_err(|e| e.into_api())?;
    r.cache.invalidate(&name);
    let mut t = reply.table.unwrap_or_default();
    // A table is usually ready within milliseconds: answer ACTIVE when it is, within a second,
    // so clients that wait for ACTIVE (SDK waiters poll every 20 s) do not wait for nothing.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while t.status() != TableStatus::Active && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if let Ok(TableReply { table: Some(now) }) = r.memds.describe_table(&name).await {
            t = now;
        }
    }
    Ok(json!({ "TableDescription": describe(&t) })
        .to_string()
        .into_bytes())
}

/// DescribeEndpoints: this endpoint itself (clients that discover endpoints keep using it).
pub fn describe_endpoints(r: &Router) -> Vec<u8> {
    json!({ "Endpoints": [{ "Address": r.endpoint_address, "CachePeriodInMinutes": 1440 }] })
        .to_string()
        .into_bytes()
}

/// DescribeLimits: DynamoDB's default account and table quotas (Tern enforces none of them yet).
pub fn describe_limits() -> Vec<u8> {
    json!({
        "AccountMaxReadCapacityUnits": 80000,
        "AccountMaxWriteCapacityUnits": 80000,
        "TableMaxReadCapacityUnits": 40000,
        "TableMaxWriteCapacityUnits": 40000
    })
    .to_string()
    .into_bytes()
}

fn parse_create_table(req: &Request) -> Result<TableInfo, ApiError> {
    let name = req.table_name()?;
    let key_schema = req
        .array("KeySchema")?
        .ok_or_else(|| null_member("keySchema"))?;
    let defs = req
        .array("AttributeDefinitions")?
        .ok_or_else(|| null_member("attributeDefinitions"))?;
    for unsupported in [
        "GlobalSecondaryIndexes",
        "LocalSecondaryIndexes",
        "StreamSpecification",
    ] {
        if req.get(unsupported).is_some() {
            return Err(ApiError::validation(format!(
                "{unsupported} are not supported by Tern yet"
            )));
        }
    }
    let defs = parse_attribute_definitions(defs)?;
    let schema = parse_key_schema(key_schema, &defs)?;
    let (billing_mode, rcu, wcu) = parse_billing(req)?;
    Ok(TableInfo {
        name: name.to_string(),
        key_schema: Some(schema),
        attribute_definitions: defs,
        billing_mode,
        read_capacity: rcu,
        write_capacity: wcu,
        ..Default::default()
    })
}

fn field<'a>(v: &'a Value, name: &str, path: &str) -> Result<&'a str, ApiError> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| null_member(&format!("{path}.member.{}", lower_first(name))))
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn parse_attribute_definitions(defs: &[Value]) -> Result<Vec<AttributeDefinition>, ApiError> {
    defs.iter()
        .map(|d| {
            let name = field(d, "AttributeName", "attributeDefinitions")?;
            let ty = field(d, "AttributeType", "attributeDefinitions")?;
            if !matches!(ty, "S" | "N" | "B") {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{ty}' at 'attributeDefinitions.1.member.attributeType' failed to satisfy constraint: Member must satisfy enum value set: [B, N, S]"
                )));
            }
            Ok(AttributeDefinition { name: name.to_string(), attr_type: ty.to_string() })
        })
        .collect()
}

fn parse_key_schema(elems: &[Value], defs: &[AttributeDefinition]) -> Result<KeySchema, ApiError> {
    if elems.is_empty() || elems.len() > 2 {
        let (cmp, n) = if elems.is_empty() {
            ("greater", 1)
        } else {
            ("less", 2)
        };
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{}' at 'keySchema' failed to satisfy constraint: Member must have length {cmp} than or equal to {n}",
            Value::Array(elems.to_vec())
        )));
    }
    let mut parts = Vec::new();
    for e in elems {
        let name = field(e, "AttributeName", "keySchema")?;
        let kind = field(e, "KeyType", "keySchema")?;
        if !matches!(kind, "HASH" | "RANGE") {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{kind}' at 'keySchema.1.member.keyType' failed to satisfy constraint: Member must satisfy enum value set: [HASH, RANGE]"
            )));
        }
        parts.push((name, kind));
    }
    if parts[0].1 != "HASH" {
        return Err(ApiError::validation(
            "Invalid KeySchema: The first KeySchemaElement is not a HASH key type",
        ));
    }
    if parts.len() == 2 {
        if parts[1].1 != "RANGE" {
            return Err(ApiError::validation(
                "Invalid KeySchema: The second KeySchemaElement is not a RANGE key type",
            ));
        }
        if parts[0].0 == parts[1].0 {
            return Err(ApiError::validation(
                "Both the Hash Key and the Range Key element in the KeySchema have the same name",
            ));
        }
    }
    let type_of = |name: &str| {
        defs.iter()
            .find(|d| d.name == name)
            .map(|d| d.attr_type.clone())
    };
    let missing: Vec<&str> = parts
        .iter()
        .map(|p| p.0)
        .filter(|n| type_of(n).is_none())
        .collect();
    if !missing.is_empty() {
        let all: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        return Err(invalid(format!(
            "Some index key attributes are not defined in AttributeDefinitions. Keys: [{}], AttributeDefinitions: [{}]",
            missing.join(", "),
            all.join(", ")
        )));
    }
    if defs.len() != parts.len() {
        return Err(invalid(
            "Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
        ));
    }
    let (range_name, range_type) = match parts.get(1) {
        Some((n, _)) => (n.to_string(), type_of(n).unwrap_or_default()),
        None => (String::new(), String::new()),
    };
    Ok(KeySchema {
        hash_name: parts[0].0.to_string(),
        hash_type: type_of(parts[0].0).unwrap_or_default(),
        range_name,
        range_type,
    })
}

fn parse_billing(req: &Request) -> Result<(String, u64, u64), ApiError> {
    let mode = req.str("BillingMode")?.unwrap_or("PROVISIONED");
    let pt = req.object("ProvisionedThroughput")?;
    let units = |name: &str| pt.and_then(|p| p.get(name)).and_then(Value::as_i64);
    match mode {
        "PAY_PER_REQUEST" => {
            if pt.is_some() {
                return Err(invalid(
                    "Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
                ));
            }
            Ok((mode.to_string(), 0, 0))
        }
        "PROVISIONED" => {
            let (Some(r), Some(w)) = (units("ReadCapacityUnits"), units("WriteCapacityUnits")) else {
                return Err(invalid(
                    "ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED",
                ));
            };
            for (n, v) in [("readCapacityUnits", r), ("writeCapacityUnits", w)] {
                if v < 1 {
                    return Err(ApiError::validation(format!(
                        "1 validation error detected: Value '{v}' at 'provisionedThroughput.{n}' failed to satisfy constraint: Member must have value greater than or equal to 1"
                    )));
                }
            }
            Ok((mode.to_string(), r as u64, w as u64))
        }
        other => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
        ))),
    }
}

pub async fn describe_table(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let name = req.table_name()?;
    let reply = r
        .memds
        .describe_table(name)
        .await
        .map_err(|e| e.into_api())?;
    let t = reply.table.unwrap_or_default();
    Ok(json!({ "Table": describe(&t) }).to_string().into_bytes())
}

pub async fn delete_table(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let name = req.table_name()?;
    let reply = r.memds.delete_table(name).await.map_err(|e| e.into_api())?;
    r.cache.invalidate(name);
    let t = reply.table.unwrap_or_default();
    Ok(json!({ "TableDescription": describe(&t) })
        .to_string()
        .into_bytes())
}

pub async fn list_tables(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let limit = req.i64("Limit")?.unwrap_or(100);
    if !(1..=100).contains(&limit) {
        let (cmp, n) = if limit < 1 {
            ("greater", 1)
        } else {
            ("less", 100)
        };
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{limit}' at 'limit' failed to satisfy constraint: Member must have value {cmp} than or equal to {n}"
        )));
    }
    let start = match req.str("ExclusiveStartTableName")? {
        Some(s) => {
            tern_model::validate_table_name(s, "exclusiveStartTableName")?;
            s.to_string()
        }
        None => String::new(),
    };
    let reply = r
        .memds
        .list_tables(&ListTablesRequest {
            exclusive_start: start,
            limit: limit as u32,
        })
        .await
        .map_err(|e| e.into_api())?;
    let mut out = json!({ "TableNames": reply.names });
    if !reply.last_evaluated.is_empty() {
        out["LastEvaluatedTableName"] = Value::String(reply.last_evaluated);
    }
    Ok(out.to_string().into_bytes())
}

/// DynamoDB's `TableDescription` of a table.
pub fn describe(t: &TableInfo) -> Value {
    let ks = t.key_schema.clone().unwrap_or_default();
    let mut key_schema = vec![json!({ "AttributeName": ks.hash_name, "KeyType": "HASH" })];
    if !ks.range_name.is_empty() {
        key_schema.push(json!({ "AttributeName": ks.range_name, "KeyType": "RANGE" }));
    }
    let defs: Vec<Value> = t
        .attribute_definitions
        .iter()
        .map(|d| json!({ "AttributeName": d.name, "AttributeType": d.attr_type }))
        .collect();
    let mut v = json!({
        "TableName": t.name,
        "TableStatus": t.status().as_str(),
        "TableId": t.table_id,
        "TableArn": format!("arn:aws:dynamodb:tern:000000000000:table/{}", t.name),
        "KeySchema": key_schema,
        "AttributeDefinitions": defs,
        "CreationDateTime": t.creation_time_ms as f64 / 1000.0,
        "ProvisionedThroughput": {
            "ReadCapacityUnits": t.read_capacity,
            "WriteCapacityUnits": t.write_capacity,
            "NumberOfDecreasesToday": 0,
        },
        "TableSizeBytes": 0,
        "ItemCount": 0,
    });
    if t.billing_mode == "PAY_PER_REQUEST" {
        v["BillingModeSummary"] = json!({ "BillingMode": "PAY_PER_REQUEST" });
    }
    v
}
