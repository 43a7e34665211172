//! SQLite from async code: one writer connection and a few reader connections per database
//! file (WAL lets readers run beside the writer). A caller waits for a connection in an
//! async, first-come queue, then runs its closure in the blocking pool; so a burst of
//! requests queues in tasks instead of parking hundreds of blocking threads on a lock.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use rusqlite::Connection;
use tokio::sync::Mutex;

const READERS: usize = 4;

#[derive(Clone)]
pub struct Db {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Arc<Mutex<Connection>>>>,
    next_reader: Arc<AtomicUsize>,
}

fn connect(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("open {}", path.display()))?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;")
        .context("set sqlite pragmas")?;
    Ok(conn)
}

impl Db {
    pub fn open(path: &Path, schema: &str) -> anyhow::Result<Db> {
        let writer = connect(path)?;
        writer.execute_batch(schema).context("create sqlite schema")?;
        let readers = (0..READERS)
            .map(|_| {
                let c = connect(path)?;
                c.execute_batch("PRAGMA query_only=ON;")?;
                Ok(Arc::new(Mutex::new(c)))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Db { writer: Arc::new(Mutex::new(writer)), readers: Arc::new(readers), next_reader: Arc::new(AtomicUsize::new(0)) })
    }

    /// Runs `f` on the writer connection.
    pub async fn call<R, F>(&self, f: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        run(&self.writer, f).await
    }

    /// Runs `f` on a reader connection (read-only: it sees committed data).
    pub async fn read<R, F>(&self, f: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        run(&self.readers[i], f).await
    }
}

async fn run<R, F>(conn: &Arc<Mutex<Connection>>, f: F) -> anyhow::Result<R>
where
    R: Send + 'static,
    F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
{
    let mut guard = conn.clone().lock_owned().await;
    tokio::task::spawn_blocking(move || f(&mut guard))
        .await
        .context("sqlite task panicked")?
        .context("sqlite")
}
