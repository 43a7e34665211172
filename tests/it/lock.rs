//! The stack lock: two runs of one stack never apply at once; a killed holder's lock is taken at
//! once on its own machine, and expires elsewhere.

use std::time::Duration;

use crate::harness::{aira, endpoint, small_stack, spawn_aira, unique_stack, Workdir};
use crate::proxy::{Faults, Proxy};

fn stack_file(work: &Workdir, stack: &str) -> String {
    let file = work.write(&format!("{stack}.yaml"), &small_stack(stack));
    file.to_str().unwrap().to_string()
}

/// Waits until the proxy saw the lock being written (the holder has it from then on).
async fn lock_taken(proxy: &Proxy, latency: Duration) {
    for _ in 0..200 {
        if proxy.take_calls().iter().any(|c| c == "dynamodb:PutItem") {
            // The proxy records a call before it forwards it after its latency.
            tokio::time::sleep(latency + Duration::from_millis(350)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the first run never took the lock");
}

#[tokio::test]
async fn a_second_run_of_the_same_stack_is_refused_with_the_holder() {
    let stack = unique_stack("lock");
    let work = Workdir::new();
    let file = stack_file(&work, &stack);
    // The first run is slowed down, so that it still holds the lock when the second starts.
    let slow = Proxy::start(&endpoint(), Faults { latency: Duration::from_millis(150), ..Faults::default() }).await;
    let mut first = spawn_aira(work.dir.path(), &["up", &file, "--endpoint-url", &slow.url]);
    let first_pid = first.id().unwrap();
    lock_taken(&slow, Duration::from_millis(150)).await;
    let second = aira(work.dir.path(), &["up", &file, "--endpoint-url", &endpoint()]).await;
    second.assert_code(1);
    assert!(second.stderr.contains(&format!("stack `{stack}` is locked by")), "{}", second.stderr);
    assert!(second.stderr.contains(&format!("(pid {first_pid})")), "names the holder: {}", second.stderr);
    assert!(first.wait().await.unwrap().success(), "the first run proceeds");
    // Released at the end: the next run proceeds.
    aira(work.dir.path(), &["down", &file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
}

/// A run SIGKILLed on this machine: the next run takes its lock at once, saying whose it took.
#[tokio::test]
async fn a_killed_runs_lock_is_taken_at_once_on_the_same_machine() {
    let stack = unique_stack("lockkill");
    let work = Workdir::new();
    let file = stack_file(&work, &stack);
    let latency = Duration::from_millis(1000);
    let slow = Proxy::start(&endpoint(), Faults { latency, ..Faults::default() }).await;
    // A TTL far longer than the test: waiting it out is not how the next run gets in.
    let mut holder = spawn_aira(work.dir.path(), &["up", &file, "--lock-ttl", "1h", "--endpoint-url", &slow.url]);
    let pid = holder.id().unwrap();
    lock_taken(&slow, latency).await;
    holder.kill().await.unwrap(); // SIGKILL: no release, no more renewals
    holder.wait().await.unwrap();
    let next = aira(work.dir.path(), &["up", &file, "--endpoint-url", &endpoint()]).await;
    next.assert_code(0);
    assert!(
        next.stderr.contains(&format!("took the lock of `{stack}` from"))
            && next.stderr.contains(&format!("(pid {pid})")),
        "says whose lock it took: {}",
        next.stderr
    );
    assert!(next.stderr.contains("no longer running on this machine"), "{}", next.stderr);
    aira(work.dir.path(), &["down", &file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
}

/// A holder on another machine (its record names another boot) cannot be seen to be gone: its
/// lock is waited out until it expires, or removed with `--force-unlock`.
#[tokio::test]
async fn another_machines_lock_expires_or_is_forced() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let stack = unique_stack("lockelse");
    let work = Workdir::new();
    let file = stack_file(&work, &stack);
    // The lock table exists once a run has taken a lock.
    aira(work.dir.path(), &["up", &file, "--endpoint-url", &endpoint()]).await.assert_code(0);
    let ddb = aws_sdk_dynamodb::Client::new(&crate::harness::sdk_config());
    for force in [false, true] {
        let now = unix(std::time::SystemTime::now());
        // The record a run on another machine writes: a process id that names no process here.
        let record = [
            ("stack", AttributeValue::S(stack.clone())),
            ("holder", AttributeValue::S("ci@elsewhere (pid 4000000000)".into())),
            ("acquired_at", AttributeValue::N(now.to_string())),
            ("expires_at", AttributeValue::N((now + 6).to_string())),
            ("boot", AttributeValue::S("00000000-another-boot/pid:[1]".into())),
            ("pid", AttributeValue::N("4000000000".into())),
            ("pid_started", AttributeValue::N("1".into())),
        ];
        let put = record.into_iter().fold(ddb.put_item().table_name("aira-locks"), |r, (k, v)| r.item(k, v));
        put.send().await.unwrap();
        let refused = aira(work.dir.path(), &["up", &file, "--endpoint-url", &endpoint()]).await;
        refused.assert_code(1);
        assert!(refused.stderr.contains("is locked by ci@elsewhere"), "{}", refused.stderr);
        if force {
            aira(work.dir.path(), &["up", &file, "--force-unlock", "--endpoint-url", &endpoint()]).await.assert_code(0);
        } else {
            tokio::time::sleep(Duration::from_secs(7)).await;
            aira(work.dir.path(), &["up", &file, "--endpoint-url", &endpoint()]).await.assert_code(0);
        }
    }
    aira(work.dir.path(), &["down", &file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
}

/// The lock's record, read straight from moto: holder, acquired at, expires at.
async fn lock_record(ddb: &aws_sdk_dynamodb::Client, stack: &str) -> Option<(String, u64, u64)> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let out = ddb.get_item().table_name("aira-locks").key("stack", AttributeValue::S(stack.into())).send().await;
    let item = out.unwrap().item?;
    let n = |k: &str| item[k].as_n().unwrap().parse().unwrap();
    Some((item["holder"].as_s().unwrap().clone(), n("acquired_at"), n("expires_at")))
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Mutating calls other than the lock's own, by when they reached the proxy.
fn changes(proxy: &Proxy) -> Vec<crate::proxy::Timed> {
    let lock = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:CreateTable"];
    proxy
        .timed_calls()
        .into_iter()
        .filter(|t| crate::proxy::is_mutating(&t.call) && !lock.contains(&t.call.as_str()))
        .collect()
}

/// Another run takes the lock (as `--force-unlock` would) once `verb` has started changing the
/// stack; the run must stop at its next renewal, exit 2 naming the new holder, start no change
/// after it learnt of the loss, and leave the new holder's record alone.
async fn taken_over(verb: &str) {
    let stack = unique_stack(&format!("lost{verb}"));
    let work = Workdir::new();
    let file = stack_file(&work, &stack);
    if verb == "down" {
        aira(work.dir.path(), &["up", &file, "--endpoint-url", &endpoint()]).await.assert_code(0);
    }
    let ddb = aws_sdk_dynamodb::Client::new(&crate::harness::sdk_config());
    let slow = Proxy::start(&endpoint(), Faults { latency: Duration::from_millis(400), ..Faults::default() }).await;
    let args = [verb, &file, "--yes", "--lock-ttl", "6s", "--endpoint-url", &slow.url];
    let other = "another run (test)";
    let take = async {
        while changes(&slow).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        use aws_sdk_dynamodb::types::AttributeValue;
        // Taken from the moment the write is sent: the time it returns to this (busy) test can
        // come after the run's next renewal has already been refused.
        let sent = std::time::SystemTime::now();
        let now = unix(sent);
        let put = ddb.put_item().table_name("aira-locks").item("stack", AttributeValue::S(stack.clone()));
        let put =
            put.item("holder", AttributeValue::S(other.into())).item("acquired_at", AttributeValue::N(now.to_string()));
        put.item("expires_at", AttributeValue::N((now + 600).to_string())).send().await.unwrap();
        (sent, now)
    };
    let (run, (taken, since)) = tokio::join!(aira(work.dir.path(), &args), take);
    run.assert_code(2);
    let since = aira_engine::time::rfc3339(since);
    assert!(run.stderr.contains(&format!("lock lost: held by {other} since {since}")), "{}", run.stderr);
    assert!(run.stdout.contains("not run:"), "says what did not run: {}", run.stdout);
    // The first renewal refused is where the run learnt of the takeover: one answered after it
    // may still have been carried out before it (this busy test's write can reach the server
    // later than a renewal already on its way), so the answer's status decides, not its time.
    let timed = slow.timed_calls();
    let sent = slow.take_requests();
    let refused = sent
        .iter()
        .filter(|r| r.call == "dynamodb:UpdateItem" && r.status != 200)
        .min_by_key(|r| r.answered)
        .expect("a refused renewal");
    assert!(refused.answered > taken, "refused only after the takeover");
    let learnt = refused.answered + Duration::from_millis(50); // the client's own reaction time
    let late: Vec<_> = changes(&slow).into_iter().filter(|t| t.started > learnt).collect();
    assert!(late.is_empty(), "changes started after the loss: {late:?}");
    assert!(!timed.iter().any(|t| t.call == "dynamodb:DeleteItem"), "the loser does not release another's lock");
    assert_eq!(lock_record(&ddb, &stack).await.map(|r| r.0), Some(other.to_string()), "the new holder keeps it");
    let done = aira(work.dir.path(), &["down", &file, "--yes", "--force-unlock", "--endpoint-url", &endpoint()]).await;
    done.assert_code(0);
}

#[tokio::test]
async fn an_up_whose_lock_is_taken_stops_before_its_next_change() {
    taken_over("up").await;
}

#[tokio::test]
async fn a_down_whose_lock_is_taken_stops_before_its_next_change() {
    taken_over("down").await;
}

#[tokio::test]
async fn an_up_whose_renewals_are_refused_stops_before_the_lock_expires() {
    let stack = unique_stack("lostrenew");
    let work = Workdir::new();
    let file = stack_file(&work, &stack);
    let ddb = aws_sdk_dynamodb::Client::new(&crate::harness::sdk_config());
    let refuse = Some(("UpdateItem", "aira-locks", "AccessDeniedException"));
    let faults = Faults { latency: Duration::from_millis(400), dynamodb_error: refuse, ..Faults::default() };
    let slow = Proxy::start(&endpoint(), faults).await;
    let run = aira(work.dir.path(), &["up", &file, "--yes", "--lock-ttl", "6s", "--endpoint-url", &slow.url]).await;
    run.assert_code(2);
    assert!(run.stderr.contains("lock lost: it could not be renewed before it expired at"), "{}", run.stderr);
    assert!(run.stderr.contains("AccessDeniedException"), "names the renewal's error: {}", run.stderr);
    assert!(slow.faults_injected.load(std::sync::atomic::Ordering::SeqCst) >= 2, "the renewals were tried again");
    // Not released (it was lost), so the record still holds the expiry the run had to respect.
    let (_, _, expires) = lock_record(&ddb, &stack).await.expect("the lock's record");
    let late: Vec<_> = changes(&slow).into_iter().filter(|t| unix(t.started) >= expires).collect();
    assert!(late.is_empty(), "changes started once the lock had expired: {late:?}");
    let done = aira(work.dir.path(), &["down", &file, "--yes", "--force-unlock", "--endpoint-url", &endpoint()]).await;
    done.assert_code(0);
}

/// The holder renews its lock while it works, and DynamoDB accepts each renewal: the conforming
/// proxy refuses a request with an expression attribute value no expression uses, as DynamoDB
/// does (moto accepts it), and its log holds what aira sent and what it got.
#[tokio::test]
async fn the_holder_renews_its_lock_with_requests_dynamodb_accepts() {
    let stack = unique_stack("lockrenew");
    let work = Workdir::new();
    let file = stack_file(&work, &stack);
    // Slow enough that the run outlasts a third of the TTL (6 s, renewed every 2 s; the lock's
    // times are whole seconds, so a shorter TTL leaves too little margin on a busy machine).
    let slow = Proxy::start(&endpoint(), Faults { latency: Duration::from_millis(250), ..Faults::default() }).await;
    aira(work.dir.path(), &["up", &file, "--lock-ttl", "6s", "--endpoint-url", &slow.url]).await.assert_code(0);
    let writes = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"];
    let lock: Vec<_> = slow
        .take_requests()
        .into_iter()
        .filter(|r| writes.contains(&r.call.as_str()) && r.json()["TableName"] == "aira-locks")
        .collect();
    let renewals: Vec<_> = lock.iter().filter(|r| r.call == "dynamodb:UpdateItem").collect();
    assert!(!renewals.is_empty(), "no renewal sent: {lock:?}");
    for r in &lock {
        assert_eq!(r.status, 200, "DynamoDB refuses the lock's request: {r:?}");
    }
    aira(work.dir.path(), &["down", &file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
}
