//! The conforming proxy on its own, in front of a moto server, for running `aira` by hand as the
//! tests run it: `cargo run -p aira-testkit --example proxy -- http://127.0.0.1:PORT` prints the
//! proxy's URL, then serves until killed.

use aira_testkit::proxy::{Faults, Proxy};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let upstream = std::env::args().nth(1).expect("usage: proxy MOTO_URL");
    let proxy = Proxy::start(&upstream, Faults::default()).await;
    println!("{}", proxy.url);
    std::future::pending::<()>().await;
}
