//! `aira up` on AWS: the image, then, holding the lock, plan, confirm and apply.

use std::sync::Arc;

use super::applied::Applied;
use super::args::{Global, ImageArgs, StackArg};
use super::session::{confirm, Session};
use crate::failure::Failure;
use crate::output::Printer;
use aira_aws::lock;
use aira_engine::provider::{TAG_CREATED_AT, TAG_EXPIRES_AT};
use aira_engine::stack::model::Duration;

/// `aira up`: holding the lock, the pre-flight and the plan (every finding before anything
/// long), the image's build when the stack does not run its sources yet, then confirm and apply.
pub async fn up(
    global: &Global,
    arg: &StackArg,
    image: &ImageArgs,
    ttl: Option<Duration>,
    printer: &Arc<Printer>,
) -> Result<Applied, Failure> {
    let mut session = Session::connect(global, arg, printer).await?;
    // Set on each resource when it is created (tags are not compared afterwards).
    let now = crate::time::now_secs();
    let mut scope = (*session.scope).clone();
    scope.tags.insert(TAG_CREATED_AT.into(), now.to_string());
    if let Some(ttl) = ttl {
        scope.tags.insert(TAG_EXPIRES_AT.into(), (now + ttl.secs()).to_string());
    }
    session.scope = Arc::new(scope);
    session.image = super::image::prepare(&session, image).await?;
    let applied = session.locked(global, printer, |loss| apply_stack(global, &session, image, printer, loss)).await?;
    applied.note_timing(printer);
    Ok(applied)
}

async fn apply_stack(
    global: &Global,
    session: &Session,
    image: &ImageArgs,
    printer: &Arc<Printer>,
    loss: lock::Loss,
) -> Result<Applied, Failure> {
    let (read, mut plan) = session.plan(printer).await?;
    if plan.image.as_ref().is_some_and(|d| d.build) {
        let decision = plan.image.take().map(|d| *d);
        let built = super::image::build(session, image, printer).await?;
        plan = session.plan_image(&read, &built, decision)?;
    }
    printer.preview(&plan);
    if !plan.has_changes() {
        return Ok(Applied { url: session.url(), plan, report: None, left_behind: Vec::new(), lock_lost: None });
    }
    confirm(&plan, global, "apply")?;
    let report = session.apply(&plan, global, printer, loss.signal()).await?;
    let lock_lost = loss.reason().await;
    Ok(Applied { url: session.url(), plan, report: Some(report), left_behind: Vec::new(), lock_lost })
}
