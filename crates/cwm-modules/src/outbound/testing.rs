//! A table-driven [`Lookup`] for tests of the outbound client and its users.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::client::{BoxFuture, Lookup};

/// Names resolve from a table; each answer list is used in turn (the last one repeats), so a
/// name can change its answer between resolutions as a rebinding attacker's would.
pub(crate) struct Table(Mutex<HashMap<String, Vec<Vec<IpAddr>>>>);

impl Table {
    pub(crate) fn new(entries: &[(&str, &[&[&str]])]) -> Arc<Self> {
        let map = entries
            .iter()
            .map(|(name, answers)| {
                let answers = answers
                    .iter()
                    .map(|a| a.iter().map(|ip| ip.parse().unwrap()).collect())
                    .collect();
                ((*name).to_owned(), answers)
            })
            .collect();
        Arc::new(Self(Mutex::new(map)))
    }
}

impl Lookup for Table {
    fn lookup(&self, host: String) -> BoxFuture<io::Result<Vec<SocketAddr>>> {
        let mut map = self.0.lock().unwrap();
        let answer = match map.get_mut(&host) {
            Some(answers) if answers.len() > 1 => Ok(answers.remove(0)),
            Some(answers) => Ok(answers[0].clone()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "unknown name")),
        };
        let answer = answer.map(|ips| ips.into_iter().map(|ip| (ip, 0).into()).collect());
        Box::pin(std::future::ready(answer))
    }
}
