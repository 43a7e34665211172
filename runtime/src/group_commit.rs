//! The group-commit executor: SQLite from async code, shared by the embedded store
//! (`store::sqlite`) and the embedded queue (`queue::sqlite`). Each database file has one
//! writer thread and a few reader threads, each owning its connection (WAL lets readers run
//! beside the writer). Callers send closures to a thread and await the result.
//!
//! The writer commits in groups: it takes every job waiting in its queue (at most
//! `MAX_GROUP`), runs them in one transaction (each job in its own savepoint, so a failing
//! job undoes only itself), commits once, and only then tells each caller its result. A caller
//! is never told "done" before its write is committed; under load, one commit carries many writes.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use anyhow::Context;
use rusqlite::Connection;

/// A job runs on a connection's thread and returns the reply to send once the group is
/// committed (reader jobs: at once).
type Job = Box<dyn FnOnce(&mut Connection) -> Reply + Send>;
/// Sends the job's result; `false` when the group's commit failed.
type Reply = Box<dyn FnOnce(bool) + Send>;

/// What a connection's thread is asked to do: a job of the next group, or a job run alone,
/// outside any transaction (a checkpoint cannot run inside one).
enum Work {
    Group(Job),
    Alone(Job),
}

const READERS: usize = 3;
/// Most jobs in one group commit.
const MAX_GROUP: usize = 512;

/// One database file: its writer thread and its reader threads. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    writer: mpsc::Sender<Work>,
    readers: Arc<Vec<mpsc::Sender<Work>>>,
    next_reader: Arc<AtomicUsize>,
}

/// When a commit is on disk. `Full` (the default) syncs the write-ahead log at every
/// (group) commit, so an accepted message survives a power cut; `Normal` syncs at
/// checkpoints only: a process crash loses nothing, an OS crash may lose the last commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    #[default]
    Full,
    Normal,
}

fn connect(path: &Path, durability: Durability) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("open {}", path.display()))?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!("PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000;"))
        .context("set sqlite pragmas")?;
    Ok(conn)
}

fn spawn(name: &str, mut conn: Connection, group: bool) -> anyhow::Result<mpsc::Sender<Work>> {
    let (tx, rx) = mpsc::channel::<Work>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // A job run alone that arrived while a group was being gathered: it runs next.
            let mut held: Option<Work> = None;
            loop {
                let work = match held.take() {
                    Some(w) => w,
                    None => match rx.recv() {
                        Ok(w) => w,
                        Err(_) => return,
                    },
                };
                let first = match work {
                    Work::Alone(job) => {
                        job(&mut conn)(true);
                        continue;
                    }
                    Work::Group(job) if !group => {
                        job(&mut conn)(true);
                        continue;
                    }
                    Work::Group(job) => job,
                };
                let mut jobs = vec![first];
                while jobs.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Work::Group(j)) => jobs.push(j),
                        Ok(alone) => {
                            held = Some(alone);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let began = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
                let replies: Vec<Reply> = jobs.into_iter().map(|job| job(&mut conn)).collect();
                let committed = began && conn.execute_batch("COMMIT").is_ok();
                if began && !committed {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                for reply in replies {
                    reply(committed || !began);
                }
            }
        })
        .context("spawn sqlite thread")?;
    Ok(tx)
}

impl Db {
    /// Opens (or creates) the file, runs `schema` on the writer, starts the threads.
    pub fn open(path: &Path, schema: &str, durability: Durability) -> anyhow::Result<Db> {
        let writer = connect(path, durability)?;
        writer.execute_batch(schema).context("create sqlite schema")?;
        let readers = (0..READERS)
            .map(|i| {
                let c = connect(path, durability)?;
                c.execute_batch("PRAGMA query_only=ON;")?;
                spawn(&format!("aira-sqlite-r{i}"), c, false)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Db {
            writer: spawn("aira-sqlite-w", writer, true)?,
            readers: Arc::new(readers),
            next_reader: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Runs `f` on the writer, inside a group transaction; resolves after the commit.
    pub async fn call<R, F>(&self, f: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        submit(&self.writer, f, true).await
    }

    /// Runs `f` on the writer between groups, outside any transaction (a checkpoint).
    pub async fn alone<R, F>(&self, f: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        submit(&self.writer, f, false).await
    }

    /// Runs `f` on a reader connection (read-only: it sees committed data).
    pub async fn read<R, F>(&self, f: F) -> anyhow::Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        submit(&self.readers[i], f, false).await
    }
}

async fn submit<R, F>(thread: &mpsc::Sender<Work>, f: F, in_group: bool) -> anyhow::Result<R>
where
    R: Send + 'static,
    F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<anyhow::Result<R>>();
    let job: Job = Box::new(move |conn: &mut Connection| {
        let result = if in_group {
            // A failing job rolls back to its savepoint and leaves the group's other jobs alone.
            conn.execute_batch("SAVEPOINT job").and_then(|()| match f(conn) {
                Ok(r) => conn.execute_batch("RELEASE job").map(|()| r),
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                    Err(e)
                }
            })
        } else {
            f(conn)
        };
        Box::new(move |committed: bool| {
            let out = match result {
                Ok(_) if !committed => Err(anyhow::anyhow!("sqlite commit failed")),
                Ok(r) => Ok(r),
                Err(e) => Err(anyhow::Error::new(e).context("sqlite")),
            };
            let _ = tx.send(out);
        })
    });
    let work = if in_group { Work::Group(job) } else { Work::Alone(job) };
    thread.send(work).map_err(|_| anyhow::anyhow!("sqlite thread stopped"))?;
    rx.await.context("sqlite thread dropped the job")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_job_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.sqlite"), "CREATE TABLE t (x INTEGER PRIMARY KEY);", Durability::Full)
            .unwrap();
        let ok = db.call(|c| c.execute("INSERT INTO t VALUES (1)", []));
        let bad = db.call(|c| {
            c.execute("INSERT INTO t VALUES (2)", [])?;
            c.execute("INSERT INTO missing VALUES (3)", [])
        });
        let more = db.call(|c| c.execute("INSERT INTO t VALUES (4)", []));
        let (ok, bad, more) = tokio::join!(ok, bad, more);
        assert_eq!(ok.unwrap(), 1);
        assert!(bad.is_err());
        assert_eq!(more.unwrap(), 1);
        let rows: Vec<i64> =
            db.read(|c| c.prepare("SELECT x FROM t ORDER BY x")?.query_map([], |r| r.get(0))?.collect()).await.unwrap();
        assert_eq!(rows, vec![1, 4]);
    }
}
