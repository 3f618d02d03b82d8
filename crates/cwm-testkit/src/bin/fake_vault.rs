//! `fake_vault`: the test kit's fake HashiCorp Vault ([`cwm_testkit::FakeVault`]) as a process,
//! for shell scripts (docker/scenario/06_vault_etcd_secrets/run_local.sh). Not a Vault: it serves
//! only the KV v2 read and write, mount, AppRole login and token lookup endpoints cwm uses.
//!
//! Usage: `fake_vault [--port N] [--mount NAME] [--token TOKEN] [--approle ROLE_ID:SECRET_ID]`
//! (port 0, the default, picks a free one). Prints `listening on http://127.0.0.1:PORT` once
//! ready and runs until killed.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;

fn main() {
    let mut port = 0u16;
    let mut mount = "secret".to_owned();
    let mut token = cwm_testkit::FAKE_VAULT_ROOT_TOKEN.to_owned();
    let mut approle = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--port" => port = value().parse().unwrap_or_else(|_| usage("bad --port")),
            "--mount" => mount = value(),
            "--token" => token = value(),
            "--approle" => approle = Some(value()),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let vault = cwm_testkit::FakeVault::start_with(&format!("127.0.0.1:{port}"), &mount, &token);
    if let Some(pair) = approle {
        let (role, secret) = pair
            .split_once(':')
            .unwrap_or_else(|| usage("--approle wants ROLE_ID:SECRET_ID"));
        vault.enable_approle(role, secret);
    }
    println!("listening on {}", vault.addr());
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("fake_vault: {problem}");
    }
    eprintln!(
        "usage: fake_vault [--port N] [--mount NAME] [--token TOKEN] [--approle ROLE_ID:SECRET_ID]"
    );
    std::process::exit(2)
}
