//! `aira rollback`: each service (or one) to its previous or a named revision, then wait.

use std::sync::Arc;

use serde::Serialize;

use super::args::{Global, StackArg};
use super::session::Session;
use crate::failure::{Failure, UserError};
use crate::output::{Printer, Render};
use aira_aws::lock;

#[derive(Debug, Serialize)]
pub struct RolledBack {
    pub stack: String,
    pub rolled_back: Vec<Rollback>,
}

/// One service, from and to `family:revision`.
#[derive(Debug, Serialize)]
pub struct Rollback {
    pub service: String,
    pub from: String,
    pub to: String,
}

impl Render for RolledBack {
    fn text(&self, p: &Printer) {
        for r in &self.rolled_back {
            p.out(&format!("Service {} rolled back: {} → {}.", r.service, r.from, r.to));
        }
    }
}

pub async fn rollback(
    global: &Global,
    arg: &StackArg,
    service: Option<&str>,
    to: Option<u32>,
    printer: &Arc<Printer>,
) -> Result<RolledBack, Failure> {
    let session = Session::connect(global, arg, printer).await?;
    if service.is_none() && to.is_some() && session.loaded.stack.services.len() > 1 {
        return Err(UserError::RollbackNeedsService.into());
    }
    let names = session.service_names(service)?;
    let work = async {
        let mut rolled_back = Vec::new();
        for name in &names {
            let (from, to, arn) = session.aws.rollback(&session.scope, name, to).await?;
            printer.note(&format!("service {name}: {from} → {to}; waiting for the deployment"));
            session.aws.wait_for_service(&session.scope, name, &arn, &**printer).await?;
            rolled_back.push(Rollback { service: name.clone(), from, to });
        }
        Ok(rolled_back)
    };
    // A lost lock ends the rollback where it is: another run owns the stack now.
    let work = |loss: lock::Loss| async move {
        tokio::select! {
            done = work => done,
            reason = loss.lost() => Err(Failure::internal(format!("lock lost: {reason}; the rollback stopped"))),
        }
    };
    let rolled_back = session.locked(global, printer, work).await?;
    Ok(RolledBack { stack: session.stack().to_string(), rolled_back })
}
