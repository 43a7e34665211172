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

use std::path::PathBuf;

use clap::Subcommand;

/// Why an image command failed: the user's input (exit 1) or anything else (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

pub const DEFAULT_DIR: &str = ".aira/image";

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the runtime image (static binary, one layer) into an OCI image layout; prints its digest.
    Build {
        /// The image layout folder.
        #[arg(long, default_value = DEFAULT_DIR)]
        out: PathBuf,
        /// Use this static aira-runtime instead of building it from the source tree.
        #[arg(long, env = "AIRA_RUNTIME_STATIC_BIN")]
        binary: Option<PathBuf>,
    },
    /// Push an image layout to a registry; prints REGISTRY/REPOSITORY@sha256:….
    Push {
        /// REGISTRY/REPOSITORY[:TAG]; without a tag the manifest is pushed by digest.
        #[arg(long)]
        to: push::Reference,
        /// Plain HTTP (only for a registry on loopback).
        #[arg(long)]
        insecure: bool,
        /// The image layout folder.
        #[arg(long, default_value = DEFAULT_DIR)]
        from: PathBuf,
    },
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org), else 0.
pub fn source_date_epoch() -> Result<u64, Error> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.trim().is_empty() => {
            s.trim().parse().map_err(|_| Error::Usage(format!("SOURCE_DATE_EPOCH must be Unix seconds, not `{s}`")))
        }
        _ => Ok(0),
    }
}
