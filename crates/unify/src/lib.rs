//! Build cost. Mostly no code: this crate unifies dependency features (see its Cargo.toml). Its
//! one function is the HTTPS client every AWS SDK client of the workspace is given.

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// The SDK's default HTTPS client (hyper 1, rustls, the system's trusted certificates, the
/// `HTTPS_PROXY`/`NO_PROXY` environment), with rustls on ring instead of the default aws-lc.
/// The SDK crates are built without `default-https-client`, so aws-lc (a second crypto library
/// beside reqwest's ring, and a C build) is neither compiled nor linked: the runtime image's
/// layer is smaller, and so is every cold build (docs/performance.md). An SDK configuration
/// without this client fails its first call ("no HTTP client"), so no call escapes it.
pub fn https_client() -> SharedHttpClient {
    // The builder the SDK's own default client uses (aws-smithy-runtime's `default_https_client`);
    // the public `build_https` would not read the proxy environment.
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}
