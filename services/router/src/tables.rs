//! Table operations: validated here, carried out by MemDS.

use serde_json::{json, Value};
use tern_model::{ApiError, ErrorCode};
use tern_proto::memds::{
    AlterTableRequest, AttributeDefinition, CreateTableRequest, KeySchema, ListTablesRequest,
    TableInfo, TableReply, TableStatus,
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
    // NOTE: never more than half the request timeout: a CreateTable that timed out after
    // creating the table would be retried by the SDK and answered ResourceInUseException.
    let wait = std::time::Duration::from_secs(1).min(r.admission.timeout() / 2);
    let deadline = tokio::time::Instant::now() + wait;
    while t.status() != TableStatus::Active && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if let Ok(TableReply {
            table: Some(now), ..
        }) = r.memds.describe_table(&name).await
        {
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
    let mut d = describe(&t);
    d["ItemCount"] = json!(reply.item_count);
    d["TableSizeBytes"] = json!(reply.size_bytes);
    Ok(json!({ "Table": d }).to_string().into_bytes())
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

/// UpdateTable: billing mode and provisioned throughput (applied at once: the table stays ACTIVE).
pub async fn update_table(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let name = req.table_name()?;
    for unsupported in [
        "GlobalSecondaryIndexUpdates",
        "StreamSpecification",
        "SSESpecification",
        "ReplicaUpdates",
        "TableClass",
        "DeletionProtectionEnabled",
        "OnDemandThroughput",
        "WarmThroughput",
    ] {
        if req.get(unsupported).is_some() {
            return Err(ApiError::validation(format!(
                "{unsupported} is not supported by Tern yet"
            )));
        }
    }
    let mode = req.str("BillingMode")?;
    let throughput = req.object("ProvisionedThroughput")?;
    if mode.is_none() && throughput.is_none() {
        return Err(ApiError::validation(
            "At least one of ProvisionedThroughput, BillingMode, UpdateStreamEnabled, GlobalSecondaryIndexUpdates or SSESpecification or ReplicaUpdates is required",
        ));
    }
    let current = r
        .memds
        .describe_table(name)
        .await
        .map_err(|e| e.into_api())?
        .table
        .unwrap_or_default();
    let mut alter = AlterTableRequest {
        table_name: name.to_string(),
        ..Default::default()
    };
    let target_mode = match mode {
        None => current.billing_mode.as_str(),
        Some(m @ ("PROVISIONED" | "PAY_PER_REQUEST")) => m,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'billingMode' failed to satisfy constraint: Member must satisfy enum value set: [PROVISIONED, PAY_PER_REQUEST]"
            )))
        }
    };
    if let Some(m) = mode {
        alter.billing_mode = m.to_string();
    }
    match (target_mode, throughput) {
        ("PAY_PER_REQUEST", Some(_)) => {
            return Err(ApiError::invalid_parameter(
                "Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST",
            ))
        }
        ("PROVISIONED", None) if current.billing_mode != "PROVISIONED" => {
            return Err(ApiError::invalid_parameter(
                "ProvisionedThroughput must be specified when BillingMode is PROVISIONED",
            ))
        }
        (_, Some(pt)) => {
            let units = |field: &str| -> Result<u64, ApiError> {
                match pt.get(field).and_then(Value::as_i64) {
                    Some(n) if n >= 1 => Ok(n as u64),
                    Some(n) => Err(ApiError::validation(format!(
                        "1 validation error detected: Value '{n}' at 'provisionedThroughput.{}' failed to satisfy constraint: Member must have value greater than or equal to 1",
                        lower_first(field)
                    ))),
                    None => Err(null_member(&format!("provisionedThroughput.{}", lower_first(field)))),
                }
            };
            let (rcu, wcu) = (units("ReadCapacityUnits")?, units("WriteCapacityUnits")?);
            if mode.is_none() && rcu == current.read_capacity && wcu == current.write_capacity {
                return Err(ApiError::validation(format!(
                    "The provisioned throughput for the table will not change. The requested value equals the current value. Current ReadCapacityUnits provisioned for the table: {}. Requested ReadCapacityUnits: {rcu}. Current WriteCapacityUnits provisioned for the table: {}. Requested WriteCapacityUnits: {wcu}. Refer to the Amazon DynamoDB Developer Guide for current limits and how to request higher limits.",
                    current.read_capacity, current.write_capacity
                )));
            }
            alter.set_throughput = true;
            alter.read_capacity = rcu;
            alter.write_capacity = wcu;
        }
        _ => {}
    }
    let t = r
        .memds
        .alter_table(&alter)
        .await
        .map_err(|e| e.into_api())?
        .table
        .unwrap_or_default();
    r.cache.invalidate(name);
    Ok(json!({ "TableDescription": describe(&t) })
        .to_string()
        .into_bytes())
}

pub(crate) const ARN_PREFIX: &str = "arn:aws:dynamodb:tern:000000000000:table/";

/// The table a resource ARN names (`arn:…:table/<name>`, as DescribeTable gives it).
fn table_of_arn(req: &Request) -> Result<(String, String), ApiError> {
    let arn = req
        .str("ResourceArn")?
        .ok_or_else(|| null_member("resourceArn"))?;
    let name = arn
        .strip_prefix("arn:")
        .and_then(|rest| rest.split_once(":table/"))
        .map(|(_, name)| name.split('/').next().unwrap_or_default())
        .filter(|n| tern_model::validate_table_name(n, "tableName").is_ok())
        .ok_or_else(|| {
            ApiError::validation(format!(
                "Invalid TableArn: Invalid ResourceArn provided as input {arn}"
            ))
        })?;
    Ok((arn.to_string(), name.to_string()))
}

async fn alter_tags(
    r: &Router,
    arn: &str,
    alter: AlterTableRequest,
) -> Result<TableInfo, ApiError> {
    match r.memds.alter_table(&alter).await {
        Ok(reply) => Ok(reply.table.unwrap_or_default()),
        Err(e) => {
            let e = e.into_api();
            if e.code == ErrorCode::ResourceNotFound {
                Err(ApiError::new(
                    ErrorCode::ResourceNotFound,
                    format!("Requested resource not found: ResourceArn: {arn} not found"),
                ))
            } else {
                Err(e)
            }
        }
    }
}

/// TagResource: at most 50 tags per table, keys of 1 to 128 characters, values up to 256.
pub async fn tag_resource(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let (arn, name) = table_of_arn(req)?;
    let tags = req.array("Tags")?.ok_or_else(|| null_member("tags"))?;
    let mut set = std::collections::BTreeMap::new();
    for t in tags {
        let key = t
            .get("Key")
            .and_then(Value::as_str)
            .ok_or_else(|| null_member("tags.member.key"))?;
        let value = t
            .get("Value")
            .and_then(Value::as_str)
            .ok_or_else(|| null_member("tags.member.value"))?;
        if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
            return Err(ApiError::validation(
                "One or more parameter values were invalid: Tag keys are 1 to 128 characters and values at most 256",
            ));
        }
        set.insert(key.to_string(), value.to_string());
    }
    let current = r
        .memds
        .describe_table(&name)
        .await
        .map_err(|e| e.into_api())?;
    let mut all = current.table.unwrap_or_default().tags;
    all.extend(set.clone());
    if all.len() > 50 {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            "Too many tags: a table has at most 50",
        ));
    }
    let alter = AlterTableRequest {
        table_name: name,
        set_tags: set,
        ..Default::default()
    };
    alter_tags(r, &arn, alter).await?;
    Ok(b"{}".to_vec())
}

pub async fn untag_resource(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let (arn, name) = table_of_arn(req)?;
    let keys = req
        .array("TagKeys")?
        .ok_or_else(|| null_member("tagKeys"))?;
    let remove = keys
        .iter()
        .map(|k| {
            k.as_str()
                .map(str::to_string)
                .ok_or_else(|| null_member("tagKeys.member"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let alter = AlterTableRequest {
        table_name: name,
        remove_tags: remove,
        ..Default::default()
    };
    alter_tags(r, &arn, alter).await?;
    Ok(b"{}".to_vec())
}

pub async fn list_tags_of_resource(r: &Router, req: &Request) -> Result<Vec<u8>, ApiError> {
    let (arn, name) = table_of_arn(req)?;
    let t = match r.memds.describe_table(&name).await {
        Ok(reply) => reply.table.unwrap_or_default(),
        Err(_) => {
            return Err(ApiError::new(
                ErrorCode::ResourceNotFound,
                format!("Requested resource not found: ResourceArn: {arn} not found"),
            ))
        }
    };
    let tags: Vec<Value> = t
        .tags
        .iter()
        .map(|(k, v)| json!({ "Key": k, "Value": v }))
        .collect();
    Ok(json!({ "Tags": tags }).to_string().into_bytes())
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
        "TableArn": format!("{ARN_PREFIX}{}", t.name),
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
    if let Some(rs) = &t.restore {
        v["RestoreSummary"] = json!({
            "SourceTableArn": format!("{ARN_PREFIX}{}", rs.source_name),
            "RestoreDateTime": rs.time_ms as f64 / 1000.0,
            "RestoreInProgress": t.status() == TableStatus::Creating,
        });
        if !rs.backup_arn.is_empty() {
            v["RestoreSummary"]["SourceBackupArn"] = json!(rs.backup_arn);
        }
    }
    v
}
