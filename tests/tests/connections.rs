//! Black-box tests of shared connections: one client per connection, rebuilt when its config
//! changes, a webhook checked against the connection it names, states in `/health` and
//! `/admin/config-status`. Real `cwm-receiver`, real redis-servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cwm_testkit::Redis;
use cwm_tests::{Receiver, eventually, rejection_reason};
use serde_json::{Value, json};

const ADMIN: &str = "adm1n";

fn redis_conn(redis: &Redis) -> Value {
    json!({"type": "redis-rq", "host": "localhost", "port": redis.port()})
}

fn queued(redis: &Redis) -> i64 {
    let reply = redis.command(&["LLEN", "rq:queue:jobs"]).unwrap();
    reply.trim_start_matches(':').parse().unwrap()
}

/// The whole `GET /admin/config-status` document.
fn config_status(rx: &Receiver) -> Value {
    let r = rx.request(
        "GET",
        "/admin/config-status",
        &[("authorization", &format!("Bearer {ADMIN}"))],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn reload(rx: &Receiver) {
    let r = rx.reload_config(ADMIN);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_connection_change_moves_its_webhooks_to_a_new_client() {
    let (a, b) = (Redis::start(), Redis::start());
    let webhooks = json!({
        "w": {"module": "redis_rq", "connection": "main",
              "module-config": {"function": "tasks.handle", "queue_name": "jobs"}},
        "waiting": {"module": "redis_rq", "connection": "later",
                    "module-config": {"function": "tasks.handle", "queue_name": "jobs"}},
        "wrong": {"module": "redis_rq", "connection": "stream",
                  "module-config": {"function": "tasks.handle"}}
    });
    let connections = json!({
        "main": redis_conn(&a),
        "stream": {"type": "kafka", "bootstrap_servers": "localhost:9"},
        "legacy": {"type": "rabbitmq", "host": "localhost", "port": 5672}
    });
    let rx = Receiver::start(
        &[
            ("webhooks.json", &webhooks.to_string()),
            ("connections.json", &connections.to_string()),
        ],
        &[
            ("CONFIG_RELOAD_ADMIN_TOKEN", ADMIN),
            ("CONFIG_FILE_WATCHING_ENABLED", "false"),
        ],
    );
    assert_eq!(rx.post("/webhook/w", r#"{"n":1}"#).status, 200);
    assert_eq!(queued(&a), 1);

    // Checked at load: an unknown connection, a connection of the wrong type.
    let status = config_status(&rx);
    let provider = &status["provider"];
    assert!(
        rejection_reason(provider, "waiting").contains("connection 'later' is not defined"),
        "{provider}"
    );
    assert!(
        rejection_reason(provider, "wrong").contains("connection 'stream' has type 'kafka'"),
        "{provider}"
    );
    assert_eq!(rx.post("/webhook/waiting", "{}").status, 404);
    let main = &status["pool_details"]["main"];
    assert_eq!(
        (
            &main["type"],
            &main["state"],
            &main["version"],
            &main["webhooks"]
        ),
        (&json!("redis-rq"), &json!("healthy"), &json!(1), &json!(1)),
        "{status}"
    );
    assert_eq!(status["pool_details"]["legacy"]["state"], "unsupported");
    assert_eq!(status["pool_details"]["later"]["state"], "missing");
    let health = rx.get("/health").json();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["components"]["connections"]["main"], "healthy");

    // The connection moves to another server: the next event goes there, through version 2.
    let mut moved = connections.clone();
    moved["main"] = redis_conn(&b);
    moved["later"] = redis_conn(&b);
    std::fs::write(rx.dir.path().join("connections.json"), moved.to_string()).unwrap();
    reload(&rx);
    assert_eq!(rx.post("/webhook/w", r#"{"n":2}"#).status, 200);
    assert_eq!((queued(&a), queued(&b)), (1, 1));
    let status = config_status(&rx);
    assert_eq!(status["pool_details"]["main"]["version"], 2, "{status}");
    // The old client had no delivery left: it is closed shortly after.
    assert!(eventually(Duration::from_secs(5), || {
        config_status(&rx)["connection_pools"]["deprecated"] == 0
    }));
    // The webhook that waited for `later` is served now, without touching webhooks.json.
    assert_eq!(rx.post("/webhook/waiting", r#"{"n":3}"#).status, 200);
    assert_eq!(queued(&b), 2);

    // A removed connection: its webhooks are rejected at the next load, keep their previous
    // version (as any rejected entry) and answer 503 until the connection is back.
    let mut removed = moved.clone();
    removed.as_object_mut().unwrap().remove("later");
    std::fs::write(rx.dir.path().join("connections.json"), removed.to_string()).unwrap();
    reload(&rx);
    let r = rx.post("/webhook/waiting", "{}");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.header("retry-after").is_some());
    let status = config_status(&rx);
    assert!(
        rejection_reason(&status["provider"], "waiting").contains("connection 'later'"),
        "{status}"
    );
    assert_eq!(status["pool_details"]["later"]["state"], "missing");
    let metrics = rx.get("/metrics").body;
    assert!(
        metrics.contains("cwm_connection_up{connection=\"main\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cwm_sink_delivery_seconds_count{module=\"redis_rq\",outcome=\"ok\"} 3"),
        "{metrics}"
    );
}
