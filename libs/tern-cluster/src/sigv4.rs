//! Signing requests with AWS Signature Version 4, as the AWS SDKs do (`aws_sigv4`'s signer): for
//! tools that speak HTTP to a router without an SDK (`tern bench`, tests sending raw requests).

use std::time::SystemTime;

use anyhow::Context;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};

/// The headers to add to a request (`authorization`, `x-amz-date`) for it to be signed by
/// `(key_id, secret)` for `region` and the `dynamodb` service at `time`. `headers` are the ones
/// the request carries that are to be signed (`host` among them).
pub fn sign_headers(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    (key_id, secret): (&str, &str),
    region: &str,
    time: SystemTime,
) -> anyhow::Result<Vec<(String, String)>> {
    let identity =
        aws_credential_types::Credentials::new(key_id, secret, None, None, "tern").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("dynamodb")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .context("signing parameters")?
        .into();
    let request = SignableRequest::new(
        method,
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .context("signable request")?;
    let (instructions, _) = sign(request, &params).context("sign")?.into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}
