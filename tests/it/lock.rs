//! The stack lock: two runs of one stack never apply at once; a dead holder's lock expires.

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

#[tokio::test]
async fn a_dead_holders_lock_expires_or_is_forced() {
    let stack = unique_stack("lockdead");
    let work = Workdir::new();
    let file = stack_file(&work, &stack);
    for force in [false, true] {
        // Slow enough that the holder is still reading the stack when it is killed, even when it
        // has nothing to change (the second round): every kind is observed at once.
        let latency = Duration::from_millis(1000);
        let slow = Proxy::start(&endpoint(), Faults { latency, ..Faults::default() }).await;
        let mut holder = spawn_aira(work.dir.path(), &["up", &file, "--lock-ttl", "8s", "--endpoint-url", &slow.url]);
        lock_taken(&slow, latency).await;
        holder.kill().await.unwrap(); // SIGKILL: no release, no more renewals
        let refused = aira(work.dir.path(), &["up", &file, "--endpoint-url", &endpoint()]).await;
        refused.assert_code(1);
        assert!(refused.stderr.contains("is locked by"), "{}", refused.stderr);
        if force {
            aira(work.dir.path(), &["up", &file, "--force-unlock", "--endpoint-url", &endpoint()]).await.assert_code(0);
        } else {
            tokio::time::sleep(Duration::from_secs(10)).await;
            aira(work.dir.path(), &["up", &file, "--endpoint-url", &endpoint()]).await.assert_code(0);
        }
    }
    aira(work.dir.path(), &["down", &file, "--yes", "--endpoint-url", &endpoint()]).await.assert_code(0);
    crate::harness::assert_nothing_left(&stack, "us-east-1").await;
}
