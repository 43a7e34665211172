//! `aira secret`: set a Secrets Manager secret from standard input; list a stack's secrets.
//! Values are never printed.

use std::io::{IsTerminal, Write};

use serde::Serialize;

use super::args::{Global, SecretAction};
use super::session::{connect_aws, Session};
use crate::failure::{Failure, UserError};
use crate::output::{Printer, Render};
use aira_aws::secrets::SecretInfo;

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Secret {
    Set { name: String, created: bool },
    List { stack: String, secrets: Vec<SecretInfo> },
}

impl Render for Secret {
    fn text(&self, p: &Printer) {
        match self {
            Secret::Set { name, created } => {
                p.out(&format!("{} secret `{name}`.", if *created { "Created" } else { "Updated" }))
            }
            Secret::List { stack, secrets } if secrets.is_empty() => {
                p.out(&format!("Stack `{stack}` references no secret."))
            }
            Secret::List { secrets, .. } => {
                for i in secrets {
                    let state =
                        if i.exists { "exists" } else { "MISSING: create it with `aira secret set NAME < file`" };
                    p.out(&format!("{}  ({})  {state}", i.name, i.used_for));
                }
            }
        }
    }
}

pub async fn secret(global: &Global, action: &SecretAction, printer: &Printer) -> Result<Secret, Failure> {
    match action {
        SecretAction::Set { name } => {
            let value = read_value(name)?;
            if value.is_empty() {
                return Err(UserError::EmptySecret.into());
            }
            let aws = connect_aws(global, None).await?;
            let created = aws.set_secret(name, &value).await?;
            Ok(Secret::Set { name: name.clone(), created })
        }
        SecretAction::List { stack } => {
            let session = Session::connect(global, stack, printer).await?;
            let mut refs = Vec::new();
            if let Some(key) = session.loaded.stack.llm.as_ref().and_then(|l| l.api_key.as_ref()) {
                refs.push((key.secret.clone(), "llm.api_key".to_string()));
            }
            let mut infos = Vec::new();
            for (name, used_for) in &refs {
                infos.push(session.aws.secret_info(name, used_for).await?);
            }
            Ok(Secret::List { stack: session.stack().to_string(), secrets: infos })
        }
    }
}

/// The value: asked for without echo in a terminal, else all of standard input; without the
/// final line break.
fn read_value(name: &str) -> Result<String, Failure> {
    let mut value = String::new();
    if std::io::stdin().is_terminal() {
        eprint!("value of secret `{name}` (not echoed; end with Enter): ");
        let _ = std::io::stderr().flush();
        read_hidden(&mut value)?;
        eprintln!();
    } else {
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)?;
    }
    Ok(value.trim_end_matches(['\n', '\r']).to_string())
}

/// Reads a line from the terminal without echoing it.
fn read_hidden(into: &mut String) -> std::io::Result<()> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let original = tcgetattr(&stdin)?;
    let mut quiet = original.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    let read = stdin.read_line(into);
    tcsetattr(&stdin, SetArg::TCSANOW, &original)?;
    read.map(drop)
}
