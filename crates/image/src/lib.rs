//! The runtime's container image, without Docker: `aira image build` assembles an OCI image
//! layout from a static `aira-runtime`, `aira image push` sends it to a registry.
//!
//! - `oci.rs`: the format (reproducible tar+gzip layer, config, manifest, layout on disk).
//! - `build.rs`: the static binary (cargo, or a prebuilt one) and the image's files and config.
//! - `push.rs`: the OCI distribution protocol (blob check, monolithic upload, manifest put).
//!
//! No Docker daemon and no AWS SDK here: a registry is anything that speaks the protocol; ECR
//! only adds how its basic-auth pair is obtained.

pub mod build;
pub mod oci;
pub mod push;

/// Why an image command failed: the user's input (exit 1) or anything else (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Where `aira image build` writes the image layout and `aira image push` reads it.
pub const DEFAULT_DIR: &str = ".aira/image";

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org), else 0.
pub fn source_date_epoch() -> Result<u64, Error> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.trim().is_empty() => {
            s.trim().parse().map_err(|_| Error::Usage(format!("SOURCE_DATE_EPOCH must be Unix seconds, not `{s}`")))
        }
        _ => Ok(0),
    }
}
