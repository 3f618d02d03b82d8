//! Benchmark helper: librdkafka's mock Kafka cluster in its own process. Creates the topics named
//! by `TOPICS` (comma-separated, default `bench`; `PARTITIONS` each, default 1), prints the
//! bootstrap servers on one line of stdout, and runs until stdin closes or the process is
//! killed.
//!
//! `cargo run --release -p cwm-tests --example kafka_mock < some-fifo`

use std::io::{Read, Write};

use rdkafka::mocking::MockCluster;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let brokers: i32 = env("BROKERS", "1").parse()?;
    let partitions: i32 = env("PARTITIONS", "1").parse()?;
    let cluster = MockCluster::new(brokers)?;
    for topic in env("TOPICS", "bench")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        cluster.create_topic(topic, partitions, brokers.min(3))?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", cluster.bootstrap_servers())?;
    stdout.flush()?;
    drop(stdout);
    // Serve until stdin reaches its end (the parent closed it or exited).
    let mut sink = [0u8; 512];
    let mut stdin = std::io::stdin().lock();
    while stdin.read(&mut sink)? > 0 {}
    drop(cluster);
    Ok(())
}
