#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::{Duration, Instant};
use etcd_client::{Client, ConnectOptions, GetOptions};

#[tokio::test]
async fn probe_dead_endpoint() {
    let port = cwm_testkit::free_port();
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1)).with_require_leader(true).with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    let t = Instant::now();
    let mut c = Client::connect([format!("127.0.0.1:{port}")], Some(opts)).await.unwrap();
    eprintln!("connect ok after {:?}", t.elapsed());
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), c.get("/x", Some(GetOptions::new().with_prefix()))).await;
    eprintln!("get after {:?}: {:?}", t.elapsed(), r.map(|r| r.map(|_| ())));
}

#[tokio::test]
async fn probe_killed_etcd() {
    let mut etcd = cwm_testkit::Etcd::start();
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1)).with_require_leader(true);
    let mut c = Client::connect([etcd.endpoint()], Some(opts)).await.unwrap();
    c.put("/cwm/a", "1", None).await.unwrap();
    let mut w = c.watch("/cwm/", Some(etcd_client::WatchOptions::new().with_prefix())).await.unwrap();
    let m = w.message().await;
    eprintln!("first msg: {:?}", m.map(|m| m.map(|m| (m.created(), m.watch_id()))));
    etcd.kill();
    let t = Instant::now();
    let m = tokio::time::timeout(Duration::from_secs(10), w.message()).await;
    eprintln!("after kill {:?}: {:?}", t.elapsed(), m.map(|m| m.map(|m| m.is_some())));
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), c.get("/x", None)).await;
    eprintln!("get on killed after {:?}: {:?}", t.elapsed(), r.map(|r| r.map(|_| ())));
    etcd.restart();
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), c.get("/cwm/a", None)).await;
    eprintln!("get on restarted (old client) after {:?}: {:?}", t.elapsed(), r.map(|r| r.map(|r| r.kvs().len())));
}
