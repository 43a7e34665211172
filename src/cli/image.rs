//! The runtime's image: `aira image build` / `aira image push`, and [`prepare`], which decides
//! what `up` and `plan` deploy.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

#[cfg(feature = "aws")]
use super::args::ImageArgs;
use super::args::ImageCommand;
#[cfg(feature = "aws")]
use super::session::Session;
use crate::failure::{Failure, UserError};
use crate::output::{Printer, Render};
use crate::time::seconds;
#[cfg(feature = "aws")]
use aira_aws::LocalImage;
#[cfg(feature = "aws")]
use aira_engine::expand::Image;
use aira_image::{build, oci, push};

/// What `aira image build` wrote.
#[derive(Debug, Serialize)]
pub struct Built {
    pub digest: String,
    pub size: usize,
    pub layers: Vec<Layer>,
    pub config: String,
    pub out: PathBuf,
    pub binary: PathBuf,
    pub revision: String,
}

#[derive(Debug, Serialize)]
pub struct Layer {
    pub digest: String,
    pub size: usize,
    pub diff_id: String,
}

impl Render for Built {
    fn text(&self, p: &Printer) {
        p.out(&self.digest);
    }
}

impl Render for push::Pushed {
    fn text(&self, p: &Printer) {
        p.out(&self.reference);
    }
}

/// The result of `aira image …`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ImageResult {
    Built(Built),
    Pushed(push::Pushed),
}

impl Render for ImageResult {
    fn text(&self, p: &Printer) {
        match self {
            ImageResult::Built(b) => b.text(p),
            ImageResult::Pushed(x) => x.text(p),
        }
    }
}

pub async fn image(command: &ImageCommand, printer: &Printer) -> Result<ImageResult, Failure> {
    let note = |m: &str| printer.note(m);
    let started = Instant::now();
    match command {
        ImageCommand::Build { out, runtime_binary } => {
            let epoch = aira_image::source_date_epoch()?;
            let opts = build::Options { out: out.clone(), binary: runtime_binary.clone(), epoch };
            let built = build::build(&opts, &note)?;
            let image = &built.image;
            let size: usize = image.layers.iter().map(|l| l.bytes.len()).sum();
            note(&format!("image built in {}: {size} bytes compressed", seconds(started.elapsed())));
            let layers = image
                .layers
                .iter()
                .zip(&image.diff_ids)
                .map(|(l, d)| Layer { digest: l.digest.clone(), size: l.bytes.len(), diff_id: d.clone() })
                .collect();
            Ok(ImageResult::Built(Built {
                digest: image.manifest.digest.clone(),
                size: image.manifest.bytes.len(),
                layers,
                config: image.config.digest.clone(),
                out: built.out,
                binary: built.binary,
                revision: built.revision,
            }))
        }
        ImageCommand::Push { to, insecure_registry, from } => {
            let image = oci::read_layout(from)
                .map_err(|e| UserError::Image(format!("{e:#} (run `aira image build` first)")))?;
            let auth = push::env_auth()?;
            let pushed = push::push(&image, to, *insecure_registry, auth, &note).await?;
            note(&format!(
                "pushed in {}: {} blob(s) uploaded ({} bytes), {} already there",
                seconds(started.elapsed()),
                pushed.uploaded,
                pushed.uploaded_bytes,
                pushed.skipped
            ));
            Ok(ImageResult::Pushed(pushed))
        }
    }
}

/// The image the stack's services run, without building anything: `--image`, else the stack's
/// `image`, else the runtime aira builds — known by the fingerprint of its sources. An image
/// built here already from the same fingerprint (`.aira/image`) is handed to the provider to
/// push when a task definition first needs it; otherwise it is still to build
/// ([`Image::against`] then tells whether the stack runs it already, and [`build`] builds it).
#[cfg(feature = "aws")]
pub async fn prepare(session: &Session, args: &ImageArgs) -> Result<Image, Failure> {
    let stack = &session.loaded.stack;
    if stack.services.is_empty() {
        return Ok(Image::Reference(String::new()));
    }
    if let Some(r) = args.image.clone().or_else(|| stack.image.as_ref().map(|i| i.0.clone())) {
        return Ok(Image::Reference(r));
    }
    args.check()?;
    let opts = options(args)?;
    let source = build::fingerprint(&opts)?;
    let repository = args.repository();
    if build::built_from(&opts.out).as_deref() == Some(source.as_str()) {
        if let Ok(image) = oci::read_layout(&opts.out) {
            let digest = image.manifest.digest.clone();
            session.aws.set_image(LocalImage { image, insecure: args.insecure_registry }).await;
            return Ok(Image::Built { digest, repository, source: Some(source) });
        }
    }
    Ok(Image::ToBuild { source, repository })
}

#[cfg(feature = "aws")]
fn options(args: &ImageArgs) -> Result<build::Options, Failure> {
    let epoch = aira_image::source_date_epoch()?;
    Ok(build::Options { out: PathBuf::from(aira_image::DEFAULT_DIR), binary: args.runtime_binary.clone(), epoch })
}

/// Builds the runtime's image (`up`, when [`Image::against`] says so), reproducibly: an
/// unchanged source gives the same digest, hence no new task definition. It is handed to the
/// provider to push when a task definition first needs it.
#[cfg(feature = "aws")]
pub async fn build(session: &Session, args: &ImageArgs, printer: &Printer) -> Result<Image, Failure> {
    let opts = options(args)?;
    let started = Instant::now();
    let note = |m: &str| printer.note(m);
    let built = tokio::task::block_in_place(|| build::build(&opts, &note))?;
    let digest = built.image.manifest.digest.clone();
    printer.note(&format!("image {digest} built in {}", seconds(started.elapsed())));
    session.aws.set_image(LocalImage { image: built.image, insecure: args.insecure_registry }).await;
    Ok(Image::Built { digest, repository: args.repository(), source: Some(built.source) })
}
