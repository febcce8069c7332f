//! Issue 12 part B end to end: gateway replicas whose dedup store is one Redis Cluster, in sync
//! and in spool mode, and a master killed under a sync-mode gateway while MinIO keeps sending.

use std::{collections::HashMap, sync::Arc, time::Duration};

use dedup_gateway::config::{Config, StoreBackend};
use futures_util::{StreamExt, stream};
use rand::seq::SliceRandom;
use serde_json::Value;

use super::{
    cluster_server::RedisCluster,
    gateway::{accepted_by_version, put, wait_ready},
    spool::post_until_2xx,
};
use crate::{
    helpers::*,
    spool::{SpoolGw, deliveries, put_event, spool_config},
};

const TOKEN: &str = GOOD_TOKEN;

/// Points `cfg` at the cluster (every node a seed), with the secret every replica shares.
fn on_cluster(mut cfg: Config, cluster: &RedisCluster) -> Config {
    cfg.dedup.backend = StoreBackend::Redis;
    cfg.dedup.hash_secret = "replicas-share-this-secret-0123456789".into();
    cfg.dedup.redis.cluster_urls = cluster.urls();
    cfg.dedup.redis.key_prefix = "it:".into();
    cfg.dedup.redis.command_timeout = Duration::from_secs(1);
    cfg
}

/// Posts like MinIO with `queue_dir`: retries on 503 (at most 200 times, 50 ms apart) until 200.
async fn post_until_200(gw: &TestGateway, body: Vec<u8>) -> Value {
    for _ in 0..200 {
        let (status, answer) = gw.post("svc", Some(TOKEN), body.clone()).await;
        if status == 200 {
            return answer;
        }
        assert_eq!(status, 503, "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never accepted");
}

/// Two sync-mode replicas on one cluster, a storm of repeats spread over both: every identity
/// reaches OSCAR exactly once, with one `forwarded` verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_replicas_on_a_cluster_deliver_each_identity_once() {
    let cluster = RedisCluster::start().await;
    let oscar = FakeOscar::start().await;
    oscar.set_delay(Duration::from_millis(20));
    let mut gws = Vec::new();
    for _ in 0..2 {
        let gw = TestGateway::start(on_cluster(test_config(&oscar.url()), &cluster)).await;
        wait_ready(&gw, 200).await;
        gws.push(gw);
    }
    const IDENTITIES: usize = 40;
    let mut sends: Vec<(usize, String)> = (0..IDENTITIES)
        .flat_map(|i| (0..5).map(move |c| ((i + c) % 2, format!("cluster-{i:04}"))))
        .collect();
    sends.shuffle(&mut rand::rng());
    let gws_ref = &gws;
    let answers: Vec<(u16, Value)> = stream::iter(sends)
        .map(|(g, v)| async move { gws_ref[g].post("svc", Some(TOKEN), put(&v)).await })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut forwarded = 0;
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        match verdicts(answer).as_slice() {
            [v] if v == "forwarded" => forwarded += 1,
            [v] if v == "duplicate" => {}
            other => panic!("unexpected verdicts {other:?}: {answer}"),
        }
    }
    assert_eq!(forwarded, IDENTITIES);
    let by_version = accepted_by_version(&oscar);
    assert_eq!(by_version.len(), IDENTITIES);
    assert!(by_version.values().all(|n| *n == 1), "{by_version:?}");
    for gw in gws {
        gw.stop().await;
    }
}

/// A master is killed while a sync-mode gateway takes events (fail-closed, MinIO retrying 503s)
/// and its replica is promoted: every event reaches OSCAR, and every later copy of an event
/// delivered before the kill, or after the promotion, is a `duplicate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_gateway_rides_out_a_killed_master() {
    let mut cluster = RedisCluster::start().await;
    let oscar = FakeOscar::start().await;
    let gw = TestGateway::start(on_cluster(test_config(&oscar.url()), &cluster)).await;
    wait_ready(&gw, 200).await;
    for i in 0..30 {
        post_until_200(&gw, put(&format!("before-{i}"))).await;
    }
    // Kill the master of one shard; the gateway answers 503 for its slots until the promotion.
    let (m, r) = cluster.master_and_replica_of("it:{probe}");
    cluster.kill(m);
    let during: Vec<Value> = stream::iter(0..30)
        .map(|i| post_until_200(&gw, put(&format!("during-{i}"))))
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(
        during.iter().all(|a| verdicts(a) == ["forwarded"]),
        "{during:?}"
    );
    cluster.wait_promoted(r, Duration::from_secs(30)).await;
    for i in 0..30 {
        for phase in ["before", "during"] {
            let a = post_until_200(&gw, put(&format!("{phase}-{i}"))).await;
            assert_eq!(verdicts(&a), ["duplicate"], "{phase}-{i}: {a}");
        }
    }
    let by_version = accepted_by_version(&oscar);
    assert_eq!(by_version.len(), 60, "every event delivered");
    assert!(by_version.values().all(|n| *n == 1), "{by_version:?}");
    gw.stop().await;
}

/// Two spool-mode replicas on one cluster, four concurrent copies of each event over both: every
/// event is accepted once and delivered once, every other copy is a `duplicate`, and both spools
/// drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_replicas_on_a_cluster_deliver_each_event_once() {
    let cluster = RedisCluster::start().await;
    let oscar = FakeOscar::start().await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = on_cluster(spool_config(&oscar.url()), &cluster);
    let a = Arc::new(SpoolGw::start(d1.path(), cfg.clone(), None).await);
    let b = Arc::new(SpoolGw::start(d2.path(), cfg, None).await);
    post_until_2xx(&a, put_event("warm-a")).await;
    post_until_2xx(&b, put_event("warm-b")).await;
    let mut tasks = Vec::new();
    for e in 0..20 {
        for copy in 0..4 {
            let gw = if copy % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                gw.post(put_event(&format!("cl-{e}"))).await
            }));
        }
    }
    let mut counts = HashMap::<String, usize>::new();
    for t in tasks {
        let (status, _, answer) = t.await.unwrap();
        assert!(status == 200 || status == 202, "{status} {answer}");
        for v in verdicts(&answer) {
            *counts.entry(v).or_default() += 1;
        }
    }
    assert_eq!(counts.get("accepted"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("duplicate"), Some(&60), "{counts:?}");
    assert!(
        eventually(Duration::from_secs(15), || oscar.accepted().len() == 22).await,
        "{} delivered",
        oscar.accepted().len()
    );
    a.assert_drained().await;
    b.assert_drained().await;
    let d = deliveries(&oscar);
    assert_eq!(d.len(), 22);
    assert!(d.values().all(|n| *n == 1), "{d:?}");
    for gw in [a, b] {
        Arc::into_inner(gw).expect("one owner").stop().await;
    }
}
