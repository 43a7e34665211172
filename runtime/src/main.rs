use std::process::ExitCode;

use clap::Parser;

use aira_runtime::config::{Cli, Command};
use aira_runtime::{dlq, queue::sqs::SqsQueue, run};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Health { url, timeout } = &cli.command {
        // No logging set-up: a health check prints one line and exits.
        return match run::health(url, std::time::Duration::from_secs(*timeout)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    run::init_logging();
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen, metrics_listen, data, common } => {
            run::serve(listen, metrics_listen, &data, &common, run::shutdown_on_signal()).await
        }
        Command::Api { listen, service } => run::api(listen, &service, run::shutdown_on_signal()).await,
        Command::Worker { service } => run::worker(&service, run::shutdown_on_signal()).await,
        Command::Redrive { data, queue_url, dlq_url, limit } => {
            let moved = match (data, queue_url, dlq_url) {
                (Some(data), _, _) => {
                    let e = run::open_embedded(&data, 5, Default::default())?;
                    dlq::redrive(e.dead_letter.as_ref(), e.queue.as_ref(), limit).await?
                }
                (None, Some(q), Some(d)) => {
                    let conf = run::aws_config().await;
                    let client = aws_sdk_sqs::Client::new(&conf);
                    dlq::redrive(&SqsQueue::new(client.clone(), d), &SqsQueue::new(client, q), limit).await?
                }
                _ => anyhow::bail!("give --data DIR, or both --queue-url and --dlq-url"),
            };
            println!("{}", serde_json::json!({"redriven": moved}));
            Ok(())
        }
        Command::Health { .. } => unreachable!("handled before logging starts"),
    }
}
