//! `aira dlq`: the stack's dead-letter queue: list, show, redrive, purge.

use serde::Serialize;

use super::args::{DlqAction, Global};
use super::session::{ask, Session};
use crate::failure::{Failure, UserError};
use crate::output::{Printer, Render};
use crate::time::millis_rfc3339;
use aira_aws::dlq::{DeadLetter, Redrive};

/// The result of each action.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Dlq {
    List { dead_letter_queue: String, approximate_count: u64, messages: Vec<DeadLetter> },
    Show(DeadLetter),
    Redrive(Redrive),
    Purge { purged: String, approximate_count: u64 },
}

fn when(millis: Option<u64>) -> String {
    millis_rfc3339(millis.map(|ms| ms as i64))
}

impl Render for Dlq {
    fn text(&self, p: &Printer) {
        match self {
            Dlq::List { dead_letter_queue, approximate_count, messages } => {
                p.out(&format!("{} dead letter(s) in {dead_letter_queue} (about {approximate_count}):", messages.len()));
                for l in messages {
                    p.out(&format!(
                        "  {}  receives {}  first received {}  {}",
                        l.id,
                        l.receive_count,
                        when(l.first_received_at),
                        l.reason.as_deref().unwrap_or("")
                    ));
                }
            }
            Dlq::Show(l) => p.out(&format!(
                "id:             {}\nreceives:       {}\nsent:           {}\nfirst received: {}\nreason:         {}\nbody:           {}",
                l.id,
                l.receive_count,
                when(l.sent_at),
                when(l.first_received_at),
                l.reason.as_deref().unwrap_or("(not recorded on the message)"),
                l.body
            )),
            Dlq::Redrive(r) => p.out(&format!("Redrove {} message(s) ({}-side).", r.moved, r.method)),
            Dlq::Purge { purged, approximate_count } => {
                p.out(&format!("Purged {purged} (about {approximate_count} message(s))."))
            }
        }
    }
}

pub async fn dlq(global: &Global, action: &DlqAction, printer: &Printer) -> Result<Dlq, Failure> {
    let arg = match action {
        DlqAction::List { stack, .. }
        | DlqAction::Show { stack, .. }
        | DlqAction::Redrive { stack, .. }
        | DlqAction::Purge { stack } => stack,
    };
    let session = Session::connect(global, arg, printer).await?;
    let pair = session.aws.queue_pair(&session.scope).await?;
    let aws = &session.aws;
    Ok(match action {
        DlqAction::List { limit, .. } => {
            let messages = aws.dead_letters(&pair, *limit).await?;
            let approximate_count = aws.queue_messages(&pair.dlq_url).await?;
            Dlq::List { dead_letter_queue: pair.dlq_url, approximate_count, messages }
        }
        DlqAction::Show { id, .. } => {
            let letters = aws.dead_letters(&pair, 1000).await?;
            let Some(l) = letters.into_iter().find(|l| &l.id == id) else {
                return Err(UserError::NoDeadLetter { id: id.clone(), queue: pair.dlq_url }.into());
            };
            Dlq::Show(l)
        }
        DlqAction::Redrive { limit, client_side, .. } => {
            printer.note(&format!("moving dead letters from {} back to {}", pair.dlq_url, pair.queue_url));
            let r = aws.redrive(&pair, *limit, *client_side).await?;
            if let Some(why) = &r.fallback_reason {
                printer
                    .note(&format!("SQS could not move them itself ({why}); moved them from here: send, then delete"));
            }
            Dlq::Redrive(r)
        }
        DlqAction::Purge { .. } => {
            let approximate_count = aws.queue_messages(&pair.dlq_url).await?;
            ask(
                global,
                &format!("delete about {approximate_count} dead letter(s) from {} for good?", pair.dlq_url),
                "purging deletes dead letters for good",
            )?;
            aws.purge_dead_letters(&pair).await?;
            Dlq::Purge { purged: pair.dlq_url, approximate_count }
        }
    })
}
