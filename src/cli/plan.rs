//! `aira validate` (no AWS call) and `aira plan`.

use serde::Serialize;

use super::args::StackArg;
#[cfg(feature = "aws")]
use super::args::{Global, ImageArgs};
#[cfg(feature = "aws")]
use super::session::Session;
use crate::failure::Failure;
use crate::output::{Printer, Render};
use aira_engine::expand::{expand, Image};
#[cfg(feature = "aws")]
use aira_engine::plan::Plan;
use aira_engine::provider::Facts;

/// A stack file that checks out.
#[derive(Debug, Serialize)]
pub struct Valid {
    pub valid: bool,
    pub file: String,
    pub stack: String,
    pub resources: usize,
}

impl Render for Valid {
    fn text(&self, p: &Printer) {
        p.out(&format!("{}: valid stack `{}` ({} resources)", self.file, self.stack, self.resources));
    }
}

pub fn validate(arg: &StackArg, printer: &Printer) -> Result<Valid, Failure> {
    let loaded = arg.load(printer)?;
    // No AWS call: placeholders are enough to count the resources.
    let image = Image::Reference("registry.invalid/aira@sha256:0".into());
    let graph = expand(&loaded.stack, &Facts::offline(&loaded.stack), &image)?;
    Ok(Valid { valid: true, file: loaded.file, stack: loaded.stack.stack.0, resources: graph.resources.len() })
}

/// `aira plan`: what `up` would change, with the image `up` would deploy; it builds nothing
/// (whether `up` would build the image, and why, is in the plan).
#[cfg(feature = "aws")]
pub async fn plan(global: &Global, arg: &StackArg, image: &ImageArgs, printer: &Printer) -> Result<Plan, Failure> {
    let mut session = Session::connect(global, arg, printer).await?;
    session.image = super::image::prepare(&session, image).await?;
    let (_, plan) = session.plan(printer).await?;
    Ok(plan)
}
