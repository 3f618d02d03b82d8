//! Tests of the resolver's address filtering.

use std::net::IpAddr;

use hyper_util::client::legacy::connect::dns::Name;

use super::{ConnectGuardError, GuardedResolver};
use crate::outbound::testing::Table;

async fn resolve(r: &mut GuardedResolver, name: &str) -> Result<Vec<IpAddr>, ConnectGuardError> {
    use tower_service::Service as _;
    let addrs = r.call(name.parse::<Name>().unwrap()).await?;
    Ok(addrs.map(|a| a.ip()).collect())
}

#[tokio::test]
async fn resolver_drops_refused_addresses() {
    let table = Table::new(&[
        ("meta.test", &[&["169.254.169.254"]]),
        ("meta6.test", &[&["fd00:ec2::254", "fe80::1"]]),
        ("local.test", &[&["127.0.0.1", "::1"]]),
        ("private.test", &[&["10.1.2.3"]]),
        ("mixed.test", &[&["169.254.169.254", "192.168.0.7"]]),
        ("empty.test", &[&[]]),
        // Public at first, the metadata address at the next resolution.
        ("rebind.test", &[&["93.184.216.34"], &["169.254.169.254"]]),
    ]);
    let mut r = GuardedResolver { lookup: table };
    for name in ["meta.test", "meta6.test"] {
        let got = resolve(&mut r, name).await;
        assert!(
            matches!(got, Err(ConnectGuardError::Refused)),
            "{name}: {got:?}"
        );
    }
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        resolve(&mut r, "local.test").await.unwrap(),
        [ip("127.0.0.1"), ip("::1")]
    );
    assert_eq!(
        resolve(&mut r, "private.test").await.unwrap(),
        [ip("10.1.2.3")]
    );
    assert_eq!(
        resolve(&mut r, "mixed.test").await.unwrap(),
        [ip("192.168.0.7")]
    );
    for name in ["empty.test", "unknown.test"] {
        let got = resolve(&mut r, name).await;
        assert!(
            matches!(got, Err(ConnectGuardError::Lookup(_))),
            "{name}: {got:?}"
        );
    }
    assert_eq!(
        resolve(&mut r, "rebind.test").await.unwrap(),
        [ip("93.184.216.34")]
    );
    let got = resolve(&mut r, "rebind.test").await;
    assert!(matches!(got, Err(ConnectGuardError::Refused)), "{got:?}");
}
