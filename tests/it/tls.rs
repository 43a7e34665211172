//! Every AWS call goes through one HTTPS client (`aira_unify::https_client`: rustls on ring,
//! the system's trusted certificates), since the SDK crates are built without their default
//! client. An endpoint on loopback that ends TLS with a certificate from a local CA, in front
//! of the conforming proxy: `aira plan` reaches it when `SSL_CERT_FILE` names that CA, and is
//! refused, naming the certificate, when the CA is not trusted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::harness::{aira_env, conforming, small_stack, unique_stack, Workdir};

/// A TLS front on a free loopback port for `upstream` (`http://HOST:PORT`): ends TLS with
/// `cert`/`key` and forwards the bytes. Counts the handshakes that completed.
async fn tls_front(upstream: &str, cert: &std::path::Path, key: &std::path::Path) -> (u16, Arc<AtomicUsize>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(crate::deployed::tls_server(cert, key)));
    let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream, counted) = (acceptor.clone(), upstream.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, handshakes)
}

#[tokio::test]
async fn aws_calls_go_over_tls_and_trust_only_the_trusted_certificates() {
    let work = Workdir::new();
    let (ca, cert, key) = crate::deployed::certificate(work.dir.path(), "localhost");
    let (port, handshakes) = tls_front(&conforming(), &cert, &key).await;
    let file = work.write("aira.yaml", &small_stack(&unique_stack("tls")));
    let endpoint = format!("https://localhost:{port}");
    let plan = ["plan", file.to_str().unwrap(), "--endpoint-url", &endpoint, "--output", "json"];

    // The local CA trusted (rustls-native-certs reads SSL_CERT_FILE): the plan is read over TLS.
    let trusted = aira_env(work.dir.path(), &plan, &[("SSL_CERT_FILE", ca.to_str().unwrap())]).await;
    trusted.assert_code(0);
    let creates = trusted.json()["summary"]["create"].as_u64().unwrap();
    assert!(creates > 0, "a new stack plans creations: {}", trusted.stdout);
    assert!(handshakes.load(Ordering::SeqCst) > 0, "no TLS handshake reached the endpoint");

    // The system's store alone does not hold the local CA: refused, and the error says why.
    let before = handshakes.load(Ordering::SeqCst);
    let untrusted = aira_env(work.dir.path(), &plan, &[("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")]).await;
    assert_ne!(untrusted.code, 0, "{}", untrusted.stdout);
    assert!(
        untrusted.stderr.contains("invalid peer certificate: UnknownIssuer"),
        "the error names the certificate:\n{}",
        untrusted.stderr
    );
    assert_eq!(handshakes.load(Ordering::SeqCst), before, "a handshake completed with an untrusted certificate");
}
