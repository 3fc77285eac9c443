//! What agentcap costs over bare wasmtime, per call (a fresh instance each
//! time, as agentcap does):
//! - `floor`: bare wasmtime, same engine, WASI linked, instantiate + call a
//!   trivial export;
//! - `agentcap_trivial`: the same export through `Runtime::call` (JSON in
//!   and out, limits, epoch callback, capture);
//! - `agentcap_mail_read`: list a folder and read one message, each with a
//!   standing-grant token, through the Gate and the journal;
//! - `agentcap_mail_read_tmpfs`: the same with Maildir and journal on
//!   tmpfs (no disk fsync): the runtime's own cost;
//! - `agentcap_mail_read_one_tmpfs`: one standing token and one `mail.read`
//!   of a known message, on tmpfs;
//! - `throughput_64`: 64 concurrent trivial calls on 2 worker threads;
//! - `http/native_get`: a GET to a loopback server from a native client
//!   (a new connection each time), the floor of
//! - `http/agentcap_get`: the same GET from a tool through `wasi:http`
//!   (`wstd`), decided by a standing grant, journaled, on tmpfs when there
//!   is one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentcap::consent::{DenyApprover, SessionId};
use agentcap::{AgentEngine, Runtime};
use agentcap_tests::{Workspace, guest};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// A session for consented calls: a new one every 1000 calls, since a
/// session may make at most 10,000 consent requests.
fn consenting_session() -> SessionId {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    SessionId(format!("bench-{}", n / 1000))
}

struct Bare {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bytes = std::fs::read(guest("echo_types")).unwrap();

    // Bare wasmtime on agentcap's engine configuration.
    let engine = AgentEngine::new(None).unwrap();
    let component = Component::new(engine.engine(), &bytes).unwrap();
    let mut linker: Linker<Bare> = Linker::new(engine.engine());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let nothing = component.get_export_index(None, "nothing").unwrap();
    c.bench_function("floor", |b| {
        b.to_async(&rt).iter(|| async {
            let mut store = Store::new(
                engine.engine(),
                Bare {
                    ctx: WasiCtx::builder().build(),
                    table: ResourceTable::new(),
                },
            );
            store.set_epoch_deadline(u64::MAX / 2);
            let instance = pre.instantiate_async(&mut store).await.unwrap();
            let func = instance.get_func(&mut store, nothing).unwrap();
            func.call_async(&mut store, &[], &mut []).await.unwrap();
        })
    });

    let ws = Workspace::new();
    let policy = format!(
        "user = \"alice\"\n[mail]\nmaildir = \"Maildir\"\n\
         [tools.echo]\ncomponent = {:?}\nlimits = {{ max_concurrent_calls = 64 }}\n\
         [tools.sweeper]\ncomponent = {:?}\n\
         [[tools.sweeper.grants]]\ncapability = \"mail.list\"\nmode = \"standing\"\n\
         [[tools.sweeper.grants]]\ncapability = \"mail.read\"\nmode = \"standing\"\n",
        guest("echo_types"),
        guest("mail_sweeper")
    );
    let runtime = Arc::new(
        Runtime::new(
            AgentEngine::new(None).unwrap(),
            ws.policy(&policy),
            Arc::new(DenyApprover::new("bench")),
        )
        .unwrap(),
    );
    let echo = Arc::new(runtime.load_tool("echo").unwrap());
    let sweeper = runtime.load_tool("sweeper").unwrap();
    let session = SessionId("bench".into());
    c.bench_function("agentcap_trivial", |b| {
        b.to_async(&rt).iter(|| async {
            runtime
                .call(&echo, &session, "nothing", &json!({}))
                .await
                .unwrap()
        })
    });
    let mut group = c.benchmark_group("capability");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(8));
    // A consented call of `sweeper`, which must succeed.
    let consented = |group: &mut criterion::BenchmarkGroup<'_, _>,
                     name: &str,
                     runtime: &Runtime,
                     sweeper: &agentcap::LoadedTool,
                     function: &'static str,
                     args: serde_json::Value| {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let out = runtime
                    .call(sweeper, &consenting_session(), function, &args)
                    .await
                    .unwrap();
                assert!(!out.is_error, "{}", out.result);
            })
        });
    };
    let first = json!({"folder": "INBOX"});
    consented(
        &mut group,
        "agentcap_mail_read",
        &runtime,
        &sweeper,
        "read-first",
        first.clone(),
    );
    // The same with the Maildir and the journal on tmpfs: the runtime's
    // cost without the disk's fsync.
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        let ws = Workspace::new_in(shm);
        let runtime = Runtime::new(
            AgentEngine::new(None).unwrap(),
            ws.policy(&policy),
            Arc::new(DenyApprover::new("bench")),
        )
        .unwrap();
        let sweeper = runtime.load_tool("sweeper").unwrap();
        let id = ws.ids_in("INBOX").into_iter().next().expect("a message");
        consented(
            &mut group,
            "agentcap_mail_read_one_tmpfs",
            &runtime,
            &sweeper,
            "read-one",
            json!({"id": id}),
        );
        consented(
            &mut group,
            "agentcap_mail_read_tmpfs",
            &runtime,
            &sweeper,
            "read-first",
            first,
        );
    }
    group.finish();

    let mut group = c.benchmark_group("throughput");
    group.sample_size(20);
    group.bench_function("64_concurrent_trivial_calls", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (runtime, echo) = (runtime.clone(), echo.clone());
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let calls: Vec<_> = (0..64)
                        .map(|i| {
                            let (runtime, echo) = (runtime.clone(), echo.clone());
                            tokio::spawn(async move {
                                runtime
                                    .call(&echo, &SessionId(format!("t{i}")), "nothing", &json!({}))
                                    .await
                                    .unwrap()
                            })
                        })
                        .collect();
                    for call in calls {
                        call.await.unwrap();
                    }
                }
                start.elapsed()
            }
        })
    });
    group.finish();
}

/// A loopback server that answers every request with a short body.
fn serve_loopback(rt: &tokio::runtime::Runtime) -> u16 {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().fallback(|| async { "{\"ok\":true}" });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    })
}

fn bench_http(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let port = serve_loopback(&rt);
    let url = format!("http://127.0.0.1:{port}/issues");
    let shm = std::path::Path::new("/dev/shm");
    let ws = if shm.is_dir() {
        Workspace::new_in(shm)
    } else {
        Workspace::new()
    };
    let policy = format!(
        "user = \"alice\"\n[http]\n[tools.web]\ncomponent = {:?}\n\
         [[tools.web.grants]]\ncapability = \"http.get\"\nmode = \"standing\"\n\
         origins = [\"http://127.0.0.1:{port}\"]\nallow_ips = [\"127.0.0.1\"]\n",
        guest("hostile_http")
    );
    let runtime = Runtime::new(
        AgentEngine::new(None).unwrap(),
        ws.policy(&policy),
        Arc::new(DenyApprover::new("bench")),
    )
    .unwrap();
    let web = runtime.load_tool("web").unwrap();
    let args = json!({"method": "GET", "url": url, "body": "", "headers": []});
    let mut group = c.benchmark_group("http");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(8));
    // Interleaved by criterion's own order: native first, then agentcap.
    group.bench_function("native_get", |b| {
        b.iter(|| {
            // A new agent, so a new connection, as agentcap makes.
            let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
            let body = agent
                .get(&url)
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap();
            assert!(body.contains("ok"));
        })
    });
    group.bench_function("agentcap_get", |b| {
        b.to_async(&rt).iter(|| async {
            let out = runtime
                .call(&web, &consenting_session(), "send-request", &args)
                .await
                .unwrap();
            assert!(!out.is_error, "{}", out.result);
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_http);
criterion_main!(benches);
