//! Request authentication: AWS Signature Version 4, checked the way DynamoDB checks it.
//!
//! The router rebuilds the canonical request from what arrived (method, path, query, the headers
//! the client says it signed, the SHA-256 of the body), derives the signing key from the secret
//! of the access key named in the credential scope (`aws_sigv4`'s primitives), and compares its
//! signature with the client's in constant time. Requests more than 15 minutes away from the
//! router's clock are refused, as DynamoDB refuses them.
//!
//! Secrets are never logged: [`Secret`] prints as `<redacted>`, and errors name the access key
//! id at most.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Method, Uri};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tern_model::{ApiError, ErrorCode};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "dynamodb";
const TERMINATOR: &str = "aws4_request";
/// How far a request's time may be from the router's, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// Whether requests must be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    On,
    /// No request is checked: for local benchmarks only.
    Off,
}

impl<'de> Deserialize<'de> for AuthMode {
    /// `on`/`off`, or a boolean (an environment variable `false` arrives as one).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(AuthMode::On),
            Raw::Bool(false) => Ok(AuthMode::Off),
            Raw::Text(t) => match t.to_ascii_lowercase().as_str() {
                "on" | "true" => Ok(AuthMode::On),
                "off" | "false" => Ok(AuthMode::Off),
                other => Err(serde::de::Error::custom(format!(
                    "auth must be on or off, not '{other}'"
                ))),
            },
        }
    }
}

pub use tern_config::Secret;

/// Access key id → secret access key.
pub struct Keys {
    secrets: HashMap<String, String>,
    /// The region requests must be signed for; `None`: any.
    region: Option<String>,
    /// Signing keys derived lately, by (key id, date, region): a key serves every request of its
    /// day, and deriving one costs four HMACs. Emptied when it reaches [`SIGNING_KEYS_KEPT`].
    signing_keys: parking_lot::Mutex<HashMap<(String, String, String), Vec<u8>>>,
}

const SIGNING_KEYS_KEPT: usize = 1024;

impl Keys {
    /// Pairs from `KEY:SECRET` entries, separated by commas or new lines (`#` starts a comment
    /// line), from the inline list and then the file.
    pub fn load(inline: &Secret, file: Option<&Path>, region: &str) -> anyhow::Result<Self> {
        let mut secrets = HashMap::new();
        let mut add = |text: &str, source: &str| -> anyhow::Result<()> {
            let entries = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with('#'))
                .flat_map(|l| l.split(','))
                .map(str::trim)
                .filter(|e| !e.is_empty());
            for (n, entry) in entries.enumerate() {
                let Some((id, secret)) = entry.split_once(':') else {
                    anyhow::bail!("{source}: entry {} is not KEY:SECRET", n + 1);
                };
                let (id, secret) = (id.trim(), secret.trim());
                if id.is_empty() || secret.is_empty() || id.contains('/') {
                    anyhow::bail!(
                        "{source}: entry {} has an empty or invalid key id or secret",
                        n + 1
                    );
                }
                secrets.insert(id.to_string(), secret.to_string());
            }
            Ok(())
        };
        add(&inline.0, "credentials")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("credentials_file {}: {e}", path.display()))?;
            add(&text, &format!("credentials_file {}", path.display()))?;
        }
        Ok(Self {
            secrets,
            region: (!region.is_empty()).then(|| region.to_string()),
            signing_keys: Default::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// Checks the request's signature; the access key id that signed it.
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<String, ApiError> {
        let Some(auth) = headers.get("authorization") else {
            return Err(ApiError::new(
                ErrorCode::MissingAuthenticationToken,
                "Request is missing Authentication Token",
            ));
        };
        let auth = auth
            .to_str()
            .map_err(|_| incomplete("Authorization header is not ASCII"))?;
        let parsed = parse_authorization(auth)?;
        let (stamp, time) = request_time(headers, auth)?;
        let scope = parse_credential(parsed.credential, auth)?;

        // As DynamoDB orders them: an unknown key is reported before a wrong scope or time.
        let Some(secret) = self.secrets.get(scope.key_id) else {
            return Err(ApiError::new(
                ErrorCode::UnrecognizedClient,
                "The security token included in the request is invalid.",
            ));
        };
        if scope.terminator != TERMINATOR {
            return Err(invalid(format!(
                "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{}'.",
                scope.terminator
            )));
        }
        if scope.service != SERVICE {
            return Err(invalid(format!(
                "Credential should be scoped to correct service: '{SERVICE}'. "
            )));
        }
        if let Some(region) = &self.region {
            if scope.region != region {
                return Err(invalid(format!(
                    "Credential should be scoped to a valid region, not '{}'. ",
                    scope.region
                )));
            }
        }
        if scope.date != &stamp[..8] {
            return Err(invalid(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{stamp}'.",
                scope.date,
                &stamp[..8]
            )));
        }
        check_skew(&stamp, time, now)?;
        let signed: Vec<&str> = parsed.signed_headers.split(';').collect();
        if !signed.contains(&"host") {
            return Err(invalid(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }

        let canonical = canonical_request(method, uri, headers, &signed, body);
        let string_to_sign = format!(
            "{ALGORITHM}\n{stamp}\n{}/{}/{}/{}\n{}",
            scope.date,
            scope.region,
            scope.service,
            scope.terminator,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let cache_key = (
            scope.key_id.to_string(),
            scope.date.to_string(),
            scope.region.to_string(),
        );
        let cached = self.signing_keys.lock().get(&cache_key).cloned();
        let key = match cached {
            Some(k) => k,
            None => {
                let k =
                    aws_sigv4::sign::v4::generate_signing_key(secret, time, scope.region, SERVICE)
                        .as_ref()
                        .to_vec();
                let mut keys = self.signing_keys.lock();
                if keys.len() >= SIGNING_KEYS_KEPT {
                    keys.clear();
                }
                keys.insert(cache_key, k.clone());
                k
            }
        };
        let expected = aws_sigv4::sign::v4::calculate_signature(&key, string_to_sign.as_bytes());
        let given = parsed.signature.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return Err(invalid(
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
            ));
        }
        Ok(scope.key_id.to_string())
    }
}

fn incomplete(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::IncompleteSignature, msg)
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidSignature, msg)
}

struct Authorization<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

/// `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
fn parse_authorization(auth: &str) -> Result<Authorization<'_>, ApiError> {
    let (algorithm, rest) = auth.trim().split_once(' ').unwrap_or((auth.trim(), ""));
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}'. Use {ALGORITHM}. Authorization={auth}"
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed_headers = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => {}
        }
    }
    let mut missing = String::new();
    for (name, v) in [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed_headers),
    ] {
        if v.is_none_or(str::is_empty) {
            missing.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    if !missing.is_empty() {
        return Err(incomplete(format!("{missing}Authorization={auth}")));
    }
    let signature = signature.unwrap_or_default();
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(Authorization {
        credential: credential.unwrap_or_default(),
        signed_headers: signed_headers.unwrap_or_default(),
        signature,
    })
}

struct Scope<'a> {
    key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
}

/// `KEY/YYYYMMDD/region/service/aws4_request`.
fn parse_credential<'a>(credential: &'a str, auth: &str) -> Result<Scope<'a>, ApiError> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = parts[..] else {
        return Err(incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'. Authorization={auth}"
        )));
    };
    if key_id.is_empty() || date.len() != 8 || region.is_empty() {
        return Err(incomplete(format!(
            "Credential is malformed: '{credential}'. Authorization={auth}"
        )));
    }
    Ok(Scope {
        key_id,
        date,
        region,
        service,
        terminator,
    })
}

/// The request's time: `X-Amz-Date` (basic ISO 8601), else `Date` (HTTP date); with its
/// `YYYYMMDDTHHMMSSZ` form, which the string to sign carries.
fn request_time(headers: &HeaderMap, auth: &str) -> Result<(String, SystemTime), ApiError> {
    if let Some(v) = headers.get("x-amz-date") {
        let s = v.to_str().unwrap_or_default().trim();
        let t = parse_amz_date(s).ok_or_else(|| {
            incomplete(format!(
                "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\", not '{s}'"
            ))
        })?;
        return Ok((s.to_string(), t));
    }
    if let Some(v) = headers.get("date") {
        let s = v.to_str().unwrap_or_default();
        let t = httpdate::parse_http_date(s)
            .map_err(|_| incomplete(format!("Date header is not an HTTP date: '{s}'")))?;
        return Ok((amz_date(t), t));
    }
    Err(incomplete(format!(
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization={auth}"
    )))
}

fn check_skew(stamp: &str, time: SystemTime, now: SystemTime) -> Result<(), ApiError> {
    if time + MAX_SKEW < now {
        return Err(invalid(format!(
            "Signature expired: {stamp} is now earlier than {} ({} - 15 min.)",
            amz_date(now - MAX_SKEW),
            amz_date(now)
        )));
    }
    if time > now + MAX_SKEW {
        return Err(invalid(format!(
            "Signature not yet current: {stamp} is still later than {} ({} + 15 min.)",
            amz_date(now + MAX_SKEW),
            amz_date(now)
        )));
    }
    Ok(())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYYMMDDTHHMMSSZ` → time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Time → `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Everything but the unreserved characters of RFC 3986 (`A-Z a-z 0-9 - _ . ~`).
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The same, keeping `/` between path segments.
const PATH: &AsciiSet = &STRICT.remove(b'/');

fn canonical_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    signed: &[&str],
    body: &[u8],
) -> String {
    // Services other than S3 sign the path as sent, encoded once more.
    let path = match uri.path() {
        "" => "/".to_string(),
        p => utf8_percent_encode(p, PATH).to_string(),
    };
    let mut query: Vec<(String, String)> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let enc = |s: &str| {
                let plus_as_space = s.replace('+', " ");
                let decoded = percent_decode_str(&plus_as_space).decode_utf8_lossy();
                utf8_percent_encode(&decoded, STRICT).to_string()
            };
            (enc(k), enc(v))
        })
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in signed {
        let mut values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| collapse(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        if values.is_empty() && *name == "host" {
            // HTTP/2 carries the host as the authority.
            values.extend(uri.authority().map(|a| a.to_string()));
        }
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{}\n{}",
        signed.join(";"),
        hex::encode(Sha256::digest(body))
    )
}

/// A header value trimmed, with runs of spaces made one.
fn collapse(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for word in v.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_and_print_alike() {
        for s in [
            "19700101T000000Z",
            "20000229T235959Z",
            "20261129T213000Z",
            "21000301T120000Z",
        ] {
            let t = parse_amz_date(s).unwrap();
            assert_eq!(amz_date(t), s);
        }
        assert_eq!(
            parse_amz_date("20261129T213000Z")
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_795_987_800
        );
        for bad in [
            "2026-11-29T21:30:00Z",
            "20261329T000000Z",
            "20261129T000000",
            "",
        ] {
            assert!(parse_amz_date(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = Secret("very-secret".into());
        assert_eq!(format!("{s:?}"), "<redacted>");
        let keys = Keys::load(&Secret("a:b, c:d".into()), None, "").unwrap();
        assert_eq!(keys.ids(), vec!["a", "c"]);
        assert!(Keys::load(&Secret("nocolon".into()), None, "").is_err());
        assert!(Keys::load(&Secret(":x".into()), None, "").is_err());
        let dir = std::env::temp_dir().join(format!("tern-keys-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# id:secret, one per line\nk1:s1\n\n k2 : s2 ,k3:s3\n",
        )
        .unwrap();
        let keys = Keys::load(&Secret::default(), Some(&dir), "").unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(keys.ids(), vec!["k1", "k2", "k3"]);
    }

    #[test]
    fn header_values_are_collapsed() {
        assert_eq!(collapse("  a   b  c "), "a b c");
    }
}
