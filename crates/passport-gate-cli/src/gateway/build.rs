//! Settings → the running objects, each built once, here: the metrics, the attribution
//! sinks and queue, the grant and account sources, the principal allowlist watcher, the
//! replay store, the revocation list, the passport layer, the access log, the upstream
//! client, the upstream credential (and its file watcher) and the proxy listener's TLS.

use super::access_log::AccessLog;
use super::admission::Admission;
use super::listener::{ConnectionLimits, Http2Limits};
use super::metrics::GatewayMetrics;
use super::routes::RouteTable;
use super::settings::{
    AttributionSettings, BindingSettings, GrantSourceSettings, LimitSettings, ReplayBackend,
    Settings,
};
use super::start_error::StartError;
use super::upstream_auth::UpstreamCredential;
use super::{proxy, Proxy};
use crate::transport::tls;
use hyper::body::Incoming;
use passport_core::time::Timestamp;
use passport_gate::attribution::{
    AttributionQueue, AuditFileSink, JsonLinesSink, RedisStreamSink, Sink,
};
use passport_gate::grants::{
    AccountCache, GrantCache, GrantSource, LcdGrantSource, RequesterSignature, StaticGrants,
};
use passport_gate::layer::{Binding, PassportLayer, RequesterSource};
use passport_gate::limits::{LimitPolicy, LimitStore, Limiter, MemoryLimitStore, RedisLimitStore};
use passport_gate::metrics::Metrics;
use passport_gate::principals::PrincipalAllowlist;
use passport_gate::redis_client::{Durability, Keeps, Redis, RedisConfig, RedisError};
use passport_gate::replay::{DiskReplayStore, RedisReplayStore};
use passport_gate::revocation::RevocationList;
use prometheus::Registry;
use std::sync::Arc;

/// What the gateway runs: everything `run` needs besides the listeners.
pub(crate) struct Built {
    pub registry: Registry,
    pub gateway_metrics: GatewayMetrics,
    pub transport: tls::TransportMetrics,
    pub queue: Option<AttributionQueue>,
    pub layer: PassportLayer,
    /// The chain-node client, shared by the grant and account lookups and the readiness
    /// probe.
    pub chain_node: Option<LcdGrantSource>,
    pub access_log: Option<Arc<AccessLog>>,
    pub proxy: Proxy<Incoming>,
    pub listener_tls: Option<Arc<tls::ListenerTls>>,
    pub proxy_limits: ConnectionLimits,
    pub admin_limits: ConnectionLimits,
    pub h2_limits: Http2Limits,
    pub routes: Arc<RouteTable>,
    pub admission: Arc<Admission>,
    /// Opens each request's span, when tracing is on.
    pub tracer: Option<Arc<super::otel::Tracer>>,
    /// Exports the spans, when tracing is on.
    #[cfg(feature = "otel")]
    pub exporter: Option<super::otel::Exporter>,
    /// The stores the gateway fails closed on, for `/readyz`.
    pub stores: StoresHealth,
}

/// The stores whose unavailability refuses passport requests.
#[derive(Default)]
pub(crate) struct StoresHealth {
    /// The replay store's Redis (with `fail_open = false`).
    pub replay_redis: Option<Arc<Redis>>,
    /// The revocation list, when it polls a shared set.
    pub revocations: Option<Arc<RevocationList>>,
    /// The limit store's Redis (`[limits] store = "redis"` with `fail_open = false`).
    pub limit_redis: Option<Arc<Redis>>,
    /// The Redis limit store, whose queued settlements are written at shutdown.
    pub limit_settlements: Option<RedisLimitStore>,
}

/// Builds everything once. Problems found while opening files are collected, so that one
/// run reports every file that cannot be opened (each line naming its key).
pub(crate) async fn build(config: &Settings) -> Result<Built, StartError> {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).map_err(StartError::Metrics)?;
    let gateway_metrics = GatewayMetrics::register(&registry).map_err(StartError::Metrics)?;
    let transport = tls::TransportMetrics::register(&registry).map_err(StartError::Metrics)?;

    let redis_config = config.redis.as_ref().map(|r| &r.client);
    let key_prefix = config
        .redis
        .as_ref()
        .map(|r| r.key_prefix.clone())
        .unwrap_or_default();
    let mut problems: Vec<StartError> = Vec::new();
    let sinks = sinks(&config.attribution, redis_config, &metrics)
        .map_err(|list| problems.extend(list))
        .unwrap_or_default();
    let queue = if sinks.is_empty() {
        None
    } else {
        Some(
            AttributionQueue::start(
                config.envelope.attribution_queue_cap,
                sinks,
                metrics.clone(),
            )
            .map_err(StartError::AttributionThread)?,
        )
    };

    let mut builder = PassportLayer::builder(config.envelope.clone()).metrics(metrics.clone());
    let mut chain_node = None;
    if let Some(b) = &config.binding {
        let (binding, node) = binding(b, &config.upstream_tls)?;
        chain_node = node;
        builder = builder.binding(binding);
    }
    if let Some(p) = &config.principals {
        let list = Arc::new(PrincipalAllowlist::new(p.fixed.clone()));
        if let Some((path, initial, interval)) = &p.file {
            list.watch_file(
                path.clone(),
                initial.clone(),
                *interval,
                p.prefix.clone(),
                metrics.principals_reload_failures.clone(),
            )
            .map_err(StartError::PrincipalsFile)?;
        }
        builder = builder.principals(list);
    }
    if let Some(q) = &queue {
        let a = &config.attribution;
        builder = builder
            .attribution(q.sender().limit_refusals(a.refusals_per_second))
            .record_refusals(a.audit_file.as_ref().is_some_and(|f| f.refusals));
    }
    let mut stores = StoresHealth::default();
    if config.envelope.replay_protection {
        builder = replay_store(
            builder,
            config,
            redis_config,
            &key_prefix,
            &metrics,
            &mut stores,
        )
        .await?;
    }
    builder = builder
        .replay_fail_open(config.replay.fail_open)
        .replay_release(config.replay.release);
    if let Some(r) = &config.revocation {
        let mut list = RevocationList::default();
        list.count_bad_lines_on(metrics.revocation_bad_lines.clone());
        list.count_emptied_set_on(metrics.revocation_set_emptied.clone());
        let list = Arc::new(list);
        if let Some((path, every)) = &r.file {
            if let Err(e) = list.watch_file(path.clone(), *every) {
                problems.push(StartError::RevocationFile(e));
            }
        }
        if let (Some(every), Some(c)) = (r.redis_poll, redis_config) {
            let redis = revocation_redis(c, r.accept_forgetful_redis, &metrics).await?;
            list.watch_redis(redis, format!("{key_prefix}revoked"), every);
            stores.revocations = Some(Arc::clone(&list));
        }
        builder = builder.revocations(list);
    }
    if let Some(name) = &config.inference_id_header {
        builder = builder.inference_id_header(name.clone());
    }
    if let Some(l) = &config.limits {
        builder =
            builder.limits(limiter(l, redis_config, &key_prefix, &metrics, &mut stores).await?);
    }
    let layer = builder.build().map_err(|errors| {
        StartError::from_problems(errors.into_iter().map(StartError::Envelope).collect())
    })?;

    let access_log = AccessLog::start(
        &config.access_log,
        config.access_log_buffer_lines,
        config.access_log_refusals_per_second,
        gateway_metrics.access_log_dropped.clone(),
        gateway_metrics.access_log_refusals_dropped.clone(),
    )
    .map_err(|e| problems.push(e))
    .ok()
    .flatten()
    .map(Arc::new);
    if !problems.is_empty() {
        return Err(StartError::from_problems(problems));
    }

    let limits = |max_connections: usize| ConnectionLimits {
        max_connections,
        header_read_timeout: config.header_read_timeout,
        max_header_bytes: config.max_header_bytes,
    };
    let upstream_auth = config
        .upstream_auth
        .as_ref()
        .map(|a| {
            UpstreamCredential::start(a, gateway_metrics.upstream_auth_reload_failures.clone())
                .map_err(StartError::UpstreamAuthWatcher)
        })
        .transpose()?;
    let pool = config.upstream_pool;
    let proxy = Proxy::new(
        config.upstream.clone(),
        proxy::UpstreamClient {
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            tls: config.upstream_tls.clone(),
            http2: pool.http2,
            pool_max_idle: pool.max_idle,
            pool_idle_timeout: pool.idle_timeout,
            errors: transport.upstream(),
            max_requests: pool.max_requests,
        },
        config.identity.clone(),
        config.server_tls.is_some(),
        upstream_auth,
    );
    let listener_tls = config.server_tls.as_ref().map(|t| {
        t.listener
            .watch(t.reload, transport.certificate_reloads.clone());
        Arc::clone(&t.listener)
    });
    #[cfg(feature = "otel")]
    let (tracer, exporter) = match &config.tracing {
        Some(t) => {
            let (tracer, exporter) =
                super::otel::Exporter::start(t, gateway_metrics.traces.clone());
            (Some(Arc::new(tracer)), Some(exporter))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "otel"))]
    let tracer = None;
    let requester = match config.binding.as_ref().map(|b| &b.requester) {
        Some(RequesterSource::Header(h)) => Some(h.clone()),
        _ => None,
    };
    Ok(Built {
        registry,
        gateway_metrics,
        transport,
        queue,
        layer,
        chain_node,
        access_log,
        proxy,
        listener_tls,
        proxy_limits: limits(config.max_connections),
        admin_limits: limits(config.admin_max_connections),
        h2_limits: Http2Limits {
            max_concurrent_streams: config.http2.max_concurrent_streams,
            keep_alive_interval: config.http2.keep_alive_interval,
            keep_alive_timeout: config.http2.keep_alive_timeout,
        },
        routes: Arc::new(RouteTable::new(
            config.routes.clone(),
            config.public.clone(),
            config.unguarded,
            config.passport_required(),
        )),
        admission: Arc::new(Admission::new(requester)),
        tracer,
        #[cfg(feature = "otel")]
        exporter,
        stores,
    })
}

/// The binding: its grant source (a chain node or a fixed list), the grant cache, the
/// account cache whenever there is a chain node, and the requester signature check.
/// Returns the chain-node client too, for the readiness probe.
fn binding(
    b: &BindingSettings,
    upstream_tls: &rustls::ClientConfig,
) -> Result<(Binding, Option<LcdGrantSource>), StartError> {
    let (grants, node): (Arc<dyn GrantSource>, _) = match &b.grants {
        GrantSourceSettings::ChainNode(url) => {
            let node = Arc::new(
                LcdGrantSource::with_tls(url, upstream_tls.clone())
                    .map_err(StartError::ChainNode)?,
            );
            (node.clone(), Some(node))
        }
        GrantSourceSettings::Static(list) => (Arc::new(StaticGrants(list.clone())), None),
    };
    let mut binding = Binding::from_source(b.requester.clone(), GrantCache::new(grants, b.cache))
        .with_msg_type_url(b.msg_type_url.clone());
    let accounts = node.as_ref().map(|n| AccountCache::new(n.clone(), b.cache));
    if let Some(accounts) = &accounts {
        binding = binding.with_accounts(accounts.clone());
    }
    if let Some(rs) = &b.requester_signature {
        // Checked by the configuration: a requester signature needs a chain node.
        let accounts = accounts.ok_or(StartError::RequesterSignatureWithoutChainNode)?;
        binding = binding.with_requester_signature(RequesterSignature::new(rs.clone(), accounts));
    }
    Ok((binding, node.map(|n| (*n).clone())))
}

/// Opens every configured sink; every sink that cannot be opened is one line.
fn sinks(
    config: &AttributionSettings,
    redis: Option<&RedisConfig>,
    metrics: &Metrics,
) -> Result<Vec<Box<dyn Sink>>, Vec<StartError>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let mut errors = Vec::new();
    if let Some(audit) = &config.audit_file {
        match AuditFileSink::open(&audit.path, audit.fsync, audit.max_bytes) {
            Ok(sink) => sinks.push(Box::new(sink)),
            Err(source) => errors.push(StartError::OpenFile {
                key: "attribution.audit_file",
                path: audit.path.clone(),
                source,
            }),
        }
    }
    if let (Some((key, bounds)), Some(redis)) = (&config.redis_stream, redis) {
        match RedisStreamSink::new(
            redis.clone(),
            key,
            *bounds,
            metrics.redis_out_of_memory_stream.clone(),
        ) {
            Ok(sink) => sinks.push(Box::new(sink)),
            Err(e) => errors.push(StartError::RedisStream(e)),
        }
    }
    if config.stdout {
        sinks.push(Box::new(JsonLinesSink::stdout()));
    }
    if let Some(path) = &config.file {
        match JsonLinesSink::create_file(path) {
            Ok(sink) => sinks.push(Box::new(sink)),
            Err(source) => errors.push(StartError::OpenFile {
                key: "attribution.file",
                path: path.clone(),
                source,
            }),
        }
    }
    if errors.is_empty() {
        Ok(sinks)
    } else {
        Err(errors)
    }
}

/// The replay store `[replay]` names. The disk store is opened here, once: a directory
/// that cannot be opened stops the start, naming the path. The in-process store forgets
/// the records of earlier runs, so passports issued before this start (plus the clock
/// skew, by which a passport may be ahead of the clock that accepted it) are refused.
async fn replay_store(
    builder: passport_gate::layer::PassportLayerBuilder,
    config: &Settings,
    redis_config: Option<&RedisConfig>,
    key_prefix: &str,
    metrics: &Metrics,
    stores: &mut StoresHealth,
) -> Result<passport_gate::layer::PassportLayerBuilder, StartError> {
    let e = &config.envelope;
    let capacity = usize::try_from(e.replay_cache_capacity).unwrap_or(usize::MAX);
    Ok(match (&config.replay.backend, redis_config) {
        (ReplayBackend::Redis, Some(c)) => {
            let store = replay_redis(c, config.replay.accept_forgetful_redis, metrics).await?;
            if !config.replay.fail_open {
                stores.replay_redis = Some(Arc::clone(&store));
            }
            builder.replay_store(Arc::new(
                RedisReplayStore::new(store, key_prefix)
                    .records_per_principal(e.replay_records_per_principal),
            ))
        }
        (ReplayBackend::Disk(dir), _) => {
            let store = DiskReplayStore::open(
                dir,
                capacity,
                e.replay_records_per_principal,
                Timestamp::now(),
            )
            .map_err(StartError::ReplayDataDir)?;
            tracing::info!(
                path = %store.path().display(),
                live_records = store.len(Timestamp::now()),
                "replay store opened"
            );
            builder.replay_store(Arc::new(store))
        }
        (ReplayBackend::Memory | ReplayBackend::Redis, _) => {
            let start = Timestamp::now().plus_seconds(e.clock_skew_seconds as i64);
            tracing::warn!(
                refused_until_expiry = %start.to_rfc3339(),
                "replay store in memory: records of earlier runs are gone, so passports issued until this instant are refused (passport_predates_start)"
            );
            builder.replay_refuse_issued_until(start)
        }
    })
}

/// The limiter: its store (in the process, or Redis with the same durability check as
/// the replay store, watched by `/readyz` when limited requests fail closed on it), the
/// policy and its file watcher.
async fn limiter(
    l: &LimitSettings,
    redis: Option<&RedisConfig>,
    key_prefix: &str,
    metrics: &Metrics,
    stores: &mut StoresHealth,
) -> Result<Arc<Limiter>, StartError> {
    let store: Arc<dyn LimitStore> = match (l.redis, redis) {
        (true, Some(c)) => {
            let durability = Durability::for_store(
                Keeps::LIMIT_COUNTERS,
                l.accept_forgetful_redis,
                metrics.limit_store_forgetful.clone(),
            );
            let redis = Arc::new(Redis::new(c.clone()).with_durability(durability));
            match redis.check().await {
                Ok(()) => {}
                Err(RedisError::Forgetful(e)) => return Err(StartError::LimitStoreForgetful(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "limit store: Redis not reachable at startup; limited requests are refused until it is");
                }
            }
            if !l.fail_open {
                stores.limit_redis = Some(Arc::clone(&redis));
            }
            let store = RedisLimitStore::new(redis, key_prefix)
                .count_failed_settlements_on(metrics.limit_settlements_failed.clone());
            stores.limit_settlements = Some(store.clone());
            Arc::new(store)
        }
        _ => Arc::new(MemoryLimitStore::new()),
    };
    let policy = Arc::new(LimitPolicy::new(l.policy.clone()));
    if let Some((path, every)) = &l.policy_file {
        policy
            .watch_file(
                path.clone(),
                *every,
                metrics.limits_policy_bad_lines.clone(),
            )
            .map_err(StartError::LimitsPolicyWatcher)?;
    }
    Ok(Arc::new(
        Limiter::new(store, policy, l.max_tokens_cap, l.default_max_tokens).fail_open(l.fail_open),
    ))
}

/// The replay store's own Redis client: every connection it opens first checks that the
/// server cannot silently forget records. A forgetful server refuses startup (unless
/// `accept_forgetful_redis`); an unreachable one is reported and the store fails closed
/// until it answers, checked again on every reconnect.
async fn replay_redis(
    config: &RedisConfig,
    accept_forgetful: bool,
    metrics: &Metrics,
) -> Result<Arc<Redis>, StartError> {
    let durability = Durability::for_store(
        Keeps::REPLAY_RECORDS,
        accept_forgetful,
        metrics.replay_store_forgetful.clone(),
    );
    let redis = Arc::new(
        Redis::new(config.clone())
            .with_durability(durability)
            .count_out_of_memory_on(metrics.redis_out_of_memory_replay.clone()),
    );
    match redis.check().await {
        Ok(()) => Ok(redis),
        Err(RedisError::Forgetful(e)) => Err(StartError::ReplayStoreForgetful(e)),
        Err(e) => {
            tracing::warn!(error = %e, "replay store: Redis not reachable at startup; requests are refused until it is");
            Ok(redis)
        }
    }
}

/// The revocation poller's own Redis client, checked like the replay store's: a Redis
/// that can forget the set would lift revocations silently (a restart without
/// persistence empties it). A forgetful server refuses startup (unless
/// `accept_forgetful`); an unreachable one is reported, and passport requests are
/// refused until the set has been read.
async fn revocation_redis(
    config: &RedisConfig,
    accept_forgetful: bool,
    metrics: &Metrics,
) -> Result<Arc<Redis>, StartError> {
    let durability = Durability::for_store(
        Keeps::REVOCATIONS,
        accept_forgetful,
        metrics.revocation_store_forgetful.clone(),
    );
    let redis = Arc::new(Redis::new(config.clone()).with_durability(durability));
    match redis.check().await {
        Ok(()) => Ok(redis),
        Err(RedisError::Forgetful(e)) => Err(StartError::RevocationStoreForgetful(e)),
        Err(e) => {
            tracing::warn!(error = %e, "revocations: Redis not reachable at startup; passport requests are refused until the set has been read");
            Ok(redis)
        }
    }
}
