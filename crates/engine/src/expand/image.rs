//! The image the services run: what `expand` is given ([`Image`]), how a task definition
//! writes it and how observe reads it back ([`container_image`], [`image_of`]), and whether `up`
//! builds the runtime's image ([`Image::against`]).

use serde::Serialize;

use crate::graph::Kind;
use crate::kind::{self, Val};
use crate::provider::Observed;

/// What the services run.
#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// A reference given by the stack or `--image`, deployed as it is.
    Reference(String),
    /// Built by aira (`sha256:…`) from the sources of fingerprint `source`, pushed to the
    /// stack's ECR repository, or to `repository` (`registry/name`) when one is named.
    Built { digest: String, repository: Option<String>, source: Option<String> },
    /// To be built by `up` from the sources of fingerprint `source` (a plan builds nothing):
    /// planned with the digest [`UNBUILT_DIGEST`], unless [`Image::against`] finds it deployed.
    ToBuild { source: String, repository: Option<String> },
}

/// `repo@sha256:…` as `{repository, digest}` (the form observed task definitions report);
/// any other reference as it is.
pub fn container_image(reference: &str) -> kind::ContainerImage {
    match reference.split_once("@sha256:") {
        Some((repo, hex)) => kind::ContainerImage::Pinned(kind::PinnedImage {
            repository: repo.into(),
            digest: format!("sha256:{hex}"),
            source: None,
        }),
        None => kind::ContainerImage::Reference(reference.to_string()),
    }
}

/// The image the stack's task definitions run now, in the form [`expand`] was given it: the
/// inverse of how `services.rs` writes a task definition's `container.image` (with
/// [`container_image`]). `{repository, digest}` in the stack's own ECR repository is an image
/// aira built and pushed there; in another repository, one pushed to a named registry; a plain
/// string is a reference. Without a task definition, an empty reference. `status` plans with
/// it, so that a drift check does not build anything.
pub fn image_of(observed: &[Observed]) -> Image {
    let task = observed.iter().find(|o| o.kind == Kind::TaskDefinition);
    let image = task.and_then(|t| t.props::<kind::TaskDefinition>().ok()?.container).map(|c| c.image);
    let (repo, digest, source) = match image {
        Some(kind::ContainerImage::Pinned(kind::PinnedImage { repository: Val::Is(repo), digest, source })) => {
            (repo, digest, source)
        }
        Some(kind::ContainerImage::Reference(r)) => return Image::Reference(r),
        // Observed properties hold no references.
        Some(kind::ContainerImage::Pinned(_)) | None => return Image::Reference(String::new()),
    };
    let ecr = observed.iter().find(|o| o.kind == Kind::Repository).and_then(|r| r.outputs.get("uri")?.as_str());
    let repository = (ecr != Some(repo.as_str())).then_some(repo.clone());
    Image::Built { digest, repository, source }
}

/// A fingerprint as people read it: its first 12 hex digits.
fn short(fingerprint: &str) -> &str {
    let hex = fingerprint.strip_prefix("sha256:").unwrap_or(fingerprint);
    hex.get(..12).unwrap_or(hex)
}

/// The digest a task definition shows in a plan for an image `up` has yet to build.
pub const UNBUILT_DIGEST: &str = "(built by aira up)";

/// Whether `up` builds the runtime's image, and why: `plan` shows it, `up` acts on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageDecision {
    pub build: bool,
    /// The fingerprint of the sources it is (or would be) built from.
    pub source: String,
    /// The fingerprint recorded on the task definitions the stack runs now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed_source: Option<String>,
    pub reason: String,
}

impl Image {
    /// The image to plan with, given what runs now: an image still to build whose fingerprint
    /// the stack's task definitions already run is the image they run (nothing to build or
    /// push); with what `up` will do about it. `None` for an image aira does not build.
    pub fn against(self, observed: &[Observed]) -> (Image, Option<ImageDecision>) {
        let deployed = image_of(observed);
        let deployed_source = match &deployed {
            Image::Built { source, .. } => source.clone(),
            _ => None,
        };
        let decision = |build: bool, source: &str, reason: String| ImageDecision {
            build,
            source: source.to_string(),
            deployed_source: deployed_source.clone(),
            reason,
        };
        let (source, repository) = match &self {
            Image::Built { source: Some(s), repository, .. } | Image::ToBuild { source: s, repository } => {
                (s.clone(), repository.clone())
            }
            Image::Reference(_) | Image::Built { source: None, .. } => return (self, None),
        };
        match (self, &deployed) {
            // The same sources run already: nothing to build, push or register.
            (_, Image::Built { source: Some(s), repository: r, .. }) if *s == source && *r == repository => {
                let d =
                    decision(false, &source, format!("the deployed image was built from these sources ({})", short(s)));
                (deployed, Some(d))
            }
            (built @ Image::Built { .. }, _) => {
                let reason =
                    format!("the runtime's image was built here already from these sources ({})", short(&source));
                (built, Some(decision(false, &source, reason)))
            }
            (to_build, _) => {
                let reason = match &deployed {
                    Image::Built { source: Some(s), .. } => {
                        format!(
                            "the runtime's sources changed since the deployed image was built ({} → {})",
                            short(s),
                            short(&source)
                        )
                    }
                    Image::Built { source: None, .. } => "the deployed image records no source fingerprint".into(),
                    Image::Reference(r) if r.is_empty() => "no image is deployed yet".into(),
                    Image::Reference(r) => format!("the stack runs another image now ({r})"),
                    Image::ToBuild { .. } => unreachable!("image_of reads what runs"),
                };
                let d = decision(true, &source, format!("`aira up` will build the runtime's image: {reason}"));
                (to_build, Some(d))
            }
        }
    }
}
