//! The Gate alone, journal appends, and the Gate with write-ahead
//! journaling (call + outcome records), as every capability call does it.

use std::hint::black_box;
use std::time::Duration;

use agentcap::consent::{Action, DecisionSource, Gate, Mint, SessionId};
use agentcap::journal::{Entry, Journal, Kind};
use criterion::{Criterion, criterion_group, criterion_main};

fn live_token(gate: &Gate, session: &SessionId) -> u64 {
    gate.mint(Mint {
        session: session.clone(),
        tool: "bench".into(),
        capability: agentcap::capability::mail::DELETE,
        targets: (0..8).map(|i| format!("INBOX/{i}.M1P1.bench")).collect(),
        payload: None,
        ttl: Duration::from_secs(3600),
        uses: u32::MAX,
        decided_by: DecisionSource::StandingGrant,
        stamp: None,
    })
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let session = SessionId("bench".into());
    let gate = Gate::new();
    let token = live_token(&gate, &session);
    let targets = vec!["INBOX/3.M1P1.bench".to_string()];
    let action = Action {
        capability: agentcap::capability::mail::DELETE,
        targets: &targets,
        payload: None,
    };
    c.bench_function("gate_authorize_journal_off", |b| {
        b.iter(|| black_box(gate.authorize(token, &session, "bench", action).unwrap()))
    });

    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("bench.sqlite"), false).unwrap();
    let mut group = c.benchmark_group("journal");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("append_durable", |b| {
        b.iter(|| {
            journal
                .append(
                    Entry::new(Kind::Call, "bench", "bench", "digest")
                        .capability("mail.delete")
                        .targets(&targets),
                )
                .unwrap()
        })
    });
    group.bench_function("gate_authorize_journal_on", |b| {
        b.iter(|| {
            gate.authorize(token, &session, "bench", action).unwrap();
            let call = journal
                .append(
                    Entry::new(Kind::Call, "bench", "bench", "digest")
                        .capability("mail.delete")
                        .targets(&targets),
                )
                .unwrap();
            journal
                .append(
                    Entry::new(Kind::Outcome, "bench", "bench", "digest")
                        .answers(call)
                        .outcome("ok"),
                )
                .unwrap()
        })
    });
    group.finish();

    // The records of one consented call (request, decision, token, call,
    // outcome) on tmpfs, where a sync costs next to nothing: what the
    // bookkeeping itself costs. Batched as the runtime writes them (the
    // consent in one transaction, the call synced, the outcome), and, in
    // the same run, one transaction per record.
    if std::path::Path::new("/dev/shm").is_dir() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let journal = Journal::open(&dir.path().join("bench.sqlite"), false).unwrap();
        let consent = || {
            [
                Entry::new(Kind::ConsentRequest, "bench", "bench", "digest")
                    .capability("mail.read")
                    .targets(&targets),
                Entry::new(Kind::Decision, "bench", "bench", "digest")
                    .capability("mail.read")
                    .targets(&targets)
                    .decided_by("standing grant")
                    .outcome("approved 1 of 1"),
                Entry::new(Kind::TokenMinted, "bench", "bench", "digest")
                    .capability("mail.read")
                    .targets(&targets)
                    .detail("token", 1),
            ]
        };
        let call = || {
            Entry::new(Kind::Call, "bench", "bench", "digest")
                .capability("mail.read")
                .targets(&targets)
        };
        let outcome = |seq| {
            Entry::new(Kind::Outcome, "bench", "bench", "digest")
                .answers(seq)
                .outcome("ok: read 1000 bytes")
        };
        let mut group = c.benchmark_group("consent_records_tmpfs");
        group
            .sample_size(50)
            .measurement_time(Duration::from_secs(5));
        group.bench_function("batched", |b| {
            b.iter(|| {
                let [request, decision, token] = consent();
                journal
                    .append_all(vec![
                        request,
                        decision.answers_entry(0),
                        token.answers_entry(0),
                    ])
                    .unwrap();
                let seq = journal.append(call()).unwrap();
                journal.append(outcome(seq)).unwrap()
            })
        });
        group.bench_function("one_by_one", |b| {
            b.iter(|| {
                let [request, decision, token] = consent();
                let request = journal.append(request).unwrap();
                journal.append(decision.answers(request)).unwrap();
                journal.append(token.answers(request)).unwrap();
                let seq = journal.append(call()).unwrap();
                journal.append(outcome(seq)).unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
