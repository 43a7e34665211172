//! SigV4 checked from what arrived, written here with only `sha2` (an HMAC of its own), apart
//! from the signing code the runtime uses; and a loopback server that records each request
//! before it forwards it (to llm-katan, which reads the credential scope but checks no signature).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};

/// A request as it arrived.
#[derive(Clone, Debug)]
pub struct Arrived {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Whether `r` is signed with `secret` for `scope` (`DATE/REGION/SERVICE/aws4_request`), over
/// the headers it names, its path and its body; the reason when not. The canonical URI encodes
/// the path as it arrived once more (every service but S3 signs the encoded path encoded again).
pub fn verify(r: &Arrived, scope: &str, secret: &str) -> Result<(), String> {
    let h = |n: &str| r.headers.get(n).map(|v| v.to_str().unwrap_or_default().trim().to_string()).unwrap_or_default();
    let authorization = h("authorization");
    let part = |key: &str| authorization.split(key).nth(1).map(|v| v.split(',').next().unwrap_or_default().to_string());
    let (Some(credential), Some(signed), Some(signature)) =
        (part("Credential="), part("SignedHeaders="), part("Signature="))
    else {
        return Err(format!("not a SigV4 authorization: {authorization}"));
    };
    if !credential.ends_with(&format!("/{scope}")) {
        return Err(format!("signed for {credential}, not for {scope}"));
    }
    for needed in ["host", "x-amz-date"] {
        if !signed.split(';').any(|s| s == needed) {
            return Err(format!("{needed} is not signed: {signed}"));
        }
    }
    let canonical_uri: String = r.path.split('/').map(encode).collect::<Vec<_>>().join("/");
    let canonical_headers: String = signed.split(';').map(|n| format!("{n}:{}\n", h(n))).collect();
    let canonical =
        format!("{}\n{canonical_uri}\n\n{canonical_headers}\n{signed}\n{}", r.method, hex(&Sha256::digest(&r.body)));
    let to_sign = format!("AWS4-HMAC-SHA256\n{}\n{scope}\n{}", h("x-amz-date"), hex(&Sha256::digest(canonical)));
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in scope.split('/') {
        key = hmac_sha256(&key, part.as_bytes());
    }
    match hex(&hmac_sha256(&key, to_sign.as_bytes())) == signature {
        true => Ok(()),
        false => Err("the signature does not verify".into()),
    }
}

/// RFC 3986 unreserved characters kept, every other byte `%XX`.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(data).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

/// Records every request, then forwards it to `upstream` and answers what it answered.
pub struct Recorder {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Arrived>>>,
}

impl Recorder {
    pub async fn start(upstream: String) -> Recorder {
        let seen: Arc<Mutex<Vec<Arrived>>> = Arc::default();
        let (log, http) = (seen.clone(), reqwest::Client::new());
        let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (log, http, upstream) = (log.clone(), http.clone(), upstream.clone());
            async move {
                let path = uri.path().to_string();
                log.lock().unwrap().push(Arrived {
                    method: method.clone(),
                    path,
                    headers: headers.clone(),
                    body: body.clone(),
                });
                let mut req = http.request(method, format!("{upstream}{uri}")).body(body);
                for (k, v) in headers.iter().filter(|(k, _)| k.as_str() != "host" && k.as_str() != "content-length") {
                    req = req.header(k, v);
                }
                match req.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let kind = resp.headers().get("content-type").cloned();
                        let body = resp.bytes().await.unwrap_or_default();
                        let mut out = (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response();
                        if let Some(k) = kind {
                            out.headers_mut().insert("content-type", k);
                        }
                        out
                    }
                    Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
                }
            }
        };
        let app = axum::Router::new().fallback(forward);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Recorder { url, seen }
    }

    pub fn requests(&self) -> Vec<Arrived> {
        self.seen.lock().unwrap().clone()
    }
}
