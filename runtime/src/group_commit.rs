//! The group-commit executor: SQLite from async code, shared by the embedded store
//! (`store::sqlite`) and the embedded queue (`queue::sqlite`). Each database file has one
//! writer thread and a few reader threads, each owning its connection (WAL lets readers run
//! beside the writer). Callers send closures to a thread and await the result.
//!
//! The writer commits in groups: it takes every job waiting in its queue (at most
//! `MAX_GROUP`), runs them in one transaction (each job in its own savepoint, so a failing
//! job undoes only itself), commits once, and only then tells each caller its result. A caller
//! is never told "done" before its write is committed; under load, one commit carries many writes.
//!
//! Jobs sent with [`Db::call_first`] go ahead of the waiting ones into the next group: the
//! worker's writes, which drain the backlog, are not queued behind a flood of the API's, which
//! add to it. So under a flood the backlog drains at the worker's pace and the API's latency
//! grows instead (backpressure). Their number is bounded by the worker's messages in flight.

use std::collections::VecDeque;
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

/// What a caller asks a connection's thread to run (`Db::call` and its kin): its result goes
/// back to the caller.
pub trait ConnFn<R>: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static {}
impl<R, F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static> ConnFn<R> for F {}

/// What a connection's thread is asked to do: a job of the next group, or a job run alone,
/// outside any transaction (a checkpoint cannot run inside one).
enum Work {
    Group(Job),
    /// A group job that goes ahead of the waiting group jobs.
    First(Job),
    Alone(Job),
}

const READERS: usize = 3;
/// Prepared statements kept per connection: more than the store and the queue use, so that no
/// statement is parsed twice (parsing was a fifth of the writer's time before they were kept).
const STATEMENT_CACHE: usize = 128;
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
    // temp_store: each job's savepoint journal stays in memory rather than in a temporary file
    // (it was a tenth of the writer's time under the load benchmark).
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000; PRAGMA temp_store=MEMORY;"
    ))
    .context("set sqlite pragmas")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

fn spawn(name: &str, mut conn: Connection, group: bool) -> anyhow::Result<mpsc::Sender<Work>> {
    let (tx, rx) = mpsc::channel::<Work>();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // Group jobs received and not yet run, the `First` ones ahead; a job run alone that
            // arrived while they were gathered runs after the next group.
            let (mut first, mut waiting) = (VecDeque::<Job>::new(), VecDeque::<Job>::new());
            let mut held: Option<Job> = None;
            loop {
                if first.is_empty() && waiting.is_empty() {
                    if let Some(job) = held.take() {
                        job(&mut conn)(true);
                        continue;
                    }
                    match rx.recv() {
                        Ok(w) => sort(w, &mut first, &mut waiting, &mut held),
                        Err(_) => return,
                    }
                }
                while held.is_none() {
                    match rx.try_recv() {
                        Ok(w) => sort(w, &mut first, &mut waiting, &mut held),
                        Err(_) => break,
                    }
                }
                if !group {
                    for job in first.drain(..).chain(waiting.drain(..)).chain(held.take()) {
                        job(&mut conn)(true);
                    }
                    continue;
                }
                let take_first = first.len().min(MAX_GROUP);
                let mut jobs: Vec<Job> = first.drain(..take_first).collect();
                let take_waiting = waiting.len().min(MAX_GROUP - jobs.len());
                jobs.extend(waiting.drain(..take_waiting));
                if !jobs.is_empty() {
                    let began = conn.run("BEGIN IMMEDIATE").is_ok();
                    let replies: Vec<Reply> = jobs.into_iter().map(|job| job(&mut conn)).collect();
                    let committed = began && conn.run("COMMIT").is_ok();
                    if began && !committed {
                        let _ = conn.run("ROLLBACK");
                    }
                    for reply in replies {
                        reply(committed || !began);
                    }
                }
                // Between groups, even while more wait (a checkpoint must not starve).
                if let Some(job) = held.take() {
                    job(&mut conn)(true);
                }
            }
        })
        .context("spawn sqlite thread")?;
    Ok(tx)
}

/// Files a received job: into the next groups (ahead or in turn), or held to run alone.
fn sort(w: Work, first: &mut VecDeque<Job>, waiting: &mut VecDeque<Job>, held: &mut Option<Job>) {
    match w {
        Work::First(job) => first.push_back(job),
        Work::Group(job) => waiting.push_back(job),
        Work::Alone(job) => *held = Some(job),
    }
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
    pub async fn call<R: Send + 'static>(&self, f: impl ConnFn<R>) -> anyhow::Result<R> {
        submit(&self.writer, f, Lane::Group).await
    }

    /// Like [`Db::call`], ahead of the group jobs waiting: for the writes that drain the backlog.
    pub async fn call_first<R: Send + 'static>(&self, f: impl ConnFn<R>) -> anyhow::Result<R> {
        submit(&self.writer, f, Lane::First).await
    }

    /// Runs `f` on the writer between groups, outside any transaction (a checkpoint).
    pub async fn alone<R: Send + 'static>(&self, f: impl ConnFn<R>) -> anyhow::Result<R> {
        submit(&self.writer, f, Lane::Alone).await
    }

    /// Runs `f` on a reader connection (read-only: it sees committed data).
    pub async fn read<R: Send + 'static>(&self, f: impl ConnFn<R>) -> anyhow::Result<R> {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        submit(&self.readers[i], f, Lane::Alone).await
    }
}

/// Statements through the connection's cache of prepared statements: parsed once per
/// connection, not at each call (`Connection::execute` and `query_row` parse every time).
pub trait Cached {
    /// `Connection::execute`, prepared once.
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    /// `Connection::query_row`, prepared once.
    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
    /// A statement without parameters or rows (transaction control), prepared once.
    fn run(&self, sql: &str) -> rusqlite::Result<()> {
        self.exec(sql, []).map(|_| ())
    }
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// How a job is run: in a group (in turn or ahead), or alone.
#[derive(Clone, Copy, PartialEq)]
enum Lane {
    Group,
    First,
    Alone,
}

async fn submit<R: Send + 'static>(thread: &mpsc::Sender<Work>, f: impl ConnFn<R>, lane: Lane) -> anyhow::Result<R> {
    let (tx, rx) = tokio::sync::oneshot::channel::<anyhow::Result<R>>();
    let in_group = lane != Lane::Alone;
    let job: Job = Box::new(move |conn: &mut Connection| {
        let result = if in_group {
            // A failing job rolls back to its savepoint and leaves the group's other jobs alone.
            conn.run("SAVEPOINT job").and_then(|()| match f(conn) {
                Ok(r) => conn.run("RELEASE job").map(|()| r),
                Err(e) => {
                    let _ = conn.run("ROLLBACK TO job").and_then(|()| conn.run("RELEASE job"));
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
    let work = match lane {
        Lane::Group => Work::Group(job),
        Lane::First => Work::First(job),
        Lane::Alone => Work::Alone(job),
    };
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

    #[tokio::test]
    async fn a_first_job_goes_ahead_of_the_waiting_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.sqlite"), "CREATE TABLE t (x INTEGER PRIMARY KEY);", Durability::Full)
            .unwrap();
        // The writer is held by a job while 600 jobs wait (more than a group) and one comes first.
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let d = db.clone();
        let held = tokio::spawn(async move {
            d.call(move |_| {
                let _ = release.recv();
                Ok(())
            })
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for i in 0..600 {
            let (order, d) = (order.clone(), db.clone());
            waiting.push(tokio::spawn(async move {
                d.call(move |_| {
                    order.lock().unwrap().push(i);
                    Ok(())
                })
                .await
            }));
        }
        let (o, d) = (order.clone(), db.clone());
        let first = tokio::spawn(async move {
            d.call_first(move |_| {
                o.lock().unwrap().push(-1);
                Ok(())
            })
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        hold.send(()).unwrap();
        held.await.unwrap().unwrap();
        first.await.unwrap().unwrap();
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        let order = order.lock().unwrap();
        assert_eq!(order.len(), 601);
        assert_eq!(order[0], -1, "ahead of the 600 sent before it");
        assert!(order[1..].windows(2).all(|w| w[0] < w[1]), "the others in turn");
    }
}
